"""STN: Siamese Transformer Networks for few-shot classification (Jiang, Zhang & He 2024),
METHODS.md section 3.

Two ViT branches that share no weights, both initialised from the same checkpoint (the run's
backbone; ``--backbone timm:vit_small_patch16_224 --weights dino_deitsmall16_pretrain.pth``
for DINO ViT-S/16, or the tiny ``stn-vit-tiny`` for tests):

* global branch: class token g(x); prototype p_c = mean of the K support class tokens;
  d_g(q, c) = ||g(q) - p_c||^2;
* local branch: the patch tokens of an image (query) or of all K support images (class) are
  modelled as a Gaussian N(mu, Sigma), diagonal + eps by default [PROPOSED]
  (``covariance="shrinkage"``: full, Sigma <- (1-rho) Sigma + rho tr(Sigma)/D I);
  d_l(q, c) = KL(N_q || N_c) (``kl="class||query"`` reverses it) [RECALL/PROPOSED];
* each distance vector over the N classes is L2-normalised, fused as
  D = alpha d_g/||d_g|| + (1 - alpha) d_l/||d_l|| (alpha = 0.5 [PROPOSED]), and the episode loss
  is CE(softmax(-s D), y_q) with s = 10 [PROPOSED]; prediction is argmin_c D.

The paper's optimiser (AdamW lr 1e-5, weight decay 0.05, cosine) is a run setting
(``--optimizer adamw --lr 1e-5 --weight-decay 0.05 --schedule cosine``). Images are resized to
the ViT's input size when they differ (84x84 mini-ImageNet -> 224 for ViT-S/16).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cfs import hookimpl
from cfs.engine.state import RunState
from cfs.errors import CfsError
from cfs.models.backbones import TimmBackbone
from cfs.registry import Registry
from cfs.scenarios.episodes import EpisodeBatch
from cfs.strategy import Strategy

# ---------------------------------------------------------------------------- distances


def global_distances(query_cls: torch.Tensor, support_cls: torch.Tensor, support_y: torch.Tensor,
                     n_way: int) -> torch.Tensor:
    """Squared Euclidean distance of query class tokens (T, Q, D) to the class prototypes
    (means of support class tokens (T, S, D) by label): (T, Q, N)."""
    onehot = F.one_hot(support_y, n_way).to(support_cls.dtype)
    protos = onehot.transpose(1, 2) @ support_cls / onehot.sum(1).unsqueeze(-1)
    return (query_cls.unsqueeze(2) - protos.unsqueeze(1)).pow(2).sum(-1)


def class_tokens(support_tokens: torch.Tensor, support_y: torch.Tensor, n_way: int) -> torch.Tensor:
    """Pool the patch tokens of each class's K support images: (T, S, L, D) -> (T, N, K*L, D).
    Support is ordered class by class (EpisodeBatch contract), so this is a reshape."""
    t, s, l, d = support_tokens.shape
    order = support_y.argsort(dim=1, stable=True)
    ordered = torch.gather(support_tokens, 1, order[..., None, None].expand(t, s, l, d))
    return ordered.reshape(t, n_way, (s // n_way) * l, d)


def gaussian_kl_diag(mu_p: torch.Tensor, var_p: torch.Tensor, mu_q: torch.Tensor, var_q: torch.Tensor) -> torch.Tensor:
    """KL(N(mu_p, diag var_p) || N(mu_q, diag var_q)) over the last dimension."""
    return 0.5 * (var_p / var_q + (mu_q - mu_p).pow(2) / var_q - 1.0 + var_q.log() - var_p.log()).sum(-1)


def gaussian_kl_full(mu_p: torch.Tensor, cov_p: torch.Tensor, mu_q: torch.Tensor, cov_q: torch.Tensor) -> torch.Tensor:
    """KL(N(mu_p, cov_p) || N(mu_q, cov_q)) for broadcastable batches of (D,) means, (D, D) covariances."""
    d = mu_p.shape[-1]
    inv_q = torch.linalg.inv(cov_q)
    diff = (mu_q - mu_p).unsqueeze(-1)
    trace = (inv_q * cov_p.transpose(-1, -2)).sum((-1, -2))
    maha = (diff.transpose(-1, -2) @ inv_q @ diff).squeeze(-1).squeeze(-1)
    return 0.5 * (trace + maha - d + torch.linalg.slogdet(cov_q)[1] - torch.linalg.slogdet(cov_p)[1])


def token_stats(tokens: torch.Tensor, covariance: str, eps: float, rho: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (diagonal variance or shrunk full covariance) of tokens (..., L, D)."""
    mu = tokens.mean(-2)
    centred = tokens - mu.unsqueeze(-2)
    if covariance == "diagonal":
        return mu, centred.pow(2).mean(-2) + eps
    cov = centred.transpose(-1, -2) @ centred / tokens.shape[-2]
    d = cov.shape[-1]
    eye = torch.eye(d, dtype=cov.dtype, device=cov.device)
    trace = cov.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None]
    return mu, (1 - rho) * cov + rho * trace / d * eye + eps * eye


