"""Device choice, seeding and mixed precision in one place."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

from cfs.errors import CfsError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CfsError("--device cuda was asked for, but no CUDA device is available; use --device cpu")
    return torch.device(name)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return the generator the loops draw from."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return torch.Generator().manual_seed(seed)


def amp_dtype(device: torch.device, name: str = "auto") -> torch.dtype:
    """The mixed-precision type of ``--amp``: ``auto`` is bf16 on the CPU and on CUDA devices
    that support it (Ampere and later: no loss scaling needed), fp16 (with a GradScaler) on
    older CUDA devices; ``bf16``/``fp16`` force one."""
    if name == "fp16":
        return torch.float16
    if name == "bf16" or device.type != "cuda":
        return torch.bfloat16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, enabled: bool, dtype: torch.dtype | None = None):
    """Autocast to ``dtype`` (default: :func:`amp_dtype`'s ``auto``); a no-op context when
    disabled."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype or amp_dtype(device))


def memory_format(name: str, model: torch.nn.Module, device: torch.device,
                  channels_last: bool = True, amp: bool = False) -> torch.memory_format:
    """``auto`` is channels-last for convolutional models trained on the CPU (oneDNN convolutions
    run about 20% faster on NHWC tensors: ResNet-32, batch 32, measured here) and on CUDA with
    mixed precision (tensor-core convolutions take NHWC without transposes), when the
    scenario's kind allows it (``ScenarioKind.channels_last``: not for the functional
    meta-learning loops); contiguous otherwise."""
    if name == "channels_last":
        return torch.channels_last
    if name == "auto" and channels_last and (device.type == "cpu" or (device.type == "cuda" and amp)):
        if any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
            return torch.channels_last
    return torch.contiguous_format


def compile_model(model: torch.nn.Module) -> None:
    """``--compile``: compile the backbone in place with ``torch.compile`` (``Module.compile``:
    the module keeps its class, attributes and ``features``/``forward_all`` methods). The head,
    which grows between experiences, and every hook stay outside the compiled region, so a
    head's growth causes no recompilation and hooks run as plain Python."""
    backbone = getattr(model, "backbone", None)
    (backbone if isinstance(backbone, torch.nn.Module) else model).compile()


def check_compile(device_name: str) -> None:
    """``--compile`` on the CPU needs a C++ compiler for inductor's kernels: one line before any
    work when none is found (CUDA kernels come from Triton)."""
    import os
    import shutil

    on_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if not on_cuda and not any(shutil.which(c) for c in (os.environ.get("CXX") or "g++", "c++", "clang++")):
        raise CfsError("--compile on the CPU needs a C++ compiler (g++ or clang++) for torch.compile; "
                       "install one or leave out --compile")
