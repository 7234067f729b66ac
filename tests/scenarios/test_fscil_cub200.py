"""The ``fscil-cub200`` protocol on a generated stand-in of CUB-200-2011: tiny images written at
the real file paths of the index lists (plus made-up test images), read through the standard
``CUB_200_2011`` metadata files; missing data; ``--split`` on FSCIL protocols."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torchvision.io import encode_jpeg

from cfs.data import load_dataset
from cfs.errors import CfsError
from cfs.plugins import get_plugin_manager
from cfs.scenarios.fscil import read_index_lists

TEST_PER_CLASS = 2


def _label(rel: str) -> int:
    """0-based label of ``<NNN.Name>/<file>`` (CUB's class folders start with the 1-based label)."""
    return int(Path(rel).parts[-2].split(".")[0]) - 1


@pytest.fixture(scope="module")
def fake_cub(shared_data, tmp_path_factory):
    """Every training image the index lists name, at its real path, filled with its label's grey
    level; two test images per class; images.txt / image_class_labels.txt / train_test_split.txt
    with test ids interleaved between train ids (the split must follow the flags, not the order)."""
    sessions = read_index_lists(shared_data / "fscil-index-lists" / "cub200")
    root = tmp_path_factory.mktemp("cub")
    folder = root / "CUB_200_2011"
    train = [str(Path(*Path(p).parts[-2:])) for rows in sessions for p in rows]
    classes = sorted({Path(p).parts[0] for p in train})
    test = [f"{c}/test_{c}_{k}.jpg" for c in classes for k in range(TEST_PER_CLASS)]
    rows, k_test = [], 0
    for i, rel in enumerate(train):
        rows.append((rel, 1))
        if i % 2 and k_test < len(test):
            rows.append((test[k_test], 0))
            k_test += 1
    rows += [(rel, 0) for rel in test[k_test:]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29's encoder deprecation
        for rel, _ in rows:
            path = folder / "images" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            img = torch.full((3, 10, 12), _label(rel), dtype=torch.uint8)  # not square: the loader resizes
            path.write_bytes(encode_jpeg(img, quality=95).numpy().tobytes())
    (folder / "images.txt").write_text("".join(f"{i} {rel}\n" for i, (rel, _) in enumerate(rows, 1)))
    (folder / "image_class_labels.txt").write_text("".join(f"{i} {_label(rel) + 1}\n" for i, (rel, _) in enumerate(rows, 1)))
    (folder / "train_test_split.txt").write_text("".join(f"{i} {flag}\n" for i, (_, flag) in enumerate(rows, 1)))
    return root, sessions, train


def _cfg(root, **kw):
    values = dict(data_root=str(root), download=False, class_order_seed=None, split=None, image_size=8,
                  max_train_per_class=None)
    values.update(kw)
    return SimpleNamespace(**values)


def test_cub200_sessions_follow_the_real_index_lists(fake_cub, shared_data, monkeypatch):
    root, sessions, train = fake_cub
    monkeypatch.setenv("CFS_FSCIL_INDEX_LISTS", str(shared_data / "fscil-index-lists"))
    scenario = get_plugin_manager().scenarios.get("fscil-cub200")(_cfg(root))
    exps = scenario.experiences
    assert scenario.kind == "fscil" and len(exps) == 11
    assert len(exps[0].classes) == 100 and len(exps[0].train) == len(sessions[0])
    assert scenario.class_order == list(range(200))  # the lists bring CUB's classes in label order
    for s in range(1, 11):
        exp = exps[s]
        wanted = list(range(100 + 10 * (s - 1), 110 + 10 * (s - 1)))
        assert exp.classes == wanted and len(exp.train) == 50
        assert torch.bincount(exp.train.y, minlength=200)[wanted].tolist() == [5] * 10
        assert len(exp.test) == 10 * TEST_PER_CLASS and set(exp.test.y.tolist()) == set(wanted)
    # the listed images, in the listed order: every image is filled with its class's grey level
    data = load_dataset("cub200", root=root, image_size=8)
    assert data.train.x.shape == (len(train), 3, 8, 8) and len(data.test) == 200 * TEST_PER_CLASS
    for exp, rows in zip(exps, sessions):
        want = torch.tensor([_label(str(Path(*Path(p).parts[-2:]))) for p in rows], dtype=torch.float32)
        got = exp.train.x.float().mean((1, 2, 3))
        assert torch.allclose(got, want, atol=2.0)
    test_grey = data.test.x.float().mean((1, 2, 3))
    assert torch.allclose(test_grey, data.test.y.float(), atol=2.0)


def test_missing_cub_is_a_one_line_error(tmp_path):
    factory = get_plugin_manager().scenarios.get("fscil-cub200")
    with pytest.raises(CfsError) as err:
        factory(_cfg(tmp_path / "nothing"))
    assert "\n" not in str(err.value) and "CUB-200-2011 not found" in str(err.value)


def test_cub_missing_data_exits_2_from_the_cli(tmp_path, capsys):
    from cfs.cli import main

    code = main(["bench", "--scenario", "fscil-cub200", "--strategy", "protonet-fscil",
                 "--data-root", str(tmp_path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "CUB-200-2011 not found" in err


def test_split_overrides_a_generic_fscil_split_and_is_refused_for_index_lists(fake_cub, shared_data, monkeypatch):
    from cfs.data.arrays import DataSplit
    from cfs.scenarios.fscil import build_fscil

    data = load_dataset("synthetic", n_classes=8, n_train_per_class=10, n_test_per_class=3, seed=0)
    spec = {"name": "generic", "fscil": {"base_classes": 4, "ways": 1, "shots": 2, "seed": 0}}
    assert isinstance(data, DataSplit)
    default = build_fscil(spec, _cfg(None), data)
    assert [len(e.classes) for e in default.experiences] == [4, 1, 1, 1, 1]
    split = build_fscil(spec, _cfg(None, split="B2-Inc3"), data)
    assert [len(e.classes) for e in split.experiences] == [2, 3, 3]
    assert all(len(e.train) == 6 for e in split.experiences[1:])  # 3 ways x the protocol's 2 shots
    with pytest.raises(CfsError, match="B<base classes>-Inc<ways>"):
        build_fscil(spec, _cfg(None, split="5"), data)
    root, _, _ = fake_cub
    monkeypatch.setenv("CFS_FSCIL_INDEX_LISTS", str(shared_data / "fscil-index-lists"))
    with pytest.raises(CfsError, match="fixed by the index lists"):
        get_plugin_manager().scenarios.get("fscil-cub200")(_cfg(root, split="B50-Inc10"))