def local_distances(query_tokens: torch.Tensor, support_tokens: torch.Tensor, support_y: torch.Tensor, n_way: int,
                    covariance: str = "diagonal", eps: float = 1e-4, rho: float = 0.1,
                    kl: str = "query||class") -> torch.Tensor:
    """KL between each query's token Gaussian (T, Q, L, D) and each class's Gaussian from its
    support tokens (T, S, L, D): (T, Q, N)."""
    mu_q, s_q = token_stats(query_tokens, covariance, eps, rho)  # (T, Q, D[, D])
    mu_c, s_c = token_stats(class_tokens(support_tokens, support_y, n_way), covariance, eps, rho)  # (T, N, D[, D])
    if covariance == "diagonal":
        q = (mu_q.unsqueeze(2), s_q.unsqueeze(2))
        c = (mu_c.unsqueeze(1), s_c.unsqueeze(1))
        fn = gaussian_kl_diag
    else:
        q = (mu_q[:, :, None], s_q[:, :, None])
        c = (mu_c[:, None], s_c[:, None])
        fn = gaussian_kl_full
    return fn(*q, *c) if kl == "query||class" else fn(*c, *q)


def fuse(d_global: torch.Tensor, d_local: torch.Tensor, alpha: float) -> torch.Tensor:
    """alpha * d_g/||d_g||_2 + (1 - alpha) * d_l/||d_l||_2, norms over the classes (last dim)."""
    return alpha * F.normalize(d_global, dim=-1) + (1 - alpha) * F.normalize(d_local, dim=-1)


# ---------------------------------------------------------------------------- branches


