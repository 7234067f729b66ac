#!/usr/bin/env bash
# Install cfs with everything its test suite needs, on a fresh Debian machine with Python 3.11.
# torch/torchvision come from the local wheels this workplace keeps on disk (pip's constraint
# file caps them there); other packages come from PyPI and Debian.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
PY=${PYTHON:-python3}

# Debian packages: real Fashion-MNIST files, headless Chromium for the HTML-report test.
if command -v apt-get >/dev/null; then
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist chromium >/dev/null
fi

$PY -m pip install -q torch==2.14.1 torchvision==0.29.1
$PY -m pip install -q -e ".[test,avalanche,pretrained,tensorboard,ray,fast]"
# learn2learn (optional extra `l2l`) must be built from source on Python 3.11.
if [ -x scripts/install-l2l.sh ]; then PYTHON=$PY bash scripts/install-l2l.sh; fi
$PY -m pip check || true
