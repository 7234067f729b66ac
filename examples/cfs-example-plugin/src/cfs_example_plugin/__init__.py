"""Weight Aligning (WA, Zhao et al. CVPR 2020) as a third-party cfs strategy.

A fine-tuned class-incremental head is biased: the norms of the newest classes' weight vectors
drift away from the old ones' (larger, in the paper's setting). WA rescales the new classes'
weights after each experience by gamma = mean ||w_old|| / mean ||w_new||, so both groups
leave every experience with the same mean norm. Paired with replay (``replay+weight-align``)
it is the method of the paper; alone it shows the alignment step on plain fine-tuning.
"""

from __future__ import annotations

import torch

from cfs import hookimpl
from cfs.strategy import Strategy


class WeightAlign(Strategy):
    """Weight Aligning: rescale new-class head weights to the old classes' mean norm."""

    name = "weight-align"
    compatibility = frozenset({"class-incremental"})

    def __init__(self, options=None) -> None:
        super().__init__(options)
        self.n_old = 0
        self.last_gamma = 1.0

    @hookimpl
    def cfs_before_training_exp(self, state) -> None:
        self.n_old = state.n_seen - len(state.experience.classes)

    @hookimpl
    def cfs_after_training_exp(self, state) -> None:
        if self.n_old == 0:
            return
        weight = state.model.head.weight.data
        norms = weight.norm(dim=1)
        self.last_gamma = float(norms[: self.n_old].mean() / norms[self.n_old :].mean())
        with torch.no_grad():
            weight[self.n_old :] *= self.last_gamma

    def state_dict(self) -> dict:
        return {"n_old": self.n_old, "last_gamma": self.last_gamma}

    def load_state_dict(self, state: dict) -> None:
        self.n_old, self.last_gamma = state["n_old"], state["last_gamma"]


@hookimpl
def cfs_add_strategies(registry) -> None:
    registry.add(WeightAlign)
