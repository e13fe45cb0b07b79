"""Every user's current row of item -> weight in flat numpy buffers, for the trainer.

A dict of dicts costs about 180 bytes per user-item pair (a float object, a dict slot and the
dict's spare room); at 500M pairs that is 90 GB. Here a pair is an item index (int32) and a
weight (float32) in two append-only buffers, 8 bytes, and a user's row is one segment
(start, length) of them. A changelog record carries a user's FULL state, so replacing a row
appends a new segment and leaves the old one as garbage. When the buffers fill, the live
segments are copied into new buffers of :data:`GROWTH` x the live pairs (one vectorised pass
that is both the growth and the compaction), so garbage never exceeds an eighth of the live
pairs and the buffers hold at most 9 bytes per live pair while rows are rewritten, 16 after
removals (they shrink once capacity passes twice the live pairs). Each user costs an id string,
a dict entry and a list slot (about 150 bytes for a short id) plus 20 bytes of per-user arrays
(start, length or -1 for a removed user, event count) with up to half as much spare room; each
item an id string, a dict entry and a list slot.

Buffers are never written in place below their fill mark and compaction allocates new ones,
so a :class:`Snapshot` (the per-user arrays copied, the buffers referenced) stays valid while
the event loop keeps applying records: the CSR for a fit is built from it in a thread.

Zero weights (bought, then returned) are kept in the rows, so the item stays seen for the user
and known to the fit, but are left out of the CSR's data, as :func:`app.ranker.interaction_matrix`
does.
"""

from __future__ import annotations

import mmap
import sys
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix

GROWTH = 1.125
"""Capacity after a compaction, as a multiple of the live pairs (plus the pairs to append):
the spare room garbage may fill before the next compaction, which copies every live pair."""

USER_GROWTH = 1.5
"""How much the per-user arrays grow when a new user finds them full."""

MIN_CAPACITY = 1 << 16
"""The buffers never shrink below this many pairs (512 KiB)."""

CHUNK_PAIRS = 1 << 22
"""Vectorised passes work on about this many pairs at a time, bounding their temporaries."""


