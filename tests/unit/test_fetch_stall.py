"""The fetch-stall watchdog: restart fetching only when no data arrived although the broker holds unread data; and
the lag samples (the node's readiness) for partitions that nothing was consumed from yet."""

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, TopicPartition
from confluent_kafka.admin import ClusterMetadata, PartitionMetadata, TopicMetadata

from metrictank.input.kafka import DataConsumer


class FakeConsumer:
    def __init__(self, positions, marks):
        self.positions = positions  # partition -> offset (-1001 = nothing read)
        self.marks = marks  # partition -> (low, high)
        self.assigned = []

    def list_topics(self, topic=None, timeout=None):
        md = ClusterMetadata()
        tm = TopicMetadata()
        tm.topic = "mdm"
        tm.partitions = {p: PartitionMetadata() for p in self.marks}
        md.topics = {"mdm": tm}
        return md

    def offsets_for_times(self, tps, timeout=None):
        return tps

    def get_watermark_offsets(self, tp, timeout=None, cached=False):
        return self.marks[tp.partition]

    def assign(self, tps):
        self.assigned.append([(tp.partition, tp.offset) for tp in tps])

    def unassign(self):
        pass

    def resume(self, tps):
        pass

    def position(self, tps):
        return [TopicPartition(tp.topic, tp.partition, self.positions[tp.partition]) for tp in tps]


def _consumer(fake):
    c = DataConsumer("x:1", ["mdm"], None, "oldest", consumer_factory=lambda cfg: fake)
    c.start()
    fake.assigned.clear()
    return c


def test_restarts_when_broker_has_unread_data():
    fake = FakeConsumer({0: 100, 1: -1001}, {0: (0, 500), 1: (0, 50)})
    c = _consumer(fake)
    assert c._start_offsets[("mdm", 1)] == OFFSET_BEGINNING
    assert not c.check_stall(after=10, now=c._last_data + 5)  # too early
    assert c.check_stall(after=10, now=c._last_data + 11)
    # re-assigned at the current position, and at the start offset where nothing was read yet
    assert fake.assigned == [[(0, 100), (1, 0)]]
    assert c.fetch_restarts == 1


def test_no_restart_when_caught_up():
    fake = FakeConsumer({0: 500, 1: 50}, {0: (0, 500), 1: (0, 50)})
    c = _consumer(fake)
    assert not c.check_stall(after=10, now=c._last_data + 60)
    assert fake.assigned == [] and c.fetch_restarts == 0


def test_lag_of_a_partition_not_handed_over_yet_is_its_backlog():
    # librdkafka knows partition 1's high watermark (270) from a fetch but has handed over none of its messages:
    # its lag is the whole backlog from where consumption started, not 0 (which read as caught up, and ready)
    fake = FakeConsumer({0: 270, 1: -1001}, {0: (0, 270), 1: (0, 270)})
    c = _consumer(fake)
    c.sample_lag(now=100.0)
    samples = c.lag.samples()
    assert samples[0][-1][1:] == (270, 270)
    assert samples[1][-1][1:] == (270, 0)
    assert c.lag.priority() > 0
    fake.positions[1] = 270
    c.sample_lag(now=200.0)
    assert c.lag.samples()[1][-1][1:] == (270, 270)


def test_lag_of_an_unread_partition_starts_at_the_requested_offset():
    fake = FakeConsumer({0: -1001}, {0: (-1001, 500)})  # the cached low watermark unknown
    c = DataConsumer("x:1", ["mdm"], None, "oldest", consumer_factory=lambda cfg: fake)
    c._start_offsets = {("mdm", 0): 120}
    c._assigned = True
    c.sample_lag(now=100.0)
    assert c.lag.samples()[0][-1][1:] == (500, 120)
    c._start_offsets = {("mdm", 0): OFFSET_END}  # newest: nothing of the backlog is to be read
    c.sample_lag(now=200.0)
    assert c.lag.samples()[0][-1][1:] == (500, 500)
    c._start_offsets = {("mdm", 0): OFFSET_BEGINNING}
    c.tracker.log_start[0] = 40
    c.sample_lag(now=300.0)
    assert c.lag.samples()[0][-1][1:] == (500, 40)
