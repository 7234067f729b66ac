"""Loaders that turn a data set on disk (or a generator) into an in-memory :class:`DataSplit`.

Every loader has the signature ``loader(root, download=False, **options) -> DataSplit`` and
returns uint8 NCHW images (float32 for synthetic data), int64 labels, class names in label
order and the mean/std the images are normalised with. Files are read in the formats their
usual distributions use (torchvision's CIFAR pickles and MNIST idx files, an ImageFolder tree
of JPEGs), so data downloaded by torchvision, the Debian ``dataset-fashion-mnist`` package
and the offline ``cifar10-jpg`` archive all work without conversion. Missing data is a
one-line :class:`CfsError` naming the path expected and how to provide it; nothing is
downloaded unless ``download=True``. So is bad data, while loading (before any training): an
empty class folder, a class missing from ``train/`` or ``test/``, an unreadable or corrupt
image (named), a symlink loop. CIFAR pickles are read with a restricted unpickler that builds
arrays, lists and dicts only, so a data folder cannot run code.
"""

from __future__ import annotations

import errno
import gzip
import os
import pickle
import struct
from pathlib import Path
from typing import Sequence

from typing import TYPE_CHECKING

import numpy as np
import torch

from cfs.data.arrays import ArrayDataset, DataSplit
from cfs.data.cache import cached_split
from cfs.data.decode import decode_images
from cfs.errors import CfsError

if TYPE_CHECKING:  # torchvision is imported where it is used: it costs seconds at start-up
    from torchvision.io import ImageReadMode

# Where Debian's ``dataset-fashion-mnist`` package installs the four idx files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"
)
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))
MNIST_STATS = ((0.1307,), (0.3081,))
FASHION_MNIST_STATS = ((0.2860,), (0.3530,))
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp"})
_ARCHIVE = "../shared/data/cifar10-jpg.tar.gz"


def default_root(root: str | Path | None) -> Path:
    """``root`` if given, else ``$CFS_DATA_ROOT``, else ``./data``."""
    if root is not None:
        return Path(root).expanduser()
    return Path(os.environ.get("CFS_DATA_ROOT") or "data").expanduser()


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 NCHW images on the 0..1 scale.

    Sums run in float64 over chunks of about 4M pixels (32 MB), so 50,000 CIFAR images need
    tens of MB, not the GB a float copy of the whole tensor would; rows on disk are read chunk
    by chunk.
    """
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    rows = max(1, (1 << 22) // max(1, int(np.prod(x.shape[1:]))))
    for start in range(0, x.shape[0], rows):
        c = x[start : start + rows].to(torch.float64) / 255.0
        total += c.sum(dim=(0, 2, 3))
        squares += (c * c).sum(dim=(0, 2, 3))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = (squares / count - mean * mean).clamp_min(0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _download(dataset_cls: type, root: Path, title: str) -> None:
    """Let torchvision fetch ``dataset_cls`` into ``root``; a failure (e.g. no network) is a
    CfsError, not a traceback."""
    try:
        dataset_cls(str(root), train=True, download=True)
    except (OSError, RuntimeError) as exc:
        raise CfsError(f"downloading {title} into {root} failed: {_one_line(exc)}") from exc


# ---------------------------------------------------------------- generated and built-in data


def load_digits(root: str | Path | None = None, download: bool = False) -> DataSplit:
    """scikit-learn's 1,797 8x8 digits (ships with scikit-learn, so always available).

    Pixels 0..16 are scaled to uint8 0..255; the test part is a fixed stratified 30 %
    (``random_state=0``), so every run and method sees the same split.
    """
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    x = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, bunch.target, test_size=0.3, stratify=bunch.target, random_state=0
    )
    names = [str(n) for n in bunch.target_names]
    train = ArrayDataset(torch.from_numpy(x_tr), torch.from_numpy(y_tr), names)
    test = ArrayDataset(torch.from_numpy(x_te), torch.from_numpy(y_te), names)
    return DataSplit("digits", train, test, *channel_stats(train.x))


def load_synthetic(
    root: str | Path | None = None,
    download: bool = False,
    *,
    n_classes: int = 10,
    n_train_per_class: int = 100,
    n_test_per_class: int = 20,
    shape: Sequence[int] = (1, 8, 8),
    seed: int = 0,
    noise: float = 1.0,
) -> DataSplit:
    """Gaussian class clusters: a learnable, instant, deterministic data set for tests.

    Class centres are standard normal in ``prod(shape)`` dimensions and samples add
    ``noise``-scaled normal noise, so with the defaults a linear model separates the classes
    well. The same ``seed`` gives the same tensors. ``x`` is float32, already normalised.
    """
    shape = tuple(int(s) for s in shape)
    gen = torch.Generator().manual_seed(int(seed))
    dim = int(np.prod(shape))
    centres = torch.randn(n_classes, dim, generator=gen)

    def sample(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n_classes).repeat_interleave(per_class)
        x = centres[y] + noise * torch.randn(len(y), dim, generator=gen)
        order = torch.randperm(len(y), generator=gen)
        return x[order].view(-1, *shape), y[order]

    names = [f"class_{k}" for k in range(n_classes)]
    train = ArrayDataset(*sample(n_train_per_class), names)
    test = ArrayDataset(*sample(n_test_per_class), names)
    return DataSplit("synthetic", train, test, (0.0,) * shape[0], (1.0,) * shape[0])


# ---------------------------------------------------------------- CIFAR pickles


def _latin1(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as a protocol-2 pickle written by Python 3 uses it for bytes
    (``encode(text, "latin1")``), and nothing else: no other codec is looked up."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError(f"_codecs.encode({encoding!r}) is not how bytes are pickled")
    return text.encode("latin1")


def _cifar_globals() -> dict[tuple[str, str], object]:
    """The only globals a CIFAR batch (a dict of lists, strings and uint8 arrays) references:
    numpy's array and scalar reconstruction, under numpy 1's and numpy 2's module names, and
    the bytes of a protocol-2 pickle written by Python 3. Objects are taken from numpy itself
    (what ``__reduce__`` names), so nothing is imported by name from the file."""
    array, scalar = np.zeros(1, dtype=np.uint8), np.uint8(0)
    found = {
        "_reconstruct": array.__reduce__()[0],
        "scalar": scalar.__reduce__()[0],
        "_frombuffer": array.__reduce_ex__(5)[0],
    }
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = found["_reconstruct"]
        allowed[(f"{core}.multiarray", "scalar")] = found["scalar"]
        allowed[(f"{core}.numeric", "_frombuffer")] = found["_frombuffer"]
    return allowed


class _DataUnpickler(pickle.Unpickler):
    """Unpickles data only: a global that a CIFAR batch never holds (``os.system``,
    ``builtins.eval``, any class) is refused before it is looked up, so a data folder from the
    internet cannot run code; torchvision's own loader would execute it."""

    allowed = _cifar_globals()

    def find_class(self, module: str, name: str) -> object:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None

    def persistent_load(self, pid: object) -> object:
        raise _Refused("a persistent object")


