"""Bad input to `autocompress search`, one row each: refused with exit code 2 and one line
naming the field and the value, before anything is written (no run directory; nothing
else in --out's parent, nor in the run being resumed) and before any expensive work: no
case gets as far as timing the teacher. Each row runs autocompress.cli.main in-process."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from autocompress.cli import main
from tests.helpers import FAST_PROFILE_YAML, FIXTURES, SPACE_YAML, TINY_DATA_SPEC, TINY_MODEL_SPEC, TINY_TASK

BAD = FIXTURES / "bad_task.py"


def bad(fn: str) -> str:
    return f"{BAD}:{fn}"


@dataclass
class Env:
    """Where a case writes its inputs (`tmp`, also --out's parent) and what it may use."""

    tmp: Path
    space: Path
    profile: Path
    tiny_module: Any  # tests/fixtures/tiny_task.py, imported
    run: Optional[Path] = None  # a copy of a finished run (resume cases)

    @property
    def out(self) -> Path:
        return self.tmp / "run"

    def file(self, name: str, text: str) -> Path:
        path = self.tmp / name
        path.write_text(text)
        return path


def tiny(e: Env, *extra, space=None, profile=None, model: str = TINY_MODEL_SPEC, out=None) -> list:
    """search on the tiny task (refused before it is loaded: it is never trained)."""
    return ["search", "--model", model, "--data", TINY_DATA_SPEC, "--profile", profile or e.profile,
            "--space", space or e.space, *extra, "--out", out or e.out]


RAISING = 'def build_model():\n    raise RuntimeError("cannot find weights.pt")\n'


def user(e: Env, model: str, *extra, data: str = "build_data", profile=None) -> list:
    """search on a model (and data) of tests/fixtures/bad_task.py."""
    return ["search", "--model", bad(model), "--data", bad(data), "--profile", profile or e.profile, "--space", e.space, *extra,
            "--out", e.out]


def task(e: Env, spec: str, *extra) -> list:
    return ["search", "--task", spec, "--profile", e.profile, "--space", e.space, *extra, "--out", e.out]


def resume(e: Env, *extra) -> list:
    return ["search", "--resume", e.run, *extra]


def out_busy(e: Env) -> list:
    e.out.mkdir()
    (e.out / "keep.txt").write_text("mine")
    return tiny(e, "--budget", 1)


def resume_changed_data(e: Env) -> list:
    """The run's files name the same model and data; its recorded fingerprint stands for
    data that has changed since."""
    manifest = json.loads((e.run / "run.json").read_text())
    manifest["task_fingerprint"] = "0123456789ab"
    (e.run / "run.json").write_text(json.dumps(manifest))
    return resume(e)


def checkpoint_of(e: Env, width: int) -> Path:
    import torch

    path = e.tmp / f"width{width}.pt"
    torch.save(e.tiny_module.TinyResNet(width=width).state_dict(), path)
    return path


CASES: dict[str, tuple[Callable[[Env], list], tuple[str, ...]]] = {
    # the options
    "budget 0": (lambda e: tiny(e, "--budget", 0), ("--budget must be >= 1, got 0",)),
    "time budget 0": (lambda e: tiny(e, "--time-budget", "0"), ("--time-budget must be > 0, got 0.0",)),
    "workers 0": (lambda e: tiny(e, "--workers", 0), ("--workers must be >= 1, got 0",)),
    "max-acc-drop out of range": (lambda e: tiny(e, "--max-acc-drop", 150), ("--max-acc-drop must be in [0, 100] points, got 150.0",)),
    "both drop limits": (lambda e: tiny(e, "--max-acc-drop", 1, "--max-metric-drop", 1), ("--max-acc-drop and --max-metric-drop",)),
    "one fidelity rung": (lambda e: tiny(e, "--fidelity", 10), ("--fidelity", "'10'")),
    "decreasing fidelity rungs": (lambda e: tiny(e, "--fidelity", "10,5"), ("--fidelity", "'10,5'")),
    "reduction factor 1": (lambda e: tiny(e, "--fidelity", "5,10", "--reduction-factor", 1), ("--reduction-factor must be an integer >= 2, got 1",)),
    "reduction factor alone": (lambda e: tiny(e, "--reduction-factor", 3), ("--reduction-factor needs --fidelity",)),
    "accuracy on device without ray": (lambda e: tiny(e, "--accuracy-on-device"), ("--accuracy-on-device needs --backend ray",)),
    "accuracy on device without a device": (lambda e: tiny(e, "--backend", "ray", "--accuracy-on-device"),
                                            ("--accuracy-on-device needs --latency-resource",)),
    # the search space
    "space: unknown key": (lambda e: tiny(e, space=e.file("s.yaml", "prune:\n  rate: 0.5\n")), ("unknown key prune.rate", "s.yaml")),
    "space: value out of range": (lambda e: tiny(e, space=e.file("s.yaml", "prune:\n  ratio: 0.99\n")), ("prune.ratio", "0.99", "s.yaml")),
    "space: no such file": (lambda e: tiny(e, space=e.tmp / "nope.yaml"), ("--space: no such file", "nope.yaml")),
    # the hardware profile
    "profile: unknown name": (lambda e: tiny(e, profile="no-such-profile"), ("--profile: unknown profile 'no-such-profile'",)),
    "profile: unknown execution provider": (
        lambda e: tiny(e, profile=e.file("p.yaml", "name: fpga\nproviders: [FooExecutionProvider]\n")),
        ("profile 'fpga': execution provider 'FooExecutionProvider' is not available here",)),
    "profile: unknown key": (lambda e: tiny(e, profile=e.file("p.yaml", FAST_PROFILE_YAML + "thread: 2\n")),
                             ("unknown hardware-profile key 'thread'", "p.yaml")),
    "profile: input shape of no input": (
        lambda e: user(e, "untrained", profile=e.file("p.yaml", FAST_PROFILE_YAML + "input_shape: {pixels: [3, 8, 8]}\n")),
        ("input_shape of profile 'fast' names 'pixels', which is not an input of the task ['input']",)),
    # where the run goes
    "out: a non-empty directory": (out_busy, ("already exists and is not empty",)),
    "out: a file": (lambda e: tiny(e, out=e.file("run.txt", "mine")), ("--out", "run.txt is a file")),
    "out: below a regular file": (lambda e: tiny(e, out=e.file("notes.txt", "mine") / "run"),
                                  ("--out", "notes.txt/run: cannot write there", "notes.txt is a file, not a directory")),
    # where the study goes
    "storage: a journal file": (lambda e: tiny(e, "--storage", e.tmp / "journal.log"),
                                ("--storage must be an RDB URL (postgresql://..., mysql://..., sqlite:///FILE), got", "journal.log")),
    "storage: no server there": (lambda e: tiny(e, "--storage", "mysql+pymysql://me:secret@127.0.0.1:1/studies"),
                                 ("--storage mysql+pymysql://me:***@127.0.0.1:1/studies:",)),
    "storage: SQLite below a regular file": (lambda e: tiny(e, "--storage", f"sqlite:///{e.file('notes.txt', 'mine')}/study.db"),
                                             ("--storage sqlite:///", "notes.txt/study.db: the file cannot be written")),
    "storage: on resume": (lambda e: resume(e, "--storage", f"sqlite:///{e.tmp}/other.db"),
                           ("--storage is given when a run is created: --resume uses the run's own storage",)),
    # the task's files
    "model: no such file": (lambda e: tiny(e, model=f"{e.tmp / 'missing.py'}:build_model"), ("--model: no such file", "missing.py")),
    "model: its function raises": (lambda e: tiny(e, model=f"{e.file('raising.py', RAISING)}:build_model"),
                                   ("--model", "raising.py:build_model raised RuntimeError: cannot find weights.pt")),
    "model: not a module": (lambda e: user(e, "returns_int"), ("--model", "returns_int must return a torch.nn.Module, got int")),
    "model: without data": (lambda e: ["search", "--model", TINY_MODEL_SPEC, "--out", e.out], ("--model and --data go together",)),
    "model: its file does not import": (lambda e: tiny(e, model=f"{e.file('broken.py', 'def build_model(:')}:build_model"),
                                        ("--model: importing", "broken.py", "raised SyntaxError")),
    "data: one dataset": (lambda e: user(e, "untrained", data="one_dataset"), ("--data", "must return (train, val) or (train, val, test), got TensorDataset")),
    "data: labels out of range": (lambda e: user(e, "untrained", data="labels_out_of_range"),
                                  ("--data: train labels must be in [0, 3] (the model has 4 outputs), got 6..9",)),
    "task: its file does not import": (
        lambda e: task(e, f"{e.file('needs.py', 'import no_such_package_here')}:build_task"),
        ("--task: importing", "needs.py", "ModuleNotFoundError: No module named 'no_such_package_here'")),
    "task: not a Task": (lambda e: task(e, f"{TINY_TASK}:build_data"), ("--task", "must return an autocompress.Task, got tuple")),
    "task: with --model": (lambda e: task(e, f"{TINY_TASK}:build_task", "--model", TINY_MODEL_SPEC), ("--task goes alone",)),
    "metric: NaN on the teacher": (lambda e: task(e, bad("nan_metric_task")), ("Task.metric", "metric 'nan_metric' returned nan")),
    "metric: NaN on a whole split": (lambda e: task(e, bad("nan_on_a_split_task")),
                                     ("the teacher's test nan_on_many", "metric 'nan_on_many' returned nan")),
    "checkpoint: no such file": (lambda e: user(e, "untrained", "--checkpoint", e.tmp / "nope.pt"), ("--checkpoint: no such file", "nope.pt")),
    "checkpoint: another model's": (
        lambda e: user(e, "untrained", "--checkpoint", checkpoint_of(e, 4)),
        ("--checkpoint", "width4.pt' does not match the model (TinyResNet): stem.0.weight has shape (4, 3, 3, 3) in the file, (8, 3, 3, 3) in the model")),
    "checkpoint: not a checkpoint": (lambda e: user(e, "untrained", "--checkpoint", e.file("notes.pt", "hello")),
                                     ("--checkpoint: cannot read", "notes.pt' as a state_dict")),
    # the teacher's export
    "teacher: an operator ONNX lacks": (
        lambda e: user(e, "unsupported_op"),
        ("the teacher could not be exported to ONNX: in module 'head' (Spectrum, bad_task.py:",
         "UnsupportedOperatorError: Exporting the operator 'aten::fft_fft' to ONNX opset version 17 is not supported")),
    "teacher: leaves torch": (
        lambda e: user(e, "leaves_torch"),
        ("the teacher's ONNX export is not faithful: output 'logits' has shape (2, 4) in ONNX Runtime, (32, 4) in PyTorch on a batch of 32 rows",
         "a forward that leaves torch")),
    "teacher: branches on the batch size": (
        lambda e: user(e, "branches_on_batch"),
        ("the teacher's ONNX export is not faithful: largest difference", "at output 'logits'[0, ", "on a batch of 1 row:",
         "in ONNX Runtime", "in PyTorch")),
    "teacher: fails on a single row": (lambda e: user(e, "fails_on_one_row"),
                                       ("checking the teacher's ONNX file against the teacher on 32 and 1 val rows failed: ValueError: batch of one",)),
    # resuming
    "resume: not a run": (lambda e: ["search", "--resume", e.file("notes.txt", "hello").parent], ("--resume", "not a run directory (no run.json)")),
    "resume: no such directory": (lambda e: ["search", "--resume", e.tmp / "missing"], ("--resume", "missing: not a run directory")),
    "resume: with --out": (lambda e: resume(e, "--out", e.out), ("--resume and --out go separately",)),
    "resume: another space": (
        lambda e: resume(e, "--space", e.file("other.yaml", SPACE_YAML.replace("steps: [0, 10]", "steps: [0, 20]"))),
        ("--space", "other.yaml differs from the run's search space at finetune.steps")),
    "resume: another task": (lambda e: resume(e, "--model", f"{TINY_TASK}:TinyResNet", "--data", TINY_DATA_SPEC),
                             ("the task differs (run: --model", "build_model")),
    "resume: another profile": (lambda e: resume(e, "--profile", "cpu-1thread"), ("--profile cpu-1thread differs from the run's profile 'fast'",)),
    "resume: another seed": (lambda e: resume(e, "--seed", 7), ("--seed 7 differs from the run's 0",)),
    "resume: another drop limit": (lambda e: resume(e, "--max-acc-drop", 5), ("--max-acc-drop 5.0 differs",)),
    "resume: the data changed": (resume_changed_data, ("the task's model or data changed since the run started (fingerprint",)),
}

RESUMES = {name for name in CASES if name.startswith("resume: ") and name not in ("resume: not a run", "resume: no such directory")}


def snapshot(root: Path) -> dict[str, object]:
    """Every file under `root` (size, modification time) and every folder."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else "dir" for p in root.rglob("*")}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_in_one_line_with_nothing_written(case, cli_inputs, tiny_module, tmp_path, capsys, monkeypatch, request):
    make_args, says = CASES[case]
    e = Env(tmp_path / "work", cli_inputs.space, cli_inputs.profile, tiny_module)
    e.tmp.mkdir()
    if case in RESUMES:
        e.run = e.tmp / "made"
        shutil.copytree(request.getfixturevalue("search_run").out, e.run)

    timed = []

    def worker(*args, **kwargs):
        timed.append(args)
        raise RuntimeError("no timing in this test")

    monkeypatch.setattr("autocompress.pipeline.LatencyWorker", worker)
    argv = [str(a) for a in make_args(e)]
    existed = e.out.exists()
    before = snapshot(e.tmp)
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert not timed, "the input was not refused before the teacher was timed"
    assert rc == 2, err
    assert len(err) == 1 and err[0].startswith("autocompress: error: "), err
    for fragment in says:
        assert fragment in err[0], (fragment, err[0])
    assert e.out.exists() == existed  # no run directory
    assert snapshot(e.tmp) == before  # nothing written next to it, nothing changed in a resumed run
