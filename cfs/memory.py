"""Exemplar memories for rehearsal: a class-balanced memory and a reservoir buffer.

:class:`ClassBalancedMemory` (replay, iCaRL) keeps, for every class seen, its exemplars in
priority order (herding order, or a uniform random order), so shrinking to ``m`` per class
when new classes arrive is keeping the first ``m``: the total budget is never exceeded and
classes stay balanced. :class:`ReservoirBuffer` (DER++, online ER) keeps a uniform sample of
every example ever offered, with per-example payloads such as logits. Images are stored in
the data set's own dtype (uint8 for images, 4x smaller than float) on the run's device.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from cfs.data.arrays import ArrayDataset
from cfs.engine.distributed import gather_varying, map_sharded
from cfs.errors import CfsError

SELECTIONS = ("herding", "reservoir")


#: largest class (rows) whose Gram matrix herding precomputes (float64: 5792^2 x 8 B = 256 MiB)
GRAM_ROWS = 5792
#: devices whose herding steps run in NumPy (per-call overhead); elsewhere torch, with no sync
HOST_LOOP = frozenset({"cpu"})


def herding_order(features: torch.Tensor, m: int) -> torch.Tensor:
    """iCaRL herding (METHODS.md 11.3): indices ``p_1..p_m`` greedily chosen so that the mean of
    the chosen L2-normalised features stays closest to the class mean ``mu``:
    ``p_k = argmin_x || mu - (phi(x) + sum_{j<k} phi(p_j)) / k ||``, without replacement.

    Vectorised: with ``r = sum_{j<k} phi(p_j)``, ``k^2 ||mu - (r + phi_i)/k||^2`` is
    ``s_i = ||phi_i||^2 + 2 phi_i . (r - k mu)`` plus terms that do not depend on ``i``, and
    choosing ``p_k`` moves every score by ``2 phi_i . phi(p_k) - 2 phi_i . mu``: one row of the
    Gram matrix (precomputed in one matrix product when at least a quarter of a class of at
    most :data:`GRAM_ROWS` rows is chosen, else one matrix-vector product per step). A step
    is then an argmin and a vector add, with no (N, D) temporaries and no host sync. Scores
    are float64 (on the CPU for MPS, which has none), so the order is the one the distance
    formula gives (first index on ties; tested against that formula)."""
    phi = F.normalize(features.float(), dim=1)
    phi = (phi.cpu() if phi.device.type == "mps" else phi).double()
    n = phi.shape[0]
    m = min(m, n)
    drift = 2.0 * (phi @ phi.mean(0))  # 2 phi_i . mu, subtracted at every step
    score = (phi * phi).sum(1) - drift
    use_gram = n <= GRAM_ROWS and 4 * m >= n
    gram = torch.addmm(drift.unsqueeze(0), phi, phi.T, beta=-1.0, alpha=2.0) if use_gram else None
    if phi.device.type in HOST_LOOP:  # the same steps in NumPy: a third of the per-call overhead
        order = torch.from_numpy(_herd_numpy(score.numpy(), drift.numpy(), phi.numpy(),
                                             None if gram is None else gram.numpy(), m))
        return order.to(features.device)
    chosen = []
    for _ in range(m):  # index_select with a device index: no read-back of i to the host
        i = score.argmin().view(1)
        chosen.append(i)
        if gram is not None:
            score += gram.index_select(0, i)[0]
        else:
            score += torch.addmv(drift, phi, phi.index_select(0, i)[0], beta=-1.0, alpha=2.0)
        score.index_fill_(0, i, float("inf"))
    order = torch.cat(chosen) if chosen else torch.zeros(0, dtype=torch.long, device=phi.device)
    return order.to(features.device)


def _herd_numpy(score: np.ndarray, drift: np.ndarray, phi: np.ndarray, gram: np.ndarray | None,
                m: int) -> np.ndarray:
    """:func:`herding_order`'s loop on host arrays (same float64 arithmetic, same order)."""
    score = score.copy()
    chosen = np.empty(m, dtype=np.int64)
    for k in range(m):
        i = int(score.argmin())
        chosen[k] = i
        score += gram[i] if gram is not None else 2.0 * (phi @ phi[i]) - drift
        score[i] = np.inf
    return chosen