def vit_parts(branch: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Class token (B, D) and patch tokens (B, L, D) of a timm ViT (or a TimmBackbone)."""
    model = branch.model if isinstance(branch, TimmBackbone) else branch
    if not hasattr(model, "forward_features") or getattr(model, "cls_token", None) is None:
        raise CfsError("STN needs a ViT backbone with a class token: use --backbone stn-vit-tiny or "
                       "--backbone timm:vit_small_patch16_224 (--weights for a DINO checkpoint)")
    feats = model.forward_features(x)
    prefix = int(getattr(model, "num_prefix_tokens", 1))
    return feats[:, 0], feats[:, prefix:]


def vit_input_size(branch: nn.Module) -> int | None:
    model = branch.model if isinstance(branch, TimmBackbone) else branch
    size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    return int(size[0]) if isinstance(size, (tuple, list)) else (int(size) if size else None)


def stn_vit_tiny(in_channels: int = 3, image_size: int = 28, patch_size: int | None = None) -> nn.Module:
    """Tiny ViT for tests and CPU runs: 2 blocks, 64-d, 2 heads, ~7x7 patches per image."""
    from timm.models.vision_transformer import VisionTransformer

    patch = patch_size or max(1, image_size // 7)
    vit = VisionTransformer(img_size=image_size, patch_size=patch, in_chans=in_channels, num_classes=0,
                            embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0)
    return TimmBackbone(vit)


# ---------------------------------------------------------------------------- strategy


@dataclass
class STNOptions:
    alpha: float = 0.5            # fusion weight of the global distance [PROPOSED]
    scale: float = 10.0           # s in softmax(-s D) [PROPOSED]
    eps: float = 1e-4             # added to the token (co)variances
    covariance: str = "diagonal"  # or "shrinkage" (full covariance, shrinkage rho)
    rho: float = 0.1
    kl: str = "query||class"      # or "class||query"

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError("alpha must lie in [0, 1]")
        if self.covariance not in ("diagonal", "shrinkage"):
            raise ValueError("covariance must be 'diagonal' or 'shrinkage'")
        if self.kl not in ("query||class", "class||query"):
            raise ValueError("kl must be 'query||class' or 'class||query'")


class STN(Strategy):
    """STN: two non-shared ViT branches, class-token Euclidean + patch-token KL distances, fused."""

    name = "stn"
    compatibility = frozenset({"episodic"})
    Options = STNOptions

    def __init__(self, options: Any | None = None) -> None:
        super().__init__(options)
        self.local: nn.Module | None = None

    @hookimpl
    def cfs_before_run(self, state: RunState) -> None:
        # The local branch starts as a copy of the global one (same checkpoint), then trains apart.
        self.local = copy.deepcopy(state.model.backbone)

    @hookimpl
    def cfs_extra_parameters(self, state: RunState) -> list[nn.Parameter]:
        return list(self.local.parameters()) if self.local is not None else []

    def _inputs(self, branch: nn.Module, x: torch.Tensor) -> torch.Tensor:
        size = vit_input_size(branch)
        if size is not None and x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return x

    def distances(self, state: RunState, tasks: EpisodeBatch) -> torch.Tensor:
        """Fused distance D (T, N*Q, N) for every query and class of the meta-batch."""
        o = self.options
        self.local.train(state.model.training)
        t, s = tasks.support_x.shape[:2]
        x = torch.cat([tasks.support_x.flatten(0, 1), tasks.query_x.flatten(0, 1)])
        cls, _ = vit_parts(state.model.backbone, self._inputs(state.model.backbone, x))
        _, tokens = vit_parts(self.local, self._inputs(self.local, x))
        cls_s, cls_q = cls[: t * s].view(t, s, -1), cls[t * s :].view(t, -1, cls.shape[-1])
        tok_s = tokens[: t * s].view(t, s, *tokens.shape[1:])
        tok_q = tokens[t * s :].view(t, -1, *tokens.shape[1:])
        d_g = global_distances(cls_q, cls_s, tasks.support_y, tasks.n_way)
        d_l = local_distances(tok_q, tok_s, tasks.support_y, tasks.n_way, o.covariance, o.eps, o.rho, o.kl)
        return fuse(d_g, d_l, o.alpha)

    @hookimpl
    def cfs_meta_loss(self, state: RunState, tasks: EpisodeBatch) -> torch.Tensor:
        logits = -self.options.scale * self.distances(state, tasks)
        return F.cross_entropy(logits.flatten(0, 1), tasks.query_y.flatten())

    @hookimpl
    def cfs_predict_episode(self, state: RunState, tasks: EpisodeBatch) -> torch.Tensor:
        with torch.no_grad():
            return -self.options.scale * self.distances(state, tasks)

    def state_dict(self) -> dict[str, Any]:
        return {"local": self.local.state_dict() if self.local is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("local") is not None and self.local is not None:
            self.local.load_state_dict(state["local"])


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(STN)


@hookimpl
def cfs_add_backbones(registry: Registry) -> None:
    registry.add(stn_vit_tiny, name="stn-vit-tiny")
