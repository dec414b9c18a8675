"""A primary that shuts down cleanly (drained) releases its lease in the store, so the next primary need not
wait for the expiry; with the Cassandra store the lease shares the store's session, so the release must come
before the store closes."""

from __future__ import annotations

import pytest

from .helpers import Running, instance_config, wait_for

pytestmark = pytest.mark.integration


def test_clean_shutdown_releases_the_cassandra_lease(
    tmp_path, kafka_bootstrap, cassandra_hosts, cassandra_session, new_topic, new_keyspace
):
    topic, ks = new_topic(2), new_keyspace()
    cfg = instance_config(
        tmp_path,
        "mt-release",
        kafka_bootstrap,
        topic,
        primary=True,
        store={"store": {"backend": "cassandra"}, "cassandra": {"addrs": cassandra_hosts, "keyspace": ks}},
    )
    with Running(cfg) as inst:
        wait_for(lambda: inst.lease is not None and inst.lease.valid(), 20, "the lease taken")
        name = inst.lease.name
    row = cassandra_session.execute(
        f"SELECT holder, epoch FROM {ks}.metrictank_lease WHERE name = %s", (name,)
    ).one()
    assert row is not None and row.epoch == 1
    assert row.holder == "", f"the lease is still held by {row.holder!r} after a clean shutdown"
