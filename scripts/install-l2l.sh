#!/usr/bin/env bash
# Build and install learn2learn 0.2.0 (the `l2l` optional extra of cfs) for Python >= 3.11.
#
# Why a script: learn2learn 0.2.0 ships only an sdist whose pre-generated Cython C files were
# made by Cython 0.29.15 for Python 3.7 and no longer compile against 3.11's C API. We delete
# those C files, regenerate them with a Cython 0.29/3.0 (< 3.1, which the .pyx sources still
# accept), build a wheel and install it WITHOUT its declared dependencies, so pip never
# touches the installed torch/torchvision. Then we add only the pure-python packages that
# `import learn2learn` needs (gym, scipy, requests, tqdm); gsutil and qpth are left out
# (learn2learn imports qpth lazily, and gsutil is a download tool).
#
# Usage: scripts/install-l2l.sh            (uses `python` on PATH; PYTHON=... to override)
set -euo pipefail

PYTHON="${PYTHON:-python}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/cfs-l2l.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

if "$PYTHON" -c "import learn2learn, sys; sys.exit(0 if learn2learn.__version__ == '0.2.0' else 1)" 2>/dev/null; then
    echo "learn2learn 0.2.0 is already installed for $PYTHON"
    exit 0
fi

echo ">> build tools (cython < 3.1, wheel)"
"$PYTHON" -m pip install --quiet "cython<3.1" wheel

echo ">> learn2learn 0.2.0 source distribution"
# --no-build-isolation: with --no-binary :all: an isolated build would compile Cython itself.
"$PYTHON" -m pip download --quiet learn2learn==0.2.0 --no-deps --no-binary :all: --no-build-isolation -d "$WORK"
tar xzf "$WORK"/learn2learn-0.2.0.tar.gz -C "$WORK"
SRC="$WORK/learn2learn-0.2.0"

echo ">> regenerate the Cython extensions and build a wheel"
find "$SRC/learn2learn" -name '*.c' -delete
rm -rf "$SRC/.eggs"   # a stale Cython 0.29.15 egg for Python 3.7 ships inside the sdist
(cd "$SRC" && "$PYTHON" setup.py --quiet build_ext bdist_wheel >/dev/null)

echo ">> install the wheel (no dependencies: torch stays as it is)"
"$PYTHON" -m pip install --quiet --no-deps "$SRC"/dist/learn2learn-0.2.0-*.whl

echo ">> pure-python dependencies needed by 'import learn2learn'"
"$PYTHON" -m pip install --quiet gym scipy requests tqdm

"$PYTHON" -c "import learn2learn as l2l; print('learn2learn', l2l.__version__, 'ready')"
