"""Popularity's clock: the ranking never depends on it, the weights shown are read at it."""

from app import ranker
from app.popularity import Popularity, read_time

DAY = 86_400.0


def test_on_the_stream_clock_weights_are_read_at_the_newest_event_time():
    popularity = Popularity(half_life=DAY)
    popularity.add("old", 1.0, 1_000 * DAY)
    popularity.add("new", 1.0, 1_001 * DAY)

    trending = popularity.trending(2, "stream", now=20_000 * DAY)

    assert trending.as_of == 1_001 * DAY
    weights = {
        item: ranker.decayed_value(score, trending.as_of, DAY) for item, score in trending.items
    }
    assert weights == {"new": 1.0, "old": 0.5}


def test_on_the_wall_clock_weights_are_read_at_now():
    popularity = Popularity(half_life=DAY)
    popularity.add("item", 1.0, 1_000 * DAY)

    assert popularity.trending(1, "wall", now=1_002 * DAY).as_of == 1_002 * DAY


def test_before_any_event_both_clocks_read_at_now():
    assert read_time("stream", None, 5.0) == read_time("wall", None, 5.0) == 5.0


def test_a_return_moves_stream_time_but_adds_no_popularity():
    popularity = Popularity(half_life=DAY)
    popularity.add("item", -2.0, 3 * DAY)

    assert popularity.newest == 3 * DAY
    assert not popularity


def test_merging_keeps_the_later_stream_time():
    earlier, later = Popularity(DAY), Popularity(DAY)
    earlier.add("a", 1.0, 1 * DAY)
    later.add("b", 1.0, 2 * DAY)

    earlier.merge(later)
    later.merge(Popularity(DAY))

    assert earlier.newest == later.newest == 2 * DAY