class _Refused(pickle.UnpicklingError):
    """A pickle that references something other than data."""


def read_data_pickle(path: Path) -> object:
    """A torchvision-format pickle (``encoding="latin1"``, as its Python 2 files need) read
    with :class:`_DataUnpickler`; anything but plain data is a one-line :class:`CfsError`."""
    try:
        with open(path, "rb") as f:
            return _DataUnpickler(f, encoding="latin1").load()
    except _Refused as exc:
        raise CfsError(f"{path} is not a plain CIFAR data file: it would create {exc} when loaded, "
                       f"which a data file never does; refusing to load it (replace the file with "
                       f"the original from the CIFAR archive)") from None
    except OSError as exc:
        raise CfsError(f"cannot read {path}: {exc.strerror or _one_line(exc)}") from None
    except Exception as exc:  # truncated or garbled: any error of the unpickler or numpy
        raise CfsError(f"{path} is not a readable CIFAR pickle ({type(exc).__name__}: "
                       f"{_one_line(exc)[:120]}); replace it with the original file") from None


def _read_cifar_pickles(folder: Path, spec: type, name: str, stats: tuple) -> DataSplit:
    """Read torchvision's CIFAR pickle layout (``spec`` is ``CIFAR10`` or ``CIFAR100``).

    File names and keys come from torchvision's own class, so the format stays in step with
    it; the pickles are read here rather than through the class because its md5 check
    rejects anything but the original archive (a test fixture, a subset). They are read with a
    restricted unpickler (:func:`read_data_pickle`): plain data only, never code.
    """

    def unpickle(filename: str) -> dict:
        entry = read_data_pickle(folder / filename)
        if not isinstance(entry, dict):
            raise CfsError(f"{folder / filename} holds a {type(entry).__name__}, not a CIFAR batch "
                           f"(a dict); replace it with the original file")
        return entry

    def field(filename: str, entry: dict, *keys: str) -> object:
        for key in keys:
            if key in entry:
                return entry[key]
        raise CfsError(f"{folder / filename} has no {' or '.join(map(repr, keys))} entry; it is not "
                       f"a CIFAR file in torchvision's format")

    meta = spec.meta["filename"]
    names = field(meta, unpickle(meta), spec.meta["key"])
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise CfsError(f"{folder / meta}: {spec.meta['key']!r} is not a list of class names")
    names = list(names)

    def part(files: list) -> ArrayDataset:
        xs, ys = [], []
        for filename, _md5 in files:
            entry = unpickle(filename)
            data = field(filename, entry, "data")
            labels = field(filename, entry, "labels", "fine_labels")
            try:
                x = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32)
                y = np.asarray(labels, dtype=np.int64).reshape(-1)
            except (TypeError, ValueError) as exc:
                raise CfsError(f"{folder / filename}: 'data' is not N rows of 3x32x32 uint8 pixels "
                               f"with one integer label each ({_one_line(exc)[:80]})") from None
            if len(x) != len(y) or (len(y) and not 0 <= int(y.min()) <= int(y.max()) < len(names)):
                raise CfsError(f"{folder / filename}: {len(x)} images but {len(y)} labels, or labels "
                               f"outside 0..{len(names) - 1}; replace it with the original file")
            xs.append(x)
            ys.append(y)
        return ArrayDataset(torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)), names)

    return DataSplit(name, part(spec.train_list), part(spec.test_list), *stats)


