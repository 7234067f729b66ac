"""The reproduction ledger is generated: verdicts follow from the per-seed numbers, the table
renders every row, and REPRODUCIBILITY.md holds exactly what the scripts wrote."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[2] / "benchmarks" / "reproduce"
sys.path.insert(0, str(HERE))

import ledger  # noqa: E402
from rows import Row, read_all, write  # noqa: E402


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
