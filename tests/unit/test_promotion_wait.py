"""Metrictank's promotion wait and the data-complete wait."""

from metrictank.cluster.node import Node, data_complete_wait, metrictank_promotion_target, rfc3339


def test_metrictank_target_is_next_boundary_of_largest_span():
    assert metrictank_promotion_target(1_000_000_123, 600) == 1_000_000_200
    assert metrictank_promotion_target(1_000_000_123, 60) == 1_000_000_200  # at least 600
    assert metrictank_promotion_target(1_000_000_123, 3600) == 1_000_000_800


def test_replayed_backlog_covering_current_chunks_waits_zero():
    now = 1_000_000_123  # current 600s chunk began at 1_000_000_000 (t0 = now - now % 600)
    # consumption began with a message from before the current chunk: complete at once
    assert data_complete_wait(now, [600], {0: 999_999_000.0}, {0: False}, [0]) == 0


def test_started_mid_chunk_waits_until_next_boundary():
    now = 1_000_000_123
    w = data_complete_wait(now, [600], {0: 1_000_000_100.0}, {0: False}, [0])
    assert w == 1_000_000_200 - now
    # the largest span decides
    w = data_complete_wait(now, [600, 3600], {0: 1_000_000_100.0}, {0: False}, [0])
    assert w == 1_000_000_800 - now


def test_from_log_start_is_complete_and_unknown_partition_waits():
    now = 1_000_000_123
    assert data_complete_wait(now, [600], {0: 1_000_000_100.0}, {0: True}, [0]) == 0
    assert data_complete_wait(now, [600], {}, {}, [0]) == 600


def test_node_json_has_metrictank_fields():
    t = [1_000_000_000.5]
    n = Node("mt1", False, [0, 1], 6060, clock=lambda: t[0])
    j = n.metrictank_json()
    for k in (
        "name",
        "version",
        "primary",
        "primaryChange",
        "mode",
        "state",
        "priority",
        "started",
        "stateChange",
        "partitions",
        "apiPort",
        "apiScheme",
        "updated",
    ):
        assert k in j
    assert j["state"] == "NodeNotReady"
    assert rfc3339(0.5) == "1970-01-01T00:00:00.500000000Z"
    n.persist_backlog_done = True
    n.data_consumption_started()
    assert n.promotion_wait() == 1_000_000_200 - t[0]
    n.update(priority=0)
    assert not n.ready  # secondary still warming up
    t[0] += 61
    n.update(priority=0)
    assert n.ready
    n.update(priority=11)
    assert not n.ready