def _has_cifar_pickles(folder: Path, spec: type) -> bool:
    files = [f for f, _ in spec.train_list + spec.test_list] + [spec.meta["filename"]]
    return all((folder / f).is_file() for f in files)


def _is_cifar10_tree(folder: Path) -> bool:
    """Whether ``folder/{train,test}`` hold exactly the CIFAR-10 class folders: a root shared
    with another image-folder data set must not be decoded as CIFAR-10."""
    return all(
        (folder / part).is_dir()
        and sorted(p.name for p in (folder / part).iterdir() if p.is_dir()) == list(CIFAR10_CLASSES)
        for part in ("train", "test")
    )


def load_cifar10(root: str | Path | None = None, download: bool = False) -> DataSplit:
    """CIFAR-10 from torchvision's pickles (``<root>/cifar-10-batches-py``) or, failing that,
    from a JPEG ImageFolder tree (``<root>/{train,test}`` or ``<root>/cifar10-jpg/{train,test}``,
    the layout of the offline archive), decoded once and then cached."""
    from torchvision.datasets import CIFAR10 as spec

    root = default_root(root)
    pickles = root / spec.base_folder
    if _has_cifar_pickles(pickles, spec):
        return _read_cifar_pickles(pickles, spec, "cifar10", CIFAR10_STATS)
    for folder in (root, root / "cifar10-jpg"):
        if _is_cifar10_tree(folder):
            return _cached_imagefolder(folder, "cifar10", None, CIFAR10_STATS)
    if download:
        _download(spec, root, "CIFAR-10")
        return _read_cifar_pickles(pickles, spec, "cifar10", CIFAR10_STATS)
    raise CfsError(
        f"CIFAR-10 not found: expected {pickles} (torchvision format) or "
        f"{root / 'cifar10-jpg'}/{{train,test}}/{{airplane,...,truck}}/*.jpg; pass --download "
        f"(download=True) to fetch it, or extract {_ARCHIVE} into {root}"
    )


def load_cifar100(root: str | Path | None = None, download: bool = False) -> DataSplit:
    """CIFAR-100 (fine labels) from torchvision's pickles in ``<root>/cifar-100-python``."""
    from torchvision.datasets import CIFAR100 as spec

    root = default_root(root)
    pickles = root / spec.base_folder
    if not _has_cifar_pickles(pickles, spec):
        if not download:
            raise CfsError(
                f"CIFAR-100 not found: expected {pickles}/{{train,test,meta}} (torchvision "
                f"format); pass --download (download=True) to fetch it, or extract "
                f"cifar-100-python.tar.gz into {root}"
            )
        _download(spec, root, "CIFAR-100")
    return _read_cifar_pickles(pickles, spec, "cifar100", CIFAR100_STATS)


# ---------------------------------------------------------------- MNIST idx files


