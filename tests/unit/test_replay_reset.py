"""How a replay chooses where to start and which Redis keys it keeps."""

from __future__ import annotations

from app.replay import start_offsets
from app.stores.keys import RedisKeys

BEGINNINGS = {0: 0, 1: 100, 2: 0}
ENDS = {0: 50, 1: 400, 2: 30}


def test_a_replay_from_the_beginning_starts_each_partition_at_its_first_offset():
    assert start_offsets(BEGINNINGS, ENDS, None) == {0: 0, 1: 100, 2: 0}


def test_a_replay_since_a_time_starts_each_partition_at_its_first_record_logged_then():
    assert start_offsets(BEGINNINGS, ENDS, {0: 20, 1: 250, 2: 0}) == {0: 20, 1: 250, 2: 0}


def test_a_partition_with_nothing_logged_since_that_time_starts_at_its_end():
    assert start_offsets(BEGINNINGS, ENDS, {0: 20, 1: None, 2: None}) == {0: 20, 1: 400, 2: 30}


def test_the_model_version_counter_is_kept_so_versions_keep_counting_up():
    assert RedisKeys("p").kept_by_replay("p:model:sequence")
    assert not RedisKeys("p").kept_by_replay("p:model:current")
