"""Definitions, updates, pruning and concurrent use of the memory index."""

from __future__ import annotations

import hashlib
import threading

import numpy as np
import pytest

from metrictank.index import Definition, MemoryIndex


def _id(org: int, key: str) -> str:
    return f"{org}.{hashlib.md5(key.encode()).hexdigest()}"


def test_get_returns_definition_snapshot():
    ix = MemoryIndex()
    id_ = _id(3, "x")
    row, _ = ix.add(id_, 3, "disk.used", 60, "bytes", "gauge", ["dc=b", "host=a", "dc=b"], 7, 1234)
    d = ix.get(row)
    assert d == Definition(
        id=id_,
        org=3,
        name="disk.used",
        interval=60,
        unit="bytes",
        mtype="gauge",
        tags=("dc=b", "host=a"),
        partition=7,
        lastupdate=1234,
        row=row,
    )
    assert d.path == "disk.used;dc=b;host=a"
    assert ix.path_of(row) == d.path
    assert ix.row_of(id_) == row
    assert ix.row_of(_id(3, "y")) is None
    with pytest.raises(AttributeError):
        d.name = "other"  # type: ignore[misc]


def test_add_definition_from_metricdata_like_object():
    class MD:
        id = _id(1, "md")
        org_id = 1
        name = "a.b"
        interval = 10
        unit = "ms"
        mtype = "rate"
        tags = None
        time = 99

    ix = MemoryIndex()
    row, created = ix.add_definition(MD(), partition=2)
    assert created
    d = ix.get(row)
    assert (d.name, d.unit, d.mtype, d.tags, d.partition, d.lastupdate) == ("a.b", "ms", "rate", (), 2, 99)


def test_changed_metadata_reindexes_same_row():
    ix = MemoryIndex()
    id_ = _id(1, "s")
    row, _ = ix.add(id_, 1, "old.name", 10, "", "gauge", [], 0, 1)
    assert ix.find_leaves(1, "old.name") == [row]
    assert ix.add(id_, 1, "new.name", 30, "s", "counter", ["k=v"], 1, 2) == (row, False)
    d = ix.get(row)
    assert (d.name, d.interval, d.unit, d.mtype, d.tags) == ("new.name", 30, "s", "counter", ("k=v",))
    assert ix.find(1, "old.*") == []
    assert ix.find(1, "*") == []  # tagged series live in the tag index, not the tree
    assert ix.find_by_tags(1, ["k=v"]) == [row]
    assert ix.find_by_tags(1, ["name=old.name"]) == []
    # and back to untagged
    ix.add(id_, 1, "new.name", 30, "s", "counter", [], 1, 3)
    assert ix.find_leaves(1, "new.*") == [row]
    assert ix.tag_values(1, "k") == []


def test_prune_removes_stale_series_everywhere():
    ix = MemoryIndex()
    rows = {}
    for i in range(10):
        name = f"app.h{i}.cpu"
        rows[name], _ = ix.add(_id(1, name), 1, name, 10, "", "gauge", [], 0, 100 + i)
    trow, _ = ix.add(_id(1, "tagged"), 1, "cpu", 10, "", "gauge", ["host=z"], 0, 50)
    ix.touch(np.array([rows["app.h0.cpu"]]), np.array([500]))
    pruned = ix.prune(105)
    assert sorted(pruned.tolist()) == sorted([rows[f"app.h{i}.cpu"] for i in range(1, 5)] + [trow])
    assert len(ix) == 6
    assert [n.path for n in ix.find(1, "app.*")] == [
        "app.h0",
        "app.h5",
        "app.h6",
        "app.h7",
        "app.h8",
        "app.h9",
    ]
    assert ix.find_by_tags(1, ["host=z"]) == []
    assert ix.tags(1) == ["name"]
    assert ix.prune(105).size == 0
    # everything gone: the org's structures are dropped, not left as empty shells
    ix.prune(10**9)
    assert len(ix) == 0
    assert ix.find(1, "*") == []
    assert ix.tags(1) == []
    assert ix.all_paths(1) == []


def test_all_paths_lists_visible_series_once():
    ix = MemoryIndex()
    ix.add(_id(1, "a"), 1, "b.c", 10, "", "gauge", [], 0, 1)
    ix.add(_id(1, "a2"), 1, "b.c", 60, "", "gauge", [], 0, 1)  # same path, other interval
    ix.add(_id(1, "t"), 1, "b.c", 10, "", "gauge", ["x=1"], 0, 1)
    ix.add(_id(-1, "p"), -1, "pub.x", 10, "", "gauge", [], 0, 1)
    ix.add(_id(2, "o"), 2, "other.org", 10, "", "gauge", [], 0, 1)
    assert ix.all_paths(1) == ["b.c", "b.c;x=1", "pub.x"]
    assert ix.all_paths(-1) == ["pub.x"]
    assert ix.all_paths(3) == ["pub.x"]


def test_concurrent_ingest_and_queries():
    """One writer adding/removing/touching while readers find, tag-query and route."""
    ix = MemoryIndex()
    names = [f"srv.h{i % 50}.m{i}" for i in range(4000)]
    md5s = [hashlib.md5(n.encode()).digest() for n in names]
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer():
        try:
            for i, (n, m) in enumerate(zip(names, md5s, strict=True)):
                ix.add(f"1.{m.hex()}", 1, n, 10, "", "gauge", [], 0, i)
                if i % 500 == 499:
                    ix.remove(np.arange(i - 100, i - 50))
                    ix.touch(np.arange(0, 10), np.full(10, 10**6))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            stop.set()

    def reader():
        try:
            k0 = np.frombuffer(b"".join(md5s), "<u8")[0::2].copy()
            k1 = np.frombuffer(b"".join(md5s), "<u8")[1::2].copy()
            org = np.ones(len(md5s), np.uint32)
            while not stop.is_set():
                rows = ix.lookup_rows(k0, k1, org)
                assert rows.min() >= -1 and rows.max() < max(len(md5s), 1)
                for node in ix.find(1, "srv.h1*.*"):
                    assert node.leaf and node.path.startswith("srv.h1")
                ix.find_by_tags(1, ["name=~srv.h2"])
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    # final state agrees with a fresh lookup of every id
    expect = [ix.row_of(f"1.{m.hex()}") for m in md5s]
    k0 = np.frombuffer(b"".join(md5s), "<u8")[0::2]
    k1 = np.frombuffer(b"".join(md5s), "<u8")[1::2]
    got = ix.lookup_rows(k0, k1, np.ones(len(md5s), np.uint32))
    assert got.tolist() == [-1 if r is None else r for r in expect]
    assert len(ix) == sum(r is not None for r in expect)
