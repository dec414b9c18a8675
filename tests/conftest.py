"""Shared test configuration: the real Kafka/Cassandra fixtures come from the test-bed plugin."""

pytest_plugins = ["metrictank.testbed.pytest_plugin"]
