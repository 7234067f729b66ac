"""``cfs report`` tells runs apart: labels and columns from the settings that differ, seed
groups as mean ± std, blanks for what was not measured, escaped Markdown, unfinished runs
skipped. The runs are real short split-digits runs written as ``cfs bench`` writes them."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from cfs import testing
from cfs.cli import main
from cfs.evaluation.writer import write_run

SUMMARY = {"final acc %": "last_accuracy", "avg inc acc %": "average_incremental_accuracy",
           "avg acc %": "average_accuracy", "forgetting %": "forgetting", "BWT %": "backward_transfer",
           "FWT %": "forward_transfer"}
FOLDERS = {"finetune": ["finetune-0", "finetune-1", "finetune-2"],
           "replay, replay.budget=40": ["replay-0", "replay-1", "replay-2"],
           "replay, replay.budget=10": ["replay-b10"]}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 strategies x 3 seeds, and one replay run with another budget."""
    root = tmp_path_factory.mktemp("seeded")
    for spec, options in (("finetune", None), ("replay", {"replay": {"budget": 40}})):
        for seed in range(3):
            write_run(testing.run(spec, epochs=1, seed=seed, options=options), root / f"{spec}-{seed}")
    write_run(testing.run("replay", epochs=1, seed=0, options={"replay": {"budget": 10}}), root / "replay-b10")
    return root


def tables(md: str) -> list[list[list[str]]]:
    """Every pipe table of ``md`` as rows of cells (header first, the alignment row dropped);
    a cell may hold an escaped ``\\|``."""
    found: list[list[list[str]]] = []
    previous = ""
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
            if not previous.startswith("|"):
                found.append([])
            if not set("".join(cells)) <= set("-:"):
                found[-1].append(cells)
        previous = line
    return found