def read_idx(path: Path) -> torch.Tensor:
    """A uint8 idx file (MNIST's format; gzipped if the name ends in ``.gz``) as a tensor.

    Read here rather than with torchvision's reader because that one opens only unzipped
    files in ``<root>/<Name>/raw``, while Debian ships the ``.gz`` files in a flat folder.
    """
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise CfsError(f"{path} is not a uint8 idx file (MNIST format); replace it")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise CfsError(f"{path} is truncated: header says {dims}, {data.size} bytes follow")
    return torch.from_numpy(data.reshape(dims).copy())


def _idx_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _find_idx_folder(folders: list[Path], stems: list[str]) -> Path | None:
    for folder in folders:
        if all(_idx_file(folder, stem) for stem in stems):
            return folder
    return None


def _load_mnist_like(
    spec: type, name: str, stats: tuple, root: Path, download: bool, extra: list[Path]
) -> DataSplit:
    """MNIST-format data from ``<root>/<Name>/raw`` (torchvision), ``<root>`` itself or
    ``extra`` folders, each holding the four idx files, gzipped or not."""
    stems = [Path(f).name.removesuffix(".gz") for f, _md5 in spec.resources]
    raw = root / spec.__name__ / "raw"
    candidates = [raw, root, *extra]
    folder = _find_idx_folder(candidates, stems)
    if folder is None and download:
        _download(spec, root, spec.__name__)
        folder = _find_idx_folder(candidates, stems)
    if folder is None:
        where = " or ".join(str(c) for c in candidates)
        raise CfsError(
            f"{spec.__name__} not found: expected {', '.join(s + '.gz' for s in stems)} in "
            f"{where}; pass --download (download=True) to fetch it"
            + (" or apt-get install dataset-fashion-mnist" if name == "fashion-mnist" else "")
        )

    def part(prefix: str) -> ArrayDataset:
        x = read_idx(_idx_file(folder, f"{prefix}-images-idx3-ubyte"))
        y = read_idx(_idx_file(folder, f"{prefix}-labels-idx1-ubyte"))
        return ArrayDataset(x[:, None], y.long(), list(spec.classes))

    return DataSplit(name, part("train"), part("t10k"), *stats)


def load_mnist(root: str | Path | None = None, download: bool = False) -> DataSplit:
    """MNIST, 60,000/10,000 28x28 greyscale digits."""
    from torchvision.datasets import MNIST

    return _load_mnist_like(
        MNIST, "mnist", MNIST_STATS, default_root(root), download, []
    )


def load_fashion_mnist(root: str | Path | None = None, download: bool = False) -> DataSplit:
    """Fashion-MNIST; with no ``root`` given, Debian's ``dataset-fashion-mnist`` files count too."""
    from torchvision.datasets import FashionMNIST

    extra = [DEBIAN_FASHION_MNIST] if root is None else []
    return _load_mnist_like(
        FashionMNIST, "fashion-mnist", FASHION_MNIST_STATS,
        default_root(root), download, extra,
    )


# ---------------------------------------------------------------- image folders


def decode_file(path: Path, mode: ImageReadMode | None = None) -> torch.Tensor:
    """One image file as uint8 CHW, RGB by default (torchvision's libjpeg-turbo/libpng
    decoders: about 4x faster than PIL on small JPEGs). A file that cannot be read or decoded
    is a one-line :class:`CfsError` naming it; an animated GIF gives its first frame."""
    from torchvision.io import ImageReadMode, decode_image

    mode = ImageReadMode.RGB if mode is None else mode
    try:
        raw = path.read_bytes()
    except OSError as exc:
        why = "is a symlink loop" if exc.errno == errno.ELOOP else f"cannot be read ({exc.strerror or _one_line(exc)})"
        raise CfsError(f"image {path} {why}; fix or remove it") from None
    if not raw:
        raise CfsError(f"image {path} is empty (0 bytes); replace or remove it")
    data = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    try:
        img = decode_image(data, mode=mode)
    except (RuntimeError, ValueError) as exc:
        raise CfsError(f"cannot decode image {path} ({_one_line(exc)[:100]}); replace or remove it") from None
    return img[0] if img.ndim == 4 else img


def _entries(folder: Path, links: bool = False) -> list[Path]:
    """The visible entries of ``folder``. ``links``: a symlink that loops or points nowhere is
    an error naming it (a class folder would otherwise be skipped without a word)."""
    try:
        entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as exc:
        raise CfsError(f"cannot list {folder}: {exc.strerror or _one_line(exc)}") from None
    for p in entries if links else ():
        if p.is_symlink() and not p.exists():
            try:
                p.stat()
            except OSError as exc:
                why = "is a symlink loop" if exc.errno == errno.ELOOP else "is a broken symlink"
                raise CfsError(f"{p} {why}; fix or remove it") from None
    return entries


