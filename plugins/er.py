"""Online experience replay, ER (Chaudhry et al., "On Tiny Episodic Memories in Continual
Learning", 2019; the ER baseline of the MIR and ER-ACE papers, mammoth's ``er``).

A reservoir buffer of the **incoming** samples, stored raw after every optimizer step; once it
is not empty every incoming batch gets a batch of ``minibatch`` buffer samples drawn uniformly
without replacement appended (:class:`cfs.replay_strategy.ReservoirReplayStrategy`, which ER
is without change), and the step's loss is the engine's cross-entropy over the joined rows
(mammoth's concatenation, METHODS.md 11.4). It needs no task boundary, so it runs unchanged with
``boundaries: hidden`` in the ``online`` kind.

Defaults: ``buffer=500`` (50 per class on CIFAR-10, one of the MIR paper's memory sizes:
``--mem_size 50`` per class in its ``ER_experiments.sh``), ``minibatch=None`` = the run's batch
size (the MIR code's ``--buffer_batch_size 10`` with ``--batch_size 10``).

Departures: the official MIR code sums the incoming and replayed means (a step twice as large
at the same learning rate) and starts replaying at the second task, excluding the current
task's samples from retrieval; here the means are joined (mammoth) and replay starts with the
first non-empty buffer (task-free). Plain ``replay`` (class-balanced exemplars chosen at
experience ends) is PyCIL's offline replay, not this method.
"""

from __future__ import annotations

from cfs import hookimpl
from cfs.registry import Registry
from cfs.replay_strategy import ReservoirReplayStrategy


class Er(ReservoirReplayStrategy):
    """ER: replay a same-size batch from a reservoir buffer every step (buffer 500)."""

    name = "er"


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(Er)
