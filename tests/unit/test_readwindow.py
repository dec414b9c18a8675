"""The save delay a read node sizes its memory by (`read-window = auto`): measured from raw chunk announcements
only, bounded against garbage, over the recent past only."""

from __future__ import annotations

import pytest

from metrictank.cluster.readwindow import MAX_AGE, SaveAge, read_window_for
from metrictank.config import ConfigError, load_config

NOW = 1_700_000_000
ID = "1.0123456789abcdef0123456789abcdef"


def test_largest_raw_age_of_the_recent_past():
    s = SaveAge(keep=3600)
    s.add(NOW - 100, [(ID, NOW - 100 - 70), (ID + "_sum_300", NOW - 100 - 9000)])  # rollup keys ignored
    s.add(NOW - 50, [(ID, NOW - 50 - 62)])
    s.add(NOW - 7200, [(ID, NOW - 7200 - 500)])  # too old to count
    assert s.recent_max(NOW, 3600) == 70
    assert s.recent_max(NOW, 60) == 62
    assert read_window_for(s.recent_max(NOW, 3600), 600) == 670


def test_garbage_ages_are_ignored_and_nothing_measured_is_none():
    s = SaveAge()
    s.add(NOW, [(ID, NOW + 10)])  # announced before its t0
    s.add(NOW, [(ID, NOW - MAX_AGE - 1)])  # a backfill of last month, not a save delay
    s.add(NOW, [])
    assert s.recent_max(NOW, 3600) is None
    assert s.samples == 0
    assert read_window_for(None, 600) is None


def test_memory_is_bounded_by_the_kept_minutes():
    s = SaveAge(keep=600)
    for m in range(1000):
        s.add(NOW + 60 * m, [(ID, NOW + 60 * m - 30)])
    assert len(s._max) <= 600 // 60 + 2


def test_read_window_config():
    cfg = load_config(env={"MT_CLUSTER_ROLE": "read"})
    assert cfg.cluster.read_window == "auto" and cfg.cluster.read_window_margin == 600
    assert load_config(env={"MT_CLUSTER_READ_WINDOW": "90s"}).cluster.read_window == 90
    for bad in ("0s", "soon"):
        with pytest.raises(ConfigError, match=r"^cluster\.read-window"):
            load_config(env={"MT_CLUSTER_READ_WINDOW": bad})
    with pytest.raises(ConfigError, match=r"^cluster\.read-window: auto"):
        load_config(env={"MT_CLUSTER_ROLE": "read", "MT_KAFKA_CLUSTER_ENABLED": "false"})
    # a fixed window needs no persist topic to measure from
    load_config(
        env={"MT_CLUSTER_ROLE": "read", "MT_KAFKA_CLUSTER_ENABLED": "false", "MT_CLUSTER_READ_WINDOW": "1h"}
    )


def test_an_announcement_stamped_in_the_future_is_ignored():
    """A producer's clock (or a hostile one) far ahead would keep its minute "recent" for good."""
    s = SaveAge()
    s.add(NOW + 86400, [(ID, NOW)], now=NOW)  # a day ahead, a day "old": would pin the window
    assert s.recent_max(NOW + 3600, 3600) is None
    s.add(NOW + 60, [(ID, NOW + 60 - 12)], now=NOW)  # a minute of skew is fine
    assert s.recent_max(NOW + 60, 3600) == 12