class ClassBalancedMemory:
    """Per-class exemplars in priority order under a total ``budget`` or a fixed ``per_class``.

    With a total budget, every class holds ``budget // n_classes`` exemplars (old classes shrink
    as classes arrive); with ``per_class`` the quota is fixed and the memory grows.
    """

    def __init__(self, budget: int = 2000, per_class: int | None = None, selection: str = "herding") -> None:
        if selection not in SELECTIONS:
            raise CfsError(f"unknown exemplar selection {selection!r}; use one of {', '.join(SELECTIONS)}")
        if per_class is None and budget < 1:
            raise CfsError(f"memory budget must be at least 1, got {budget}")
        self.budget = budget
        self.per_class = per_class
        self.selection = selection
        self.store: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._joined: ArrayDataset | None = None  # dataset(), until the store changes

    def quota(self, n_classes: int) -> int:
        """Exemplars per class once ``n_classes`` classes are stored."""
        return self.per_class if self.per_class is not None else self.budget // max(n_classes, 1)

    def __len__(self) -> int:
        return sum(len(y) for _, y in self.store.values())

    @property
    def classes(self) -> list[int]:
        return sorted(self.store)

    def counts(self) -> dict[int, int]:
        return {c: len(y) for c, (_, y) in sorted(self.store.items())}

    def shrink(self, m: int) -> None:
        """Keep the first ``m`` exemplars (the highest-priority ones) of every class."""
        self.store = {c: (x[:m], y[:m]) for c, (x, y) in self.store.items()}
        self._joined = None

    def update(self, data: ArrayDataset, embed: Callable[[torch.Tensor], torch.Tensor] | None = None,
               generator: torch.Generator | None = None) -> None:
        """Add the classes of ``data`` not stored yet, shrinking the others to the new quota.

        ``embed(x_raw) -> features`` is needed for herding; reservoir order is a seeded
        uniform permutation (the order reservoir sampling over the class's stream gives).
        """
        new = [int(c) for c in torch.unique(data.y).tolist() if int(c) not in self.store]
        m = self.quota(len(self.store) + len(new))
        if m < 1:
            raise CfsError(f"memory budget {self.budget} is smaller than the {len(self.store) + len(new)} classes seen")
        self.shrink(m)
        for c in new:
            rows = (data.y == c).nonzero().flatten()
            if self.selection == "herding":
                if embed is None:
                    raise CfsError("herding selection needs the model's features")
                order = herding_order(embed(data.x[rows]), m)
            else:
                dev = generator.device if generator is not None else rows.device
                order = torch.randperm(len(rows), generator=generator, device=dev)[:m].to(rows.device)
            keep = rows[order]
            self.store[c] = (data.x[keep].clone(), data.y[keep].clone())
            self._joined = None

    def dataset(self) -> ArrayDataset | None:
        """All exemplars as one data set (``None`` while empty), in class order.

        Built once per change of the memory (update, shrink, load) and then reused, so
        drawing a replay batch from it every step costs the same at any budget; treat it as
        read-only (it is shared between calls)."""
        if not self.store:
            return None
        if self._joined is None:
            xs, ys = zip(*(self.store[c] for c in self.classes))
            self._joined = ArrayDataset(torch.cat(xs), torch.cat(ys))
        return self._joined

    def state_dict(self) -> dict:
        return {c: (x.cpu(), y.cpu()) for c, (x, y) in self.store.items()}

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        self.store = {int(c): (x.to(device), y.to(device)) for c, (x, y) in state.items()}
        self._joined = None


