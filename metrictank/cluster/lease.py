"""The primary lease: who may write a set of partitions, decided by the store's own linearizable primitive.

Metrictank leaves "is the old primary really gone?" to a person. Peer checks cannot answer it either: a primary that
is alive but unreachable from the candidate looks exactly like a dead one. So the right to write is a lease held in
the store every writer already depends on, taken and renewed with compare-and-set:

- Cassandra: lightweight transactions (`INSERT ... IF NOT EXISTS`, `UPDATE ... IF epoch = ? AND holder = ?`), read at
  SERIAL consistency. Each operation is a Paxos round (about 4 round trips to a quorum of replicas); at one renewal
  every few seconds per set of partitions that is noise next to the chunk writes.
- SQLite (one database file shared by the nodes of one host): the same compare-and-set inside a `BEGIN IMMEDIATE`
  transaction.

Kafka's group coordinator (one member owning the single partition of an election topic, the generation id as the
epoch) would work too, without a store round trip; it was not chosen because the thing a stale primary must be kept
from is *the store*, and a lease in the store fails together with the writes it guards: a primary that cannot reach
the store can neither write nor renew, and a candidate that cannot reach it cannot take over.

Every change of holder increases the **epoch**. It travels in persist messages (a field Metrictank ignores), so a
late announcement of an older holder can be told apart. Expiry is judged on wall clocks (the holder writes
`expires` = its clock + duration); the holder stops writing `margin` seconds before that by its own monotonic clock,
and a candidate takes an expired lease only `margin` seconds after it, so clocks may disagree by up to `margin`
without two writers. A process paused past its lease (SIGSTOP, a long GC) wakes up with no valid lease and writes
nothing until it renews, which fails if someone else took over.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

__all__ = ["LeaseRow", "LeaseBackend", "CassandraLeases", "SQLiteLeases", "Lease", "lease_name"]


@dataclass(frozen=True)
class LeaseRow:
    holder: str  # "" when released
    epoch: int
    expires_ms: int  # the holder's wall clock, ms since the epoch


class LeaseBackend(Protocol):
    """Linearizable operations on one row per lease name."""

    def close(self) -> None: ...

    def read(self, name: str) -> LeaseRow | None: ...

    def create(self, name: str, holder: str, epoch: int, expires_ms: int) -> bool: ...

    def cas(self, name: str, expect: LeaseRow, holder: str, epoch: int, expires_ms: int) -> bool: ...


def lease_name(cluster: str, partitions: Sequence[int]) -> str:
    """One lease per set of partitions: the unit a primary owns."""
    return f"{cluster}/partitions/{','.join(str(p) for p in sorted(partitions))}"


class CassandraLeases:
    """Lease rows in `<keyspace>.metrictank_lease`, changed only by lightweight transactions."""

    TABLE = "metrictank_lease"

    def __init__(self, session, keyspace: str, timeout: float = 5.0) -> None:
        from cassandra import ConsistencyLevel

        self._session = session
        self._timeout = timeout
        t = f"{keyspace}.{self.TABLE}"
        session.execute(
            f"CREATE TABLE IF NOT EXISTS {t} (name text PRIMARY KEY, holder text, epoch bigint, expires bigint)",
            timeout=max(timeout, 30.0),
        )
        serial = ConsistencyLevel.SERIAL
        quorum = ConsistencyLevel.QUORUM

        def stmt(q: str, read: bool = False):
            ps = session.prepare(q)
            ps.consistency_level = serial if read else quorum
            ps.serial_consistency_level = serial
            return ps

        self._read = stmt(f"SELECT holder, epoch, expires FROM {t} WHERE name = ?", read=True)
        self._create = stmt(
            f"INSERT INTO {t} (name, holder, epoch, expires) VALUES (?, ?, ?, ?) IF NOT EXISTS"
        )
        self._cas = stmt(
            f"UPDATE {t} SET holder = ?, epoch = ?, expires = ? WHERE name = ? IF epoch = ? AND holder = ?"
        )

    def close(self) -> None:
        """Nothing of its own: the session is the chunk store's."""

    def read(self, name: str) -> LeaseRow | None:
        rows = list(self._session.execute(self._read, (name,), timeout=self._timeout))
        if not rows:
            return None
        holder, epoch, expires = rows[0]
        return LeaseRow(holder or "", int(epoch or 0), int(expires or 0))

    @staticmethod
    def _applied(rs) -> bool:
        return bool(rs.was_applied)

    def create(self, name: str, holder: str, epoch: int, expires_ms: int) -> bool:
        return self._applied(
            self._session.execute(self._create, (name, holder, epoch, expires_ms), timeout=self._timeout)
        )

    def cas(self, name: str, expect: LeaseRow, holder: str, epoch: int, expires_ms: int) -> bool:
        return self._applied(
            self._session.execute(
                self._cas,
                (holder, epoch, expires_ms, name, expect.epoch, expect.holder),
                timeout=self._timeout,
            )
        )


