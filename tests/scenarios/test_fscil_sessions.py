"""FSCIL sessions: the standard CIFAR-100 index lists on a stand-in CIFAR-100, a generic split,
missing data, and the FSCIL metrics."""

from __future__ import annotations

import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision

from cfs.data import load_dataset
from cfs.errors import CfsError
from cfs.evaluation.fscil import fscil_metrics, session_table
from cfs.plugins import get_plugin_manager
from cfs.scenarios.fscil import build_sessions, generic_sessions, read_index_lists

TESTS = Path(__file__).resolve().parent.parent


def _labels_from_index_lists(sessions: list[list[str]]) -> np.ndarray:
    """CIFAR-100 train labels consistent with the index lists: the base list holds 500 images
    of each of classes 0..59 in class order, list s the 5 shots of classes 60+5(s-1)..+4; the
    remaining 19,800 images fill classes 60..99 up to 500 each."""
    labels = np.full(50000, -1, dtype=np.int64)
    base = [int(i) for i in sessions[0]]
    labels[base] = np.arange(len(base)) // 500
    for s, rows in enumerate(sessions[1:]):
        labels[[int(i) for i in rows]] = 60 + 5 * s + np.arange(len(rows)) // 5
    counts = np.bincount(labels[labels >= 0], minlength=100)
    fill = np.repeat(np.arange(100), 500 - counts)
    labels[labels < 0] = fill
    return labels


@pytest.fixture(scope="module")
def fake_cifar100(shared_data, tmp_path_factory, write_cifar_pickles):
    """A full-size (50,000/10,000) CIFAR-100 with random pixels in torchvision's format."""
    root = tmp_path_factory.mktemp("cifar100")
    spec = torchvision.datasets.CIFAR100
    write_cifar_pickles(root, spec, n_classes=100, per_class=100)  # meta + a 10,000-image test set
    sessions = read_index_lists(shared_data / "fscil-index-lists" / "cifar100")
    labels = _labels_from_index_lists(sessions)
    rng = np.random.default_rng(0)
    train = {"batch_label": "train", "fine_labels": labels.tolist(), "coarse_labels": (labels // 5).tolist(),
             "data": rng.integers(0, 256, (50000, 3072), dtype=np.uint8),
             "filenames": [f"{i}.png" for i in range(50000)]}
    with open(root / spec.base_folder / "train", "wb") as f:
        pickle.dump(train, f)
    return root, sessions


def _cfg(root, **kw):
    return SimpleNamespace(data_root=str(root), download=False, class_order_seed=None, split=None, **kw)


def test_cifar100_sessions_follow_the_real_index_lists(fake_cifar100, shared_data, monkeypatch):
    root, sessions = fake_cifar100
    monkeypatch.setenv("CFS_FSCIL_INDEX_LISTS", str(shared_data / "fscil-index-lists"))
    scenario = get_plugin_manager().scenarios.get("fscil-cifar100")(_cfg(root))
    data = load_dataset("cifar100", root=root)
    assert data.train.x.shape[0] == 50000 and data.test.x.shape[0] == 10000
    exps = scenario.experiences
    assert scenario.kind == "fscil" and len(exps) == 9
    assert len(exps[0].train) == 30000 and exps[0].classes == list(range(60))
    assert scenario.class_order == list(range(100))  # CIFAR-100's FSCIL classes come in label order
    assert len(exps[0].test) == 6000
    for s in range(1, 9):
        exp = exps[s]
        wanted = list(range(60 + 5 * (s - 1), 65 + 5 * (s - 1)))
        assert len(exp.train) == 25 and exp.classes == wanted
        assert torch.bincount(exp.train.y, minlength=100)[wanted].tolist() == [5] * 5
        # exactly the listed images, in the listed order
        idx = torch.tensor([int(i) for i in sessions[s]])
        assert torch.equal(exp.train.x, data.train.x[idx])
        assert len(exp.test) == 500 and set(exp.test.y.tolist()) == set(wanted)


def test_cifar100_without_data_is_a_one_line_error(tmp_path):
    factory = get_plugin_manager().scenarios.get("fscil-cifar100")
    with pytest.raises(CfsError) as err:
        factory(_cfg(tmp_path / "nothing"))
    assert "\n" not in str(err.value) and "CIFAR-100 not found" in str(err.value)


def test_missing_index_lists_are_a_one_line_error(tmp_path, monkeypatch):
    from cfs.scenarios.fscil import index_list_folder

    monkeypatch.delenv("CFS_FSCIL_INDEX_LISTS", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CfsError) as err:
        index_list_folder("cifar100", str(tmp_path))
    assert "\n" not in str(err.value) and "CFS_FSCIL_INDEX_LISTS" in str(err.value)


def test_generic_split_base_then_n_way_k_shot():
    data = load_dataset("synthetic", n_classes=8, n_train_per_class=20, n_test_per_class=7, seed=1)
    sessions = generic_sessions(data, base_classes=4, ways=2, shots=3, seed=5)
    order, exps = build_sessions(data, sessions)
    assert sorted(order) == list(range(8)) and len(exps) == 3
    assert len(exps[0].train) == 80 and exps[0].classes == [0, 1, 2, 3]
    for exp in exps[1:]:
        assert len(exp.train) == 6 and torch.bincount(exp.train.y, minlength=8)[exp.classes].tolist() == [3, 3]
        assert len(exp.test) == 14
    again = build_sessions(data, generic_sessions(data, 4, 2, 3, seed=5))[1]
    assert all(torch.equal(a.train.x, b.train.x) for a, b in zip(exps, again))
    other = build_sessions(data, generic_sessions(data, 4, 2, 3, seed=6))[1]
    assert not all(torch.equal(a.train.x, b.train.x) for a, b in zip(exps[1:], other[1:]))
    with pytest.raises(CfsError):
        generic_sessions(data, base_classes=5, ways=2, shots=3, seed=0)


def test_fscil_metrics_hand_computed():
    # 3 sessions; test sizes 100 (base), 10, 10
    R = np.array([[0.8, 0.0, 0.0], [0.7, 0.5, 0.0], [0.6, 0.4, 0.2]])
    m = fscil_metrics(R, np.array([100, 10, 10]))
    assert m["session_accuracy"] == pytest.approx([0.8, (70 + 5) / 110, (60 + 4 + 2) / 120])
    assert m["performance_drop"] == pytest.approx(0.8 - 66 / 120)
    assert m["average_accuracy"] == pytest.approx(np.mean([0.8, 75 / 110, 66 / 120]))
    assert m["base_accuracy"] == pytest.approx([0.8, 0.7, 0.6])
    assert m["novel_accuracy"][0] is None and m["novel_accuracy"][1:] == pytest.approx([0.5, 0.3])
    assert m["harmonic_mean"][2] == pytest.approx(2 * 0.6 * 0.3 / 0.9)
    table = session_table(m, "teen")
    assert "novel %" in table and "30.0" in table
