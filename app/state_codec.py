"""The binary encoding of a user's state: the ``user-state`` table's values and changelog records.

One pair, :func:`encode_state` / :func:`decode_state`, works on the record's field mapping
(``UserState.to_representation()``); the table uses it through :data:`USER_STATE_CODEC` and the
trainer decodes changelog records with the same :func:`decode_state`.

Format 1, little-endian, columnar so that each column is one ``struct`` call:

- header ``<BIdqHHB``: format byte (1), event count, last event time (float64 seconds),
  applied offset, number of forwarded origins, of items, of remembered event ids (26 bytes);
- forwarded origins: partitions (uint16), then their highest offsets (int64);
- remembered event ids: 8-byte hashes (:func:`event_id_hash`), oldest first;
- items: UTF-8 lengths of the ids (uint16), summed weights (float32), event counts (uint32),
  last event times (uint32 whole seconds), then the ids' UTF-8 bytes, concatenated.

A user with 100 items of 6-character ids takes 26 + 100 * 18 bytes.

Format 2 is format 1 (format byte 2) followed by the user's hidden items: their number
(uint16), the UTF-8 lengths of their ids (uint16), then the ids' bytes. It is written only for
a user who hid something, so everyone else's records stay format 1, byte for byte.

Format 3 is format 2 (format byte 3, the hidden part possibly empty) followed by the user's
impression counts: their number (uint16), the UTF-8 lengths of the ids (uint16), the counts
(uint16, saturating), then the ids' bytes. It is written only for a user with impressions.

Records written before these formats are JSON objects; a value starting with ``{`` is decoded
as such, so an existing changelog replays as before.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from typing import Any

import orjson
from faust.serializers.codecs import Codec

FORMAT_V1 = 1
FORMAT_V2 = 2  # format 1 and the hidden items
FORMAT_V3 = 3  # format 2 and the impression counts
MAX_COUNT16 = 2**16 - 1
_HEADER = struct.Struct("<BIdqHHB")
_JSON_START = ord("{")
MAX_SECONDS = 2**32 - 1
_FLOAT32 = struct.Struct("<f")


def event_id_hash(event_id: str) -> int:
    """The 64-bit hash a state remembers in place of a client event id.

    Two different ids among a user's last 100 share a hash with probability about
    100 / 2**64 (5e-18) per event checked, which would skip the event as a duplicate.
    """
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def as_float32(value: float) -> float:
    """``value`` rounded to the float32 the encoding keeps, so live and decoded states agree."""
    return _FLOAT32.unpack(_FLOAT32.pack(value))[0]


def whole_seconds(timestamp: float) -> int:
    """A timestamp as the unsigned 32-bit whole seconds the encoding keeps per item."""
    return min(max(int(timestamp), 0), MAX_SECONDS)


def encode_state(state: Mapping[str, Any]) -> bytes:
    """Format 1 bytes of a state's field mapping, format 2 when it has hidden items, 3 when it
    has impressions (see the module docstring)."""
    items: Mapping[str, list[float]] = state["items"]
    forwarded: Mapping[str, int] = state.get("forwarded_offsets") or {}
    event_ids: list[int] = state.get("recent_event_ids") or []
    hidden = [item_id.encode() for item_id in state.get("hidden") or ()]
    impressions: Mapping[str, int] = state.get("impressions") or {}
    ids = [item_id.encode() for item_id in items]
    entries = list(items.values())
    n_forwarded, n_ids, n_items = len(forwarded), len(event_ids), len(ids)
    version = FORMAT_V3 if impressions else FORMAT_V2 if hidden else FORMAT_V1
    hidden_part = _id_list(hidden) if version >= FORMAT_V2 else ()
    impressions_part = (
        _id_list(
            [item_id.encode() for item_id in impressions],
            [min(int(count), MAX_COUNT16) for count in impressions.values()],
        )
        if impressions
        else ()
    )
    return b"".join(
        (
            _HEADER.pack(
                version,
                state.get("event_count", 0),
                state.get("last_event_at", 0.0),
                state.get("applied_offset", -1),
                n_forwarded,
                n_items,
                n_ids,
            ),
            struct.pack(
                f"<{n_forwarded}H{n_forwarded}q{n_ids}Q",
                *map(int, forwarded),
                *forwarded.values(),
                *event_ids,
            ),
            struct.pack(
                f"<{n_items}H{n_items}f{n_items}I{n_items}I",
                *map(len, ids),
                *(entry[0] for entry in entries),
                *(int(entry[1]) for entry in entries),
                *(int(entry[2]) for entry in entries),
            ),
            *ids,
            *hidden_part,
            *impressions_part,
        )
    )


def _id_list(ids: list[bytes], counts: list[int] | None = None) -> tuple[bytes, ...]:
    """The encoding of a list of ids: their number, their lengths, ``counts`` if given (uint16
    each), then the ids' bytes."""
    numbers = [*map(len, ids), *(counts or ())]
    return (struct.pack(f"<H{len(numbers)}H", len(ids), *numbers), *ids)


