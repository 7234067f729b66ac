"""What ``--strategy a+b`` means, checked before any work starts.

A composition is a **set** of strategies:

* **Order.** Its strategies are registered in one canonical order, so ``a+b`` and ``b+a`` run
  bit for bit the same. Collecting hooks (lifecycle hooks, ``cfs_loss``,
  ``cfs_extra_parameters``) call every composed strategy in alphabetical order of their names
  (a hookimpl's own ``tryfirst``/``trylast`` still moves it, as in pluggy).
* **Replacement hooks** (``firstresult``: ``cfs_train_experience``, ``cfs_training_step``,
  ``cfs_base_loss``, ``cfs_predict``, ``cfs_meta_loss``, ``cfs_predict_episode``): at most one
  composed strategy may answer each. Two that answer the same one are refused with one line
  naming both and the hook, unless they combine by declaration: a strategy lists the hook in
  ``fallback_hooks`` (its answer yields to any other's: the teacher family's new-class
  cross-entropy yields to ER-ACE's asymmetric loss), or both name the same shared
  computation in ``shared_answers`` (they would answer the same thing, so one answer is used:
  LwF's and EWC's new-class cross-entropy).
  A hook a strategy leaves out with its options (``inactive_hooks()``) is not registered and
  cannot conflict.
* **Validation.** Every ``cfs_*`` attribute of a strategy must be a declared hook carrying
  ``@hookimpl``: a misspelt hook, or an override that lost its marker (pluggy would silently
  drop the parent's hook too), is an error naming the strategy.

:func:`build_strategies` instantiates a composition with its options and applies all checks;
the CLI calls it for every ``--strategy`` of a command before the first run starts.
"""

from __future__ import annotations

import inspect
from typing import Any, Iterable

from cfs import hookspec
from cfs.errors import CfsError, did_you_mean
from cfs.strategy import Strategy


def _specs() -> dict[str, dict[str, Any]]:
    return {name: getattr(fn, "cfs_spec") for name, fn in vars(hookspec).items()
            if name.startswith("cfs_") and hasattr(fn, "cfs_spec")}


SPECS: dict[str, dict[str, Any]] = _specs()
#: Hooks where the first non-``None`` answer wins.
REPLACEMENT_HOOKS: frozenset[str] = frozenset(n for n, o in SPECS.items() if o.get("firstresult"))
#: Start-up hooks a plugin *module* implements; a strategy instance never does.
REGISTRATION_HOOKS: frozenset[str] = frozenset(n for n in SPECS if n.startswith("cfs_add_"))


def label(strategy: Strategy | type[Strategy]) -> str:
    cls = strategy if isinstance(strategy, type) else type(strategy)
    return f"strategy {cls.name!r} ({cls.__module__}.{cls.__qualname__})"


def implemented_hooks(strategy: Strategy) -> list[str]:
    """Names of the hooks ``strategy`` implements (marked ``@hookimpl``), after checking that
    every ``cfs_*`` attribute is one (see the module docstring)."""
    found = []
    for attr in sorted(dir(type(strategy))):
        if not attr.startswith("cfs_"):
            continue
        value = inspect.getattr_static(type(strategy), attr)
        func = getattr(value, "__func__", value)
        if attr not in SPECS:
            raise CfsError(f"{label(strategy)}: {attr} is not a cfs hook{did_you_mean(attr, SPECS)}")
        if attr in REGISTRATION_HOOKS:
            raise CfsError(f"{label(strategy)}: {attr} is a start-up hook of a plugin module, not of a strategy class")
        if not callable(func) or getattr(func, "cfs_impl", None) is None:
            raise CfsError(f"{label(strategy)}: {attr} lacks @hookimpl, so it would never be called "
                           f"(an override must repeat the decorator)")
        found.append(attr)
    return found


def active_hooks(strategy: Strategy) -> list[str]:
    """The hooks that will be registered for ``strategy``: implemented and not inactive."""
    inactive = strategy.inactive_hooks()
    unknown = set(inactive) - set(SPECS)
    if unknown:
        raise CfsError(f"{label(strategy)}: inactive_hooks() names {', '.join(sorted(unknown))}, which are not cfs hooks")
    return [h for h in implemented_hooks(strategy) if h not in inactive]


def check_replacements(strategies: Iterable[Strategy]) -> None:
    """Refuse two strategies answering the same replacement hook unless they declared how:
    a declared fallback yields to any other answer; answers naming the same shared computation
    are one answer. Two different answers at the same level are refused."""
    strategies = list(strategies)
    for hook in sorted(REPLACEMENT_HOOKS):
        answering = [s for s in strategies if hook in active_hooks(s)]
        primary = [s for s in answering if hook not in s.fallback_hooks]
        level = primary or answering  # fallbacks only matter when nobody else answers
        keys = {s.shared_answers.get(hook) or f"strategy:{s.name}" for s in level}
        if len(keys) > 1:
            a, b = level[0], level[1]
            raise CfsError(f"strategies {a.name!r} and {b.name!r} both replace {hook}, so one would silently win; "
                           f"they cannot be composed (a strategy can declare {hook} in fallback_hooks to yield)")


def canonical(strategies: Iterable[Strategy]) -> list[Strategy]:
    """The composition in the order its hooks run: alphabetical by name."""
    return sorted(strategies, key=lambda s: s.name)


def instantiate(cls: type[Strategy], values: dict[str, Any] | None) -> Strategy:
    """``cls`` with its options, every error a one-line :class:`CfsError` naming the strategy."""
    options = cls.make_options(values)
    try:
        return cls(options)
    except CfsError as exc:
        raise CfsError(f"bad options for {cls.name}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise CfsError(f"bad options for {cls.name}: {exc}") from exc


def validated(strategies: Iterable[Strategy]) -> list[Strategy]:
    """The instances of a composition in canonical order, after every check above."""
    ordered = canonical(strategies)
    for s in ordered:
        active_hooks(s)
    check_replacements(ordered)
    return ordered


def build_strategies(classes: list[type[Strategy]], options: dict[str, dict[str, Any]]) -> list[Strategy]:
    """Instances of a composition with their options, validated, in canonical order."""
    return validated(instantiate(cls, options.get(cls.name)) for cls in classes)
