"""report.md on hand-made runs: the teacher, one table row per front point (fastest first,
nothing beyond the limit), the drop limit and where it came from, the command and the machine."""

from __future__ import annotations

from autocompress.evaluation.metrics import BUILTIN
from autocompress.report.markdown import command_line, report_markdown
from autocompress.report.read import read_run
from tests.report.runs import done, make_run

RECORDS = [
    done(0, 0.90, 0.50, 50_000, "no prune · kd 10 a=0.5 T=4 · int8 qop/u8"),
    done(1, 0.88, 0.25, 25_000, "prune 0.5 l1 · kd 10 a=0.5 T=4 · int8 qop/u8"),
    done(2, 0.70, 0.10, 10_000, "prune 0.9 l1 · fp32"),  # 20 pt down: beyond any limit here
    done(3, 0.86, 0.80, 90_000, "prune 0.25 l1 · fp32"),  # dominated by 0
    {"number": 4, "state": "FAIL", "description": "prune 0.7 l1 · fp32", "failure_reason": "export: boom"},
]


def table_rows(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| trial")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in rows]


def test_the_report_has_the_teacher_the_front_and_how_the_run_was_made(tmp_path):
    run = read_run(make_run(tmp_path / "run", RECORDS, max_acc_drop=5.0, test={0: 0.91, 1: 0.87}))
    text = report_markdown(run)
    teacher = next(line for line in text.splitlines() if line.startswith("**Teacher**"))
    assert "val accuracy 90.00%" in teacher and "2 ms" in teacher and "97.7 KB" in teacher  # 100,000 bytes
    rows = table_rows(text)
    assert [r[0] for r in rows] == ["1", "0"]  # the front, fastest first; 2 beyond the limit, 3 dominated, 4 failed
    one = rows[0]
    assert one[1] == "prune 0.5 l1 · kd 10 · int8 qop/u8"  # the description, shortened
    assert one[2:] == ["88.00%", "87.00%", "2.00 pt", "0.5 ms", "4.00×", "4.00×"]
    assert "drop limit 5 pt below the teacher." in text and "default" not in text
    assert "2 of 4 completed trials (5 in all)" in text
    assert "- Command: `autocompress search --budget 9`" in text
    machine = next(line for line in text.splitlines() if line.startswith("- Machine:"))
    assert "Test CPU 9000" in machine and "avx512_vnni" in machine and "4 cores" in machine


def test_a_run_without_a_limit_names_the_searchs_default_and_a_label_column_names_the_rows(tmp_path):
    records = [dict(r, label=f"L{r['number']}") for r in RECORDS]
    run = read_run(make_run(tmp_path / "run", records))
    assert not run.limit_given and run.drop_limit == 10.0
    text = report_markdown(run)
    assert "drop limit 10 pt below the teacher (the search's default)" in text
    rows = table_rows(text)
    assert {r[0]: r[1] for r in rows} == {"0": "L0", "1": "L1"}  # 2 is 20 pt down: beyond the default 10 too
    assert all(len(r) == 7 for r in rows)  # no test metric recorded: no test column


def test_a_metric_where_lower_is_better(tmp_path):
    records = [done(0, 0.10, 0.5, 500), done(1, 0.105, 0.3, 300), done(2, 0.5, 0.2, 200)]
    run = read_run(make_run(tmp_path / "run", records, metric=BUILTIN["mse"], teacher_value=0.1, max_acc_drop=0.01))
    text = report_markdown(run)
    assert "**Teacher**: val mse 0.1, test 0.1;" in text and "drop limit 0.01 above the teacher" in text
    assert [r[0] for r in table_rows(text)] == ["1", "0"]
    assert table_rows(text)[0][3] == "0.005"  # the drop in mse units


def test_the_command_as_recorded():
    assert command_line({"command": ["/x/bin/autocompress", "search", "--out", "a b"]}) == "autocompress search --out 'a b'"
    assert command_line({"command": ["train.py", "--fast"]}) == "python train.py --fast"
    assert command_line({}) == "(not recorded)"
