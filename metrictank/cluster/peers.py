"""The static peer list: each peer's `GET /node`, fetched concurrently with a short timeout.

Peers are other instances' HTTP base URLs from `[cluster] peers`. Metrictank nodes answer the same endpoint, so a
mixed cluster is visible too. A peer that does not answer is `NodeUnreachable`: it cannot be counted as primary,
which is why the split-brain check also looks at who is *writing* (persist messages from other instances).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from metrictank.cluster.node import NodeState
from metrictank.cluster.promotion import PeerView
from metrictank.input.kafka import LagMonitor

__all__ = ["PeerStatus", "parse_peers", "fetch_peers"]


def _int(v: object, default: int) -> int:
    """A peer's figure as an int: a peer (or anything listening at its URL) may answer with any JSON."""
    if type(v) is int:
        return v
    if type(v) is float and v.is_integer():
        return int(v)
    return default


@dataclass
class PeerStatus:
    """A peer's `GET /node`, read defensively: every field a decision uses has a typed accessor, so a peer that
    answers garbage (or an older or foreign node) is treated as missing those figures, never as an exception in
    the promotion path."""

    url: str
    reachable: bool
    node: dict = field(default_factory=dict)
    error: str = ""

    @property
    def name(self) -> str:
        n = self.node.get("name")
        return n if isinstance(n, str) and n else self.url

    @property
    def primary(self) -> bool:
        return self.node.get("primary") is True and self.reachable

    @property
    def partitions(self) -> list[int]:
        parts = self.node.get("partitions")
        return [p for p in parts if type(p) is int] if isinstance(parts, list) else []

    def view(self) -> PeerView:
        """What the promotion policy needs of this peer."""
        failover = self.node.get("failover")
        return PeerView(
            name=self.name,
            url=self.url,
            reachable=self.reachable,
            primary=self.primary,
            partitions=tuple(self.partitions),
            pending_writes=max(0, _int(self.node.get("pendingWrites"), 0)),
            priority=_int(self.node.get("priority"), LagMonitor.UNKNOWN),
            candidate=isinstance(failover, dict) and failover.get("candidate") is True,
        )

    def as_json(self) -> dict:
        out = {"url": self.url, "reachable": self.reachable, **self.node}
        if not self.reachable:
            out["state"] = NodeState.UNREACHABLE
            out["error"] = self.error
        return out


def parse_peers(spec: str) -> list[str]:
    peers = []
    for p in filter(None, (s.strip() for s in spec.split(","))):
        if not p.startswith(("http://", "https://")):
            p = "http://" + p
        peers.append(p.rstrip("/"))
    return peers


def _fetch(url: str, timeout: float) -> PeerStatus:
    try:
        r = httpx.get(f"{url}/node", timeout=timeout)
        r.raise_for_status()
        node = r.json()
        if not isinstance(node, dict):
            return PeerStatus(url, False, error=f"answered a JSON {type(node).__name__}, not a node object")
        return PeerStatus(url, True, node)
    except Exception as e:  # noqa: BLE001 - any failure means unreachable
        return PeerStatus(url, False, error=f"{type(e).__name__}: {e}")


def fetch_peers(urls: list[str], timeout: float = 2.0) -> list[PeerStatus]:
    if not urls:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(urls))) as pool:
        return list(pool.map(lambda u: _fetch(u, timeout), urls))
