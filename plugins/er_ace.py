"""ER-ACE (Caccia et al., "New Insights on Reducing Abrupt Representation Change in Online
Continual Learning", ICLR 2022).

Experience replay with an **asymmetric cross-entropy** (:func:`cfs.losses.er_ace.er_ace_loss`)::

    L = CE(f(x_in)[C_in], y_in) + CE(f(x_re), y_re)

``C_in``: the classes present among the incoming rows of the batch (the other logits are
masked out), so the samples of new classes do not push the old classes' logits down; the
replayed rows get the cross-entropy over all seen classes. The two means are summed, as in
the authors' code (``inc_loss + re_loss``) and mammoth's ``er_ace.py``.

Memory (:class:`cfs.replay_strategy.ReservoirReplayStrategy`, shared with ER and MIR): a
reservoir buffer (:class:`cfs.memory.ReservoirBuffer`) of the **incoming** rows only,
stored raw (uint8 images as the data set holds them) after every optimizer step
(``cfs_after_batch``) and replayed through the training augmentation. Once the buffer is not
empty, every batch gets ``minibatch`` buffer samples appended (``cfs_before_batch``,
``state.batch.append_replayed``), drawn uniformly without replacement.

Defaults: ``buffer=500`` (50 per class on split CIFAR-10: the authors' ``--mem_size 50``,
one of the paper's memory sizes, and DER++'s default here), ``minibatch=None`` = the run's
batch size (mammoth's ``minibatch_size``, the authors' ``buffer_batch_size``).

Departures from the official code:

* the head is the engine's growing head, so "all classes" of the replayed rows are the classes
  seen so far (``state.n_seen``) and no logit of an unseen class exists to unmask; with a head
  sized for the whole scenario (composed with ``derpp``) the unseen classes' logits stay
  unmasked in the incoming part and part of the replayed one, as in the official code;
* the authors' mask also always keeps the largest class label seen so far
  (``mask[:, seen_so_far.max():] = 1``, meant for the unseen classes); here only present and
  unseen classes are kept;
* rehearsal and masking start with the first batch whose memory is not empty, as in the
  authors' (task-free) code; mammoth starts both at the second task;
* incoming and replayed rows go through the model in one forward pass (the engine's batch);
  the official code runs two, which differs only for batch-normalised backbones (the authors
  note that concatenating the two batches hurt them with a BN ResNet);
* the run's epochs apply in class-incremental scenarios; the ``online`` kind
  (``--scenario online-split-cifar10``) runs the paper's setting: one pass of 10-sample
  incoming batches, task boundaries visible or hidden (ER-ACE uses none of them).

Composition: it answers ``cfs_base_loss``; the teacher family (lwf, kd, ...) answers that hook
only as a declared fallback, so ``er-ace+lwf`` is ER-ACE's loss plus LwF's distillation term.
"""

from __future__ import annotations

import torch

from cfs import hookimpl
from cfs.engine.state import RunState
from cfs.losses.er_ace import er_ace_loss
from cfs.registry import Registry
from cfs.replay_strategy import ReservoirReplayStrategy


class ErAce(ReservoirReplayStrategy):
    """ER-ACE: replay from a reservoir with an asymmetric cross-entropy (buffer 500)."""

    name = "er-ace"

    @hookimpl
    def cfs_base_loss(self, state: RunState) -> torch.Tensor:
        return er_ace_loss(state.outputs, state.batch.y, state.batch.replayed, state.n_seen)


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(ErAce)