class SQLiteLeases:
    """Lease rows in the shared SQLite database file; compare-and-set inside `BEGIN IMMEDIATE` transactions."""

    def __init__(self, path: str, timeout: float = 5.0) -> None:
        self._path = path
        self._timeout = timeout
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS metrictank_lease "
            "(name TEXT PRIMARY KEY, holder TEXT NOT NULL, epoch INTEGER NOT NULL, expires INTEGER NOT NULL)"
        )

    def read(self, name: str) -> LeaseRow | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT holder, epoch, expires FROM metrictank_lease WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else LeaseRow(row[0], int(row[1]), int(row[2]))

    def create(self, name: str, holder: str, epoch: int, expires_ms: int) -> bool:
        with self._lock:
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO metrictank_lease (name, holder, epoch, expires) VALUES (?, ?, ?, ?)",
                (name, holder, epoch, expires_ms),
            )
            return cur.rowcount == 1

    def cas(self, name: str, expect: LeaseRow, holder: str, epoch: int, expires_ms: int) -> bool:
        with self._lock:
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            try:
                cur = c.execute(
                    "UPDATE metrictank_lease SET holder = ?, epoch = ?, expires = ? "
                    "WHERE name = ? AND epoch = ? AND holder = ?",
                    (holder, epoch, expires_ms, name, expect.epoch, expect.holder),
                )
                ok = cur.rowcount == 1
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
            return ok

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class Lease:
    """This node's view of one lease: acquire, renew, release, and whether it may write right now.

    `valid()` is the fence: true only while the last successful acquisition or renewal started less than
    `duration - margin` seconds ago (monotonic clock), so a holder stops before anyone else can start.
    """

    def __init__(
        self,
        backend: LeaseBackend,
        name: str,
        me: str,
        duration: float = 10.0,
        margin: float = 2.0,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        if margin * 2 >= duration:
            raise ValueError("the lease margin must be less than half the lease duration")
        self.backend = backend
        self.name = name
        self.me = me
        self.duration = duration
        self.margin = margin
        self.wall = wall
        self.mono = mono
        self.epoch = 0  # of our holding; 0 when we do not hold it
        self._valid_until = 0.0  # monotonic
        self.last_renewal: float | None = None  # monotonic time of the last successful renewal
        self.last_seen: LeaseRow | None = None  # the row as last read or written
        self.last_error = ""
        self.acquisitions = 0
        self.losses = 0
        self.renewals = 0
        self.errors = 0
        self._lock = threading.Lock()

    # --- the fence ---------------------------------------------------------------------------------------------
    def valid(self) -> bool:
        return self.epoch > 0 and self.mono() < self._valid_until

    def held(self) -> bool:
        """We believe we hold it (perhaps no longer provably: see `valid`)."""
        return self.epoch > 0

    def seconds_since_renewal(self) -> float | None:
        return None if self.last_renewal is None else self.mono() - self.last_renewal

    # --- operations ----------------------------------------------------------------------------------------------
    def _expires(self) -> int:
        return int((self.wall() + self.duration) * 1000)

    def _expired(self, row: LeaseRow) -> bool:
        return row.holder == "" or self.wall() * 1000 > row.expires_ms + self.margin * 1000

    def blocker(self) -> str | None:
        """Why `acquire()` would be refused now (another live holder), without trying; reads the store."""
        row = self.backend.read(self.name)
        self.last_seen = row
        if row is None or row.holder == self.me or self._expired(row):
            return None
        left = row.expires_ms / 1000 - self.wall()
        return f"the primary lease is held by {row.holder} (epoch {row.epoch}) for {max(0.0, left):.0f}s more"

    def acquire(self, force: bool = False) -> tuple[bool, str]:
        """Take the lease if it is free, expired, ours, or (`force`) anyway; the epoch goes up at a change of
        holder. Returns (ok, why not). Raises what the backend raises (store unreachable)."""
        with self._lock:
            started = self.mono()
            row = self.backend.read(self.name)
            if row is None:
                new = LeaseRow(self.me, 1, self._expires())
                ok = self.backend.create(self.name, new.holder, new.epoch, new.expires_ms)
                return self._took(ok, new, started, "another node created the lease at the same moment")
            if row.holder == self.me and row.epoch == self.epoch:
                new = LeaseRow(self.me, row.epoch, self._expires())
            elif self._expired(row) or force or row.holder == self.me:
                # Held under our own name by an earlier incarnation (a restart): take it back at once with a new
                # epoch; should that incarnation still live, its next renewal fails and it stops.
                new = LeaseRow(self.me, row.epoch + 1, self._expires())
            else:
                left = row.expires_ms / 1000 - self.wall()
                self.last_seen = row
                return False, (
                    f"the primary lease is held by {row.holder} (epoch {row.epoch}) for {max(0.0, left):.0f}s more"
                )
            ok = self.backend.cas(self.name, row, new.holder, new.epoch, new.expires_ms)
            if force and ok and row.holder not in ("", self.me):
                log.warning(
                    "lease %s taken by force from %s (epoch %d -> %d)",
                    self.name,
                    row.holder,
                    row.epoch,
                    new.epoch,
                )
            return self._took(ok, new, started, "the lease changed hands at the same moment")

    def _took(self, ok: bool, new: LeaseRow, started: float, why: str) -> tuple[bool, str]:
        if not ok:
            return False, why
        if self.epoch != new.epoch:
            self.acquisitions += 1
            log.info("lease %s acquired, epoch %d", self.name, new.epoch)
        self.epoch = new.epoch
        self.last_seen = new
        self.last_renewal = started
        self._valid_until = started + self.duration - self.margin
        return True, ""

    def renew(self) -> bool:
        """Extend our holding. False when it was lost (someone else holds it now: we must stop for good);
        a store error raises, and the holding decays until `valid()` is false (fenced) or a renewal succeeds."""
        with self._lock:
            if self.epoch == 0:
                return False
            started = self.mono()
            expect = LeaseRow(self.me, self.epoch, 0)
            try:
                ok = self.backend.cas(self.name, expect, self.me, self.epoch, self._expires())
            except Exception as e:
                self.errors += 1
                self.last_error = f"{type(e).__name__}: {e}"
                raise
            if ok:
                self.renewals += 1
                self.last_renewal = started
                self._valid_until = started + self.duration - self.margin
                self.last_seen = LeaseRow(self.me, self.epoch, self._expires())
                return True
            self.last_seen = self.backend.read(self.name)
            self._lose()
            return False

    def release(self) -> None:
        """Give the lease up (after a demotion's drain): the next holder need not wait for the expiry."""
        with self._lock:
            if self.epoch == 0:
                return
            try:
                self.backend.cas(self.name, LeaseRow(self.me, self.epoch, 0), "", self.epoch, 0)
            finally:
                self.epoch = 0
                self._valid_until = 0.0

    def _lose(self) -> None:
        if self.epoch:
            self.losses += 1
            log.warning(
                "lease %s lost (epoch %d); now %s",
                self.name,
                self.epoch,
                f"held by {self.last_seen.holder} epoch {self.last_seen.epoch}"
                if self.last_seen
                else "unknown",
            )
        self.epoch = 0
        self._valid_until = 0.0

    def close(self) -> None:
        self.backend.close()

    def as_json(self) -> dict:
        row = self.last_seen
        since = self.seconds_since_renewal()
        return {
            "name": self.name,
            "holder": row.holder if row else None,
            "epoch": row.epoch if row else 0,
            "expiresIn": round(row.expires_ms / 1000 - self.wall(), 1) if row and row.holder else None,
            "held": self.held(),
            "valid": self.valid(),
            "secondsSinceRenewal": None if since is None else round(since, 1),
            "lastError": self.last_error,
        }
