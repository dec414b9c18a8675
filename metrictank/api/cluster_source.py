"""A `SeriesSource` for a sharded cluster: local data plus the partitions this node does not consume, read
from peers through their `/internal/...` routes (`metrictank.api.internal`).

Which peer serves a partition: among the peers whose `GET /node` says `NodeReady` and lists the partition, the
one with the lowest priority (Kafka lag), ties broken by URL so replicas are used consistently. A query asks
each chosen peer once, for everything it was chosen for, all peers in parallel; when one fails (unreachable,
timeout, 5xx) its partitions go to the next replica. When a partition is left with no replica the query fails
with HTTP 503 naming the partitions: a graph silently missing part of its series looks like real data, an error
does not.

Peer state comes from `GET /node`, cached for `refresh_interval` seconds and refreshed lazily by the next query;
a peer that fails a request is left out until the next refresh. Results merge by name with local data first, so
a series present on two nodes (overlapping partition sets) is read once. A remote series' key is a
`RemoteKey` naming the peer that resolved it: its data is fetched from that same peer with the peer's own
keys, or, if that peer has died since, from another replica by name.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import httpx
import msgpack

from metrictank.api.internal import MSGPACK, QUERY_ERROR_HEADER, SERIES_MEDIA_TYPE, unpack_series, wire_key
from metrictank.cluster.node import NodeState
from metrictank.query.errors import QueryError
from metrictank.query.limits import Deadline, current_deadline
from metrictank.query.series import Series
from metrictank.query.source import FindNode, SeriesRef, SeriesSource

__all__ = ["ClusterSource", "RemoteKey", "PeerFailed", "ReadyPeer"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RemoteKey:
    """Key of a series another node resolved: that node, its own key for the series (None: by name), and the
    partitions that node was serving for the query (where to look for a replica if it fails)."""

    peer: str
    key: int | str | None
    partitions: frozenset[int]


class PeerFailed(Exception):
    """A peer did not answer usably: try another replica."""


class _PastDeadline(Exception):
    """A peer request given up at the query's deadline: the query is over, the peer is not known to be bad."""


@dataclass(frozen=True, slots=True)
class ReadyPeer:
    """A peer whose last `GET /node` said NodeReady."""

    url: str
    priority: int
    partitions: frozenset[int]


