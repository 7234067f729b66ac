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