class Interactions:
    """Users' current rows (item id -> weight) and event counts, as the changelog last said."""

    def __init__(self, min_capacity: int = MIN_CAPACITY) -> None:
        self._min_capacity = min_capacity
        self._user_slots: dict[str, int] = {}
        self._user_ids: list[str] = []
        self._item_positions: dict[str, int] = {}
        self._item_ids: list[str] = []
        self._set_user_arrays(
            _mapped(1024, np.int64),
            _mapped(1024, np.int32, fill=-1),
            _mapped(1024, np.int64),
        )
        self._set_buffers(_mapped(min_capacity, np.int32), _mapped(min_capacity, np.float32))
        self._used = 0  # pairs written to the buffers, live and garbage
        self._pairs = 0  # live pairs
        self._users = 0  # live users
        self._events = 0
        self.compactions = 0
        self.longest_compaction = 0.0  # seconds

    def _set_user_arrays(
        self, starts: np.ndarray, lengths: np.ndarray, event_counts: np.ndarray
    ) -> None:
        """Per-user arrays by slot (a length of -1: no live row), with memoryviews of them:
        a memoryview reads and writes one element several times faster than numpy indexing,
        which matters on the path of every record."""
        self._starts, self._lengths, self._event_counts = starts, lengths, event_counts
        self._start_at = memoryview(starts)
        self._length_at = memoryview(lengths)
        self._count_at = memoryview(event_counts)

    def _set_buffers(self, items: np.ndarray, weights: np.ndarray) -> None:
        self._items, self._weights = items, weights
        self._capacity = len(items)
        self._shrink_below = self._capacity // 2 if self._capacity > self._min_capacity else -1

    # -- reading ------------------------------------------------------------------------------

    @property
    def users(self) -> int:
        """Users with a current row (possibly empty)."""
        return self._users

    @property
    def pairs(self) -> int:
        """Live user-item pairs, zero weights included."""
        return self._pairs

    @property
    def events(self) -> int:
        """The sum of the live users' event counts."""
        return self._events

    @property
    def item_count(self) -> int:
        """Items ever indexed (the index never shrinks; see :meth:`item_id`)."""
        return len(self._item_ids)

    def item_id(self, position: int) -> str:
        return self._item_ids[position]

    def __contains__(self, user_id: object) -> bool:
        slot = self._user_slots.get(user_id)  # type: ignore[arg-type]
        return slot is not None and self._length_at[slot] >= 0

    def row(self, user_id: str) -> dict[str, float]:
        """The user's current row as item id -> weight; KeyError for an unknown user."""
        slot = self._user_slots.get(user_id)
        if slot is None or self._length_at[slot] < 0:
            raise KeyError(user_id)
        start, length = self._start_at[slot], self._length_at[slot]
        names = self._item_ids
        return dict(
            zip(
                [names[i] for i in self._items[start : start + length].tolist()],
                self._weights[start : start + length].tolist(),
                strict=True,
            )
        )

    def event_count(self, user_id: str) -> int:
        slot = self._user_slots.get(user_id)
        return 0 if slot is None or self._length_at[slot] < 0 else self._count_at[slot]

    def user_ids(self) -> Iterator[str]:
        """Live users, in the order they first appeared."""
        lengths = self._length_at
        return (user for slot, user in enumerate(self._user_ids) if lengths[slot] >= 0)

    def rows(self) -> RowsView:
        """A read-only mapping user id -> row, built row by row on access."""
        return RowsView(self)

    def nbytes(self) -> dict[str, int]:
        """Bytes held: the pair buffers, the per-user arrays and (estimated from CPython's
        object sizes: the dict, the list, the id strings, the int objects) the id indices."""
        return {
            "pair_buffers": self._items.nbytes + self._weights.nbytes,
            "user_arrays": self._starts.nbytes + self._lengths.nbytes + self._event_counts.nbytes,
            "user_index": _index_nbytes(self._user_ids, self._user_slots),
            "item_index": _index_nbytes(self._item_ids, self._item_positions),
        }

    # -- writing ------------------------------------------------------------------------------

    def put(
        self, user_id: str, items: Collection[str], weights: Sequence[float], event_count: int
    ) -> np.ndarray:
        """Replace the user's row (``items`` and ``weights`` in the same order); returns the
        row's item positions (int32, in row order)."""
        row_items: list[int | None] = list(map(self._item_positions.get, items))
        if None in row_items:
            row_items = self._index_items(items)
        length = len(row_items)
        slot = self._user_slots.get(user_id)
        if slot is None:
            slot = self._new_slot(user_id)
        else:
            old_length = self._length_at[slot]
            if old_length >= 0:
                self._pairs -= old_length
                self._events -= self._count_at[slot]
                self._users -= 1
                self._length_at[slot] = 0  # the old segment is garbage from here on
        start = self._used
        end = start + length
        if end > self._capacity:
            self._compact(length)
            start = self._used
            end = start + length
        self._items[start:end] = row_items
        self._weights[start:end] = weights
        self._used = end
        self._start_at[slot] = start
        self._length_at[slot] = length
        self._count_at[slot] = event_count
        self._pairs += length
        self._events += event_count
        self._users += 1
        positions = self._items[start:end]  # before a shrink moves the segment
        if self._pairs < self._shrink_below:
            self._compact(0)
        return positions

    def _index_items(self, items: Iterable[str]) -> list[int]:
        """Positions of these items, indexing the ones seen for the first time."""
        positions = self._item_positions
        row_items = []
        for item in items:
            position = positions.get(item)
            if position is None:
                position = positions[item] = len(self._item_ids)
                self._item_ids.append(item)
            row_items.append(position)
        return row_items

    def remove(self, user_id: str) -> None:
        """Forget the user (a tombstone); a user not held is ignored."""
        slot = self._user_slots.get(user_id)
        if slot is None or self._length_at[slot] < 0:
            return
        self._pairs -= self._length_at[slot]
        self._events -= self._count_at[slot]
        self._users -= 1
        self._length_at[slot] = -1
        self._count_at[slot] = 0
        if self._pairs < self._shrink_below:
            self._compact(0)

    def _new_slot(self, user_id: str) -> int:
        slot = len(self._user_ids)
        if slot == len(self._lengths):
            size = int(USER_GROWTH * slot)
            self._set_user_arrays(
                _resized(self._starts, size, 0),
                _resized(self._lengths, size, -1),
                _resized(self._event_counts, size, 0),
            )
        self._user_slots[user_id] = slot
        self._user_ids.append(user_id)
        return slot

    def _compact(self, extra: int) -> None:
        """Copy the live segments, in slot order, into new buffers with room for ``extra``."""
        began = time.perf_counter()
        slots = np.flatnonzero(self._lengths[: len(self._user_ids)] > 0)
        starts, lengths = self._starts[slots], self._lengths[slots]
        needed = self._pairs + extra
        capacity = max(self._min_capacity, int(GROWTH * needed), needed)
        items = _mapped(capacity, np.int32)
        weights = _mapped(capacity, np.float32)
        _gather(self._items, self._weights, starts, lengths, items, weights)
        self._starts[slots] = _offsets(lengths)[:-1]
        self._set_buffers(items, weights)
        self._used = self._pairs
        self.compactions += 1
        self.longest_compaction = max(self.longest_compaction, time.perf_counter() - began)

    def snapshot(self) -> Snapshot:
        """The live rows as of now, readable from another thread while records keep coming."""
        slots = np.flatnonzero(self._lengths[: len(self._user_ids)] >= 0)
        return Snapshot(
            items=self._items,
            weights=self._weights,
            slots=slots,
            starts=self._starts[slots],
            lengths=self._lengths[slots],
            item_ids=self._item_ids,
            item_count=len(self._item_ids),
            user_ids=self._user_ids,
            events=self._events,
        )

    def to_csr(self) -> tuple[tuple[str, ...], csr_matrix]:
        """What a fit trains on (see :meth:`Snapshot.to_csr`)."""
        return self.snapshot().to_csr()