def _class_names(folder: Path) -> list[str]:
    """The class folders of ``folder`` (sorted names, hidden ones left out)."""
    return [p.name for p in _entries(folder, links=True) if p.is_dir()]


def _image_files(folder: Path, class_names: list[str]) -> tuple[list[Path], list[int]]:
    """Every class's image files; a class folder that is missing or holds no images is an
    error naming it (it would be an experience with nothing to learn or nothing to score)."""
    paths, labels = [], []
    for label, cls in enumerate(class_names):
        class_dir = folder / cls
        if not class_dir.is_dir():
            raise CfsError(f"class {cls!r} has no folder {class_dir}: every class needs train and test "
                           f"images (add them, or remove the class from both parts)")
        files = [p for p in _entries(class_dir) if p.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise CfsError(f"class folder {class_dir} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                           f"add images or remove the folder")
        paths += files
        labels += [label] * len(files)
    return paths, labels


def _decode_part(folder: Path, class_names: list[str], image_size: int | None) -> ArrayDataset:
    paths, labels = _image_files(folder, class_names)
    if not paths:
        raise CfsError(f"no images found in {folder}/<class>/; put .jpg/.png files there")
    x = decode_images(
        paths, lambda p: decode_file(p), image_size, f"decoding {folder.name}/ ({len(paths)} files)",
        lambda sizes: (f"images in {folder} differ in size ({', '.join(f'{h}x{w}' for h, w in sizes[:3])}); "
                       f"pass image_size=N (option --image-size) to resize them to NxN"),
    )
    return ArrayDataset(x, torch.tensor(labels), class_names)


def _decode_imagefolder(
    folder: Path, name: str, image_size: int | None, stats: tuple | None
) -> DataSplit:
    """Decode ``folder/{train,test}/<class>/*``; labels follow the sorted train class folders
    (as torchvision's ImageFolder does), and test classes must be among them. ``stats`` are
    the published mean/std of a known data set; without them they come from the train part."""
    train_dir, test_dir = folder / "train", folder / "test"
    class_names = _class_names(train_dir)
    test_names = _class_names(test_dir)
    for here, there, names in ((test_dir, train_dir, set(test_names) - set(class_names)),
                               (train_dir, test_dir, set(class_names) - set(test_names))):
        if names:
            shown = ", ".join(sorted(names)[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            raise CfsError(f"{here} has classes missing from {there}: {shown}; every class needs "
                           f"train and test images (add them, or remove the class)")
    if not class_names:
        raise CfsError(f"no class folders in {train_dir}; put images in {train_dir}/<class>/")
    train = _decode_part(train_dir, class_names, image_size)
    test = _decode_part(test_dir, class_names, image_size)
    if train.x.shape[1:] != test.x.shape[1:]:
        raise CfsError(
            f"train images in {folder} are {tuple(train.x.shape[2:])} but test images are "
            f"{tuple(test.x.shape[2:])}; pass image_size=N (option --image-size)"
        )
    return DataSplit(name, train, test, *(stats or channel_stats(train.x)))


def _cached_imagefolder(
    folder: Path, name: str, image_size: int | None, stats: tuple | None = None
) -> DataSplit:
    folder = folder.resolve()
    return cached_split(
        name, [folder / "train", folder / "test"], {"image_size": image_size, "stats": stats},
        lambda: _decode_imagefolder(folder, name, image_size, stats),
    )


def load_imagefolder(
    root: str | Path | None = None, download: bool = False, *, image_size: int | None = None
) -> DataSplit:
    """Any ``<root>/train/<class>/*`` + ``<root>/test/<class>/*`` tree of images, as RGB.

    ``image_size`` resizes every image to a square (needed when sizes differ); mean/std are
    computed from the train images. Decoded pixels are cached (see :mod:`cfs.data.cache`).
    ``download`` is accepted for a uniform signature; there is nothing to download.
    """
    root = default_root(root)
    if not ((root / "train").is_dir() and (root / "test").is_dir()):
        raise CfsError(
            f"image folder not found: expected {root / 'train'}/<class>/* and "
            f"{root / 'test'}/<class>/*; create that layout (one folder per class) or pass "
            f"another root"
        )
    return _cached_imagefolder(root, "imagefolder", None if image_size is None else int(image_size))
