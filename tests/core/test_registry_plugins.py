"""The plugin manager: built-ins, entry points, blocking, name clashes, misspelt hooks."""

import pytest

from cfs.errors import CfsError
from cfs.plugins import get_plugin_manager
from cfs.registry import Registry
from cfs.strategy import Strategy


def test_first_party_strategies_come_through_entry_points():
    pm = get_plugin_manager()
    assert {"finetune", "joint"} <= set(pm.strategies)
    assert pm.strategies.entry("finetune").plugin == "finetune"
    assert pm.info["finetune"].distribution == "cfs"
    assert "strategy finetune" in pm.info["finetune"].registers
    assert {"split-digits", "split-cifar100"} <= set(pm.scenarios)
    assert {"resnet32", "mlp", "reduced-resnet18"} <= set(pm.backbones)


def test_block_plugin_by_name():
    pm = get_plugin_manager(["no:joint"])
    assert "joint" not in pm.strategies and "finetune" in pm.strategies


def test_autoload_off_keeps_first_party(monkeypatch):
    monkeypatch.setenv("CFS_DISABLE_PLUGIN_AUTOLOAD", "1")
    pm = get_plugin_manager()
    assert "finetune" in pm.strategies


def test_unknown_name_suggests_closest():
    pm = get_plugin_manager()
    with pytest.raises(CfsError, match="did you mean: finetune"):
        pm.strategies.get("finetun")


def test_name_clash_names_both_plugins():
    reg = Registry("strategy")
    reg.current_plugin = "a"
    reg.add(object(), name="x")
    reg.current_plugin = "b"
    with pytest.raises(CfsError, match="'a' and plugin 'b'"):
        reg.add(object(), name="x")


def test_explicit_module_plugin_and_misspelt_hook(tmp_path, monkeypatch):
    good = tmp_path / "my_good_plugin.py"
    good.write_text(
        "from cfs import hookimpl\nfrom cfs.strategy import Strategy\n"
        "class Mine(Strategy):\n    '''Mine.'''\n    name = 'mine'\n"
        "@hookimpl\ndef cfs_add_strategies(registry):\n    registry.add(Mine)\n"
    )
    bad = tmp_path / "my_bad_plugin.py"
    bad.write_text("from cfs import hookimpl\n@hookimpl\ndef cfs_add_stratgies(registry):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    pm = get_plugin_manager(["my_good_plugin"])
    assert pm.strategies.entry("mine").plugin == "my_good_plugin"
    with pytest.raises(CfsError, match="my_bad_plugin.*cfs_add_stratgies"):
        get_plugin_manager(["my_bad_plugin"])


def test_strategy_options_validated():
    class S(Strategy):
        name = "s"

    with pytest.raises(CfsError, match="unknown option s.lam"):
        S.make_options({"lam": 1})


def test_option_values_are_checked_against_their_types():
    from cfs_plugins.derpp import DERpp
    from cfs_plugins.ewc import EWC

    with pytest.raises(CfsError, match=r"option derpp.alpha must be float or None, got 'abc'"):
        DERpp.make_options({"alpha": "abc"})
    with pytest.raises(CfsError, match="option derpp.buffer must be int"):
        DERpp.make_options({"buffer": 2.5})
    with pytest.raises(CfsError, match="option ewc.online must be bool"):
        EWC.make_options({"online": "sometimes"})
    assert DERpp.make_options({"alpha": 1}).alpha == 1.0 and isinstance(DERpp.make_options({"alpha": 1}).alpha, float)


def test_every_strategy_accepts_its_own_defaults():
    """The type check knows every option type the first-party strategies declare."""
    import dataclasses

    pm = get_plugin_manager([])
    for name in list(pm.strategies):
        cls = pm.strategies.get(name)
        for f in dataclasses.fields(cls.Options):
            if f.default is not dataclasses.MISSING:
                cls.make_options({f.name: f.default})
