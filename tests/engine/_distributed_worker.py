"""One rank of the 2-process test (helper module, not tests): ``torchrun --nproc_per_node 2
_distributed_worker.py OUT`` runs finetune, replay and iCaRL on split-digits and MAML on a
small synthetic few-shot scenario, distributed, and writes what each rank ended with to
``OUT/rank<r>.json`` (the test compares ranks with each other and with one process); then it
runs ``cfs bench`` in ``OUT/cli`` as ``python -m cfs bench`` would."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch

from cfs import testing
from cfs.cli import main
from cfs.engine import distributed

sys.path.insert(0, str(Path(__file__).parent))
from fewshot_data import episodic_scenario  # noqa: E402

CONTINUAL = ("finetune", "replay", "icarl")
#: the settings both the distributed and the single-process runs use
CONTINUAL_CONFIG = {"epochs": 1, "batch_size": 32, "max_train_per_class": 60}
MAML_CONFIG = {"epochs": 1, "backbone": "mlp", "optimizer": "adam", "lr": 3e-3, "meta_iterations": 6,
               "meta_batch": 4, "val_interval": 3, "val_episodes": 4, "test_episodes": 10}


def digest(obj) -> str:
    """A hash of a nested structure of tensors and plain values (a strategy's state)."""
    h = hashlib.blake2b(digest_size=12)

    def walk(o):
        if isinstance(o, torch.Tensor):
            t = o.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(o, dict):
            for k in sorted(o, key=str):
                h.update(str(k).encode())
                walk(o[k])
        elif isinstance(o, (list, tuple)):
            for v in o:
                walk(v)
        else:
            h.update(repr(o).encode())

    walk(obj)
    return h.hexdigest()


def summary(result) -> dict:
    """What a rank ended with: its results, its weights' and its strategies' state hashes."""
    state = result.state
    return {"rows": state.results.rows, "epochs": [[e.loss, e.accuracy] for e in result.timings.epochs],
            "model": digest(state.model.state_dict()),
            "strategies": digest([s.state_dict() for s in state.strategies if hasattr(s, "state_dict")]),
            "episodic": getattr(state.extra.get("episodic"), "test_accuracies", None)}


def run_all() -> dict:
    out = {spec: summary(testing.run(spec, **CONTINUAL_CONFIG)) for spec in CONTINUAL}
    out["maml"] = summary(testing.run("maml", scenario=episodic_scenario(), **MAML_CONFIG))
    return out


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    record = {"world_size": distributed.world_size(), "rank": distributed.rank(), "runs": run_all()}
    (folder / f"rank{distributed.rank()}.json").write_text(json.dumps(record))
    os.chdir(folder / "cli")  # default run folders go to ./runs: one per run, from rank 0 only
    code = main(["bench", "--strategy", "finetune", "--epochs", "1", "--max-train-per-class", "60",
                 "--device", "cpu", "--no-progress"])
    distributed.shutdown()
    sys.exit(code)
