"""Put a model back to its initial weights (methods that retrain from scratch: GDumb, joint).

A run's model is built once, then its head grows as classes arrive, so "from scratch" cannot
mean "rebuild the model": :class:`InitialWeights` keeps a copy of every parameter and buffer
as they were when it was taken (before the first experience) and :meth:`InitialWeights.restore`
copies them back in place. Tensors that grew since (the rows a growing head added for later
classes) get their first rows restored and the new rows freshly initialised the way
``nn.Linear`` initialises them, which is how :meth:`cfs.models.heads.IncrementalLinear.expand`
made them. Restoring in place keeps the parameter objects, so it is safe before the optimizer
of an experience is built and never leaves a stale parameter in another strategy's hands.
A pretrained backbone is restored to its pretrained weights (the run's initial model).
"""

from __future__ import annotations

import math
from itertools import chain

import torch
from torch import nn

from cfs.errors import CfsError


def _own_tensors(model: nn.Module):
    """(key, fan-in of its module's weight, tensor) for every parameter and buffer, each under
    the name of the module that holds it (a tied parameter under each of its names)."""
    for prefix, module in model.named_modules(remove_duplicate=False):
        fan_in = _fan_in(module)
        for name, tensor in chain(module.named_parameters(recurse=False), module.named_buffers(recurse=False)):
            if tensor is not None:
                yield (f"{prefix}.{name}" if prefix else name), fan_in, tensor


def _fan_in(module: nn.Module) -> int:
    """fan-in of ``module``'s ``weight`` (0 without a matrix weight)."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() < 2:
        return 0
    return nn.init._calculate_fan_in_and_fan_out(weight)[0]


@torch.no_grad()
def init_like_linear(new_rows: torch.Tensor, fan_in: int) -> None:
    """``nn.Linear``'s default initialisation of rows added to a weight (2-D or more: Kaiming
    uniform with ``a = sqrt(5)``) or to a bias (1-D: uniform in +-1/sqrt(fan_in))."""
    if new_rows.numel() == 0:
        return
    if new_rows.dim() >= 2:
        nn.init.kaiming_uniform_(new_rows, a=math.sqrt(5))
    else:
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        nn.init.uniform_(new_rows, -bound, bound)


class InitialWeights:
    """A copy of a model's parameters and buffers that :meth:`restore` puts back in place."""

    def __init__(self, model: nn.Module) -> None:
        self.tensors = {key: t.detach().clone() for key, _, t in _own_tensors(model)}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.cpu().clone() for k, v in self.tensors.items()}

    @classmethod
    def from_state_dict(cls, tensors: dict[str, torch.Tensor]) -> "InitialWeights":
        saved = cls.__new__(cls)
        saved.tensors = dict(tensors)
        return saved

    @torch.no_grad()
    def restore(self, model: nn.Module) -> None:
        """Reset ``model`` to the saved weights; rows added since along the first dimension (a
        growing head) are re-initialised as ``nn.Linear`` does. Any other change of shape, or a
        tensor that did not exist when the copy was taken, is a :class:`CfsError`."""
        for key, fan_in, tensor in _own_tensors(model):
            saved = self.tensors.get(key)
            if saved is None:
                raise CfsError(f"cannot reset {key}: it did not exist when the initial weights were saved")
            if saved.shape == tensor.shape:
                tensor.copy_(saved)  # copy_ moves devices (a restored copy lives on the CPU)
            elif saved.dim() == tensor.dim() and saved.shape[1:] == tensor.shape[1:] and len(saved) <= len(tensor):
                tensor[: len(saved)].copy_(saved)
                init_like_linear(tensor[len(saved):], fan_in)
            else:
                raise CfsError(f"cannot reset {key}: its shape changed from {tuple(saved.shape)} "
                               f"to {tuple(tensor.shape)}")
