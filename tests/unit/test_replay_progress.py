"""Backlog replay progress: fraction done, rate and ETA per partition from the consumer's lag samples."""

from metrictank.input.progress import format_progress, replay_progress


def test_progress_rate_and_eta():
    # 10 s of samples: read moved 1000 -> 6000 (500 msg/s) while the high watermark stayed at 11000
    samples = {0: [(100.0, 11000, 1000), (110.0, 11000, 6000)], 1: [(100.0, 500, 500), (110.0, 500, 500)]}
    pr = replay_progress(samples, {0: 1000, 1: 0})
    p0 = pr[0]
    assert p0.behind == 5000 and p0.rate == 500 and p0.eta == 10
    assert p0.done == 0.5
    assert pr[1].behind == 0 and pr[1].eta == 0 and pr[1].done == 1.0
    line = format_progress(pr)
    assert "5000 messages behind" in line and "eta 10s" in line and "p0 50%" in line and "p1" not in line


def test_stalled_partition_has_no_eta():
    pr = replay_progress({3: [(1.0, 100, 10), (2.0, 100, 10)]}, {3: 0})
    assert pr[3].eta is None and pr[3].rate == 0
    assert "eta unknown" in format_progress(pr)
    assert pr[3].as_json() == {"behind": 90, "done": 0.1, "rate": 0.0, "eta": None}


def test_no_samples_yet():
    assert replay_progress({0: []}, {}) == {}
