"""ER-ACE's asymmetric cross-entropy (Caccia et al., ICLR 2022, eq. 4 and Algorithm 1).

Experience replay trains incoming and replayed samples with one cross-entropy over every
class; the incoming samples of new classes then push the old classes' logits down hard and
the old classes' representations drift abruptly when a task starts. ER-ACE keeps the two
apart::

    L = CE_masked(f(x_in), y_in; C_in) + CE(f(x_re), y_re)

* incoming rows: the cross-entropy over only the classes ``C_in`` present among the incoming
  rows of this batch (every other logit masked out), so new samples never push old logits;
  logits of classes not seen yet (a head sized for the whole scenario) stay unmasked, as the
  authors' ``mask[:, seen_so_far.max():] = 1`` does;
* replayed rows: the ordinary cross-entropy over all classes of the logits.

Each part is the mean over its own rows and the two means are **summed** (the authors'
``self.update(inc_loss + re_loss)``, mammoth's ``loss += loss_re``); a part without rows
contributes zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def present_class_mask(y: torch.Tensor, n_classes: int, n_seen: int | None = None,
                       rows: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean (n_classes,) mask of the logits the incoming rows' cross-entropy keeps: the
    classes in ``y`` (of the ``rows``, a boolean row mask, when given) plus every class
    ``>= n_seen`` (not seen yet; none when ``n_seen`` is ``None`` or covers every logit).
    Counted with a scatter-add, so nothing is read back from the device."""
    weight = torch.ones_like(y) if rows is None else rows.to(y.dtype)
    keep = torch.zeros(n_classes, dtype=y.dtype, device=y.device).index_add_(0, y, weight) > 0
    if n_seen is not None:
        keep[n_seen:] = True
    return keep


def er_ace_loss(logits: torch.Tensor, y: torch.Tensor, replayed: torch.Tensor,
                n_seen: int | None = None) -> torch.Tensor:
    """ER-ACE's loss of one batch.

    ``logits`` (B, C) of every row, ``y`` (B,) labels, ``replayed`` (B,) boolean: the row is a
    replayed memory sample (the others are incoming). ``n_seen``: classes seen so far (logits
    from ``n_seen`` on belong to classes not seen yet and are never masked). Returns
    ``CE(incoming rows, logits of the classes present among them) + CE(replayed rows, all
    logits)``, each a mean over its rows; computed in float32.

    Both parts are per-row losses weighted by the row masks (a part without rows gives 0), not
    cross-entropies of the selected rows: selecting rows by a mask waits for the device.
    """
    logits = logits.float()
    replayed = replayed.to(torch.bool)
    incoming = ~replayed
    keep = present_class_mask(y, logits.shape[1], n_seen, rows=incoming)
    masked = logits.masked_fill(~keep, torch.finfo(logits.dtype).min)
    per_row = torch.where(incoming, F.cross_entropy(masked, y, reduction="none"),
                          F.cross_entropy(logits, y, reduction="none"))
    w_in, w_re = incoming.float(), replayed.float()
    return (per_row * w_in).sum() / w_in.sum().clamp(min=1) + (per_row * w_re).sum() / w_re.sum().clamp(min=1)
