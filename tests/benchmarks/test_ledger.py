"""The reproduction ledger is generated: verdicts follow from the per-seed numbers, the table
renders every row, and REPRODUCIBILITY.md holds exactly what the scripts wrote."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[2] / "benchmarks" / "reproduce"
sys.path.insert(0, str(HERE))

import ledger  # noqa: E402
from rows import Reference, Row, read_all, write  # noqa: E402
import pytest  # noqa: E402


def row(win: list[float], lose: list[float], margin: float = 15.0) -> Row:
    return Row(id="x", claim="a beats b", source="s", setting="t", command="c", metric="m",
               per_seed={"a": win, "b": lose}, seeds=list(range(len(win))), expectation=("a", "b", margin))


def test_verdicts_follow_the_numbers():
    assert row([0.30, 0.31, 0.29], [0.12, 0.11, 0.13]).verdict() == "reproduced"
    assert row([0.20, 0.21, 0.22], [0.12, 0.11, 0.13]).verdict() == "direction reproduced"  # below the margin
    assert row([0.40, 0.10, 0.40], [0.12, 0.11, 0.13]).verdict() == "direction reproduced"  # one seed loses
    assert row([0.10, 0.11, 0.12], [0.12, 0.11, 0.13]).verdict() == "not reproduced"
    mean, std = row([0.30, 0.31, 0.29], [0.1] * 3).mean_std("a")
    assert round(mean, 6) == 30.0 and round(std, 6) == 1.0


def published(values: list[float], value: float = 98.7, tolerance: float = 2.0) -> Row:
    return Row(id="p", claim="m reaches the paper", source="s", setting="t", command="c", metric="m",
               per_seed={"m": values}, seeds=list(range(len(values))),
               reference=Reference("m", value, tolerance, "Paper 2017, Table 1", 0.4))


def test_published_reference_verdict_needs_mean_and_every_seed_within_tolerance():
    assert published([0.980, 0.975, 0.990]).verdict() == "reproduced"  # 98.2 mean, every seed within 2
    assert published([0.990, 0.960, 0.990]).verdict() == "not reproduced"  # mean 98.0 but one seed 2.7 below
    assert published([0.850, 0.860, 0.840]).verdict() == "not reproduced"
    assert published([0.850, 0.860, 0.840], value=85.0, tolerance=1.5).verdict() == "reproduced"
    assert published([0.850, 0.860, 0.840], value=87.0, tolerance=1.5).verdict() == "not reproduced"  # 2.0 off


def test_a_row_has_exactly_one_kind_of_claim_and_numbers_for_it():
    with pytest.raises(ValueError, match="exactly one"):
        Row(id="x", claim="c", source="s", setting="t", command="c", metric="m", per_seed={"a": [0.1]}, seeds=[0])
    with pytest.raises(ValueError, match="exactly one"):
        Row(id="x", claim="c", source="s", setting="t", command="c", metric="m", per_seed={"a": [0.1], "b": [0.1]},
            seeds=[0], expectation=("a", "b", 1.0), reference=Reference("a", 50.0, 1.0, "s"))
    with pytest.raises(ValueError, match="no per-seed numbers"):
        Row(id="x", claim="c", source="s", setting="t", command="c", metric="m", per_seed={"a": [0.1]}, seeds=[0],
            reference=Reference("b", 50.0, 1.0, "s"))


def test_published_reference_is_rendered_as_published_not_as_a_method(tmp_path):
    write(published([0.850, 0.860, 0.840]), tmp_path)
    table = ledger.render(read_all(tmp_path))
    assert "m 85.0 ± 1.0; published m 98.7 ± 0.4 (Paper 2017, Table 1); reproduced means within 2 points" in table
    assert "**not reproduced**" in table
    summary = read_all(tmp_path)[0]["summary"]
    assert list(summary) == ["m"] and summary["m"] == pytest.approx([85.0, 1.0])  # the paper is no measured method


def test_table_renders_rows_and_replaces_only_its_block(tmp_path):
    write(row([0.30, 0.31, 0.29], [0.12, 0.11, 0.13]), tmp_path)
    table = ledger.render(read_all(tmp_path))
    assert "a 30.0 ± 1.0; b 12.0 ± 1.0" in table and "**reproduced**" in table
    text = "# R\n\nprose\n\n" + ledger.START + "\nold\n" + ledger.END + "\n\nmore prose\n"
    new = ledger.update(text, table)
    assert "old" not in new and new.startswith("# R\n\nprose") and new.endswith("more prose\n")


def test_reproducibility_md_is_up_to_date():
    done = subprocess.run([sys.executable, str(HERE / "ledger.py"), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, "run python benchmarks/reproduce/ledger.py to regenerate REPRODUCIBILITY.md"
