"""--storage: a run's study in an RDB outside its directory (the shape of workers on several
machines sharing a server). A SQLite file elsewhere stands in for the server here: Optuna
opens it as the same RDBStorage it opens PostgreSQL or MySQL with. The run records the URL
and a study name of its own; resume, `show` and `export` find the study there."""

from __future__ import annotations

import json

import optuna
import pytest

from autocompress.cli import main
from tests.helpers import search_args


@pytest.fixture(scope="module")
def shared(cli_inputs, tmp_path_factory):
    root = tmp_path_factory.mktemp("storage")
    url = f"sqlite:///{root / 'server' / 'studies.db'}"
    (root / "server").mkdir()
    runs = [root / "first", root / "second"]
    codes = [main(search_args(cli_inputs, "--budget", 2, "--storage", url, "--out", run)) for run in runs]
    return url, runs, codes


def test_the_study_lives_in_the_storage_under_a_name_of_its_own(shared):
    url, runs, codes = shared
    assert codes == [0, 0]
    names = []
    for run in runs:
        study = json.loads((run / "run.json").read_text())["study"]
        assert study["storage"] == url and study["name"].startswith(f"autocompress-{run.name}-")
        assert not (run / "study.db").exists()
        names.append(study["name"])
    assert sorted(s.study_name for s in optuna.get_all_study_summaries(url)) == sorted(names)
    for name in names:
        assert len([t for t in optuna.load_study(study_name=name, storage=url).trials if t.state.is_finished()]) == 2


def test_resume_show_and_export_use_the_runs_storage(shared, capsys, tmp_path):
    url, runs, _ = shared
    run = runs[0]
    assert main(["search", "--resume", str(run), "--budget", "3"]) == 0
    name = json.loads((run / "run.json").read_text())["study"]["name"]
    trials = optuna.load_study(study_name=name, storage=url).trials
    assert len([t for t in trials if t.state.is_finished()]) == 3
    assert not (run / "study.db").exists()

    capsys.readouterr()
    assert main(["show", str(run), "--trial", "2"]) == 0
    shown = capsys.readouterr().out
    for key in trials[2].params:
        assert key in shown
    from autocompress.inspect_run import study_params
    from autocompress.run import RunDir

    assert study_params(RunDir(run), 2) == {k: round(v, 10) if isinstance(v, float) else v for k, v in trials[2].params.items()}
    assert main(["export", str(run), "--trial", str(trials[0].number), "--out", str(tmp_path / "t0.onnx")]) == 0
    assert (tmp_path / "t0.onnx").stat().st_size > 0
