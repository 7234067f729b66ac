"""The hook relay a loop calls on its hot path.

Pluggy dispatch costs a few microseconds per call even when no plugin implements a hook; a
training step calls eight hooks, which on a small model is several percent of the step. A
loop snapshots, when it starts, which hooks the run's plugins implement and calls only
those; the others become constant no-ops with pluggy's answer for "no implementation"
(``None`` for ``firstresult`` hooks, ``[]`` otherwise). Plugins are registered before a
run's loop is built, so the snapshot is exact for the whole run.
"""

from __future__ import annotations

from typing import Any

from cfs import hookspec


def _no_answer(**_: Any) -> None:
    return None


def _no_answers(**_: Any) -> list:
    return []


class ActiveHooks:
    """Attribute access like ``pm.hook``; unimplemented hooks are no-ops."""

    def __init__(self, relay: Any) -> None:
        for name in dir(hookspec):
            if not name.startswith("cfs_"):
                continue
            caller = getattr(relay, name)
            if caller.get_hookimpls():
                setattr(self, name, caller)
            else:
                first = bool(caller.spec and caller.spec.opts.get("firstresult"))
                setattr(self, name, _no_answer if first else _no_answers)
