"""Config layering and validation."""

import pytest

from cfs.config import load_yaml, parse_option, resolve
from cfs.errors import CfsError


def test_layers_later_wins_and_none_skipped():
    cfg = resolve({"epochs": 3, "lr": 0.1}, {"epochs": 5}, {"epochs": None, "lr": 0.2})
    assert (cfg.epochs, cfg.lr) == (5, 0.2)


def test_unknown_key_suggests():
    with pytest.raises(CfsError, match="unknown config key 'epoch'.*epochs"):
        resolve({"epoch": 3})


@pytest.mark.parametrize("layer,msg", [
    ({"epochs": "many"}, "'epochs'"),
    ({"optimizer": "rmsprop"}, "not one of sgd"),
    ({"batch_size": 0}, "at least 1"),
    ({"lr": -1}, "positive"),
])
def test_bad_values(layer, msg):
    with pytest.raises(CfsError, match=msg):
        resolve(layer)


def test_yaml_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("epochs: 2\nbatch-size: 16\noptions: {joint: {reset: true}}\n")
    cfg = resolve(load_yaml(f))
    assert cfg.batch_size == 16 and cfg.options == {"joint": {"reset": True}}
    (tmp_path / "bad.yaml").write_text("epochs: [\n")
    with pytest.raises(CfsError, match="not valid YAML"):
        load_yaml(tmp_path / "bad.yaml")
    with pytest.raises(CfsError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")


def test_parse_option():
    assert parse_option("lwf.lam=3") == ("lwf", "lam", 3)
    with pytest.raises(CfsError):
        parse_option("lam=3")


@pytest.mark.parametrize("layer,msg", [
    ({"lr": float("nan")}, "'lr' must be a finite number"),
    ({"lr": "inf"}, "'lr' must be a finite number"),
    ({"momentum": float("nan")}, "'momentum' must be a finite number"),
    ({"weight_decay": float("-inf")}, "'weight_decay' must be a finite number"),
    ({"gamma": "nan"}, "'gamma' must be a finite number"),
    ({"momentum": -0.9}, "'momentum' must be >= 0"),
    ({"momentum": 1e308}, "'momentum' is out of range"),
    ({"momentum": 1.5}, "'momentum' must be between 0 and 1"),
    ({"weight_decay": 1e308}, "'weight_decay' is out of range"),
    ({"weight_decay": -1e-4}, "'weight_decay' must be >= 0"),
    ({"seed": -1}, "between 0 and 2\\*\\*32-1"),
    ({"seed": 2**32}, "between 0 and 2\\*\\*32-1"),
    ({"class_order_seed": -5}, "between 0 and 2\\*\\*32-1"),
    ({"max_train_per_class": 0}, "at least 1.*leave it out for no limit"),
    ({"max_train_per_class": -1}, "at least 1"),
    ({"n_way": 0}, "'n_way' must be at least 1"),
    ({"epochs": True}, "'epochs'"),
    ({"epochs": float("inf")}, "'epochs'"),
    ({"seed": "9" * 5000}, "'seed'"),
    ({"lr": [0.1]}, "'lr'"),
    ({"milestones": [0, 3]}, "milestones"),
    ({"scenario": ["a"]}, "'scenario'"),
    ({"out": "runs/\x00x"}, "NUL"),
    ({"options": [1]}, "must map strategy names"),
    ({"options": {"lwf": [1]}}, "must be a mapping"),
    ({"options": {"lwf": {1: 2}}}, "must be a mapping of option names"),
    ({"weights": "/no/such/w.pt"}, "no such file"),  # whether the backbone loads files: cfs bench checks
    ({"weights": "/no/such/w.pt", "backbone": "timm:resnet18"}, "no such file"),
])
def test_values_no_run_can_use_are_refused(layer, msg):
    with pytest.raises(CfsError, match=msg) as info:
        resolve(layer)
    assert "\n" not in str(info.value)


def test_valid_edges_pass():
    cfg = resolve({"seed": 2**32 - 1, "class_order_seed": 0, "momentum": 0, "weight_decay": 0.0,
                   "max_train_per_class": 1, "lr": "1e-3"})
    assert (cfg.seed, cfg.max_train_per_class, cfg.lr) == (2**32 - 1, 1, 1e-3)
    assert resolve({}).max_train_per_class is None  # no limit is the absence of the flag


def test_weights_with_a_timm_backbone_and_a_real_file(tmp_path):
    w = tmp_path / "w.pt"
    w.write_bytes(b"x")
    assert resolve({"weights": str(w), "backbone": "timm:resnet18"}).weights == str(w)


@pytest.mark.parametrize("content,msg", [
    (b"epochs: 2\n\xff\n", "not UTF-8"),
    (b"[1, 2]\n", "must hold a mapping"),
    (b"just text\n", "must hold a mapping"),
    (b"1: 2\n", "is not a name"),
    (b"? [a, b]\n: 1\n", "not valid YAML"),
    (b"? null\n: 1\n", "is not a name"),
    (b"seed: 2020-13-45\n", "not valid YAML"),
    (b"a: [\n", "not valid YAML"),
    (b"{" * 3000, "not valid YAML"),
], ids=["non-utf8", "list", "text", "int-key", "list-key", "null-key", "bad-date", "unclosed", "deep-nesting"])
def test_bad_yaml_files(tmp_path, content, msg):
    f = tmp_path / "c.yaml"
    f.write_bytes(content)
    with pytest.raises(CfsError, match=msg) as info:
        load_yaml(f)
    assert "\n" not in str(info.value) and str(f) in str(info.value)


def test_empty_yaml_is_no_settings(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_bytes(b"# nothing\n")
    assert load_yaml(f) == {}


@pytest.mark.parametrize("text", ["k=[1,2", "lam=3", ".lam=3", "lwf.=3", "=3", "lwf.lam", "lwf.x=[1,2",
                                  "lwf.x={", "lwf.x=\"a", "lwf.x=\x00"])
def test_malformed_options_are_one_line(text):
    with pytest.raises(CfsError, match="bad option") as info:
        parse_option(text)
    assert "\n" not in str(info.value)


def test_option_values():
    assert parse_option("lwf.lam=[1, 2]") == ("lwf", "lam", [1, 2])
    assert parse_option("derpp.alpha=1e3") == ("derpp", "alpha", 1000.0)  # YAML 1.1 reads 1e3 as text
    strat, key, value = parse_option("lwf.lam=nan")  # a float, refused by the option's finite check
    assert (strat, key) == ("lwf", "lam") and value != value
    assert parse_option("replay.selection=herding") == ("replay", "selection", "herding")
    assert parse_option("a.b=x=y") == ("a", "b", "x=y")


def test_non_finite_strategy_option_is_refused():
    from cfs.strategy import _checked

    assert _checked("x.lam", 3, float) == 3.0
    for bad in (float("nan"), float("inf"), -float("inf"), 10**400):
        with pytest.raises(CfsError, match="x.lam"):
            _checked("x.lam", bad, float)
    assert _checked("x.lam", None, float | None) is None