def report(tmp_path: Path, *folders: Path) -> tuple[str, list[list[list[str]]]]:
    out = tmp_path / "report"
    assert main(["report", *map(str, folders), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    return md, tables(md)


def metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def expected(folders: list[Path], header: str) -> list[float]:
    """The numbers behind one column, straight from the runs' metrics.json files."""
    if header == "time s":
        return [metrics(f)["time"]["total_seconds"] for f in folders]
    return [100 * metrics(f)["summary"][SUMMARY[header]] for f in folders]


def check_cell(cell: str, values: list[float]) -> None:
    """``mean ± sample std`` (one decimal) of several seeds, the plain value of one."""
    if len(values) == 1:
        assert "±" not in cell and abs(float(cell) - values[0]) <= 0.05 + 1e-9, (cell, values)
        return
    mean, std = (float(x) for x in cell.split(" ± "))
    assert abs(mean - np.mean(values)) <= 0.05 + 1e-9, (cell, values)
    assert abs(std - np.std(values, ddof=1)) <= 0.05 + 1e-9, (cell, values)


def test_seed_groups_are_mean_and_std_with_differing_keys_as_columns(seeded, tmp_path, capsys):
    md, (grouped, per_seed) = report(tmp_path, seeded)
    assert capsys.readouterr().err.count("skipping") == 0
    metric_headers = list(SUMMARY) + ["time s"]
    assert grouped[0] == ["run", "scenario", "replay.budget", "seeds"] + metric_headers
    rows = {r[0]: r for r in grouped[1:]}
    assert set(rows) == set(FOLDERS)
    for label, names in FOLDERS.items():
        row = dict(zip(grouped[0], rows[label]))
        assert row["seeds"] == str(len(names)) and row["scenario"] == "split-digits"
        assert row["replay.budget"] == ("" if label == "finetune" else label.rsplit("=", 1)[1])
        for header in metric_headers:
            check_cell(row[header], expected([seeded / n for n in names], header))
    # the per-seed rows stay available, each labelled by what differs, with its seed
    assert per_seed[0] == ["run", "scenario", "replay.budget", "seed"] + metric_headers
    assert len(per_seed) == 1 + 7
    by_label = {r[0]: dict(zip(per_seed[0], r)) for r in per_seed[1:]}
    for seed in range(3):
        row = by_label[f"replay, replay.budget=40, seed={seed}"]
        assert row["seed"] == str(seed)
        for header in metric_headers:
            check_cell(row[header], expected([seeded / f"replay-{seed}"], header))
    assert set(by_label) >= {"finetune, seed=0", "replay, replay.budget=10, seed=0"}


def test_runs_that_differ_in_nothing_but_the_strategy_keep_plain_labels(seeded, tmp_path):
    _, (only,) = report(tmp_path, seeded / "finetune-1", seeded / "replay-1")
    assert only[0][:2] == ["run", "scenario"] and "seed" not in only[0] and "seeds" not in only[0]
    assert [r[0] for r in only[1:]] == ["finetune", "replay"]  # replay.budget is replay's only


def test_skipped_evaluations_are_blank_not_zero(seeded, tmp_path):
    run = tmp_path / "in" / "partial"
    shutil.copytree(seeded / "finetune-0", run)
    data = metrics(run)
    data["summary"]["forward_transfer"] = float("nan")  # written as NaN by json.dumps
    data["summary"]["backward_transfer"] = None
    del data["time"]
    n = len(data["accuracy_matrix"])
    data["accuracy_matrix"] = [[v if j <= i else None for j, v in enumerate(row)]
                               for i, row in enumerate(data["accuracy_matrix"])]
    (run / "metrics.json").write_text(json.dumps(data))
    md, (table,) = report(tmp_path, run)
    row = dict(zip(table[0], table[1]))
    assert row["FWT %"] == row["BWT %"] == row["time s"] == ""
    check_cell(row["final acc %"], expected([run], "final acc %"))
    assert "nan" not in md.lower() and n == 5
    assert (tmp_path / "report" / "accuracy_matrix_finetune.png").is_file()


def test_pipes_in_names_and_option_values_do_not_shift_columns(seeded, tmp_path):
    a, b, c = (tmp_path / "in" / name for name in "abc")
    for folder in (a, b, c):
        shutil.copytree(seeded / "replay-0", folder)
    cfg = yaml.safe_load((a / "config.yaml").read_text())
    cfg["options"]["replay"]["selection"] = "her|ding"
    (a / "config.yaml").write_text(yaml.safe_dump(cfg))
    data = metrics(c)
    data["strategy"] = "my|replay"
    (c / "metrics.json").write_text(json.dumps(data))
    md, (table,) = report(tmp_path, a, b, c)
    assert "her\\|ding" in md and "my\\|replay" in md
    assert all(len(r) == len(table[0]) for r in table)
    assert table[0][:3] == ["run", "scenario", "replay.selection"]
    assert [r[0] for r in table[1:]] == ["replay, replay.selection=her|ding", "replay, replay.selection=default",
                                         "my|replay"]
    assert [r[2] for r in table[1:]] == ["her|ding", "default", ""]
    page = (tmp_path / "report" / "report.html").read_text()
    assert "<td>her|ding</td>" in page and "<td>my|replay</td>" in page
    for tr in re.findall(r"<tr>(.*?)</tr>", page):
        assert tr.count("<td>") + tr.count("<th>") == len(table[0])


def set_status(folder: Path, status: str | None) -> None:
    info = json.loads((folder / "run.json").read_text())
    info.pop("status", None)
    if status is not None:
        info["status"] = status
    (folder / "run.json").write_text(json.dumps(info))


def test_unfinished_runs_are_skipped_with_one_line_each(seeded, tmp_path, capsys):
    parent = tmp_path / "runs"
    shutil.copytree(seeded / "finetune-0", parent / "running")
    set_status(parent / "running", "running")
    shutil.copytree(seeded / "finetune-1", parent / "failed")
    set_status(parent / "failed", "failed")
    shutil.copytree(seeded / "finetune-2", parent / ".finetune-2.tmp")  # a killed run's temporary folder
    assert main(["report", str(parent), "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and not any(".finetune-2.tmp" in line for line in err)
    assert sorted(line.split("(")[0] for line in err[:2]) == [f"cfs report: skipping {parent / name} "
                                                              for name in ("failed", "running")]
    assert "status 'running'" in " ".join(err) and err[2].startswith("cfs: error: no finished run")
    assert not (tmp_path / "none").exists()
    # a run.json without a status is an older, finished run
    shutil.copytree(seeded / "replay-2", parent / "older")
    set_status(parent / "older", None)
    md, (table,) = report(tmp_path, parent)
    assert [r[0] for r in table[1:]] == ["replay"]
    assert capsys.readouterr().err.count("skipping") == 2


def test_episodic_seed_groups(tmp_path):
    """Few-shot runs: accuracy and interval as mean ± std over seeds, the episode count once."""
    accs = {0: 0.90, 1: 0.94, 2: 0.95}
    for seed, acc in accs.items():
        run = tmp_path / "in" / f"protonet-{seed}"
        run.mkdir(parents=True)
        (run / "run.json").write_text(json.dumps({"seed": seed, "strategy": "protonet", "status": "finished"}))
        (run / "metrics.json").write_text(json.dumps({
            "strategy": "protonet", "kind": "episodic", "scenario": "omniglot",
            "summary": {"accuracy": acc, "ci95": 0.01 * (seed + 1), "episodes": 600}}))
    md, (grouped, per_seed) = report(tmp_path, tmp_path / "in")
    assert grouped[0] == ["run", "scenario", "seeds", "accuracy %", "95% CI", "episodes"]
    assert grouped[1][:3] == ["protonet", "omniglot", "3"] and grouped[1][5] == "600"
    check = [100 * a for a in accs.values()]
    mean, std = (float(x) for x in grouped[1][3].split(" ± "))
    assert abs(mean - np.mean(check)) <= 0.005 and abs(std - np.std(check, ddof=1)) <= 0.005
    assert grouped[1][4] == "+-2.00 ± 1.00"
    assert [r[0] for r in per_seed[1:]] == ["protonet, seed=0", "protonet, seed=1", "protonet, seed=2"]
