"""``training_results.csv`` and ``eval_results.csv`` in the layout of Avalanche's ``CSVLogger``.

Avalanche 0.6.0 writes one eval row per evaluated experience and eval call (the call before any
training has ``training_exp`` ``None``) and one training row per epoch; a value it did not
receive is written as ``0`` and every float with four decimals. Validation columns stay ``0``
because cfs does no periodic evaluation during training (Avalanche's ``eval_every=0`` with no
``eval_streams``). The rows come from :func:`cfs.evaluation.names.history`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from cfs.evaluation.names import exp_name, train_epoch_names

TRAIN_HEADER = ("training_exp", "epoch", "training_accuracy", "val_accuracy", "training_loss", "val_loss")
EVAL_HEADER = ("eval_exp", "training_exp", "eval_accuracy", "eval_loss", "forgetting")


def _cell(value: Any) -> str:
    """Avalanche's ``CSVLogger._val_to_str`` for the scalar types it is given."""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def eval_rows(history: Iterable[dict[str, Any]], n_experiences: int) -> list[list[str]]:
    rows = []
    for entry in history:
        if entry["phase"] != "eval":
            continue
        m = entry["metrics"]
        for j in range(n_experiences):
            rows.append([str(j), str(entry["training_exp"]), _cell(m.get(exp_name("Top1_Acc_Exp", j), 0)),
                         _cell(m.get(exp_name("Loss_Exp", j), 0)),
                         _cell(m.get(exp_name("ExperienceForgetting", j), 0))])
    return rows


def training_rows(history: Iterable[dict[str, Any]]) -> list[list[str]]:
    acc_name, loss_name, _ = train_epoch_names()
    return [[str(e["training_exp"]), str(e["epoch"]), _cell(e["metrics"].get(acc_name, 0)), "0",
             _cell(e["metrics"].get(loss_name, 0)), "0"] for e in history if e["phase"] == "train"]


def write_avalanche_csvs(folder: Path, history: list[dict[str, Any]], n_experiences: int) -> None:
    """Write both files into ``folder`` (comma-separated, like ``print(..., sep=",")``)."""
    for name, header, rows in (("training_results.csv", TRAIN_HEADER, training_rows(history)),
                               ("eval_results.csv", EVAL_HEADER, eval_rows(history, n_experiences))):
        lines = [",".join(header)] + [",".join(r) for r in rows]
        (Path(folder) / name).write_text("\n".join(lines) + "\n")
