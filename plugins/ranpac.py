"""RanPAC (McDonnell, Gong, Parvaneh, Abbasnejad, van den Hengel; NeurIPS 2023, "RanPAC: Random
projections and pre-trained models for continual learning").

Facts from the official code (github:RanPAC/RanPAC, ``RanPAC.py``: ``setup_RP``, ``replace_fc``,
``optimise_ridge_parameter``), re-implemented here:

* A frozen pre-trained model gives features f (d). A random matrix W_rand (d x M), entries
  N(0, 1), drawn once at the first task and never trained, projects them; h = ReLU(f W_rand).
* Over all experiences so far the Gram matrix G = sum h h^T (M x M) and the class-target matrix
  Q = sum h y^T (M x C, y one-hot, 0/1) are accumulated; nothing of the data is kept.
* After each experience the head is the ridge solution W = (G + lambda I)^-1 Q, and the logits
  of x are h(x)^T W (no normalisation, no bias).
* lambda is chosen per experience from 10^-8 ... 10^8 (17 values) on the *current experience's*
  features only: ridge is fitted on the first 80% of them (in the official code, the order of a
  shuffled loader; here a permutation from the run's seeded generator) and the lambda with the
  smallest mean squared error of the one-hot targets on the other 20% is used for the full
  (G + lambda I)^-1 Q.
* ``m=0``: no random projection, ridge on f itself (the official ``M=0`` "decorrelation only").
* First-session adaptation (the official PETL phase, optional): ``-o ranpac.adapt=auto|adapter|
  bn|ssf`` adapts a copy of the backbone on the first experience with the core's
  :class:`cfs.first_task_adaptation.FirstTaskAdaptation` (AdaptFormer in the blocks of a ViT,
  BatchNorm re-estimation of a CNN; APER's settings, ``adapt_*`` options) and then freezes it;
  as in the official code, all later features are the adapted model's alone. Default ``none``.

Defaults and departures, stated:

* ``m`` default 10000 (the paper's M, chosen for ViT-B/16's 768-d features). On CPU with a
  192-d tiny ViT or 1280-d EfficientNet-Lite0 features the benchmark uses ``-o ranpac.m=3000``
  (any M well above d keeps the projection's benefit; the M x M solve is the cost).
* The lambda search computes the 17 ridge fits through one eigendecomposition of the fitting
  part's Gram matrix (or of its kernel matrix H H^T when it has fewer rows than M): the same
  solutions as 17 ``torch.linalg.solve`` calls, mathematically, far cheaper. All ridge algebra
  is in float64 (the official code uses float32).
* Features come from the run's feature cache (:mod:`cfs.features`), computed once per image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from cfs import hookimpl
from cfs.engine.state import RunState
from cfs.features import cached_features, run_cache
from cfs.first_task_adaptation import VARIANTS, AdaptationOptions, FirstTaskAdaptation
from cfs.registry import Registry
from cfs.strategy import Strategy

#: the official lambda grid: 10^-8 ... 10^8
RIDGE_GRID = tuple(10.0 ** k for k in range(-8, 9))


@dataclass
class RanpacOptions:
    m: int = 10000  # random projection width M (0: ridge on the features themselves)
    fit_fraction: float = 0.8  # share of the experience that fits ridge in the lambda search
    adapt: str = "none"  # first-session adaptation: none|auto|adapter|bn|ssf
    adapt_dim: int = 64
    adapt_scale: float = 0.1
    adapt_epochs: int = 20
    adapt_lr: float = 0.01
    adapt_batch_size: int = 0  # 0: the variant's official batch (48 adapter, 128 bn/ssf)

    def __post_init__(self) -> None:
        if self.m < 0:
            raise ValueError(f"m must be >= 0, got {self.m}")
        if not 0 < self.fit_fraction < 1:
            raise ValueError(f"fit_fraction must be in (0, 1), got {self.fit_fraction}")
        if self.adapt not in (*VARIANTS, "none"):
            raise ValueError(f"adapt must be one of {', '.join(('none', *VARIANTS))}, got {self.adapt!r}")


def one_hot(labels: torch.Tensor, n: int) -> torch.Tensor:
    return F.one_hot(labels.long(), n).double()


def ridge_solve(g: torch.Tensor, q: torch.Tensor, lam: float) -> torch.Tensor:
    """W = (G + lam I)^-1 Q, G symmetric positive semi-definite (float64)."""
    eye = torch.eye(g.shape[0], dtype=g.dtype, device=g.device)
    return torch.linalg.solve(g + lam * eye, q)


def select_ridge(h: torch.Tensor, y: torch.Tensor, fit_fraction: float = 0.8,
                 grid: tuple[float, ...] = RIDGE_GRID) -> tuple[float, list[float]]:
    """The lambda of ``grid`` whose ridge fit on the first ``fit_fraction`` of the rows (``h``,
    one-hot ``y``, both float64) has the smallest MSE on the rest; also every lambda's MSE.

    Each fit ``W = (H^T H + lam I)^-1 H^T Y`` is evaluated through one eigendecomposition:
    of ``H^T H`` when the fitting part has more rows than columns, else of ``H H^T`` (then
    ``W = H^T (H H^T + lam I)^-1 Y``, the same matrix)."""
    n_fit = int(h.shape[0] * fit_fraction)
    hf, yf, hv, yv = h[:n_fit], y[:n_fit], h[n_fit:], y[n_fit:]
    if n_fit == 0 or len(hv) == 0:
        return 1.0, []
    if n_fit >= h.shape[1]:
        evals, vecs = torch.linalg.eigh(hf.T @ hf)
        left, right = hv @ vecs, vecs.T @ (hf.T @ yf)  # pred(lam) = left diag(1/(e+lam)) right
    else:
        evals, vecs = torch.linalg.eigh(hf @ hf.T)
        left, right = (hv @ hf.T) @ vecs, vecs.T @ yf
    evals = evals.clamp_min(0)
    losses = [float(F.mse_loss((left / (evals + lam)) @ right, yv)) for lam in grid]
    return grid[min(range(len(grid)), key=losses.__getitem__)], losses


class RanPAC(Strategy):
    """RanPAC: frozen features, random ReLU projection, ridge head from accumulated Gram matrices (closed form)."""

    name = "ranpac"
    compatibility = frozenset({"class-incremental"})
    Options = RanpacOptions

    def __init__(self, options: Any | None = None) -> None:
        super().__init__(options)
        o = self.options
        self.adaptation = None if o.adapt == "none" else FirstTaskAdaptation(AdaptationOptions(
            variant=o.adapt, adapter_dim=o.adapt_dim, adapter_scale=o.adapt_scale, epochs=o.adapt_epochs,
            lr=o.adapt_lr, batch_size=o.adapt_batch_size))
        self.w_rand: torch.Tensor | None = None  # (d, M)
        self.g: torch.Tensor | None = None  # (M, M) float64
        self.q: torch.Tensor | None = None  # (M, C) float64, column = class label
        self.w: torch.Tensor | None = None  # (M, C) the ridge head
        self.lambdas: list[float] = []  # the lambda chosen at each experience

    # -- features ------------------------------------------------------------------------------
    def train_features(self, state: RunState) -> torch.Tensor:
        ptm = cached_features(state, state.train_data.x)
        return ptm if self.adaptation is None else self.adaptation.train_features(state, ptm)

    def features(self, state: RunState, x: torch.Tensor) -> torch.Tensor:
        ptm = run_cache(state).prepared(state.model.backbone, x)
        return ptm if self.adaptation is None else self.adaptation.features(state, x, ptm)

    def project(self, f: torch.Tensor) -> torch.Tensor:
        """h = ReLU(f W_rand) in float64 (f itself when ``m=0``)."""
        f = f.double()
        return f if self.w_rand is None else torch.relu(f @ self.w_rand.to(f.device))

    # -- learning ------------------------------------------------------------------------------
    def _grow(self, n_classes: int) -> None:
        if self.q.shape[1] < n_classes:
            self.q = torch.cat([self.q, self.q.new_zeros(self.q.shape[0], n_classes - self.q.shape[1])], dim=1)

    @hookimpl
    def cfs_train_experience(self, state: RunState) -> bool:
        feats = self.train_features(state)
        labels = state.train_data.y.to(feats.device)
        if self.w_rand is None and self.options.m > 0:
            gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=state.generator)))
            self.w_rand = torch.randn(feats.shape[1], self.options.m, generator=gen, dtype=torch.float64).to(feats.device)
        h = self.project(feats)
        n_classes = max(int(labels.max()) + 1, state.n_seen)
        if self.g is None:
            self.g = h.new_zeros(h.shape[1], h.shape[1])
            self.q = h.new_zeros(h.shape[1], n_classes)
        self._grow(n_classes)
        y = one_hot(labels, self.q.shape[1])
        self.g += h.T @ h
        self.q += h.T @ y
        order = torch.randperm(len(labels), generator=state.generator).to(h.device)
        lam, _ = select_ridge(h[order], y[order], self.options.fit_fraction)
        self.lambdas.append(lam)
        self.w = ridge_solve(self.g, self.q, lam)
        return True

    @hookimpl
    def cfs_predict(self, state: RunState, x: torch.Tensor) -> torch.Tensor:
        h = self.project(self.features(state, x))
        return (h @ self.w.to(h.device)).float()

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        def cpu(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.detach().cpu().clone()

        return {"w_rand": cpu(self.w_rand), "g": cpu(self.g), "q": cpu(self.q), "w": cpu(self.w),
                "lambdas": list(self.lambdas),
                "adaptation": None if self.adaptation is None else self.adaptation.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w_rand, self.g, self.q, self.w = state["w_rand"], state["g"], state["q"], state["w"]
        self.lambdas = list(state["lambdas"])
        if self.adaptation is not None and state.get("adaptation") is not None:
            self.adaptation.load_state_dict(state["adaptation"])


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(RanPAC)
