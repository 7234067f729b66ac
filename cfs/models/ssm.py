"""Selective state-space models (Mamba; Gu & Dao 2023): the selective scan and the Mamba block.

The selective scan runs the input-dependent linear recurrence of Mamba over a sequence, for
every channel ``d`` and state ``n``:

    dt_t = softplus(delta_t + delta_bias)                         (delta_softplus)
    h_t  = exp(dt_t * A[d, n]) * h_{t-1} + dt_t * B_t[n] * u_t     (zero-order hold of A, Euler of B)
    y_t  = sum_n C_t[n] * h_t[n] + D[d] * u_t,   then  y_t * silu(z_t)   (when ``z`` is given)

:func:`selective_scan` is written in plain PyTorch (one vectorised step per position, so it runs,
and differentiates, on any device); on CUDA, when the ``mamba_ssm`` package is installed, it calls
that package's fused kernel ``selective_scan_fn`` with the same arguments instead
(``backend="auto"``). Shapes follow ``mamba_ssm``: ``u, delta, z`` (batch, d, L), ``A`` (d, n),
``B, C`` (batch, n, L), ``D, delta_bias`` (d,).

:class:`MambaBlock` is the Mamba mixer (``mamba_ssm.modules.mamba_simple.Mamba``): input
projection to ``x`` and gate ``z``, causal depthwise convolution and SiLU on ``x``, the
input-dependent ``dt`` (low rank, then ``dt_proj``), ``B`` and ``C``, the scan, an optional output
projection; with ``return_params`` it also returns ``z`` and the selective parameters, which
Mamba-FSCIL's class-sensitive losses need. Its initialisation is Mamba's (S4D-real ``A``,
``dt`` bias so that ``softplus(bias)`` lies in [dt_min, dt_max], ``D = 1``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


def mamba_ssm_available() -> bool:
    """Whether ``mamba_ssm``'s CUDA selective scan can be imported."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # noqa: F401
    except Exception:  # ImportError, or a broken CUDA extension
        return False
    return True


def selective_scan_torch(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                         D: torch.Tensor | None = None, z: torch.Tensor | None = None,
                         delta_bias: torch.Tensor | None = None, delta_softplus: bool = False) -> torch.Tensor:
    """The selective scan in plain PyTorch (at least float32 internally, output in ``u``'s dtype)."""
    dtype = u.dtype
    work = torch.promote_types(dtype, torch.float32)
    u, delta, A, B, C = (t.to(work) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(work)[None, :, None]
    if delta_softplus:
        delta = F.softplus(delta)
    decay = torch.exp(delta.unsqueeze(-1) * A[None, :, None, :])  # (b, d, L, n)
    drive = (delta * u).unsqueeze(-1) * B.transpose(1, 2).unsqueeze(1)  # (b, d, L, n)
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[2]):
        h = decay[:, :, t] * h + drive[:, :, t]
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, :, t]))
    y = torch.stack(ys, dim=2)
    if D is not None:
        y = y + u * D.to(work)[None, :, None]
    if z is not None:
        y = y * F.silu(z.to(work))
    return y.to(dtype)


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: torch.Tensor | None = None, z: torch.Tensor | None = None,
                   delta_bias: torch.Tensor | None = None, delta_softplus: bool = False,
                   backend: str = "auto") -> torch.Tensor:
    """The selective scan; ``backend`` ``"torch"``, ``"mamba_ssm"`` (CUDA kernel) or ``"auto"``
    (the kernel on CUDA tensors when the package is installed, else PyTorch)."""
    if backend not in ("auto", "torch", "mamba_ssm"):
        raise ValueError(f"backend must be auto, torch or mamba_ssm, not {backend!r}")
    use_kernel = backend == "mamba_ssm" or (backend == "auto" and u.is_cuda and mamba_ssm_available())
    if use_kernel:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

        return selective_scan_fn(u.contiguous(), delta.contiguous(), A.contiguous(), B.contiguous(), C.contiguous(),
                                 None if D is None else D.float(), None if z is None else z.contiguous(),
                                 delta_bias=None if delta_bias is None else delta_bias.float(),
                                 delta_softplus=delta_softplus)
    return selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


class SelectiveParams(NamedTuple):
    """What a :class:`MambaBlock` exposes besides its output: the gate ``z`` (b, d_inner, L) and
    the input-dependent parameters ``dt`` (low rank, b, dt_rank, L), ``B`` and ``C`` (b, n, L)."""

    z: torch.Tensor
    dt: torch.Tensor
    B: torch.Tensor
    C: torch.Tensor


class MambaBlock(nn.Module):
    """The Mamba mixer over (batch, L, d_model) sequences (see the module docstring)."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: float = 2,
                 dt_rank: int | str = "auto", dt_min: float = 0.001, dt_max: float = 0.1, dt_init_floor: float = 1e-4,
                 use_out_proj: bool = True, backend: str = "auto") -> None:
        super().__init__()
        self.d_inner = int(expand * d_model)
        self.d_state = d_state
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.backend = backend
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        std = self.dt_rank ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(self.d_inner, 1))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False) if use_out_proj else nn.Identity()

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, SelectiveParams]:
        """(b, L, d_model) -> output (b, L, d_out) and the :class:`SelectiveParams`."""
        L = hidden.shape[1]
        xz = self.in_proj(hidden).transpose(1, 2)  # (b, 2 d_inner, L)
        x, z = xz.chunk(2, dim=1)
        x = F.silu(self.conv1d(x)[..., :L])
        dbl = self.x_proj(x.transpose(1, 2))  # (b, L, rank + 2n)
        dt, B, C = torch.split(dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = (dt @ self.dt_proj.weight.T).transpose(1, 2)  # (b, d_inner, L), bias added in the scan
        B, C = B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous()
        A = -torch.exp(self.A_log.float())
        y = selective_scan(x, delta, A, B, C, self.D, z, self.dt_proj.bias, delta_softplus=True, backend=self.backend)
        return self.out_proj(y.transpose(1, 2)), SelectiveParams(z, dt.transpose(1, 2), B, C)
