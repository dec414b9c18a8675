"""The primary lease on the SQLite backend (a real database file shared by two `Lease` objects, as two nodes of
one host share it), with controlled clocks; and the failover manager's decisions."""

from __future__ import annotations

import pytest

from metrictank.cluster.failover import Failover
from metrictank.cluster.lease import Lease, LeaseRow, SQLiteLeases, lease_name
from metrictank.cluster.promotion import PeerView, PromotionInputs


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def db(tmp_path):
    return str(tmp_path / "shared.db")


def _pair(db, clock, duration=10.0, margin=2.0):
    name = lease_name("c", [0, 1])
    a = Lease(SQLiteLeases(db), name, "a", duration, margin, wall=clock, mono=clock)
    b = Lease(SQLiteLeases(db), name, "b", duration, margin, wall=clock, mono=clock)
    return a, b


def test_name_is_per_partition_set():
    assert lease_name("mt", [3, 1, 2]) == "mt/partitions/1,2,3"


def test_first_acquisition_creates_epoch_1_and_excludes_others(db):
    clock = Clock()
    a, b = _pair(db, clock)
    assert a.acquire() == (True, "")
    assert a.epoch == 1 and a.valid()
    ok, why = b.acquire()
    assert not ok and "held by a (epoch 1)" in why
    assert not b.valid()


def test_holder_stops_before_a_candidate_may_start(db):
    clock = Clock()
    a, b = _pair(db, clock, duration=10, margin=2)
    a.acquire()
    clock.t += 7.9
    assert a.valid()
    clock.t += 0.2  # 8.1 s after the acquisition: duration - margin has passed
    assert not a.valid()  # fenced: no writes from here on
    clock.t += 3.8  # 11.9 s: expired, but not by the margin yet
    assert b.acquire()[0] is False
    clock.t += 0.2  # 12.1 s = duration + margin
    assert b.acquire() == (True, "")
    assert b.epoch == 2  # every change of holder raises the epoch


def test_renewal_keeps_it_and_a_lost_lease_is_noticed(db):
    clock = Clock()
    a, b = _pair(db, clock)
    a.acquire()
    for _ in range(5):
        clock.t += 3
        assert a.renew()
    assert a.valid() and a.epoch == 1
    ok, _ = b.acquire(force=True)  # steal (an operator's force)
    assert ok and b.epoch == 2
    assert a.renew() is False  # a finds out at its next renewal
    assert not a.valid() and not a.held() and a.losses == 1


def test_a_paused_holder_wakes_fenced_and_cannot_renew_after_a_takeover(db):
    clock = Clock()
    a, b = _pair(db, clock)
    a.acquire()
    clock.t += 60  # SIGSTOP for a minute
    assert b.acquire()[0]
    assert not a.valid()  # before doing anything else, it may not write
    assert a.renew() is False


def test_release_lets_the_next_holder_in_at_once(db):
    clock = Clock()
    a, b = _pair(db, clock)
    a.acquire()
    a.release()
    assert not a.held()
    assert b.acquire() == (True, "")
    assert b.epoch == 2


def test_reacquire_own_lease_keeps_the_epoch(db):
    clock = Clock()
    a, _b = _pair(db, clock)
    a.acquire()
    clock.t += 1
    assert a.acquire() == (True, "")
    assert a.epoch == 1 and a.acquisitions == 1


def test_margin_must_be_less_than_half_the_duration(db):
    with pytest.raises(ValueError):
        Lease(SQLiteLeases(db), "x", "a", duration=4, margin=2)


def test_cas_checks_epoch_and_holder(db):
    be = SQLiteLeases(db)
    assert be.create("n", "a", 1, 5)
    assert not be.create("n", "b", 1, 5)
    assert not be.cas("n", LeaseRow("b", 1, 0), "b", 2, 9)
    assert not be.cas("n", LeaseRow("a", 2, 0), "b", 3, 9)
    assert be.cas("n", LeaseRow("a", 1, 0), "b", 2, 9)
    assert be.read("n") == LeaseRow("b", 2, 9)


# --- the failover manager --------------------------------------------------------------------------------------
class FakeNode:
    def __init__(self, name: str, primary: bool = False, priority: int = 0) -> None:
        self.name = name
        self.primary = primary
        self.priority = priority

    def set_primary(self, v: bool) -> bool:
        changed = self.primary != v
        self.primary = v
        return changed


def _inputs(**kw) -> PromotionInputs:
    base = dict(
        partitions=[0, 1], data_complete_wait=0.0, persist_backlog_done=True, priority=0, max_priority=10
    )
    base.update(kw)
    return PromotionInputs(**base)


def _failover(lease, node, clock, inputs=None, mode="auto", hold_off=30.0):
    lost: list[str] = []
    f = Failover(
        lease,
        node,
        mode=mode,
        hold_off=hold_off,
        inputs=inputs or (lambda: _inputs()),
        promote=lambda: node.set_primary(True),
        lost=lambda why: (node.set_primary(False), lost.append(why)),
        mono=clock,
    )
    return f, lost


