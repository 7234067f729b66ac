"""The tensor form of few-shot episodes that the episodic loop hands to strategies."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class EpisodeBatch:
    """A meta-batch of ``T`` N-way K-shot Q-query tasks, already normalised, on the run's device.

    Labels are episode-local (0..N-1). Support samples are ordered class by class
    (``support_y = [0]*K + [1]*K + ...``), queries likewise.
    Shapes: ``support_x`` (T, N*K, C, H, W), ``support_y`` (T, N*K),
    ``query_x`` (T, N*Q, C, H, W), ``query_y`` (T, N*Q).
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    n_way: int
    k_shot: int
    q_query: int

    @property
    def n_tasks(self) -> int:
        return int(self.support_x.shape[0])

    def task(self, t: int) -> "EpisodeBatch":
        """Task ``t`` as a meta-batch of one."""
        sl = slice(t, t + 1)
        return EpisodeBatch(self.support_x[sl], self.support_y[sl], self.query_x[sl], self.query_y[sl],
                            self.n_way, self.k_shot, self.q_query)

    def to(self, device: torch.device | str) -> "EpisodeBatch":
        return EpisodeBatch(self.support_x.to(device), self.support_y.to(device), self.query_x.to(device),
                            self.query_y.to(device), self.n_way, self.k_shot, self.q_query)
