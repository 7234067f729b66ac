"""Shared test fixtures for data: the offline real data sets and an isolated cache folder."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

# ``../shared/data`` seen from the repository root (the parent of this tests folder).
SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """Point ``$CFS_CACHE_DIR`` at a temporary folder for the whole session, so tests never
    read a stale entry from, or write 185 MB into, the user's ``~/.cache/cfs``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CFS_CACHE_DIR", str(tmp_path_factory.mktemp("cfs-cache")))
        yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of offline real data archives (see its README.md)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"offline data folder {SHARED_DATA} is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def cifar10_root(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root holding ``cifar10-jpg/{train,test}/<class>/*.jpg``, extracted once per session.

    GNU tar extracts the 60,000 files in about a second, Python's tarfile in about ten, so
    tar is used where it exists.
    """
    archive = shared_data / "cifar10-jpg.tar.gz"
    if not archive.is_file():
        pytest.skip(f"{archive} is not present")
    root = tmp_path_factory.mktemp("cifar10")
    if shutil.which("tar"):
        subprocess.run(["tar", "xzf", str(archive), "-C", str(root)], check=True)
    else:
        with tarfile.open(archive) as tf:
            tf.extractall(root, filter="data")
    return root