def test_auto_failover_takes_over_only_after_the_dead_primary_lease_expires(db):
    clock = Clock()
    a, b = _pair(db, clock)
    na, nb = FakeNode("a", primary=True), FakeNode("b")
    fa, _ = _failover(a, na, clock)
    fb, _ = _failover(b, nb, clock)
    fa.step()  # the primary takes the lease
    assert a.valid()
    fb.step()
    assert not nb.primary and "held by a" in fb.reasons[0]
    # a dies (no more steps); b keeps checking
    for _ in range(11):
        clock.t += 1
        fb.step()
        assert not nb.primary
    clock.t += 1.5  # 12.5 s: past duration + margin
    fb.step()
    assert nb.primary and b.epoch == 2 and fb.auto_promotions == 1


def test_candidate_waits_for_a_better_peer(db):
    clock = Clock()
    _a, b = _pair(db, clock)
    nb = FakeNode("b", priority=3)
    better = PeerView("a", "http://a", True, partitions=(0, 1), priority=1, candidate=True)
    fb, _ = _failover(b, nb, clock, inputs=lambda: _inputs(peers=[better], priority=3))
    fb.step()
    assert not nb.primary and "peer a is a better candidate" in fb.reasons[0]
    worse = PeerView(
        "c", "http://c", True, partitions=(0, 1), priority=3, candidate=True
    )  # same priority, name c > b
    fb2, _ = _failover(b, nb, clock, inputs=lambda: _inputs(peers=[worse], priority=3))
    fb2.step()
    assert nb.primary


def test_no_candidate_while_checks_fail_and_the_reason_is_kept(db):
    clock = Clock()
    _a, b = _pair(db, clock)
    nb = FakeNode("b")
    fb, _ = _failover(b, nb, clock, inputs=lambda: _inputs(priority=50))
    fb.step()
    assert not nb.primary and not fb.candidate
    assert "priority 50 is above max-priority 10" in fb.reasons[0]


def test_manual_mode_never_promotes(db):
    clock = Clock()
    _a, b = _pair(db, clock)
    nb = FakeNode("b")
    fb, _ = _failover(b, nb, clock, mode="manual")
    fb.step()
    assert not nb.primary and "manual" in fb.reasons[0]


def test_primary_steps_down_when_its_lease_is_taken(db):
    clock = Clock()
    a, b = _pair(db, clock)
    na = FakeNode("a", primary=True)
    fa, lost = _failover(a, na, clock, mode="manual")
    fa.step()
    b.acquire(force=True)
    clock.t += 4  # the next renewal
    fa.step()
    assert not na.primary and lost and "taken by b" in lost[0]


def test_primary_fenced_while_the_store_is_unreachable_and_unfenced_after(db):
    clock = Clock()
    a, _b = _pair(db, clock)
    na = FakeNode("a", primary=True)
    fa, lost = _failover(a, na, clock, mode="manual")
    fa.step()
    real = a.backend

    class Down:
        def __getattr__(self, _name):
            def fail(*_a, **_k):
                raise ConnectionError("store frozen")

            return fail

    a.backend = Down()
    for _ in range(10):
        clock.t += 1
        fa.step()
    assert na.primary  # still primary (nobody else could take the lease either)...
    assert fa.fenced and fa.fence_events == 1  # ...but it writes nothing
    a.backend = real
    clock.t += 1
    fa.step()
    assert not fa.fenced and a.valid() and not lost


def test_demoted_node_holds_off(db):
    clock = Clock()
    _a, b = _pair(db, clock)
    nb = FakeNode("b")
    fb, _ = _failover(b, nb, clock, hold_off=30)
    fb.demoted()
    clock.t += 10
    fb.step()
    assert not nb.primary and "hold-off" in fb.reasons[0]
    clock.t += 21
    fb.step()
    assert nb.primary


def test_a_primary_started_while_another_holds_the_lease_waits_fenced_then_takes_it(db):
    clock = Clock()
    a, b = _pair(db, clock)
    a.acquire()  # a node that just stopped without releasing
    nb = FakeNode("b", primary=True)  # started as primary-node
    fb, lost = _failover(b, nb, clock, mode="manual")
    fb.step()
    assert nb.primary and fb.fenced and not lost  # primary, but writes nothing
    assert "held by a" in fb.reasons[0]
    clock.t += 12.5  # a's lease expired (duration + margin)
    fb.step()
    assert nb.primary and not fb.fenced and b.epoch == 2


def test_a_restarted_holder_takes_its_own_lease_back_at_once_with_a_new_epoch(db):
    clock = Clock()
    name = lease_name("c", [0, 1])
    old = Lease(SQLiteLeases(db), name, "a", wall=clock, mono=clock)
    old.acquire()
    new = Lease(
        SQLiteLeases(db), name, "a", wall=clock, mono=clock
    )  # the same node after kill -9 and restart
    assert new.blocker() is None
    assert new.acquire() == (True, "")
    assert new.epoch == 2
    assert old.renew() is False  # an old incarnation still alive would stop at once
