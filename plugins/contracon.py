"""ConTraCon (Roy, Verma, Voonna, Ghosh, Ghosh, Das; "Exemplar-Free Continual Transformer with
Convolutions", ICCV 2023): a transformer trained on the first task, re-weighted for every later
task by small convolution kernels on its attention weights; task identity from the entropy of
predictions over augmented views; no exemplars.

[CODE, CVIR/contracon ``src/utils/model_parts.py``, ``src/utils/transformers.py``,
``auto_run.py``]

* **Task 1** trains the whole backbone and a head for its classes.
* **Task t > 1**: every attention layer's query, key and value weight matrices are frozen at
  their task-1 values W and re-weighted per head h (each head's ``d_h x D`` slice read as a
  1-channel image)::

      W_t[h] = conv_{t,h}(W[h]) + sigmoid(s_{t,h}) * W[h]

  with a learnable ``k x k`` kernel and bias per head and per Q/K/V (``kernel_size`` k = 15, the
  official default; "same" padding) and a learnable skip scalar ``s`` (init 1); a Q/K/V bias b
  becomes ``gamma * b + beta`` (one pair per Q, K, V). The LayerNorms before attention and before
  the MLP of every block are per task (the official code keeps one pair per task), and each task
  has its own linear head over its own classes, trained with cross-entropy over those classes.
  Everything else (MLPs, output projections, embeddings) stays at its task-1 values, and a
  finished task's kernels, norms and head are frozen: earlier tasks' predictions never change.
* **Task identification** at inference: for every task t, the logits of task t's re-weighted
  network and head are averaged over the clean image (weight ``clean_weight`` = 6, the official
  six copies) and ``views`` = 10 AutoAugment (CIFAR-10 policy) views; the task whose averaged
  softmax has the least entropy is chosen and its head's prediction on the clean image is the
  answer. Images that are not RGB get Gaussian-noise views (N(0, 1) on the normalised input), as
  the official code does for its grayscale data sets.

Per-task parameters (:func:`per_task_parameters`), for L re-weighted attention layers of width
D with H heads, kernel k, and C_t classes in the task::

    L * (3 H (k^2 + 2) + 6 [Q/K/V bias] + 4 D) + D C_t + C_t

(per head and Q/K/V: k^2 kernel weights, one kernel bias, one skip scalar; gamma and beta per
Q/K/V; two LayerNorms of 2D; the head). For ``vit-tiny`` (D = 192, H = 3, 6 layers, k = 15) and 2
classes a task adds 17,288 parameters, 0.6% of the 2.7M-parameter backbone.

Backbones: any whose blocks expose ``attn.qkv`` (a Linear to 3D outputs, heads
``attn.num_heads``) and ``norm1``/``norm2``: timm ``VisionTransformer`` (``vit-tiny`` and
friends, ``timm:vit_*``) and LaViT's vanilla-attention layers (its less-attention layers have no
Q/K). A backbone without such blocks is a one-line error.

Departures: the official transformer is a CCT with a sequence-pooling head per task; here the
backbone's own pooling is shared and only the linear head is per task. Per-task LayerNorms start
from the task-1 values (the official code resets them to 1/0, which would discard a pre-trained
backbone's statistics), and beta starts at 0 (officially 1), so a new task starts from the task-1
network modulated by its kernels. AutoAugment views are drawn per image from the run's seeded
generator.

ConTraCon is exemplar-free and replaces the logits (``state.outputs`` hold the current task's head,
the other classes at -1e9): composed with a rehearsal strategy, replayed rows of earlier classes
are ignored by its loss, and strategies that read logits (distillation, DER++) are not meaningful
with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cfs import hookimpl
from cfs.data.transforms import BatchTransform
from cfs.engine.state import RunState
from cfs.errors import CfsError
from cfs.registry import Registry
from cfs.strategy import Strategy


@dataclass
class ConTraConOptions:
    kernel_size: int = 15  # official --ker_sz default
    views: int = 10  # AutoAugment views for task identification (official 10)
    clean_weight: int = 6  # copies of the clean image among the views (official 6)

    def __post_init__(self) -> None:
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {self.kernel_size}")
        if self.views < 0 or self.clean_weight < 0 or self.views + self.clean_weight == 0:
            raise ValueError("views and clean_weight must be >= 0 and not both 0")


class TaskConvQKV(nn.Module):
    """A frozen fused Q/K/V projection whose weights task t > 0 re-weights by per-head convs."""

    def __init__(self, base: nn.Linear, num_heads: int, kernel_size: int) -> None:
        super().__init__()
        if base.out_features % (3 * num_heads):
            raise CfsError(f"contracon: a qkv projection of {base.out_features} outputs does not split into "
                           f"Q/K/V x {num_heads} heads")
        self.base, self.num_heads, self.kernel_size = base, num_heads, kernel_size
        self.kernels = nn.ParameterList()  # task t -> (3H, 1, k, k), index t-1
        self.kernel_bias = nn.ParameterList()  # (3H,)
        self.skip = nn.ParameterList()  # (3H,)
        self.gamma = nn.ParameterList()  # (3,) only with a Q/K/V bias
        self.beta = nn.ParameterList()
        self.task = 0

    def add_task(self) -> list[nn.Parameter]:
        """New parameters for the next task: the kernel init of ``nn.Conv2d``, skip 1, gamma 1, beta 0."""
        groups = 3 * self.num_heads
        conv = nn.Conv2d(groups, groups, self.kernel_size, groups=groups)  # only for its default init
        w = self.base.weight
        new = [nn.Parameter(conv.weight.detach().to(w)), nn.Parameter(conv.bias.detach().to(w)),
               nn.Parameter(torch.ones(groups, device=w.device, dtype=w.dtype))]
        self.kernels.append(new[0])
        self.kernel_bias.append(new[1])
        self.skip.append(new[2])
        if self.base.bias is not None:
            new += [nn.Parameter(torch.ones(3, device=w.device, dtype=w.dtype)),
                    nn.Parameter(torch.zeros(3, device=w.device, dtype=w.dtype))]
            self.gamma.append(new[3])
            self.beta.append(new[4])
        return new

    def task_weight(self, task: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        w, b = self.base.weight, self.base.bias
        if task == 0:
            return w, b
        i, groups = task - 1, 3 * self.num_heads
        heads = w.view(groups, -1, w.shape[1])  # rows: Q heads, K heads, V heads
        conv = F.conv2d(heads.unsqueeze(0), self.kernels[i], self.kernel_bias[i], padding=self.kernel_size // 2,
                        groups=groups).squeeze(0)
        w_t = (conv + torch.sigmoid(self.skip[i]).view(groups, 1, 1) * heads).reshape_as(w)
        b_t = None if b is None else (b.view(3, -1) * self.gamma[i].view(3, 1) + self.beta[i].view(3, 1)).reshape_as(b)
        return w_t, b_t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.task_weight(self.task)
        return F.linear(x, w, b)


class TaskLayerNorm(nn.Module):
    """A LayerNorm with its own affine parameters per task (task 0 keeps the original)."""

    def __init__(self, base: nn.LayerNorm) -> None:
        super().__init__()
        self.base = base
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.task = 0

    def add_task(self) -> list[nn.Parameter]:
        new = [nn.Parameter(self.base.weight.detach().clone()), nn.Parameter(self.base.bias.detach().clone())]
        self.weights.append(new[0])
        self.biases.append(new[1])
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.task == 0:
            return self.base(x)
        return F.layer_norm(x, self.base.normalized_shape, self.weights[self.task - 1], self.biases[self.task - 1],
                            self.base.eps)


def attention_blocks(backbone: nn.Module) -> list[nn.Module]:
    """Blocks whose ``attn`` exposes a fused ``qkv`` Linear and ``num_heads``."""
    return [m for m in backbone.modules()
            if isinstance(getattr(getattr(m, "attn", None), "qkv", None), (nn.Linear, TaskConvQKV))
            and isinstance(getattr(m.attn, "num_heads", None), int)]


def wrap_backbone(backbone: nn.Module, kernel_size: int) -> list[nn.Module]:
    """Replace every block's ``attn.qkv`` by a :class:`TaskConvQKV` and its ``norm1``/``norm2``
    LayerNorms by :class:`TaskLayerNorm`; returns the task-aware modules."""
    blocks = attention_blocks(backbone)
    if not blocks:
        raise CfsError(f"contracon needs a transformer backbone whose blocks expose attn.qkv (e.g. --backbone "
                       f"vit-tiny or timm:vit_*); {type(backbone).__name__} has none")
    wrapped: list[nn.Module] = []
    for blk in blocks:
        if not isinstance(blk.attn.qkv, TaskConvQKV):
            blk.attn.qkv = TaskConvQKV(blk.attn.qkv, blk.attn.num_heads, kernel_size)
        wrapped.append(blk.attn.qkv)
        for name in ("norm1", "norm2"):
            norm = getattr(blk, name, None)
            if isinstance(norm, nn.LayerNorm) and norm.elementwise_affine:
                setattr(blk, name, TaskLayerNorm(norm))
            if isinstance(getattr(blk, name, None), TaskLayerNorm):
                wrapped.append(getattr(blk, name))
    return wrapped


def set_task(modules: list[nn.Module], task: int) -> None:
    for m in modules:
        m.task = task


def per_task_parameters(num_layers: int, dim: int, heads: int, kernel_size: int, n_classes: int,
                        qkv_bias: bool = True) -> int:
    """The stated formula: ``L (3H(k^2 + 2) + 6[bias] + 4D) + D C + C``."""
    return num_layers * (3 * heads * (kernel_size**2 + 2) + (6 if qkv_bias else 0) + 4 * dim) + dim * n_classes + n_classes


def least_entropy_task(mean_logits: torch.Tensor) -> torch.Tensor:
    """(T, B, C) view-averaged logits per task -> (B,) the task whose softmax is least entropic."""
    p = mean_logits.softmax(-1)
    entropy = -(p * torch.log(p + 1e-4)).sum(-1)  # the official +1e-4
    return entropy.argmin(0)


class ConTraCon(Strategy):
    """ConTraCon: per-task convolutional re-weighting of Q/K/V weights, entropy-based task id."""

    name = "contracon"
    compatibility = frozenset({"class-incremental"})
    #: needs attention layers with q/k/v weights (cfs.models.peft.backbone_family); the all-pairs
    #: composition test on an MLP leaves it out, as it does the prompt methods
    backbone_family = "vit"
    Options = ConTraConOptions

    def __init__(self, options: ConTraConOptions | None = None) -> None:
        super().__init__(options)
        self.modules: list[nn.Module] = []
        self.heads = nn.ModuleList()
        self.task_classes: list[list[int]] = []
        self._local: torch.Tensor | None = None

    # -- parameters of the task being trained
    def task_parameters(self, task: int) -> list[nn.Parameter]:
        params = list(self.heads[task].parameters())
        if task == 0:
            return params
        for m in self.modules:
            lists = ([m.kernels, m.kernel_bias, m.skip] + ([m.gamma, m.beta] if len(m.gamma) else [])
                     if isinstance(m, TaskConvQKV) else [m.weights, m.biases])
            params += [lst[task - 1] for lst in lists]
        return params

    @hookimpl
    def cfs_before_run(self, state: RunState) -> None:
        self.modules = wrap_backbone(state.model.backbone, self.options.kernel_size)

    @hookimpl
    def cfs_before_training_exp(self, state: RunState) -> None:
        task = len(self.heads)
        exp = state.experience
        self.task_classes.append(list(exp.classes))
        self.heads.append(nn.Linear(state.model.backbone.out_dim, len(exp.classes)).to(state.device))
        state.model.head.requires_grad_(False)  # the per-task heads replace the engine's head
        if task > 0:
            state.model.backbone.requires_grad_(False)
            for m in self.modules:
                m.add_task()
        for p in self.task_parameters(task):
            p.requires_grad_(True)
        set_task(self.modules, task)

    @hookimpl
    def cfs_extra_parameters(self, state: RunState) -> list[nn.Parameter]:
        return list(self.heads[-1].parameters()) if len(self.heads) else []

    @hookimpl
    def cfs_after_forward(self, state: RunState) -> None:
        task = len(self.heads) - 1
        self._local = self.heads[task](state.features)
        state.outputs = self._scatter(self._local.detach(), task, state.outputs.shape[1], fill=-1e9)

    @hookimpl
    def cfs_base_loss(self, state: RunState) -> torch.Tensor:
        task = len(self.heads) - 1
        # rows of other tasks' classes (a composed replay's) are not this task's head's to learn
        lookup = torch.full((state.outputs.shape[1],), -100, dtype=torch.long, device=state.device)
        lookup[torch.tensor(self.task_classes[task], device=state.device)] = torch.arange(
            len(self.task_classes[task]), device=state.device)
        return F.cross_entropy(self._local, lookup[state.batch.y])

    @hookimpl
    def cfs_after_training_exp(self, state: RunState) -> None:
        for p in self.task_parameters(len(self.heads) - 1):
            p.requires_grad_(False)
        if len(self.heads) == 1:  # task 1's backbone is the frozen base of every later task
            state.model.backbone.requires_grad_(False)

    # -- inference
    def _scatter(self, local: torch.Tensor, task: int, n_out: int, fill: float) -> torch.Tensor:
        scores = local.new_full((local.shape[0], n_out), fill)
        scores[:, torch.tensor(self.task_classes[task], device=local.device)] = local
        return scores

    def task_logits(self, model: nn.Module, x: torch.Tensor, task: int) -> torch.Tensor:
        """Task ``task``'s re-weighted network and head on ``x`` (the oracle-task prediction)."""
        set_task(self.modules, task)
        return self.heads[task](model.backbone(x))

    def views(self, state: RunState, x: torch.Tensor) -> list[torch.Tensor]:
        g = torch.Generator(device="cpu").manual_seed(state.config.seed or 0)
        if x.shape[1] != 3:
            return [x + torch.randn(x.shape, generator=g).to(x) for _ in range(self.options.views)]
        t = state.scenario.transform
        mean = torch.tensor(t.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(t.std, device=x.device).view(1, -1, 1, 1)
        pixels = (x * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
        augment = BatchTransform(mean=t.mean, std=t.std, autoaugment="cifar10")
        return [augment(pixels, train=True, generator=g).to(x) for _ in range(self.options.views)]

    @hookimpl
    def cfs_predict(self, state: RunState, x: torch.Tensor) -> torch.Tensor | None:
        if not self.heads:
            return None
        model, o = state.model, self.options
        n_tasks = len(self.heads)
        with torch.no_grad():
            views = self.views(state, x) if n_tasks > 1 else []
            clean, mean = [], []
            for task in range(n_tasks):
                logits = self.task_logits(model, x, task)
                total = o.clean_weight * logits + sum(self.task_logits(model, v, task) for v in views)
                clean.append(logits)
                mean.append(total / (o.clean_weight + len(views)))
            set_task(self.modules, n_tasks - 1)
            chosen = least_entropy_task(torch.stack(mean)) if n_tasks > 1 else torch.zeros(len(x), dtype=torch.long)
            scores = x.new_full((len(x), state.model.num_classes), -1e9)
            for task in range(n_tasks):
                rows = chosen.to(x.device) == task
                scores[rows] = self._scatter(clean[task][rows], task, scores.shape[1], fill=-1e9)
        return scores

    # -- checkpointing: the per-task heads and class sets (kernels and norms live in the model)
    def state_dict(self) -> dict:
        return {"task_classes": self.task_classes,
                "heads": [{k: v.detach().cpu().clone() for k, v in h.state_dict().items()} for h in self.heads]}

    def load_state_dict(self, state: dict) -> None:
        self.task_classes = [list(c) for c in state["task_classes"]]
        self.heads = nn.ModuleList()
        for sd in state["heads"]:
            head = nn.Linear(sd["weight"].shape[1], sd["weight"].shape[0])
            head.load_state_dict(sd)
            self.heads.append(head)


def per_task_count(strategy: ConTraCon, task: int) -> int:
    """The parameters task ``task`` added, counted on the modules themselves."""
    return sum(p.numel() for p in strategy.task_parameters(task))


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(ConTraCon)
