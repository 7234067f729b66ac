"""Bad data is a one-line error naming the path, raised while loading (before any training),
never an experience scored 0.0 %; data files that are pickles cannot run code."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from cfs.cli import main
from cfs.data import load_dataset
from cfs.data.sources import CIFAR10_CLASSES, read_data_pickle
from cfs.errors import CfsError


def _error(root: Path, name: str = "imagefolder") -> str:
    with pytest.raises(CfsError) as info:
        load_dataset(name, root=root)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_the_fixture_itself_loads(folder):
    assert len(load_dataset("imagefolder", root=folder).train) == 6


def test_empty_class_folder_is_named(folder):
    (folder / "train" / "bird").mkdir()
    (folder / "test" / "bird").mkdir()
    assert f"{folder / 'train' / 'bird'} holds no images" in _error(folder)


def test_folder_of_non_images_counts_as_empty(folder):
    for part in ("train", "test"):
        (folder / part / "bird").mkdir()
        (folder / part / "bird" / "notes.txt").write_text("x")
    assert "holds no images" in _error(folder)


def test_class_missing_from_test_is_named(png, folder):
    png(folder / "train" / "bird" / "0.png", 5)
    message = _error(folder)
    assert str(folder / "train") in message and "missing from" in message and "bird" in message


def test_class_missing_from_train_is_named(png, folder):
    png(folder / "test" / "bird" / "0.png", 5)
    message = _error(folder)
    assert str(folder / "test") in message and "missing from" in message and "bird" in message


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_corrupt_image_is_named(folder, content):
    bad = folder / "train" / "dog" / "bad.png"
    bad.write_bytes(content)
    assert str(bad) in _error(folder)


def test_truncated_jpeg_is_named(folder):
    buf = io.BytesIO()
    Image.new("RGB", (6, 6), (9, 9, 9)).save(buf, format="JPEG")
    bad = folder / "test" / "cat" / "1.jpg"
    bad.write_bytes(buf.getvalue()[:20])
    assert str(bad) in _error(folder)


def test_symlink_loop_as_class_folder_is_named(folder):
    loop = folder / "train" / "bird"
    os.symlink(loop, loop)
    message = _error(folder)
    assert str(loop) in message and "symlink loop" in message


def test_symlink_to_a_folder_above_is_named(folder):
    link = folder / "train" / "cat" / "up"
    os.symlink(folder / "train", link)  # the walk would otherwise never end
    message = _error(folder)
    assert str(link) in message and "symlink loop" in message


def test_symlink_loop_as_image_is_named(folder):
    loop = folder / "train" / "cat" / "9.png"
    os.symlink(loop, loop)
    message = _error(folder)
    assert str(loop) in message and "symlink loop" in message


def test_class_without_test_samples_in_any_data_set_is_an_error():
    """The last guard, for any loader: a class-incremental stream refuses a class that has no
    test (or no train) samples instead of scoring it 0.0 %."""
    from cfs.data.arrays import ArrayDataset, DataSplit
    from cfs.scenarios.class_incremental import build_stream

    x = torch.zeros(6, 1, 2, 2)
    train = ArrayDataset(x, torch.tensor([0, 0, 1, 1, 2, 2]), ["a", "b", "c"])
    test = ArrayDataset(x[:4], torch.tensor([0, 1, 0, 1]), ["a", "b", "c"])
    with pytest.raises(CfsError, match="no test samples of class 'c'"):
        build_stream(DataSplit("toy", train, test, (0.0,), (1.0,)), [0, 1, 2], [[0, 1], [2]])


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if any run starts: the error must come while loading."""
    from cfs.engine import runner

    monkeypatch.setattr(runner, "run_strategy", lambda *a, **k: pytest.fail("a run started"))


def _no_results(out: Path) -> bool:
    return not out.exists() or not any(p.name in ("metrics.json", "run.json") for p in out.rglob("*"))


