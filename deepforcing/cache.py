"""Per-layer KV cache: each key stored once, rotated, with its positions.

Keys are stored after RMSNorm and RoPE, at the temporal position recorded per slot (``rot_t``),
together with each token's absolute frame index and spatial position; values are never rotated.
This is the layout of Self-Forcing's cache (the same bytes per token). A policy says, for every
read, at which temporal position each cached token sits; only slots whose position changed are
re-rotated, in place: by the change of position (one rounding per move), or, for a policy that asks
for ``raw_keys`` (exact re-alignment wherever a slot moves), from a second buffer of un-rotated keys.
Where a policy uses absolute positions no key is ever re-rotated: bit-identical to caches that
rotate at write time.

Buffers are preallocated: ``capacity`` committed tokens plus any scratch the policy's free room does
not cover, for the tokens of the forward in flight, staged right after the committed slots. Slot
order is logical and compact: slots ``[0, n)`` are in use, in the order the policy keeps them (sinks
first, then time order for every shipped policy), then the staged ones. Each slot maps to a buffer row
(``phys``): an eviction only re-maps slots and frees rows, which the next staged tokens refill, so no
K/V moves. An unmasked read of every cached and staged token is one slice of the buffers in row
order (a FIFO window's rows are always consecutive); commit turns staged tokens into cached ones
without copying.

Bookkeeping (frame ids, positions, tags) lives on the host as small integer tensors, so policies
decide without device synchronisation; only K/V live on the compute device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from deepforcing.model import Rope3D

# Slot tags a policy may use to mark regions (diagnostics, protection from eviction).
RECENT, SINK, COMPRESSED, ANCHOR = 0, 1, 2, 3
TAG_NAMES = {RECENT: "recent", SINK: "sink", COMPRESSED: "compressed", ANCHOR: "anchor"}
STALE = torch.iinfo(torch.long).min  # rot_t marker: the memo for this slot is invalid


@dataclass(frozen=True)
class Geometry:
    """Token geometry of one rollout, derived from the model config and the latent size."""

    grid: tuple[int, int]  # (H', W') tokens per frame side
    chunk_frames: int
    num_frames: int
    num_layers: int
    num_heads: int
    head_dim: int

    @property
    def tokens_per_frame(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def num_chunks(self) -> int:
        return self.num_frames // self.chunk_frames


class LayerKV:
    """One layer's keys and values: ``capacity`` committed slots plus ``scratch`` extra slots, so that the
    forward in flight (staged right after the committed slots) always fits.

    Each key is stored once, rotated to the temporal position in ``rot_t``; values are never rotated.
    A slot read at another position is re-rotated in place, only when its position changes: from the
    stored rotated key by the change of position (one rounding per move), or, with ``raw_keys``, from a
    second buffer of un-rotated keys (exact wherever the slot moves, at the cost of that buffer).
    """

    def __init__(
        self, batch: int, capacity: int, scratch: int, heads: int, head_dim: int, grid: tuple[int, int],
        rope: Rope3D, dtype: torch.dtype, device: torch.device, raw_keys: bool = False, compact: bool = False,
    ):
        total = capacity + scratch
        self.compact = compact  # the reference path: keep() gathers the kept slots to the front
        self.capacity, self.scratch, self.grid, self.rope = capacity, scratch, grid, rope

        def buffer() -> torch.Tensor:
            # Indexed as [B, slots, H, D] like the model's q/k/v, stored head-major ([B, H, slots, D]): a
            # slice of slots is then one contiguous block per head, which attention kernels read faster
            # than tokens interleaved across heads (CPU flash attention: 15 % at dim 256 / 4 heads,
            # docs/performance.md). Same values, same bytes.
            return torch.zeros(batch, heads, total, head_dim, dtype=dtype, device=device).transpose(1, 2)

        self.k_rot = buffer()
        self.v = buffer()
        self.k_raw = buffer() if raw_keys else None
        self.frame = torch.zeros(total, dtype=torch.long)  # absolute latent frame of each slot
        self.h = torch.zeros(total, dtype=torch.long)
        self.w = torch.zeros(total, dtype=torch.long)
        self.tag = torch.zeros(total, dtype=torch.uint8)
        self.rot_t = torch.full((total,), STALE, dtype=torch.long)  # position k_rot is rotated to
        self.aux: dict[str, torch.Tensor] = {}  # per-slot policy state (e.g. reuse counters), moved by keep()
        self.phys = torch.arange(total)  # logical slot -> row of the K/V buffers; free rows after n + pending
        self.n = 0
        self.pending = 0  # tokens written to the scratch by the forward in flight

    @property
    def device(self) -> torch.device:
        return self.k_rot.device

    def _buffers(self) -> tuple[torch.Tensor, ...]:
        return (self.k_rot, self.v) if self.k_raw is None else (self.k_raw, self.k_rot, self.v)

    # ---- reads -----------------------------------------------------------------------------
    def run_starts(self) -> torch.Tensor:
        """For each cached slot, whether it starts a run of its frame (slots of a frame are contiguous)."""
        f = self.frame[: self.n]
        first = torch.ones_like(f, dtype=torch.bool)
        first[1:] = f[1:] != f[:-1]
        return first

    def frames(self) -> torch.Tensor:
        """Distinct cached frame ids, in slot order of first appearance."""
        return self.frame[: self.n][self.run_starts()]

    def _dev(self, idx: torch.Tensor) -> torch.Tensor:
        """A host index on the buffers' device, copied without blocking the host."""
        if self.device.type == "cpu":
            return idx
        return idx.pin_memory().to(self.device, non_blocking=True)

    def _rows(self, stop: int, start: int = 0) -> slice | None:
        """The buffer rows of logical slots ``[start, stop)`` as a slice if they are consecutive rows in
        slot order, else None."""
        if stop <= start:
            return slice(0, 0)
        first, last = int(self.phys[start]), int(self.phys[stop - 1])
        if last - first != stop - start - 1:
            return None
        rows = self.phys[start:stop]
        if stop - start > 1 and not bool((rows[1:] - rows[:-1] == 1).all()):
            return None
        return slice(first, last + 1)

    @staticmethod
    def _runs(rows: torch.Tensor, most: int = 4) -> list[tuple[slice, slice]] | None:
        """``rows`` as at most ``most`` runs of consecutive rows: (positions in ``rows``, buffer rows)
        pairs; None if more."""
        if not rows.numel():
            return []
        cuts = (torch.nonzero(rows[1:] - rows[:-1] != 1).flatten() + 1).tolist()
        if len(cuts) >= most:
            return None
        bounds = [0, *cuts, rows.numel()]
        pairs = zip(bounds[:-1], bounds[1:], strict=True)
        return [(slice(a, b), slice(int(rows[a]), int(rows[a]) + b - a)) for a, b in pairs]

    def _gather(self, buf: torch.Tensor, logical: torch.Tensor | slice) -> torch.Tensor:
        """Rows of ``buf`` for logical slots (indices or a slice), in slot order; a view when they are
        consecutive rows."""
        if isinstance(logical, slice):
            rows = self._rows(logical.stop, logical.start or 0)
            if rows is not None:
                return buf[:, rows]
        return self._take(buf, self._dev(self.phys[logical]))

    @staticmethod
    def _take(buf: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``buf``'s rows in that order, copied head-major like the buffers (attention reads it faster)."""
        return buf.transpose(1, 2).index_select(2, rows).transpose(1, 2)

    def _refresh(self, slots: torch.Tensor | None, t: torch.Tensor) -> None:
        """Re-rotate the slots whose stored rotation is not at ``t`` (in place, only those)."""
        idx = torch.arange(self.n) if slots is None else slots
        changed = self.rot_t[idx] != t
        stale = idx[changed]
        if stale.numel():
            t_stale = t[changed]
            rows = self._dev(self.phys[stale])
            if self.k_raw is not None:  # exact: from the un-rotated keys
                ang = self.rope.angles(self._dev(t_stale), self._dev(self.h[stale]), self._dev(self.w[stale]))
                self.k_rot.index_copy_(1, rows, Rope3D.rotate(self.k_raw.index_select(1, rows), ang))
            else:  # by the change of position, from the stored rotation
                delta = self._dev(t_stale - self.rot_t[stale])
                self.k_rot.index_copy_(1, rows, self.rope.rotate_temporal(self.k_rot.index_select(1, rows), delta))
            self.rot_t[stale] = t_stale

    def rotated(self, slots: torch.Tensor | None, t: torch.Tensor) -> torch.Tensor:
        """Keys of ``slots`` (None: all ``[0, n)``) rotated to temporal positions ``t`` (host, per slot),
        in slot order."""
        self._refresh(slots, t)
        return self._gather(self.k_rot, slice(0, self.n) if slots is None else slots)

    def values(self, slots: torch.Tensor | None) -> torch.Tensor:
        return self._gather(self.v, slice(0, self.n) if slots is None else slots)

    def staged_keys(self) -> torch.Tensor:
        """The rotated keys of the forward in flight, in staging order."""
        return self._gather(self.k_rot, self.staged())

    def read(self, slots: torch.Tensor | None, t: torch.Tensor, own: torch.Tensor | None = None,
             ordered: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys (rotated to ``t``) and values of ``slots``, followed by the staged tokens ``own``
        (indices into the staged region; None: all of them).

        ``ordered=False`` (softmax attention without a mask does not depend on the key order) with
        ``slots=None`` and ``own=None``: every cached and staged token in buffer order, one slice of the
        buffers, no copy, whenever their rows are consecutive (a window whose evicted rows were refilled
        by the chunk: always, for a FIFO window with or without a sink); otherwise they are compacted
        once and then read as one slice.
        """
        end = self.n + self.pending
        if slots is None and own is None:
            self._refresh(None, t)
            if ordered:
                return self._gather(self.k_rot, slice(0, end)), self._gather(self.v, slice(0, end))
            rows = self.phys[:end]
            lo = int(rows.min()) if end else 0
            if end and int(rows.max()) - lo != end - 1:  # scattered rows (after a non-FIFO selection)
                self._compact(end)
                lo = 0
            return self.k_rot[:, lo : lo + end], self.v[:, lo : lo + end]
        k_ctx, v_ctx = self.rotated(slots, t), self.values(slots)
        if own is None:
            k_own, v_own = self._gather(self.k_rot, self.staged()), self._gather(self.v, self.staged())
        else:
            k_own, v_own = self._gather(self.k_rot, own + self.n), self._gather(self.v, own + self.n)

        def cat(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # head-major, like the buffers
            return torch.cat([a.transpose(1, 2), b.transpose(1, 2)], dim=2).transpose(1, 2)

        return cat(k_ctx, k_own), cat(v_ctx, v_own)

    def _compact(self, count: int) -> None:
        """Move the rows of logical slots ``[0, count)`` to buffer rows ``[0, count)`` in slot order."""
        if self._rows(count) == slice(0, count):
            return
        rows = self._dev(self.phys[:count])
        for buf in self._buffers():
            buf[:, :count] = buf.index_select(1, rows)
        self.phys = torch.arange(self.phys.numel())

    def staged(self) -> slice:
        return slice(self.n, self.n + self.pending)

    def tags(self) -> torch.Tensor:
        """The region tag of every cached slot (read only: change tags with :meth:`mark`)."""
        return self.tag[: self.n]

    def mark(self, which: torch.Tensor | slice, tag: int) -> None:
        """Tag cached slots (a bool mask or indices over ``[0, n)``, or a slice) as region ``tag``."""
        if isinstance(which, torch.Tensor) and which.dtype == torch.bool and len(which) != self.n:
            raise ValueError(f"a slot mask of {len(which)} entries for {self.n} cached slots")
        self.tag[: self.n][which] = tag

    def end_forward(self) -> None:
        """The forward in flight is over: what it staged and did not commit is dropped."""
        self.pending = 0

    # ---- the forward in flight -------------------------------------------------------------
    def stage(self, k_raw: torch.Tensor, k_rot: torch.Tensor, v: torch.Tensor, frame: torch.Tensor,
              t: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> None:
        """Write the current forward's tokens into the free slots right after the committed ones."""
        m = k_raw.shape[1]
        if self.n + m > self.capacity + self.scratch:
            raise ValueError(f"{m} staged tokens after {self.n} cached do not fit the {self.capacity}-slot "
                             f"capacity plus {self.scratch}-slot scratch; the policy's room_frames is too large")
        sl = slice(self.n, self.n + m)
        runs = self._runs(self.phys[sl])
        if runs is None:  # scattered free rows: one indexed write
            rows = self._dev(self.phys[sl])
            self.k_rot.index_copy_(1, rows, k_rot)
            self.v.index_copy_(1, rows, v)
            if self.k_raw is not None:
                self.k_raw.index_copy_(1, rows, k_raw)
        else:  # a few runs of consecutive rows (a FIFO ring wraps at most once): slice writes, no index
            for src, dst in runs:
                self.k_rot[:, dst], self.v[:, dst] = k_rot[:, src], v[:, src]
                if self.k_raw is not None:
                    self.k_raw[:, dst] = k_raw[:, src]
        self.frame[sl], self.h[sl], self.w[sl], self.rot_t[sl] = frame, h, w, t
        self.tag[sl] = RECENT
        for a in self.aux.values():
            a[sl] = 0
        self.pending = m

    def register_aux(self, name: str, dtype: torch.dtype = torch.long, device: torch.device | str = "cpu",
                     width: int | None = None) -> torch.Tensor:
        """A per-slot array (``[slots]`` or ``[slots, width]``) a policy keeps beside the cache; zeroed
        for new tokens, permuted by keep()."""
        if name not in self.aux:
            shape = (self.frame.numel(),) if width is None else (self.frame.numel(), width)
            self.aux[name] = torch.zeros(shape, dtype=dtype, device=device)
        return self.aux[name]

    def shift_rotation(self, slots: torch.Tensor, delta: int) -> None:
        """Rotate the stored rotated keys of ``slots`` by ``delta`` temporal positions in place, in the
        cache dtype, and record their new position. This is the incremental (lossy) re-alignment of
        caches that store rotated keys; the exact alternative is to read the slots at a new position."""
        if not slots.numel() or delta == 0:
            return
        rows = self._dev(self.phys[slots])
        self.k_rot.index_copy_(1, rows, self.rope.rotate_temporal(self.k_rot.index_select(1, rows), float(delta)))
        self.rot_t[slots] += delta

    def commit(self, count: int | None = None, tag: int = RECENT, skip: int = 0) -> None:
        """Turn ``count`` staged tokens (default: all after ``skip``) into cached slots, dropping the
        first ``skip`` staged tokens (a forward whose leading frames are queries only)."""
        if not 0 <= skip <= self.pending:
            raise ValueError(f"cannot skip {skip} of {self.pending} staged tokens")
        count = self.pending - skip if count is None else count
        if skip + count > self.pending:
            raise ValueError(f"cannot commit {count} tokens after skipping {skip} of {self.pending} staged")
        if self.n + count > self.capacity:
            raise RuntimeError(
                f"cache overflow: {self.n} cached + {count} new tokens > capacity {self.capacity}; "
                "the policy must evict before committing"
            )
        if skip and count:  # the committed tokens take the skipped ones' slots: their rows do not move
            src, dst = slice(self.n + skip, self.n + skip + count), slice(self.n, self.n + count)
            for meta in (self.frame, self.h, self.w, self.tag, self.rot_t, *self.aux.values()):
                meta[dst] = meta[src].clone()
            dropped = self.phys[self.n : self.n + skip].clone()
            self.phys[dst] = self.phys[src].clone()
            self.phys[self.n + count : self.n + count + skip] = dropped
        self.tag[self.n : self.n + count] = tag
        self.n += count
        self.pending = 0

    # ---- membership ------------------------------------------------------------------------
    def keep(self, slots: torch.Tensor) -> None:
        """Keep only ``slots`` (host LongTensor, a subset of ``[0, n)``), compacted to the front in that order."""
        m = slots.numel()
        if m == self.n and torch.equal(slots, torch.arange(self.n)):
            return
        # Staged tokens of the forward in flight move along, right after the kept slots. Only the slot
        # order changes: the K/V rows stay where they are and the dropped rows become free, to be refilled
        # by the next tokens staged (with ``compact``, the reference path: gathered to the front).
        order = torch.cat([slots, torch.arange(self.n, self.n + self.pending)])
        for meta in (self.frame, self.h, self.w, self.tag, self.rot_t):
            meta[: order.numel()] = meta[order]
        for a in self.aux.values():
            a[: order.numel()] = a[order if a.device.type == "cpu" else self._dev(order)]
        free = torch.ones(self.phys.numel(), dtype=torch.bool)
        free[order] = False
        self.phys = torch.cat([self.phys[order], self.phys[free]])
        self.n = m
        if self.compact:
            self._compact(order.numel())

    def evict_frames(self, frames: torch.Tensor) -> None:
        """Drop every slot whose frame id is in ``frames``."""
        if frames.numel():
            self.keep(torch.nonzero(~torch.isin(self.frame[: self.n], frames)).flatten())

    def reset(self) -> None:
        self.n = self.pending = 0
        self.phys = torch.arange(self.phys.numel())
        self.rot_t.fill_(STALE)
        self.tag.zero_()
        self.aux.clear()

    def nbytes(self) -> int:
        """Bytes allocated for this layer (capacity and scratch; keys, values and any raw keys)."""
        return sum(b.numel() * b.element_size() for b in self._buffers())

    def used_nbytes(self) -> int:
        """Bytes of the ``n`` cached tokens (keys, values and any raw keys)."""
        return self.n * sum(b[:, :1].numel() * b.element_size() for b in self._buffers())


class KVCache:
    """All layers' caches for one rollout (reused across videos of the same geometry)."""

    def __init__(self, geom: Geometry, capacity_frames: int, scratch_frames: int, batch: int,
                 rope: Rope3D, dtype: torch.dtype, device: torch.device, raw_keys: bool = False,
                 compact: bool = False):
        self.geom = geom
        tpf = geom.tokens_per_frame
        self.layers = [
            LayerKV(batch, capacity_frames * tpf, scratch_frames * tpf, geom.num_heads, geom.head_dim,
                    geom.grid, rope, dtype, device, raw_keys, compact)
            for _ in range(geom.num_layers)
        ]
        self.key = (geom, capacity_frames, scratch_frames, batch, dtype, str(device), rope.max_pos, raw_keys, compact)

    def reset(self) -> None:
        for layer in self.layers:
            layer.reset()

    def nbytes(self) -> int:
        return sum(layer.nbytes() for layer in self.layers)

    def used_nbytes(self) -> int:
        return sum(layer.used_nbytes() for layer in self.layers)
