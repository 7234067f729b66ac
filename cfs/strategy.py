"""The small base class every strategy plugin derives from.

A strategy is a class registered by name (``cfs_add_strategies``). For each run the engine
makes one instance per composed name (``--strategy replay+lwf`` makes two) and registers the
instances as pluggy plugins for the run's duration, so their ``@hookimpl`` methods run at the
hook points of :mod:`cfs.hookspec`. A strategy that implements no hook is plain fine-tuning.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, ClassVar

import torch

from cfs.errors import CfsError, did_you_mean


@dataclasses.dataclass
class NoOptions:
    """A strategy without hyper-parameters."""


class Strategy:
    """Base class: ``name``, ``compatibility``, an ``Options`` dataclass, checkpointable state.

    Subclasses document the method (paper, equations, defaults) in their docstring; the first
    line is what ``cfs list`` shows.
    """

    name: ClassVar[str] = ""
    compatibility: ClassVar[frozenset[str]] = frozenset({"class-incremental"})
    Options: ClassVar[type] = NoOptions
    #: Replacement (``firstresult``) hooks whose answer here is only a fallback: when another
    #: composed strategy answers the same hook, that answer wins (a declared precedence).
    fallback_hooks: ClassVar[frozenset[str]] = frozenset()
    #: Replacement hook -> the name of a shared computation this strategy's answer is (for
    #: example ``{"cfs_base_loss": "cfs.losses.new_class_cross_entropy"}``). Strategies whose
    #: answers name the same computation compose: they would all answer the same thing.
    shared_answers: ClassVar[dict[str, str]] = {}

    def __init__(self, options: Any | None = None) -> None:
        self.options = options if options is not None else self.Options()

    def inactive_hooks(self) -> frozenset[str]:
        """Hooks this class implements that this instance leaves out with its options (they are
        not registered, so they are never called and cannot conflict with a composed strategy).
        Override, for example, to answer ``cfs_base_loss`` only when an option asks for it."""
        return frozenset()

    @classmethod
    def make_options(cls, values: dict[str, Any] | None) -> Any:
        """Validate ``values`` against :attr:`Options`, naming any unknown key."""
        values = dict(values or {})
        fields = {f.name: f for f in dataclasses.fields(cls.Options)}
        for key in values:
            if key not in fields:
                valid = ", ".join(fields) or "none"
                hint = did_you_mean(key, fields) or f" (valid: {valid})"
                raise CfsError(f"unknown option {cls.name}.{key}{hint}")
        hints = typing.get_type_hints(cls.Options)
        for key, value in list(values.items()):
            values[key] = _checked(f"{cls.name}.{key}", value, hints.get(key))
        try:
            return cls.Options(**values)
        except (TypeError, ValueError) as exc:
            raise CfsError(f"bad options for {cls.name}: {exc}") from exc

    # -- checkpointing. Optional today: no engine code calls these yet (checkpoint/resume is
    # its own issue); a strategy that learns across experiences should still implement them so
    # that resume works when it lands. The round-trip tests of first-party strategies use them.
    def state_dict(self) -> dict[str, Any]:
        """Tensors and values to restore this strategy mid-stream (memories, Fisher, teachers)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


def _checked(name: str, value: Any, hint: Any) -> Any:
    """``value`` as the option's declared type, or a one-line error:
    ``-o derpp.alpha=abc`` must fail here, not as a traceback mid-run."""
    if hint is None or hint is Any:
        return value
    allowed = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    for t in allowed:
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, int) and abs(value) >= 2**1023:
                raise CfsError(f"option {name} is beyond the range of a float")
            if not math.isfinite(value):  # nan/inf would train to NaN and report it as a result
                raise CfsError(f"option {name} must be a finite number, got {value!r}")
            return float(value)  # an int is a valid float
        kind = typing.get_origin(t) or t  # list[int] -> list
        if kind in (list, tuple) and isinstance(value, (list, tuple)):
            return value  # YAML gives lists for either
        if isinstance(kind, type) and isinstance(value, kind) and not (t is int and isinstance(value, bool)):
            return value
    expected = " or ".join("None" if t is type(None) else getattr(t, "__name__", str(t)) for t in allowed)
    raise CfsError(f"option {name} must be {expected}, got {value!r}")


def tensor_state(**tensors: torch.Tensor | None) -> dict[str, Any]:
    """Detached CPU copies of tensors for a strategy's ``state_dict``."""
    return {k: (v.detach().cpu().clone() if isinstance(v, torch.Tensor) else v) for k, v in tensors.items()}