def test_cli_refuses_bad_folder_before_training(folder, tmp_path, capsys, no_training):
    (folder / "train" / "bird").mkdir()
    (folder / "test" / "bird").mkdir()
    out = tmp_path / "run"
    rc = main(["bench", "--scenario", "split-imagefolder", "--data-root", str(folder), "--strategy", "finetune",
               "--epochs", "1", "--no-progress", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("cfs: error:") and "holds no images" in err[0]
    assert _no_results(out)


# ---------------------------------------------------------------- CIFAR pickles


class _Py2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote for the CIFAR archives: ``str`` (text and the
    arrays' raw bytes alike) as BINSTRING, numpy 1's module names. Read back with
    ``encoding="latin1"`` as torchvision does."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + len(raw).to_bytes(4, "little") + raw)
        self.memoize(obj)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str


def _py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def _write_cifar10(root: Path, per_class: int = 2, dump=_py2_pickle) -> Path:
    spec = torchvision.datasets.CIFAR10
    folder = root / spec.base_folder
    folder.mkdir(parents=True)
    labels = [k for k in range(10) for _ in range(per_class)]
    for filename, _md5 in spec.train_list + spec.test_list:
        entry = {"batch_label": "training batch 1 of 5", "labels": labels,
                 "data": np.repeat(np.array(labels, dtype=np.uint8)[:, None], 3072, axis=1),
                 "filenames": [f"img_{j}.png" for j in range(len(labels))]}
        (folder / filename).write_bytes(dump(entry))
    meta = {"num_cases_per_batch": 10000, "label_names": list(CIFAR10_CLASSES), "num_vis": 3072}
    (folder / spec.meta["filename"]).write_bytes(dump(meta))
    return folder


def test_python2_style_cifar_batch_is_what_the_archive_holds(tmp_path):
    """The generated file has the real archive's shape: protocol 2, numpy 1's
    ``numpy.core.multiarray._reconstruct``, BINSTRING data; plain pickle reads it as torchvision does."""
    folder = _write_cifar10(tmp_path)
    raw = (folder / "data_batch_1").read_bytes()
    assert raw[:2] == b"\x80\x02" and b"cnumpy.core.multiarray\n_reconstruct\n" in raw
    assert pickle.SHORT_BINSTRING + bytes([4]) + b"data" in raw and b"\x8c" not in raw[:16]
    entry = pickle.loads(raw, encoding="latin1")
    assert entry["data"].shape == (20, 3072) and entry["data"].dtype == np.uint8


@pytest.mark.parametrize("dump", [_py2_pickle, lambda o: pickle.dumps(o, protocol=2),
                                  lambda o: pickle.dumps(o, protocol=4), lambda o: pickle.dumps(o, protocol=5)],
                         ids=["python2", "protocol2", "protocol4", "protocol5"])
def test_restricted_unpickler_reads_real_cifar_files(tmp_path, dump):
    _write_cifar10(tmp_path, dump=dump)
    data = load_dataset("cifar10", root=tmp_path)
    assert data.train.x.shape == (100, 3, 32, 32) and data.train.x.dtype == torch.uint8
    assert data.train.class_names[0] == "airplane" and data.test.y.tolist()[:3] == [0, 0, 1]
    assert torch.equal(data.train.x[:, 0, 0, 0].long(), data.train.y)  # pixels follow labels


class _Boom:
    """Unpickling this calls ``os.system`` (what a crafted data file would do)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("victim", ["batches.meta", "data_batch_3", "test_batch"])
def test_crafted_cifar_pickle_is_refused_and_runs_nothing(tmp_path, capsys, victim, no_training):
    root = tmp_path / "root"
    folder = _write_cifar10(root)
    marker = tmp_path / "pwned"
    payload = {"label_names": list(CIFAR10_CLASSES), "x": _Boom(f"touch {marker}")}
    (folder / victim).write_bytes(pickle.dumps(payload, protocol=2))
    assert b"system" in (folder / victim).read_bytes()

    with pytest.raises(CfsError) as info:
        load_dataset("cifar10", root=root)
    message = str(info.value)
    assert "\n" not in message and str(folder / victim) in message and "system" in message
    assert not marker.exists()

    rc = main(["bench", "--scenario", "split-cifar10", "--data-root", str(root), "--strategy", "finetune",
               "--epochs", "1", "--no-progress", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("cfs: error:") and victim in err[0]
    assert not marker.exists() and _no_results(tmp_path / "run")


@pytest.mark.parametrize("payload", [
    lambda m: (eval, (f"open({str(m)!r}, 'w')",)),
    lambda m: (getattr, (Path(m), "touch")),
    lambda m: (np.save, (str(m), np.zeros(1))),
])
def test_other_globals_are_refused(tmp_path, payload):
    marker = tmp_path / "marker"

    class Evil:
        def __reduce__(self):
            return payload(marker)

    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({"data": Evil()}, protocol=2))
    with pytest.raises(CfsError, match="not a plain CIFAR data file"):
        read_data_pickle(path)
    assert not marker.exists()


def test_codecs_encode_allows_latin1_only(tmp_path):
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({"x": b"\x00\xff"}, protocol=2))  # _codecs.encode(..., "latin1")
    assert read_data_pickle(path) == {"x": b"\x00\xff"}
    path.write_bytes(path.read_bytes().replace(b"latin1", b"rot_13"))
    with pytest.raises(CfsError, match="not a readable CIFAR pickle"):
        read_data_pickle(path)


@pytest.mark.parametrize("damage", ["truncate", "not a dict", "no labels"])
def test_damaged_cifar_files_are_one_line_errors(tmp_path, damage):
    folder = _write_cifar10(tmp_path)
    target = folder / "data_batch_2"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:100])
    elif damage == "not a dict":
        target.write_bytes(pickle.dumps([1, 2, 3]))
    else:
        target.write_bytes(pickle.dumps({"data": np.zeros((1, 3072), np.uint8)}))
    assert str(target) in _error(tmp_path, "cifar10")