class ReservoirBuffer:
    """Reservoir sampling (Vitter's algorithm R) over a stream of examples.

    After ``n`` examples were offered, each is in the buffer with probability
    ``capacity / n``. Besides ``x`` and ``y`` it stores ``logits`` of varying width
    (``widths[i]`` valid columns, for heads that grow) as DER needs.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise CfsError(f"buffer size must be at least 1, got {capacity}")
        self.capacity = capacity
        self.seen = 0
        self.x: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        self.logits: torch.Tensor | None = None
        self.widths: torch.Tensor | None = None
        self._x = self._y = self._logits = self._widths = None  # the same with a discard row

    def __len__(self) -> int:
        return min(self.seen, self.capacity)

    def _allocate(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor | None) -> None:
        rows = self.capacity + 1  # the last row takes what the reservoir discards (see add)
        self._x = torch.zeros((rows, *x.shape[1:]), dtype=x.dtype, device=x.device)
        self._y = torch.zeros(rows, dtype=y.dtype, device=y.device)
        self._widths = torch.zeros(rows, dtype=torch.long, device=y.device)
        self._logits = None if logits is None else torch.zeros(rows, logits.shape[1], dtype=torch.float32,
                                                                device=x.device)
        self._expose()

    def _expose(self) -> None:
        """``x``, ``y``, ``logits``, ``widths``: the stored rows (views without the discard row)."""
        c = self.capacity
        self.x, self.y, self.widths = self._x[:c], self._y[:c], self._widths[:c]
        self.logits = None if self._logits is None else self._logits[:c]

    def add(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor | None = None,
            generator: torch.Generator | None = None) -> None:
        """Offer a batch; example ``n`` (0-based) goes to slot ``n`` while there is room, else to a
        uniform slot in ``[0, n]`` if that slot is below capacity.

        Nothing is read back from the device: an example the reservoir does not keep is written
        to a discard row past the stored ones instead of being filtered out (a boolean filter
        would wait for the device to know how many rows remain)."""
        if self.x is None:
            self._allocate(x, y, logits)
        elif self.x.device != x.device:  # restored from a checkpoint on another device
            self.load_state_dict(self.state_dict(), device=x.device)
        b = x.shape[0]
        pos = torch.arange(self.seen, self.seen + b, device=x.device)
        dev = generator.device if generator is not None else x.device
        draw = (torch.rand(b, generator=generator, device=dev).to(x.device) * (pos + 1).float()).long()
        slot = torch.where(pos < self.capacity, pos, draw).clamp_(max=self.capacity)  # capacity: discarded
        self.seen += b
        self._x[slot] = x.to(self._x.dtype)
        self._y[slot] = y
        if logits is not None:
            if self._logits is None or logits.shape[1] > self._logits.shape[1]:  # the first, or a wider head
                old = self._logits
                self._logits = torch.zeros(self.capacity + 1, logits.shape[1], dtype=torch.float32, device=x.device)
                if old is not None:
                    self._logits[:, : old.shape[1]] = old
                self._expose()
            self._logits[slot] = 0
            self._logits[slot, : logits.shape[1]] = logits.detach().float()
            self._widths[slot] = logits.shape[1]

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Indices of ``min(n, len)`` distinct stored examples, uniformly."""
        dev = generator.device if generator is not None else self.y.device
        return torch.randperm(len(self), generator=generator, device=dev)[:n].to(self.y.device)

    def state_dict(self) -> dict:
        def cpu(t: torch.Tensor | None):
            return None if t is None else t.cpu()

        return {"capacity": self.capacity, "seen": self.seen, "x": cpu(self.x), "y": cpu(self.y),
                "logits": cpu(self.logits), "widths": cpu(self.widths)}

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        self.capacity, self.seen = state["capacity"], state["seen"]
        for key in ("x", "y", "logits", "widths"):
            value = state[key]
            if value is not None:  # one discard row past the stored ones (see add)
                value = value.to(device)
                value = torch.cat([value, value.new_zeros((1, *value.shape[1:]))])
            setattr(self, "_" + key, value)
        if self._x is None:
            self.x = self.y = self.logits = self.widths = None
        else:
            self._expose()


def offer_incoming(buffer: ReservoirBuffer, state, logits: torch.Tensor | None = None) -> None:
    """Offer the current batch's incoming rows (never replayed ones) to a reservoir, as raw
    images from ``state.train_data`` (provenance: :mod:`cfs.engine.batch`), with their
    ``logits`` rows when given (DER's targets). In a distributed run the rows of every rank's
    share of the global batch are offered, in rank order, so every rank keeps the same buffer."""
    batch = state.batch
    if batch.index is not None and batch.drawn_replayed is None:  # drawn rows first, all incoming: no filter
        n = batch.n_drawn
        rows, y = gather_varying(batch.index), gather_varying(batch.y[:n])
        z = None if logits is None else gather_varying(logits.detach()[:n])
    else:
        keep = batch.incoming
        rows, y = gather_varying(batch.incoming_index), gather_varying(batch.y[keep])
        z = None if logits is None else gather_varying(logits.detach()[keep])
    if not len(rows):
        return
    buffer.add(state.train_data.x[rows], y, z, generator=state.generator)


def store_experience(memory: ClassBalancedMemory, state) -> None:
    """Store the just-trained experience's classes in ``memory`` from the experience's own data
    (never the rows joined from a memory), herding on the run's model features."""
    data = state.experience.train.to(state.device)
    memory.update(data, embed=lambda x: embed_raw(state, x), generator=state.generator)


@torch.no_grad()
def embed_raw(state, x: torch.Tensor, batch_size: int = 512, model: torch.nn.Module | None = None) -> torch.Tensor:
    """Features of raw images ``x`` under the run's test transform, ``model`` (default the
    run's) in eval mode: the features herding and class means are computed from. ``x`` is the
    same on every rank (a memory, an experience's data): in a distributed run each rank embeds
    a part and the parts are gathered, so selections see the same bits everywhere."""
    model = state.model if model is None else model
    was_training = model.training
    model.eval()
    out = map_sharded(lambda xb: model.features(state.prepare(xb)).float(), x, batch_size)
    model.train(was_training)
    return out