def _decode_id_list(value: bytes, offset: int, counted: bool) -> tuple[list[str], list[int], int]:
    """The ids (and counts, when ``counted``) of an :func:`_id_list` at ``offset``, and the
    offset after it."""
    (n,) = struct.unpack_from("<H", value, offset)
    numbers = struct.unpack_from(f"<{2 * n if counted else n}H", value, offset + 2)
    offset += 2 + 2 * len(numbers)
    ids = []
    for length in numbers[:n]:
        ids.append(value[offset : offset + length].decode())
        offset += length
    return ids, list(numbers[n:]), offset


def decode_state(value: bytes) -> dict[str, Any]:
    """The field mapping of an encoded state: formats 1 to 3, or the JSON of older records."""
    if value[0] == _JSON_START:
        return _from_json(orjson.loads(value))
    version, event_count, last_event_at, applied_offset, n_forwarded, n_items, n_ids = (
        _HEADER.unpack_from(value)
    )
    if version not in (FORMAT_V1, FORMAT_V2, FORMAT_V3):
        raise ValueError(f"unknown user state format {version}")
    offset = _HEADER.size
    head = struct.Struct(f"<{n_forwarded}H{n_forwarded}q{n_ids}Q")
    columns = head.unpack_from(value, offset)
    offset += head.size
    partitions, origin_offsets = columns[:n_forwarded], columns[n_forwarded : 2 * n_forwarded]
    body = struct.Struct(f"<{n_items}H{n_items}f{n_items}I{n_items}I")
    lengths_and_values = body.unpack_from(value, offset)
    offset += body.size
    lengths = lengths_and_values[:n_items]
    weights = lengths_and_values[n_items : 2 * n_items]
    counts = lengths_and_values[2 * n_items : 3 * n_items]
    lasts = lengths_and_values[3 * n_items :]
    items = {}
    for length, weight, count, last in zip(lengths, weights, counts, lasts, strict=True):
        items[value[offset : offset + length].decode()] = [weight, count, last]
        offset += length
    hidden: list[str] = []
    impressions: dict[str, int] = {}
    if version >= FORMAT_V2:
        hidden, _, offset = _decode_id_list(value, offset, counted=False)
    if version == FORMAT_V3:
        shown, counts, offset = _decode_id_list(value, offset, counted=True)
        impressions = dict(zip(shown, counts, strict=True))
    return {
        "items": items,
        "event_count": event_count,
        "last_event_at": last_event_at,
        "applied_offset": applied_offset,
        "forwarded_offsets": {str(p): o for p, o in zip(partitions, origin_offsets, strict=True)},
        "recent_event_ids": list(columns[2 * n_forwarded :]),
        "hidden": hidden,
        "impressions": impressions,
    }


def _from_json(state: dict[str, Any]) -> dict[str, Any]:
    """An old JSON record in the form format 1 decodes to (hashed ids, rounded entries)."""
    state["items"] = {
        item_id: [as_float32(weight), int(count), whole_seconds(last)]
        for item_id, (weight, count, last) in state["items"].items()
    }
    state["recent_event_ids"] = [
        event_id if isinstance(event_id, int) else event_id_hash(event_id)
        for event_id in state.get("recent_event_ids", [])
    ]
    return state


class UserStateCodec(Codec):
    """The Faust codec of ``UserState`` records: :func:`encode_state` / :func:`decode_state`."""

    def _dumps(self, obj: Any) -> bytes:
        return encode_state(obj)

    def _loads(self, s: bytes) -> Any:
        return decode_state(s)


USER_STATE_CODEC = UserStateCodec()
