"""Class orders, splits and the streams built from them."""

import pytest
import torch

from cfs.data.arrays import ArrayDataset, DataSplit
from cfs.errors import CfsError
from cfs.scenarios.class_incremental import build_stream, class_order, split_classes

PYCIL_1993_FIRST_TASKS = [[68, 56, 78, 8, 23, 84, 90, 65, 74, 76], [40, 89, 3, 92, 55, 9, 26, 80, 43, 38]]


def test_seed_1993_order_matches_pycil():
    order = class_order(100, 1993)
    assert order[:10] == PYCIL_1993_FIRST_TASKS[0] and order[10:20] == PYCIL_1993_FIRST_TASKS[1]
    assert order[-10:] == [51, 48, 73, 93, 39, 67, 29, 49, 57, 33]


def test_splits():
    assert split_classes(10, 5) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    steps = split_classes(100, "B50-Inc10")
    assert len(steps) == 6 and steps[0] == list(range(50)) and steps[-1] == list(range(90, 100))
    assert len(split_classes(100, "B0-Inc5")) == 20
    for bad in ("B50-Inc7", "3", "half"):
        with pytest.raises(CfsError):
            split_classes(10, bad)


def test_stream_remaps_labels_to_order():
    x = torch.arange(12, dtype=torch.float32).view(12, 1, 1, 1)
    y = torch.tensor([0, 1, 2, 3] * 3)
    data = DataSplit("toy", ArrayDataset(x, y, ["a", "b", "c", "d"]), ArrayDataset(x, y, ["a", "b", "c", "d"]), (0.0,), (1.0,))
    order = [2, 0, 3, 1]
    stream = build_stream(data, order, split_classes(4, 2))
    first = stream[0].train
    assert first.class_names == ["c", "a", "d", "b"]
    # original class 2 -> label 0, original class 0 -> label 1
    assert set(first.y.tolist()) == {0, 1}
    assert torch.equal(first.x[first.y == 0].flatten(), torch.tensor([2.0, 6.0, 10.0]))
