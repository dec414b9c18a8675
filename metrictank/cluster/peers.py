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

__all__ = ["PeerStatus", "parse_peers", "fetch_peers"]


@dataclass
class PeerStatus:
    url: str
    reachable: bool
    node: dict = field(default_factory=dict)
    error: str = ""

    @property
    def primary(self) -> bool:
        return bool(self.node.get("primary")) and self.reachable

    @property
    def partitions(self) -> list[int]:
        return list(self.node.get("partitions") or [])

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
        return PeerStatus(url, True, r.json())
    except Exception as e:  # noqa: BLE001 - any failure means unreachable
        return PeerStatus(url, False, error=f"{type(e).__name__}: {e}")


def fetch_peers(urls: list[str], timeout: float = 2.0) -> list[PeerStatus]:
    if not urls:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(urls))) as pool:
        return list(pool.map(lambda u: _fetch(u, timeout), urls))