@dataclass(frozen=True)
class Snapshot:
    """Live rows at one moment: per-user arrays copied, pair buffers and id lists shared
    (they are append-only, and only positions below this snapshot's are read)."""

    items: np.ndarray
    weights: np.ndarray
    slots: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    item_ids: list[str]
    item_count: int
    user_ids: list[str]
    events: int

    @property
    def users(self) -> int:
        return len(self.slots)

    def to_csr(self) -> tuple[tuple[str, ...], csr_matrix]:
        """The rows' items sorted by id, and the rows (users in first-seen order) as a CSR
        matrix over them, zero weights left out: what :func:`app.ranker.interaction_matrix`
        builds from the same rows in the same order. Vectorised, in chunks of pairs."""
        total = int(self.lengths.sum(dtype=np.int64))
        indices = np.empty(total, dtype=np.int32)
        data = np.empty(total, dtype=np.float32)
        _gather(self.items, self.weights, self.starts, self.lengths, indices, data)

        present = np.zeros(self.item_count, dtype=bool)
        present[indices] = True  # zero weights included: the item still gets a column
        present_positions = np.flatnonzero(present)
        names = [self.item_ids[i] for i in present_positions.tolist()]
        order = sorted(range(len(names)), key=names.__getitem__)
        item_ids = tuple(names[i] for i in order)
        column = np.full(self.item_count, -1, dtype=np.int32)
        column[present_positions[order]] = np.arange(len(order), dtype=np.int32)

        nonzero_per_user = self.lengths.astype(np.int64)
        zeros = np.flatnonzero(data == 0.0)
        if len(zeros):
            ends = np.cumsum(nonzero_per_user)
            owners = np.searchsorted(ends, zeros, side="right")
            nonzero_per_user -= np.bincount(owners, minlength=len(ends))
            written = 0
            for low in range(0, total, CHUNK_PAIRS):  # in place: never writes past the read
                high = min(low + CHUNK_PAIRS, total)
                keep = data[low:high] != 0.0
                kept_indices, kept_data = indices[low:high][keep], data[low:high][keep]
                indices[written : written + len(kept_data)] = kept_indices
                data[written : written + len(kept_data)] = kept_data
                written += len(kept_data)
            indices, data = indices[:written], data[:written]
        for low in range(0, len(indices), CHUNK_PAIRS):
            indices[low : low + CHUNK_PAIRS] = column[indices[low : low + CHUNK_PAIRS]]
        indptr = _offsets(nonzero_per_user)
        matrix = csr_matrix((data, indices, indptr), shape=(self.users, len(item_ids)))
        return item_ids, matrix

    def row_user_ids(self) -> list[str]:
        """The user of each row of :meth:`to_csr`'s matrix, in order."""
        return [self.user_ids[slot] for slot in self.slots.tolist()]

    def users_with(self, items: np.ndarray) -> dict[str, list[str]]:
        """Item id -> the users whose row holds it, for the items flagged in ``items`` (a
        boolean array over item positions, at least this snapshot's item count long)."""
        found: dict[str, list[str]] = {}
        for low, high, starts, lengths in _chunks(self.starts, self.lengths):
            if high == low:
                continue
            positions = _segment_positions(starts, lengths)
            hits = np.flatnonzero(items[self.items[positions]])
            if not len(hits):
                continue
            owners = self.slots[low:high][np.searchsorted(np.cumsum(lengths), hits, "right")]
            for item, slot in zip(
                self.items[positions[hits]].tolist(), owners.tolist(), strict=True
            ):
                found.setdefault(self.item_ids[item], []).append(self.user_ids[slot])
        return found


