"""What a loop puts in a checkpoint and how it continues from one (cfs.engine.checkpoint).

A resumed run rebuilds everything a fresh run builds before its first experience (same seed,
so the same initial model; ``cfs_before_run`` runs again), then overwrites it with the
checkpoint: weights (the head grown to its saved width), every strategy's ``state_dict``,
every random generator, the metrics and timings so far and the loop position. Random numbers
are restored last, so whatever the rebuilding drew does not matter: the resumed run draws
exactly what the uninterrupted one drew after the checkpoint.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch

from cfs.data.arrays import ArrayDataset
from cfs.engine.checkpoint import rng_state, set_rng_state
from cfs.errors import CfsError

if TYPE_CHECKING:  # pragma: no cover
    from cfs.engine.continual import ContinualLoop
    from cfs.engine.episodic import EpisodicLoop
    from cfs.engine.state import RunState


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu()  # Checkpointer.write copies the whole payload


def model_payload(state: "RunState") -> dict[str, Any]:
    head = getattr(state.model, "head", None)
    return {"model": {k: _cpu(v) for k, v in state.model.state_dict().items()},
            "head_out": int(getattr(head, "out_features", 0) or 0)}


def restore_model(state: "RunState", data: dict[str, Any]) -> None:
    head = getattr(state.model, "head", None)
    width = data.get("head_out", 0)
    if hasattr(head, "expand") and head.out_features < width:
        head.expand(width - head.out_features)
    try:
        state.model.load_state_dict(data["model"])
    except RuntimeError as exc:
        raise CfsError(f"the checkpoint does not fit this run's model: {str(exc).splitlines()[0]}") from None


def strategies_payload(state: "RunState") -> dict[str, Any]:
    return {s.name: s.state_dict() for s in state.strategies}


def restore_strategies(state: "RunState", saved: dict[str, Any]) -> None:
    names = sorted(s.name for s in state.strategies)
    if sorted(saved) != names:
        raise CfsError(f"the checkpoint was written by strategies {'+'.join(sorted(saved))}, not {'+'.join(names)}")
    for s in state.strategies:
        s.load_state_dict(saved[s.name])


def optimisation_payload(state: "RunState", scaler: Any) -> dict[str, Any]:
    return {"optimizer": state.optimizer.state_dict() if state.optimizer is not None else None,
            "scheduler": state.scheduler.state_dict() if state.scheduler is not None else None,
            "scaler": scaler.state_dict() if scaler.is_enabled() else None}


def _restore_optimisation_state(state: "RunState", scaler: Any, data: dict[str, Any]) -> None:
    if data.get("optimizer") is not None and state.optimizer is not None:
        state.optimizer.load_state_dict(data["optimizer"])
    if data.get("scheduler") is not None and state.scheduler is not None:
        state.scheduler.load_state_dict(data["scheduler"])
    if data.get("scaler") is not None and scaler.is_enabled():
        scaler.load_state_dict(data["scaler"])


# --------------------------------------------------------------------------- continual loop
def continual_payload(loop: "ContinualLoop", experience: int, epoch: int | None) -> dict[str, Any]:
    """Checkpoint of a continual run: next is ``experience`` (at ``epoch`` when it is
    mid-experience, ``None`` at an experience boundary)."""
    s = loop.state
    payload: dict[str, Any] = {
        "loop": "continual", "position": {"experience": experience, "epoch": epoch},
        **model_payload(s), "strategies": strategies_payload(s),
        "counters": {"n_seen": s.n_seen, "iteration": s.iteration},
        "results": dataclasses.asdict(s.results),
        "timings": {"train_seconds": list(loop.timings.train_seconds), "eval_seconds": list(loop.timings.eval_seconds),
                    "epochs": [dataclasses.asdict(e) for e in loop.timings.epochs]},
    }
    if epoch is not None:  # mid-experience: the optimiser and the prepared training data too
        payload["optimisation"] = optimisation_payload(s, loop.step.scaler)
        own = s.n_incoming_rows
        joined = s.train_data.x[own:], s.train_data.y[own:]
        payload["train_data"] = {"n_incoming_rows": own, "joined_x": _cpu(joined[0]), "joined_y": _cpu(joined[1])}
    payload["rng"] = rng_state(s.generator)  # last: nothing above draws random numbers
    return payload


def restore_continual(loop: "ContinualLoop", data: dict[str, Any]) -> tuple[int, int | None]:
    """Put a checkpoint back into a freshly built run; return (next experience, epoch or None)."""
    from cfs.engine.epoch_log import EpochLog

    if data.get("loop") != "continual":
        raise CfsError("the checkpoint is not of a class-incremental run")
    s = loop.state
    restore_model(s, data)
    restore_strategies(s, data["strategies"])
    s.n_seen, s.iteration = data["counters"]["n_seen"], data["counters"]["iteration"]
    for key, value in data["results"].items():
        setattr(s.results, key, value)
    t = data["timings"]
    loop.timings.train_seconds, loop.timings.eval_seconds = list(t["train_seconds"]), list(t["eval_seconds"])
    loop.timings.epochs = [EpochLog(**e) for e in t["epochs"]]
    experience, epoch = data["position"]["experience"], data["position"]["epoch"]
    if epoch is not None:
        exp = s.scenario.experiences[experience]
        td = data["train_data"]
        own = exp.train if td["n_incoming_rows"] else ArrayDataset(exp.train.x[:0], exp.train.y[:0])
        joined = ArrayDataset(td["joined_x"], td["joined_y"])
        s.train_data = ArrayDataset.concat([own, joined]).to(s.device)
        s.n_incoming_rows = td["n_incoming_rows"]
        s.experience = exp
    set_rng_state(data["rng"], s.generator)
    return experience, epoch


def restore_optimisation(loop: Any, data: dict[str, Any] | None) -> None:
    """Optimizer, scheduler and GradScaler states of a mid-experience checkpoint."""
    if data is not None and "optimisation" in data:
        _restore_optimisation_state(loop.state, loop.step.scaler, data["optimisation"])


# --------------------------------------------------------------------------- episodic loop
def episodic_payload(loop: "EpisodicLoop", iteration: int, best: dict | None, accumulators: dict[str, Any]) -> dict:
    """Checkpoint of an episodic run after ``iteration`` meta-iterations."""
    s = loop.state
    return {
        "loop": "episodic", "position": {"iteration": iteration},
        **model_payload(s), "strategies": strategies_payload(s),
        "extra_parameters": [_cpu(p) for p in loop.step.extra],
        "optimisation": optimisation_payload(s, loop.step.scaler),
        "results": dataclasses.asdict(loop.results),
        "best": None if best is None else {"model": {k: _cpu(v) for k, v in best["model"].items()},
                                           "extra": [_cpu(p) for p in best["extra"]]},
        "accumulators": accumulators,
        "timings": {"train_seconds": list(loop.timings.train_seconds)},
        "rng": rng_state(s.generator),
    }


def restore_episodic(loop: "EpisodicLoop", data: dict[str, Any]) -> tuple[int, dict | None, dict[str, Any]]:
    """Put an episodic checkpoint back; return (meta-iterations done, best snapshot, accumulators)."""
    if data.get("loop") != "episodic":
        raise CfsError("the checkpoint is not of an episodic run")
    s = loop.state
    restore_model(s, data)
    restore_strategies(s, data["strategies"])
    with torch.no_grad():
        for p, v in zip(loop.step.extra, data["extra_parameters"]):
            p.copy_(v)
    _restore_optimisation_state(s, loop.step.scaler, data["optimisation"])
    for key, value in data["results"].items():
        setattr(loop.results, key, value)
    best = data["best"]
    if best is not None:
        best = {"model": {k: v.to(s.device) for k, v in best["model"].items()},
                "extra": [v.to(s.device) for v in best["extra"]]}
    set_rng_state(data["rng"], s.generator)
    return data["position"]["iteration"], best, data["accumulators"]
