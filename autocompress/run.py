"""The run directory: everything a search writes, in one folder that can be resumed.

    run.json          manifest: command, seed, sampler, budget, task / space / profile
                      fingerprints, package versions, CPU model and flags
    space.yaml        the resolved search space      profile.yaml  the resolved profile
    study.db          the Optuna storage (SQLite; optuna-dashboard can open it); absent with --storage URL
    teacher/          the teacher's ONNX file (the latency reference)
    trials/N/         model.onnx + model.pt per trial; only the front's are kept at the end
    trials.csv  pareto.csv  pareto.png  summary.txt
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import platform
import shutil
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

from autocompress.atomic import unwritable_reason, write_text_atomic
from autocompress.errors import RunDirError
from autocompress.names import TRIALS_DIR

MANIFEST = "run.json"
PACKAGES = ("autocompress", "torch", "optuna", "onnx", "onnxruntime", "torch-pruning", "numpy", "scikit-learn", "pandas")


def cpu_info() -> dict[str, Any]:
    """CPU model and the SIMD flags that decide int8 speed (avx2, avx512*, vnni)."""
    model, flags = platform.processor() or platform.machine(), []
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name") and model in ("", platform.machine(), platform.processor()):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = sorted(f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "fma", "sse4", "amx")) or "vnni" in f)
                break
    except OSError:
        pass
    return {"model": model, "flags": flags, "cores": os.cpu_count(), "machine": platform.machine()}


def package_versions() -> dict[str, Optional[str]]:
    out: dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def default_run_dir(task_name: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{task_name}-{stamp}"


@dataclass
class RunDir:
    path: Path

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    @property
    def storage_url(self) -> str:
        """Where the run's study lives: its own study.db, or the RDB URL given with
        --storage when the run was created (run.json's `study`)."""
        return self._study().get("storage") or f"sqlite:///{(self.path / 'study.db').resolve()}"

    @property
    def study_name(self) -> str:
        """The study's name in its storage: STUDY_NAME in study.db; a name of its own in a
        shared RDB (several runs may live there)."""
        from autocompress.backends import STUDY_NAME

        return self._study().get("name") or STUDY_NAME

    @property
    def external_storage(self) -> bool:
        """Whether the study lives outside the run directory (--storage)."""
        return bool(self._study().get("storage"))

    def _study(self) -> dict[str, Any]:
        try:
            return dict(self.read_manifest().get("study") or {})
        except (OSError, ValueError):  # not written yet: a run being created keeps its study in study.db
            return {}

    def trial_dir(self, number: int) -> Path:
        return self.path / TRIALS_DIR / str(number)

    def read_manifest(self) -> dict[str, Any]:
        return json.loads(self.manifest_path.read_text())

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_text_atomic(self.manifest_path, json.dumps(manifest, indent=2, default=str) + "\n")

    # ---- what the run was made with
    def space(self):
        """The run's resolved search space (space.yaml), not yet bound to a model."""
        import yaml

        from autocompress.space import SearchSpace

        path = self.path / "space.yaml"
        return SearchSpace.from_dict(yaml.safe_load(path.read_text()), source=str(path))

    def bound_space(self, task):
        """The run's search space bound to its task's model, as in the search."""
        space, _ = self.space().bind(task.teacher, task.example)
        return space

    def profile(self):
        """The run's resolved hardware profile (profile.yaml), not checked against this machine."""
        import yaml

        from autocompress.hardware import profile_from_dict

        path = self.path / "profile.yaml"
        return profile_from_dict(yaml.safe_load(path.read_text()), source=str(path))

    # ---- creation / resume
    @classmethod
    def check_new(cls, path: Path, *, field: str = "--out") -> "RunDir":
        """Refuse a path that already holds something, or where the run directory could
        not be created or written (before anything is written, so that a search does not
        find out only after its teacher was loaded and measured)."""
        if path.is_file():
            raise RunDirError(f"{field} {path} is a file; give a directory (new, or empty)")
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise RunDirError(f"{field} {path} already exists and is not empty; use --resume {path} or another {field}")
        check_writable(path, field=field)
        return cls(path)

    @classmethod
    def open_existing(cls, path: Path, *, field: str = "--resume") -> "RunDir":
        """The run at `path`, refused (naming the command-line `field`) if it is not one."""
        run = cls(path)
        if not run.manifest_path.is_file():
            raise RunDirError(f"{field} {path}: not a run directory (no {MANIFEST})")
        return run

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def lock(self, *, shared: bool = False):
        """Hold a lock for the life of the returned file object: exclusive, one driver per
        run; `shared` (--worker): any number of workers, but no driver without --worker."""
        f = open(self.path / ".lock", "w")
        try:
            fcntl.flock(f, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise RunDirError(f"{self.path} is in use by another autocompress process"
                              + ("" if shared else " (or by --worker processes: join them with --resume RUN_DIR --worker)")) from None
        return f

    def remove_trial_artifacts(self, keep: set[int]) -> None:
        root = self.path / "trials"
        if not root.is_dir():
            return
        for d in root.iterdir():
            if d.is_dir() and d.name.isdigit() and int(d.name) not in keep:
                shutil.rmtree(d, ignore_errors=True)


def check_writable(path: Path, *, field: str) -> None:
    """RunDirError naming the command-line `field` and `path` unless a directory can be
    created (or written) there (atomic.unwritable_reason)."""
    reason = unwritable_reason(path)
    if reason is not None:
        raise RunDirError(f"{field} {path}: cannot write there: {reason}")


def load_run_task(run: RunDir):
    """The task a run was made with (the demo, or the user's files named in run.json; a
    task built in Python cannot be loaded again from the run: the caller passes it)."""
    from autocompress.tasks import load_task

    m = run.read_manifest()
    spec = m["task"]
    if spec.get("kind") == "demo":
        return load_task(progress=lambda s: None)
    if spec.get("kind") == "python":
        raise RunDirError(f"{run.path}: the run's task was built in Python; this needs it: autocompress.load_run(path, task=task)")
    if spec.get("kind") == "task":
        return load_task(task=spec["task"], progress=lambda s: None)
    return load_task(spec["model"], spec["data"], m.get("checkpoint"), progress=lambda s: None)


def new_manifest(**fields: Any) -> dict[str, Any]:
    return {
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "command": sys.argv,
        "packages": package_versions(),
        "cpu": cpu_info(),
        **fields,
    }
