"""Consumer lag: log end minus the group's committed offset, per partition the worker owns."""

from __future__ import annotations

from app.ops.consumer_lag import records_behind


def test_lag_counts_the_records_after_the_committed_offset():
    assert records_behind({0: 10, 1: 4}, {0: 7, 1: 4}, {}) == {0: 3, 1: 0}


def test_a_partition_never_committed_lags_from_its_beginning():
    assert records_behind({0: 10, 1: 10}, {0: -1}, {0: 2, 1: 6}) == {0: 8, 1: 4}


def test_a_commit_ahead_of_a_truncated_log_is_no_lag():
    assert records_behind({0: 5}, {0: 9}, {}) == {0: 0}
