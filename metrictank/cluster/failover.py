"""Keeping the primary lease, and (with `[cluster] failover = "auto"`) taking it when the primary is gone.

One thread per instance. As primary it renews the lease every third of its duration; a renewal that finds someone
else holding the lease demotes this node at once (without writing: the store's write gate is the lease), and a
renewal that cannot reach the store leaves the node primary but fenced until the lease is provably ours again.
As a secondary in auto mode it checks, once a second, whether it may take over: the promotion checks must pass
(data-complete wait 0, persist backlog read, priority <= max-priority, broker reachable, no primary peer), no
reachable peer may be a better candidate (lower priority, then lower name: the most caught-up wins), and the
lease must be free or expired. Why it is not taking over is kept in `reasons` for GET /cluster and /metrics.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from metrictank.cluster.lease import Lease
from metrictank.cluster.promotion import PromotionInputs, promotion_reasons
from metrictank.stats import Stats

log = logging.getLogger(__name__)

__all__ = ["Failover", "MODES"]

MODES = ("manual", "auto")


class Failover:
    def __init__(
        self,
        lease: Lease,
        node,
        *,
        mode: str,
        hold_off: float,
        inputs: Callable[[], PromotionInputs],
        promote: Callable[[], None],
        lost: Callable[[str], None],
        interval: float = 1.0,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"failover mode must be one of {', '.join(MODES)}")
        self.lease = lease
        self.node = node
        self.mode = mode
        self.hold_off = hold_off
        self.inputs = inputs
        self.promote = promote
        self.lost = lost
        self.interval = interval
        self.mono = mono
        self.reasons: list[str] = ["not checked yet"]
        self.candidate = False
        self.fenced = False
        self.fence_events = 0
        self.auto_promotions = 0
        self.step_errors = 0
        self._demoted_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="failover", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def demoted(self) -> None:
        """A demotion (manual or self-fencing) starts the hold-off: this node does not take the lease straight
        back in auto mode, which would undo an operator's handover."""
        self._demoted_at = self.mono()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.step()
            except Exception:  # noqa: BLE001 - the thread must survive anything; counted and logged
                self.step_errors += 1
                log.exception("failover step failed")

    # --- one step --------------------------------------------------------------------------------------------------
    def step(self) -> None:
        if self.node.primary:
            self._as_primary()
        else:
            self.fenced = False
            if self.mode == "auto":
                self._as_candidate()
            else:
                self.candidate = False
                self.reasons = ["failover is manual: promote with POST /node primary=true"]

    def _as_primary(self) -> None:
        lease = self.lease
        self.candidate = False
        self.reasons = []
        if lease.held():
            since = lease.seconds_since_renewal()
            if since is None or since >= lease.duration / 3:
                try:
                    ok = lease.renew()
                except Exception as e:  # noqa: BLE001 - the store is unreachable: the lease decays
                    log.warning("lease renewal failed: %s", e)
                    ok = None
                if ok is False:
                    holder = lease.last_seen.holder if lease.last_seen else "?"
                    self._step_down(f"the primary lease was taken by {holder}")
                    return
        else:
            # Primary without the lease: started as primary-node while another holds it (e.g. a node that just
            # stopped, whose lease has not expired yet). It stays primary but fenced, writing nothing, and takes
            # the lease once it is free. Only a lease taken *from* this node (above) makes it step down.
            try:
                ok, why = lease.acquire()
            except Exception as e:  # noqa: BLE001
                ok, why = False, f"lease store unreachable: {e}"
            if not ok:
                self.reasons = [f"primary without the lease, writing nothing: {why}"]
        fenced = not lease.valid()
        if fenced and not self.fenced:
            self.fence_events += 1
            log.warning(
                "FENCED: this primary cannot prove it holds the lease (last renewal %s ago): no chunk is written "
                "until it can",
                "never" if lease.seconds_since_renewal() is None else f"{lease.seconds_since_renewal():.1f}s",
            )
        elif not fenced and self.fenced:
            log.info("lease proven again (epoch %d): writing resumes", lease.epoch)
        self.fenced = fenced

    def _step_down(self, why: str) -> None:
        log.error("demoting this node: %s", why)
        self.fenced = False
        self.demoted()
        self.lost(why)

    def _as_candidate(self) -> None:
        if self._demoted_at is not None and self.mono() - self._demoted_at < self.hold_off:
            left = self.hold_off - (self.mono() - self._demoted_at)
            self.candidate = False
            self.reasons = [f"demoted recently: hold-off for {left:.0f}s more"]
            return
        inp = self.inputs()
        reasons = promotion_reasons(inp)
        self.candidate = not reasons
        if reasons:
            self.reasons = reasons
            return
        me = (self.node.priority, self.node.name)
        better = sorted(
            (p.priority, p.name)
            for p in inp.peers
            if p.reachable and p.candidate and (p.priority, p.name) < me
        )
        if better:
            self.reasons = [f"peer {better[0][1]} is a better candidate (priority {better[0][0]})"]
            return
        try:
            ok, why = self.lease.acquire()
        except Exception as e:  # noqa: BLE001
            ok, why = False, f"lease store unreachable: {e}"
        if not ok:
            self.reasons = [why]
            return
        self.auto_promotions += 1
        self.reasons = []
        log.warning("automatic failover: took the primary lease (epoch %d); promoting", self.lease.epoch)
        self.promote()

    # --- views ---------------------------------------------------------------------------------------------------
    def as_json(self) -> dict:
        return {
            "mode": self.mode,
            "candidate": self.candidate,
            "reasons": list(self.reasons),
            "fenced": self.fenced,
            "lease": self.lease.as_json(),
        }

    def register_stats(self, stats: Stats) -> None:
        lease = self.lease
        stats.gauge(
            "cluster.lease.epoch",
            "epoch of the primary lease as this node last saw it",
            lambda: lease.last_seen.epoch if lease.last_seen else 0,
        )
        stats.gauge(
            "cluster.lease.holder",
            "1 for the instance that holds the primary lease, as this node last saw it",
            lambda: [((lease.last_seen.holder,), 1)] if lease.last_seen and lease.last_seen.holder else [],
            ("holder",),
        )
        stats.gauge(
            "cluster.lease.seconds_since_renewal",
            "seconds since this node last renewed the lease (-1: it does not hold it)",
            lambda: lease.seconds_since_renewal() if lease.held() else -1,
        )
        stats.counter(
            "cluster.lease.acquisitions", "times this node took the lease", lambda: lease.acquisitions
        )
        stats.counter(
            "cluster.lease.losses", "times this node found the lease taken by another", lambda: lease.losses
        )
        stats.counter(
            "cluster.lease.errors", "lease operations that could not reach the store", lambda: lease.errors
        )
        stats.counter(
            "cluster.lease.self_fencing",
            "times this primary stopped writing for want of a provable lease",
            lambda: self.fence_events,
        )
        stats.gauge("cluster.lease.fenced", "1 while this primary is fenced", lambda: int(self.fenced))
        stats.gauge(
            "cluster.failover.candidate",
            "1 while this node qualifies to take over",
            lambda: int(self.candidate),
        )
        stats.counter(
            "cluster.failover.auto_promotions",
            "automatic promotions of this node",
            lambda: self.auto_promotions,
        )
