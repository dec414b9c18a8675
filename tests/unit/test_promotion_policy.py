"""The promotion policy, reason by reason, and the demotion/submit race of the persister."""

from __future__ import annotations

import threading
import time

from metrictank.cluster.persister import Persister
from metrictank.cluster.promotion import PeerView, PromotionInputs, promotion_reasons
from metrictank.store.base import ChunkWrite
from metrictank.store.queues import WriteQueues


def _ok(**kw) -> PromotionInputs:
    base = dict(
        partitions=[0, 1],
        data_complete_wait=0.0,
        persist_backlog_done=True,
        priority=0,
        max_priority=10,
    )
    base.update(kw)
    return PromotionInputs(**base)


def test_all_clear_means_no_reason():
    assert promotion_reasons(_ok()) == []


def test_partial_chunks_in_memory():
    (r,) = promotion_reasons(_ok(data_complete_wait=42.4))
    assert "data-complete promotion wait is 42s" in r


def test_persist_backlog_not_read():
    (r,) = promotion_reasons(_ok(persist_backlog_done=False))
    assert "persist topic backlog" in r


def test_lagging():
    (r,) = promotion_reasons(_ok(priority=11))
    assert "priority 11 is above max-priority 10" in r


def test_broker_unreachable():
    (r,) = promotion_reasons(_ok(broker_reachable=False))
    assert "broker is unreachable" in r


def test_primary_peer_sharing_partitions():
    peer = PeerView("mt2", "http://b", True, primary=True, partitions=(1, 2))
    (r,) = promotion_reasons(_ok(peers=[peer]))
    assert "peer mt2 (http://b) is primary for shared partitions [1]" in r


def test_primary_peer_on_other_partitions_is_fine():
    peer = PeerView("mt2", "http://b", True, primary=True, partitions=(5,))
    assert promotion_reasons(_ok(peers=[peer])) == []


def test_unreachable_peer_is_not_counted_as_primary():
    peer = PeerView("mt2", "http://b", False, primary=True, partitions=(0,))
    assert promotion_reasons(_ok(peers=[peer])) == []


def test_demoted_peer_with_queued_writes():
    peer = PeerView("mt2", "http://b", True, primary=False, partitions=(0,), pending_writes=17)
    (r,) = promotion_reasons(_ok(peers=[peer]))
    assert "still has 17 chunk writes queued" in r


def test_recent_foreign_writer_that_is_not_a_demoted_peer():
    writers = {"mt9": ([0], 2.0)}
    (r,) = promotion_reasons(_ok(recent_writers=writers, foreign_writer_window=30))
    assert "instance mt9 announced chunk writes for partitions [0] 2s ago" in r
    # a reachable demoted peer that wrote recently is the previous primary after a clean handover
    peer = PeerView("mt9", "http://c", True, primary=False, partitions=(0,))
    assert promotion_reasons(_ok(recent_writers=writers, foreign_writer_window=30, peers=[peer])) == []
    # the check is off without a window
    assert promotion_reasons(_ok(recent_writers=writers, foreign_writer_window=0)) == []


def test_every_failing_reason_is_listed():
    reasons = promotion_reasons(
        _ok(data_complete_wait=5, persist_backlog_done=False, priority=99, broker_reachable=False)
    )
    assert len(reasons) == 4


# --- the demotion race ---------------------------------------------------------------------------------------
def _write(i: int) -> ChunkWrite:
    return ChunkWrite(f"1.{i:032x}", 1, 600 * i, 600, 3600, b"\x02", 0)


class _QueueStore:
    """The producer side of a queued store, without a consumer: the queue stays full."""

    def __init__(self, size: int) -> None:
        self.q = WriteQueues(1, size)

    def submit(self, writes, abort=None) -> int:
        return self.q.put_many(writes, abort)


def test_a_demotion_stops_a_submit_waiting_for_room_and_waits_for_it():
    """The main loop waits for room in a full write queue with writes it planned as primary; a demotion clears
    the flag, waits until that submit gave up, and nothing planned as primary is queued after that."""
    primary = {"v": True}
    store = _QueueStore(2)
    p = Persister(tank=None, store=store, is_primary=lambda: primary["v"])
    done = threading.Event()

    def loop_side():
        p.begin()
        try:
            p.submit([_write(i) for i in range(10)])
        finally:
            p.end()
            done.set()

    t = threading.Thread(target=loop_side)
    t.start()
    time.sleep(0.3)
    assert not done.is_set()  # blocked: the queue holds 2
    primary["v"] = False
    t0 = time.monotonic()
    assert p.wait_idle(5)
    assert time.monotonic() - t0 < 2
    assert done.is_set()
    assert len(store.q) == 2
    assert p.queued == 2 and p.dropped_demoted == 8
    t.join()


def test_wait_idle_times_out_while_a_plan_is_in_progress():
    p = Persister(tank=None, store=_QueueStore(2), is_primary=lambda: True)
    p.begin()
    assert not p.wait_idle(0.2)
    p.end()
    assert p.wait_idle(0.2)


def test_writes_planned_before_a_demotion_are_not_queued_after_it():
    primary = {"v": True}
    store = _QueueStore(100)
    p = Persister(tank=None, store=store, is_primary=lambda: primary["v"])
    primary["v"] = False  # demoted between the plan and the submit
    assert p.submit([_write(1)]) == 0
    assert len(store.q) == 0 and p.dropped_demoted == 1


# --- peers' answers are input too -------------------------------------------------------------------------------
def _serve(body: bytes):
    import http.server
    import threading

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}"


def test_a_peer_answering_garbage_never_breaks_the_promotion_inputs():
    from metrictank.cluster.peers import fetch_peers

    bodies = [
        b"[1, 2, 3]",
        b'"primary"',
        b'{"name": 7, "primary": "yes", "partitions": "0,1", "pendingWrites": "many", "priority": "x",'
        b' "failover": [1]}',
        b'{"name": "mt9", "primary": true, "partitions": [0, "1", null], "pendingWrites": 3.0, "priority": 2}',
    ]
    servers = [_serve(b) for b in bodies]
    try:
        statuses = fetch_peers([u for _s, u in servers], timeout=5)
    finally:
        for srv, _u in servers:
            srv.shutdown()
    views = [s.view() for s in statuses]
    assert [v.reachable for v in views] == [False, False, True, True]
    odd = views[2]
    assert (odd.name, odd.primary, odd.partitions, odd.pending_writes, odd.priority, odd.candidate) == (
        statuses[2].url,
        False,
        (),
        0,
        10000,
        False,
    )
    good = views[3]
    assert (good.name, good.primary, good.partitions, good.pending_writes, good.priority) == (
        "mt9",
        True,
        (0,),
        3,
        2,
    )
    # and the policy decides on them without raising
    reasons = promotion_reasons(_ok(peers=views))
    assert any("peer mt9" in r and "primary" in r for r in reasons)
