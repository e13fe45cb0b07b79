"""How a replay chooses where to start and which Redis keys it deletes."""

from __future__ import annotations

import uuid

import pytest
from redis.asyncio import Redis

from app.replay import derived_key_patterns, is_kept_key, start_offsets
from tests.conftest import REDIS_URL

BEGINNINGS = {0: 0, 1: 100, 2: 0}
ENDS = {0: 50, 1: 400, 2: 30}


def test_a_replay_from_the_beginning_starts_each_partition_at_its_first_offset():
    assert start_offsets(BEGINNINGS, ENDS, None) == {0: 0, 1: 100, 2: 0}


def test_a_replay_since_a_time_starts_each_partition_at_its_first_record_logged_then():
    assert start_offsets(BEGINNINGS, ENDS, {0: 20, 1: 250, 2: 0}) == {0: 20, 1: 250, 2: 0}


def test_a_partition_with_nothing_logged_since_that_time_starts_at_its_end():
    assert start_offsets(BEGINNINGS, ENDS, {0: 20, 1: None, 2: None}) == {0: 20, 1: 400, 2: 30}


def test_the_model_version_counter_is_kept_so_versions_keep_counting_up():
    assert is_kept_key("p", "p:model:sequence")
    assert not is_kept_key("p", "p:model:current")


@pytest.mark.integration
async def test_derived_keys_are_found_under_the_literal_prefix_only():
    prefix = f"test:{uuid.uuid4().hex[:8]}*["
    neighbour = prefix.replace("*[", "x[")
    redis = Redis.from_url(REDIS_URL)
    mine = [f"{prefix}:rec:u1", f"{prefix}:popular:3600", f"{prefix}:model:current"]
    others = [f"{neighbour}:rec:u1", f"{prefix}:items", f"{prefix}:epoch"]
    try:
        for key in mine + others:
            await redis.set(key, b"1", ex=60)
        found = set()
        for pattern in derived_key_patterns(prefix):
            found |= {key.decode() async for key in redis.scan_iter(match=pattern)}
    finally:
        await redis.delete(*mine, *others)
        await redis.aclose()
    assert found == set(mine)
