"""Partition assignment for a split deployment (`metrictank cluster plan`), HM-API's ConstantWithNoOverlap.

Writers come in sets of `write_replication` (a primary and its standbys); each set owns a contiguous, disjoint
range of partitions. Readers come in groups of `replication`; each group serves a disjoint range, every reader of
a group all of it, so every partition has exactly `replication` readers. A plan that would leave a partition
without its readers, or a writer set without a standby, is refused with the reason: a bad plan found at deploy
time is an outage found before it happens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

__all__ = ["Member", "Plan", "PlanError", "constant_no_overlap"]

POLICIES = ("constant-no-overlap",)


class PlanError(ValueError):
    """The plan is impossible; the message says why."""


@dataclass(frozen=True)
class Member:
    name: str
    role: str  # "write" | "read"
    partitions: tuple[int, ...]
    primary: bool = False
    peers: tuple[str, ...] = ()  # names of the members it asks (promotion checks, cluster queries)

    def toml(self, url_of: dict[str, str]) -> str:
        """A config fragment for `metrictank run --config base.toml --config <this>`."""
        q = json.dumps  # a JSON string is a TOML basic string: a URL template with quotes stays loadable
        lines = [
            f"instance = {q(self.name)}",
            "",
            "[kafka-mdm-in]",
            f"partitions = {q(','.join(map(str, self.partitions)))}",
            "",
            "[cluster]",
            f"role = {q(self.role)}",
            f"primary-node = {'true' if self.primary else 'false'}",
            f"peers = {q(','.join(url_of[p] for p in self.peers))}",
        ]
        return "\n".join(lines) + "\n"

    def env(self, url_of: dict[str, str]) -> str:
        """The same as `MT_*` variables, for systemd's `EnvironmentFile=`."""
        return (
            f"MT_INSTANCE={self.name}\n"
            f"MT_KAFKA_MDM_IN_PARTITIONS={','.join(map(str, self.partitions))}\n"
            f"MT_CLUSTER_ROLE={self.role}\n"
            f"MT_CLUSTER_PRIMARY_NODE={'true' if self.primary else 'false'}\n"
            f"MT_CLUSTER_PEERS={','.join(url_of[p] for p in self.peers)}\n"
        )


@dataclass(frozen=True)
class Plan:
    partitions: int
    members: tuple[Member, ...]

    def readers_of(self, partition: int) -> list[str]:
        return [m.name for m in self.members if m.role == "read" and partition in m.partitions]

    def writers_of(self, partition: int) -> list[str]:
        return [m.name for m in self.members if m.role == "write" and partition in m.partitions]

    def table(self) -> str:
        rows = [("instance", "role", "partitions", "primary", "peers")]
        for m in self.members:
            rows.append(
                (m.name, m.role, _ranges(m.partitions), "yes" if m.primary else "", ",".join(m.peers))
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _ranges(parts: tuple[int, ...]) -> str:
    out, start, prev = [], None, None
    for p in parts:
        if start is None:
            start = prev = p
        elif p == prev + 1:  # type: ignore[operator]
            prev = p
        else:
            out.append(f"{start}-{prev}" if start != prev else f"{start}")
            start = prev = p
    if start is not None:
        out.append(f"{start}-{prev}" if start != prev else f"{start}")
    return ",".join(out)


def _split(partitions: int, groups: int) -> list[tuple[int, ...]]:
    """`partitions` into `groups` contiguous ranges whose sizes differ by at most one."""
    size, extra = divmod(partitions, groups)
    out, lo = [], 0
    for g in range(groups):
        n = size + (1 if g < extra else 0)
        out.append(tuple(range(lo, lo + n)))
        lo += n
    return out


def constant_no_overlap(
    partitions: int,
    writers: int,
    readers: int,
    replication: int,
    write_replication: int = 2,
    prefix_write: str = "write",
    prefix_read: str = "read",
) -> Plan:
    """The assignment, or PlanError naming what makes it impossible."""
    if partitions < 1:
        raise PlanError(f"--partitions {partitions}: a topic has at least one partition")
    if write_replication < 2:
        raise PlanError(
            f"--write-replication {write_replication}: every writer set needs a standby (at least 2 writers), "
            "or a dead primary leaves its partitions unsaved until it returns"
        )
    if writers < write_replication or writers % write_replication:
        raise PlanError(
            f"--writers {writers}: writers come in sets of {write_replication} (a primary and its standbys); "
            f"{writers} is not a multiple of {write_replication}"
            + ("" if writers >= write_replication else " and leaves a writer set without a standby")
        )
    if replication < 1:
        raise PlanError(f"--replication {replication}: every partition needs at least one reader")
    if readers < replication or readers % replication:
        raise PlanError(
            f"--readers {readers}: readers come in groups of --replication {replication} (each group serves its "
            f"partitions {replication} times); {readers} readers would leave a partition without "
            f"{replication} readers"
        )
    wsets, rgroups = writers // write_replication, readers // replication
    for what, n in (("writer sets", wsets), ("reader groups", rgroups)):
        if n > partitions:
            raise PlanError(
                f"{n} {what} for {partitions} partitions: some would own no partition; use fewer or more partitions"
            )
    members: list[Member] = []
    for s, parts in enumerate(_split(partitions, wsets)):
        names = [f"{prefix_write}-{s * write_replication + i}" for i in range(write_replication)]
        for i, name in enumerate(names):
            peers = tuple(n for n in names if n != name)
            members.append(Member(name, "write", parts, primary=i == 0, peers=peers))
    reader_names = [f"{prefix_read}-{i}" for i in range(readers)]
    for g, parts in enumerate(_split(partitions, rgroups)):
        for i in range(replication):
            name = reader_names[g * replication + i]
            # a reader fans out to the readers of the other groups (and its own group's, for failover)
            peers = tuple(n for n in reader_names if n != name)
            members.append(Member(name, "read", parts, peers=peers))
    plan = Plan(partitions, tuple(members))
    for p in range(partitions):  # the invariants, checked rather than trusted
        assert len(plan.readers_of(p)) == replication, p
        assert len(plan.writers_of(p)) == write_replication, p
    return plan
