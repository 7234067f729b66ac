"""Prototype (nearest-class-mean) classifiers over features, and the simplex ETF.

Shared by SimpleCIL, APER, TEEN, the FSCIL prototype baseline (class means, cosine scores)
and NCPTM-CIL (a fixed simplex equiangular tight frame as its classifier); METHODS.md §10.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def class_means(features: torch.Tensor, labels: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """(len(classes), D): the mean feature of each class in ``classes`` (rows in that order)."""
    rows = []
    for c in classes:
        mask = labels == c
        if not bool(mask.any()):
            raise ValueError(f"class {c} has no sample to average")
        rows.append(features[mask].mean(0))
    return torch.stack(rows)


def cosine_scores(features: torch.Tensor, prototypes: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``scale * cos(f, p_c)`` for every feature row and prototype: (B, C)."""
    return scale * F.normalize(features, dim=1) @ F.normalize(prototypes, dim=1).T


class PrototypeBank:
    """Prototypes indexed by class label, growing as classes arrive (label k -> row k)."""

    def __init__(self) -> None:
        self.prototypes: torch.Tensor | None = None

    def set(self, classes: list[int], rows: torch.Tensor) -> None:
        """Store ``rows`` as the prototypes of ``classes`` (growing the bank if needed)."""
        need = max(classes) + 1
        if self.prototypes is None:
            self.prototypes = torch.zeros(need, rows.shape[1], device=rows.device, dtype=rows.dtype)
        elif self.prototypes.shape[0] < need:
            pad = self.prototypes.new_zeros(need - self.prototypes.shape[0], rows.shape[1])
            self.prototypes = torch.cat([self.prototypes, pad])
        self.prototypes[torch.as_tensor(classes, device=rows.device)] = rows.to(self.prototypes.dtype)

    def scores(self, features: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        if self.prototypes is None:
            raise RuntimeError("no prototype has been computed yet")
        return cosine_scores(features, self.prototypes.to(features.device), scale)

    def state_dict(self) -> dict:
        return {"prototypes": None if self.prototypes is None else self.prototypes.detach().cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        self.prototypes = state["prototypes"]


def orthonormal_basis(dim: int, k_max: int, seed: int = 0) -> torch.Tensor:
    """U (dim, k_max) with orthonormal columns: QR of a seeded Gaussian matrix (float64)."""
    if k_max > dim:
        raise ValueError(f"a simplex ETF of {k_max} classes needs at least {k_max} dimensions, not {dim}")
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(dim, k_max, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)  # unique QR: positive diagonal of R


def simplex_etf(basis: torch.Tensor, k: int) -> torch.Tensor:
    """E_K = sqrt(K/(K-1)) U[:, :K] (I - 11^T/K): K unit columns with pairwise cosine -1/(K-1).

    With one class there is no simplex; its single target is U[:, 0]."""
    u = basis[:, :k]
    if k == 1:
        return u.clone()
    centred = torch.eye(k, dtype=basis.dtype) - torch.full((k, k), 1.0 / k, dtype=basis.dtype)
    return math.sqrt(k / (k - 1)) * u @ centred
