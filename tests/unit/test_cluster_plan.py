"""`metrictank cluster plan`'s assignment (ConstantWithNoOverlap): every partition has its writer set (a primary
and a standby) and exactly `replication` readers; impossible plans are refused with the reason; the fragments it
writes load, over a shared base, into the configs the instances need."""

from __future__ import annotations

from pathlib import Path

import pytest

from metrictank.cluster.plan import PlanError, constant_no_overlap
from metrictank.config import load_config


def test_every_partition_has_its_writers_and_readers():
    plan = constant_no_overlap(partitions=8, writers=4, readers=4, replication=2)
    for p in range(8):
        writers, readers = plan.writers_of(p), plan.readers_of(p)
        assert len(writers) == 2 and len(readers) == 2
        assert sum(m.primary for m in plan.members if m.name in writers) == 1  # one primary per partition
    owned = [m.partitions for m in plan.members if m.role == "write" and m.primary]
    assert owned == [(0, 1, 2, 3), (4, 5, 6, 7)]  # disjoint, contiguous, covering
    assert not any(m.primary for m in plan.members if m.role == "read")
    assert "write-0" in plan.table() and "0-3" in plan.table()


def test_uneven_partitions_differ_by_at_most_one():
    plan = constant_no_overlap(partitions=7, writers=6, readers=3, replication=1)
    sizes = sorted(len(m.partitions) for m in plan.members if m.role == "write" and m.primary)
    assert sizes == [2, 2, 3]
    assert sorted(p for m in plan.members if m.role == "read" for p in m.partitions) == list(range(7))


@pytest.mark.parametrize(
    "kw, why",
    [
        ({"readers": 3, "replication": 2}, "without 2 readers"),
        ({"readers": 1, "replication": 2}, "without 2 readers"),
        ({"writers": 1}, "without a standby"),
        ({"writers": 3}, "not a multiple of 2"),
        ({"write_replication": 1}, "needs a standby"),
        ({"partitions": 1}, "own no partition"),
        ({"replication": 0}, "at least one reader"),
    ],
)
def test_impossible_plans_are_refused_with_the_reason(kw, why):
    args = {"partitions": 8, "writers": 4, "readers": 4, "replication": 2, **kw}
    with pytest.raises(PlanError) as e:
        constant_no_overlap(**args)
    assert why in str(e.value)


def test_fragments_over_a_base_make_each_instance_config(tmp_path: Path):
    plan = constant_no_overlap(partitions=4, writers=2, readers=2, replication=1)
    url_of = {m.name: f"http://{m.name}:6060" for m in plan.members}
    base = tmp_path / "base.toml"
    base.write_text('[kafka-mdm-in]\nbrokers = "k:9092"\ntopics = "mdm"\n[cluster]\nmax-priority = 20\n')
    for m in plan.members:
        frag = tmp_path / f"{m.name}.toml"
        frag.write_text(m.toml(url_of))
        cfg = load_config([base, frag], env={})
        assert cfg.instance == m.name
        assert cfg.kafka_mdm_in.brokers == "k:9092" and cfg.cluster.max_priority == 20  # from the base
        assert cfg.kafka_mdm_in.partitions == ",".join(map(str, m.partitions))
        assert cfg.cluster.role == m.role and cfg.cluster.primary_node == m.primary
        assert cfg.cluster.peers == ",".join(url_of[p] for p in m.peers)
        # the environment file says the same
        env = dict(line.split("=", 1) for line in m.env(url_of).splitlines())
        via_env = load_config(base, env=env)
        assert (via_env.instance, via_env.cluster.role, via_env.cluster.primary_node) == (
            m.name,
            m.role,
            m.primary,
        )
        assert via_env.kafka_mdm_in.partitions == cfg.kafka_mdm_in.partitions


def test_fragments_stay_loadable_whatever_the_url_template(tmp_path: Path):
    plan = constant_no_overlap(partitions=2, writers=2, readers=1, replication=1)
    url_of = {m.name: f'http://"{m.name}"\\\\x:6060' for m in plan.members}
    frag = tmp_path / "f.toml"
    frag.write_text(plan.members[0].toml(url_of))
    cfg = load_config(frag, env={})
    assert cfg.cluster.peers == url_of["write-1"]