class RowsView(Mapping[str, dict[str, float]]):
    """``user id -> row`` over :class:`Interactions`, each row built as a dict when read."""

    def __init__(self, interactions: Interactions) -> None:
        self._interactions = interactions

    def __getitem__(self, user_id: str) -> dict[str, float]:
        return self._interactions.row(user_id)

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._interactions

    def __iter__(self) -> Iterator[str]:
        return self._interactions.user_ids()

    def __len__(self) -> int:
        return self._interactions.users


def _offsets(lengths: np.ndarray) -> np.ndarray:
    """``[0, l0, l0 + l1, ...]`` as int64."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def _chunks(
    starts: np.ndarray, lengths: np.ndarray
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """Consecutive user ranges ``[low, high)`` of about :data:`CHUNK_PAIRS` pairs each (a
    longer row gets a range of its own), with their starts and lengths."""
    ends = np.cumsum(lengths, dtype=np.int64)
    total = int(ends[-1]) if len(ends) else 0
    cuts = np.searchsorted(ends, np.arange(CHUNK_PAIRS, total, CHUNK_PAIRS), side="right")
    bounds = np.unique(np.concatenate([[0], cuts, [len(lengths)]]))
    for low, high in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        yield low, high, starts[low:high], lengths[low:high]


def _segment_positions(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Buffer positions of these segments, concatenated: no Python loop per pair."""
    lengths = lengths.astype(np.int64)
    positions = np.arange(int(lengths.sum()), dtype=np.int64)
    positions += np.repeat(starts - _offsets(lengths)[:-1], lengths)
    return positions


def _gather(
    items: np.ndarray,
    weights: np.ndarray,
    starts: np.ndarray,
    lengths: np.ndarray,
    out_items: np.ndarray,
    out_weights: np.ndarray,
) -> None:
    """Copy the segments, concatenated, to the front of the outputs."""
    written = 0
    for _, _, chunk_starts, chunk_lengths in _chunks(starts, lengths):
        positions = _segment_positions(chunk_starts, chunk_lengths)
        out_items[written : written + len(positions)] = items[positions]
        out_weights[written : written + len(positions)] = weights[positions]
        written += len(positions)


def _index_nbytes(ids: list[str], positions: dict[str, int]) -> int:
    held = sys.getsizeof(ids) + sys.getsizeof(positions) + sum(map(sys.getsizeof, ids))
    return held + sum(sys.getsizeof(p) for p in positions.values() if p > 256)  # 256: cached


def _mapped(size: int, dtype: type[np.generic], fill: int = 0) -> np.ndarray:
    """A new array in a private anonymous memory map of its own. Its pages become resident only once
    written (spare capacity costs nothing until used), and freeing it unmaps them at once: a
    malloc'ed buffer of tens of MiB freed after a compaction can stay in the process's heap,
    which kept resident memory near twice the live buffers."""
    itemsize = np.dtype(dtype).itemsize
    private = mmap.mmap(-1, max(size, 1) * itemsize, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    array = np.frombuffer(private, dtype=dtype, count=size)
    if fill:
        array.fill(fill)
    return array


def _resized(array: np.ndarray, size: int, fill: int) -> np.ndarray:
    grown = _mapped(size, array.dtype.type, fill)
    grown[: len(array)] = array
    return grown