class ClusterSource:
    """`SeriesSource` over `local` plus ready peers for the partitions in [0, total_partitions) not local."""

    def __init__(
        self,
        local: SeriesSource,
        local_partitions: Iterable[int],
        total_partitions: int,
        peers: Sequence[str] | Callable[[], Sequence[str]],
        timeout: float = 2.0,
        query_timeout: float = 60.0,
        refresh_interval: float = 2.0,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.local = local
        self.local_partitions = frozenset(int(p) for p in local_partitions)
        self.total_partitions = int(total_partitions)
        self.remote_partitions = frozenset(range(self.total_partitions)) - self.local_partitions
        # a list, or a function giving the current one (live membership); asked at every refresh
        self._peers = peers if callable(peers) else [p.rstrip("/") for p in peers]
        self.timeout = timeout
        self.query_timeout = query_timeout
        self.refresh_interval = refresh_interval
        self.clock = clock
        # connect/pool waits are short (a dead node must fail over fast); reading an answer may take a while
        self._client = client or httpx.Client(
            timeout=httpx.Timeout(query_timeout, connect=timeout, pool=timeout)
        )
        self._pool = ThreadPoolExecutor(
            max_workers=16 if callable(peers) else max(4, min(32, 2 * len(peers))), thread_name_prefix="peer"
        )
        self._lock = threading.Lock()
        self._refresh_done = threading.Condition(self._lock)
        self._refreshing = False
        self._ready: list[ReadyPeer] = []
        self._down: set[str] = set()
        self._refreshed = float("-inf")
        self.peer_requests = 0
        self.peer_failures = 0
        self.peer_timeouts = (
            0  # peer requests abandoned at the query's deadline (the peer is not marked down)
        )

    @property
    def peers(self) -> list[str]:
        if callable(self._peers):
            return [p.rstrip("/") for p in self._peers()]
        return self._peers

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self._client.close()

    # --- peer state --------------------------------------------------------------------------------------------
    def _node(self, url: str) -> ReadyPeer | None:
        try:
            r = self._client.get(f"{url}/node", timeout=self.timeout)
            r.raise_for_status()
            node = r.json()
        except Exception as e:  # noqa: BLE001 - any failure means not usable now
            log.debug("peer %s: GET /node failed: %s", url, e)
            return None
        if not isinstance(node, dict) or node.get("state") != NodeState.READY:
            return None
        if node.get("role") == "write":  # does not answer queries (cluster.role = write)
            return None
        try:
            return ReadyPeer(
                url, int(node.get("priority", 0)), frozenset(int(p) for p in node.get("partitions") or [])
            )
        except (TypeError, ValueError):
            return None

    def ready_peers(self) -> list[ReadyPeer]:
        """Ready peers not known to have failed since the last refresh (refreshed when older than the interval).

        One caller refreshes, outside the lock (it asks every peer, up to `timeout`); the others answer from the
        table they have meanwhile, except before the first refresh, when they wait for it (without the lock)."""
        with self._lock:
            mine = self.clock() - self._refreshed >= self.refresh_interval and not self._refreshing
            if mine:
                self._refreshing = True
            else:
                while self._refreshing and self._refreshed == float("-inf"):
                    self._refresh_done.wait(self.timeout + 1.0)
        if mine:
            found: list[ReadyPeer | None] = []
            try:
                peers = self.peers
                found = list(self._pool.map(self._node, peers)) if peers else []
            finally:
                with self._lock:
                    self._ready = [p for p in found if p is not None]
                    self._down = set()
                    self._refreshed = self.clock()
                    self._refreshing = False
                    self._refresh_done.notify_all()
        with self._lock:
            return [p for p in self._ready if p.url not in self._down]

    def _mark_down(self, url: str) -> None:
        with self._lock:
            self._down.add(url)

    def plan(
        self, partitions: Iterable[int], exclude: Iterable[str] = ()
    ) -> tuple[dict[str, set[int]], set[int]]:
        """Which peer serves which of `partitions` (lowest priority first), and the partitions nobody can serve."""
        skip = set(exclude)
        peers = sorted(
            (p for p in self.ready_peers() if p.url not in skip), key=lambda p: (p.priority, p.url)
        )
        chosen: dict[str, set[int]] = {}
        uncovered: set[int] = set()
        for part in sorted(partitions):
            peer = next((p for p in peers if part in p.partitions), None)
            if peer is None:
                uncovered.add(part)
            else:
                chosen.setdefault(peer.url, set()).add(part)
        return chosen, uncovered

    # --- requests ----------------------------------------------------------------------------------------------
    def _call(self, url: str, op: str, org: int, body: dict[str, Any], at: float) -> Any:
        """One peer request, given up at `at` (monotonic) however the peer answers: httpx's read timeout is per
        read, so a peer dribbling its answer would otherwise hold the query (and this thread) for as long as it
        likes."""
        self.peer_requests += 1
        left = at - time.monotonic()
        if left <= 0:
            raise _PastDeadline(url)
        wait = min(self.timeout, left)
        try:
            with self._client.stream(
                "POST",
                f"{url}/internal/{op}",
                content=msgpack.packb(body, use_bin_type=True),
                headers={"X-Org-Id": str(org), "Content-Type": MSGPACK, "Accept": MSGPACK},
                timeout=httpx.Timeout(min(self.query_timeout, left), connect=wait, pool=wait),
            ) as r:
                parts = []
                for part in r.iter_bytes():
                    parts.append(part)
                    if time.monotonic() >= at:
                        raise _PastDeadline(url)
                content = b"".join(parts)
        except httpx.TimeoutException as e:
            if time.monotonic() >= at - 0.01:  # the request's own deadline, not a failing peer
                raise _PastDeadline(url) from None
            raise PeerFailed(f"{type(e).__name__}: {e}") from None
        except httpx.HTTPError as e:
            raise PeerFailed(f"{type(e).__name__}: {e}") from None
        if r.status_code == 200 and r.headers.get("content-type", "").startswith(SERIES_MEDIA_TYPE):
            return content  # series data, unpacked by the caller without another copy
        try:
            doc = msgpack.unpackb(content, raw=False)
        except Exception:  # noqa: BLE001 - not our protocol (a proxy's error page, an older node)
            doc = None
        if r.headers.get(QUERY_ERROR_HEADER) and isinstance(doc, dict):
            raise QueryError(str(doc.get("error", "")), r.status_code)
        if r.status_code != 200 or not isinstance(doc, dict):
            detail = doc.get("error") if isinstance(doc, dict) else content[:200].decode("utf-8", "replace")
            raise PeerFailed(f"HTTP {r.status_code}: {detail}")
        return doc

    def _deadline(self) -> tuple[float, Deadline | None]:
        """When peer requests must be answered by: the render's deadline, else query-timeout from now (the
        other endpoints are held to the same bound for their whole fan-out)."""
        d = current_deadline()
        return (d.at if d is not None else time.monotonic() + self.query_timeout), d

    def _timed_out(self, url: str, d: Deadline | None) -> QueryError:
        self.peer_timeouts += 1
        if d is not None:
            try:
                d.check()
            except QueryError as e:
                return e
        return QueryError(
            f"query timed out waiting for peer {url}: it ran longer than query-timeout "
            f"({self.query_timeout:g} s) and was abandoned",
            status=503,
        )

    def _scatter(
        self,
        op: str,
        org: int,
        body: dict[str, Any],
        partitions: Iterable[int],
        exclude: Iterable[str] = (),
        failures: dict[str, str] | None = None,
        local: Callable[[], Any] | None = None,
    ) -> tuple[Any, list[tuple[str, frozenset[int], dict[str, Any]]]]:
        """Ask one ready replica per partition (one request per peer, all in parallel, `local()` meanwhile in
        this thread); failed peers' partitions go to the next replica. Returns (local result, [(peer, its
        partitions, answer)] in peer order); QueryError 503 when a partition has no replica left."""
        todo = set(partitions)
        skip = set(exclude)
        failures = {} if failures is None else failures
        answers: list[tuple[str, frozenset[int], dict[str, Any]]] = []
        local_result = None
        at, deadline = self._deadline()
        while todo:
            chosen, uncovered = self.plan(todo, skip)
            if uncovered:
                raise self._unavailable(uncovered, failures)
            futures: dict[str, Future] = {
                u: self._pool.submit(self._call, u, op, org, body, at) for u in chosen
            }
            if local is not None:
                local_result, local = local(), None
            todo = set()
            for url, fut in futures.items():
                try:
                    answers.append(
                        (url, frozenset(chosen[url]), fut.result(timeout=max(0.0, at - time.monotonic())))
                    )
                except (FutureTimeout, _PastDeadline):
                    raise self._timed_out(url, deadline) from None
                except PeerFailed as e:
                    self._failed(url, e, failures)
                    skip.add(url)
                    todo |= chosen[url]
        if local is not None:
            local_result = local()
        answers.sort(key=lambda a: a[0])
        return local_result, answers

    def _failed(self, url: str, err: Exception, failures: dict[str, str]) -> None:
        self.peer_failures += 1
        failures[url] = str(err)
        self._mark_down(url)
        log.warning("peer %s failed a query, trying another replica: %s", url, err)

    def _unavailable(self, partitions: set[int], failures: dict[str, str]) -> QueryError:
        parts = ", ".join(str(p) for p in sorted(partitions))
        msg = f"no ready replica reachable for partitions {parts}: the result would be incomplete"
        if failures:
            msg += " (failed: " + "; ".join(f"{u}: {e}" for u, e in sorted(failures.items())) + ")"
        return QueryError(msg, status=503)

    def _gather(self, op: str, org: int, body: dict[str, Any], local: Callable[[], Any]):
        return self._scatter(op, org, body, self.remote_partitions, local=local)

    # --- SeriesSource: names -----------------------------------------------------------------------------------
    def find(self, org: int, pattern: str, from_ts: int = 0) -> list[FindNode]:
        mine, answers = self._gather(
            "find", org, {"pattern": pattern, "from": from_ts}, lambda: self.local.find(org, pattern, from_ts)
        )
        nodes: dict[str, list[bool]] = {n.path: [n.leaf, n.has_children] for n in mine}
        for _url, _parts, doc in answers:
            for path, leaf, children in doc["nodes"]:
                flags = nodes.setdefault(path, [False, False])
                flags[0] = flags[0] or bool(leaf)
                flags[1] = flags[1] or bool(children)
        return [FindNode(p, f[0], f[1]) for p, f in sorted(nodes.items())]

    def _merge_refs(self, mine: list[SeriesRef], answers) -> list[SeriesRef]:
        out = list(mine)
        seen = {r.name for r in mine}
        for url, parts, doc in answers:
            last = doc.get("last") or [0] * len(doc["names"])  # older peers send no last-update times
            for name, key, lu in zip(doc["names"], doc["keys"], last, strict=True):
                if name not in seen:
                    seen.add(name)
                    out.append(SeriesRef(name, RemoteKey(url, key, parts), int(lu)))
        out.sort(key=lambda r: r.name)
        return out

    def resolve(self, org: int, pattern: str) -> list[SeriesRef]:
        mine, answers = self._gather(
            "resolve", org, {"pattern": pattern}, lambda: self.local.resolve(org, pattern)
        )
        return self._merge_refs(mine, answers)

    def resolve_tags(self, org: int, exprs: Sequence[str], from_ts: int = 0) -> list[SeriesRef]:
        mine, answers = self._gather(
            "resolve_tags",
            org,
            {"exprs": list(exprs), "from": from_ts},
            lambda: self.local.resolve_tags(org, exprs, from_ts),
        )
        return self._merge_refs(mine, answers)

    def all_paths(self, org: int) -> list[str]:
        mine, answers = self._gather("paths", org, {}, lambda: self.local.all_paths(org))
        return sorted(set(mine).union(*(doc["paths"] for _u, _p, doc in answers)))

    def tags(self, org: int, filter: str | None) -> list[str]:  # noqa: A002 - protocol name
        mine, answers = self._gather("tags", org, {"filter": filter}, lambda: self.local.tags(org, filter))
        return sorted(set(mine).union(*(doc["tags"] for _u, _p, doc in answers)))

    def tag_values(self, org: int, tag: str, filter: str | None) -> dict[str, int]:  # noqa: A002
        """Counts add up across nodes: the nodes asked serve disjoint partitions (peers are only asked for
        partitions this node does not have), so no series is counted twice unless partition sets overlap."""
        mine, answers = self._gather(
            "tag_values", org, {"tag": tag, "filter": filter}, lambda: self.local.tag_values(org, tag, filter)
        )
        out = dict(mine)
        for _url, _parts, doc in answers:
            for value, count in doc["values"].items():
                out[value] = out.get(value, 0) + int(count)
        return out

    def autocomplete_tags(self, org: int, prefix: str, exprs: Sequence[str], limit: int) -> list[str]:
        mine, answers = self._gather(
            "autocomplete_tags",
            org,
            {"prefix": prefix, "exprs": list(exprs), "limit": limit},
            lambda: self.local.autocomplete_tags(org, prefix, exprs, limit),
        )
        return sorted(set(mine).union(*(doc["tags"] for _u, _p, doc in answers)))[:limit]

    def autocomplete_tag_values(
        self, org: int, tag: str, prefix: str, exprs: Sequence[str], limit: int
    ) -> list[str]:
        mine, answers = self._gather(
            "autocomplete_values",
            org,
            {"tag": tag, "prefix": prefix, "exprs": list(exprs), "limit": limit},
            lambda: self.local.autocomplete_tag_values(org, tag, prefix, exprs, limit),
        )
        return sorted(set(mine).union(*(doc["values"] for _u, _p, doc in answers)))[:limit]

    # --- SeriesSource: data ------------------------------------------------------------------------------------
    def estimate_points(
        self,
        org: int,
        refs: Sequence[SeriesRef],
        start: int,
        end: int,
        max_data_points: int,
        consolidate_by: str | None,
    ) -> int:
        """Estimated by the local source for every series, peers' included (it knows the cluster's storage
        schemas and estimates a series it does not hold by name): no network round trip before the limits
        are checked."""
        estimate = getattr(self.local, "estimate_points", None)
        if estimate is None:
            return 0
        return int(estimate(org, refs, start, end, max_data_points, consolidate_by))

    def fetch(
        self,
        org: int,
        refs: Sequence[SeriesRef],
        start: int,
        end: int,
        max_data_points: int,
        consolidate_by: str | None,
    ) -> list[Series]:
        local_refs: list[SeriesRef] = []
        by_peer: dict[str, list[SeriesRef]] = {}
        for r in refs:
            if isinstance(r.key, RemoteKey):
                by_peer.setdefault(r.key.peer, []).append(r)
            else:
                local_refs.append(r)
        window = {"start": int(start), "end": int(end), "mdp": int(max_data_points), "cb": consolidate_by}
        at, deadline = self._deadline()
        futures = {
            url: self._pool.submit(
                self._call,
                url,
                "fetch",
                org,
                {"names": [r.name for r in rs], "keys": [wire_key(r.key.key) for r in rs], **window},  # type: ignore[union-attr]
                at,
            )
            for url, rs in by_peer.items()
        }
        got: dict[str, Series] = {}
        if local_refs:
            for s in self.local.fetch(org, local_refs, start, end, max_data_points, consolidate_by):
                got[s.target] = s
        failures: dict[str, str] = {}
        for url, fut in sorted(futures.items()):
            try:
                series = unpack_series(fut.result(timeout=max(0.0, at - time.monotonic())))
            except (FutureTimeout, _PastDeadline):
                raise self._timed_out(url, deadline) from None
            except (PeerFailed, ValueError, KeyError) as e:
                self._failed(url, e, failures)
                series = self._refetch(org, by_peer[url], window, url, failures)
            for s in series:
                got.setdefault(s.target, s)
        return [got[r.name] for r in refs if r.name in got]

    def _refetch(
        self, org: int, refs: list[SeriesRef], window: dict[str, Any], failed: str, failures: dict[str, str]
    ) -> list[Series]:
        """The series a dead peer had resolved, from other replicas of its partitions, by name (their keys
        differ); every replica chosen is sent every name and answers for the ones it has."""
        parts = frozenset().union(*(r.key.partitions for r in refs))  # type: ignore[union-attr]
        body = {"names": [r.name for r in refs], "keys": [None] * len(refs), **window}
        _, answers = self._scatter("fetch", org, body, parts, exclude=[failed], failures=failures)
        out: list[Series] = []
        for _url, _parts, doc in answers:
            out.extend(unpack_series(doc))
        return out
