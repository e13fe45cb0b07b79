"""A dump's files are checked before anything is restored, and a dumped user becomes one
restore message that carries their whole state."""

from __future__ import annotations

import hashlib

import orjson
import pytest

from app.backup import MANIFEST, STATES, BackupError, read_dump, restore_message
from app.models import UserAction, UserState, empty_state
from app.state_codec import decode_state


def write_dump(folder, files: dict[str, bytes], format_: int = 1) -> None:
    listed = {
        name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for name, data in files.items()
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / MANIFEST).write_bytes(orjson.dumps({"format": format_, "files": listed}))


def test_a_dump_is_read_back_file_by_file(tmp_path):
    write_dump(tmp_path, {STATES: b'{"user_id": "u"}\n'})

    _, contents = read_dump(tmp_path)

    assert contents == {STATES: b'{"user_id": "u"}\n'}


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda folder: (folder / STATES).write_bytes(b"changed"), "damaged, its SHA-256"),
        (lambda folder: (folder / STATES).unlink(), "No such file"),
        (lambda folder: (folder / MANIFEST).write_bytes(b"{"), "not a readable manifest"),
        (lambda folder: write_dump(folder, {}, format_=9), "dump format 9, expected 1"),
    ],
    ids=["a changed file", "a missing file", "a broken manifest", "another format"],
)
def test_a_damaged_dump_is_refused_naming_the_problem(tmp_path, damage, problem):
    write_dump(tmp_path, {STATES: b"{}\n"})
    damage(tmp_path)

    with pytest.raises(BackupError, match=problem):
        read_dump(tmp_path)


def test_a_dumped_user_is_restored_whole_but_for_the_old_deployments_offsets():
    state = (
        empty_state()
        .with_action(UserAction("u", "i1", "view", 1_700_000_000.0, "e-1"), 0.5, 41, (3, 9))
        .with_hidden(["i9"], hidden=True, offset=42)
    )
    row = {"user_id": "u", "state": decode_state(state.dumps())}

    key, value = restore_message(orjson.loads(orjson.dumps(row)))

    restored = UserState.loads(value)
    assert key == b"u"
    assert (restored.applied_offset, restored.forwarded_offsets) == (-1, {})
    assert (restored.items, restored.hidden, restored.recent_event_ids) == (
        state.items,
        state.hidden,
        state.recent_event_ids,
    )
    assert (restored.event_count, restored.last_event_at) == (1, 1_700_000_000.0)
