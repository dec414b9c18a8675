"""Persist notification messages."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrictank.schema import DecodeError, decode_persist, encode_persist

KEY = "1.0dd2132bf7bcb5dcbde9786f9eea621b_sum_600"


def test_layout() -> None:
    raw = encode_persist("mt1", [(KEY, 1500000000), ("2." + "a" * 32, 7)])
    assert raw == (
        b'\x01{"instance":"mt1","saved_chunks":[{"key":"' + KEY.encode() + b'","t0":1500000000},'
        b'{"key":"2.' + b"a" * 32 + b'","t0":7}]}\n'
    )


def test_go_escaping() -> None:
    raw = encode_persist('a<b>&"\\\n\t\x01\x08\x0c\u2028\u2029é漢\x7f', [])
    assert raw == (
        b'\x01{"instance":"a\\u003cb\\u003e\\u0026\\"\\\\\\n\\t\\u0001\\u0008\\u000c\\u2028\\u2029'
        + "é漢".encode()
        + b'\x7f","saved_chunks":[]}\n'
    )


def test_surrogate_escapes_become_replacement_char() -> None:
    raw = encode_persist("a\udcff", [])
    assert raw.startswith(b'\x01{"instance":"a\\ufffd"')


@given(
    st.text(max_size=30),
    st.lists(st.tuples(st.text(max_size=60), st.integers(0, 0xFFFFFFFF)), max_size=20),
)
@settings(max_examples=300)
def test_roundtrip(instance: str, saved: list) -> None:
    raw = encode_persist(instance, saved)
    assert raw[0] == 1 and raw.endswith(b"\n") and b"\n" not in raw[1:-1]
    assert json.loads(raw[1:]) == {
        "instance": instance,
        "saved_chunks": [{"key": k, "t0": t} for k, t in saved],
    }
    assert decode_persist(raw) == (instance, saved)


def test_several_chunks_case_insensitive_fields_and_nulls() -> None:
    body = b'{"Instance":"x","SAVED_CHUNKS":[{"Key":"k1","T0":1},{"key":"k2","t0":2,"extra":[1]},null]}'
    assert decode_persist(b"\x01" + body) == ("x", [("k1", 1), ("k2", 2), ("", 0)])
    assert decode_persist(b'\x01{"instance":"y","saved_chunks":null}') == ("y", [])
    assert decode_persist(b"\x01{}") == ("", [])


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"", "empty"),
        (b'\x02{"instance":"x","saved_chunks":[]}', "unknown-version"),
        (b"\x01", "invalid-json"),
        (b"\x01[]", "invalid-json"),
        (b'\x01{"instance":1}', "invalid-json"),
        (b'\x01{"saved_chunks":{}}', "invalid-json"),
        (b'\x01{"saved_chunks":[{"key":"k","t0":-1}]}', "invalid-json"),
        (b'\x01{"saved_chunks":[{"key":"k","t0":4294967296}]}', "invalid-json"),
        (b'\x01{"saved_chunks":[{"key":"k","t0":1.5}]}', "invalid-json"),
        (b'\x01{"saved_chunks":[{"key":"k","t0":NaN}]}', "invalid-json"),
        (b'\x01{"saved_chunks":[{"key":5,"t0":1}]}', "invalid-json"),
        (b'\x01{"saved_chunks":[1]}', "invalid-json"),
        (b'\x01{"instance":"x"', "invalid-json"),
    ],
)
def test_garbage(raw: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as e:
        decode_persist(raw)
    assert e.value.reason == reason


@given(st.binary(max_size=100))
@settings(max_examples=300)
def test_random_bytes_only_decode_error(raw: bytes) -> None:
    try:
        decode_persist(b"\x01" + raw)
        decode_persist(raw)
    except DecodeError:
        pass


def test_encode_refuses_bad_t0() -> None:
    with pytest.raises(ValueError):
        encode_persist("x", [(KEY, -1)])
    with pytest.raises(ValueError):
        encode_persist("x", [(KEY, 1 << 32)])


def test_items_skips_bad_entries_individually() -> None:
    from metrictank.schema.persist import decode_persist_items

    good = "1." + "a" * 32
    body = (
        b'\x01{"instance":"x","saved_chunks":[{"key":"zzz","t0":60},{"key":"'
        + good.encode()
        + b'","t0":60},{"key":5,"t0":1},{"key":"'
        + good.encode()
        + b'","t0":-1},3,{"key":"'
        + good.encode()
        + b'_max_600","t0":600},{"key":"'
        + good.encode()
        + b'_avg_7","t0":1}]}'
    )
    batch = decode_persist_items(body)
    assert batch.instance == "x"
    assert batch.saved == [(good, 60), (good + "_max_600", 600)]
    assert batch.rejected == {"invalid-key": 3, "invalid-t0": 1, "invalid-item": 1}
    assert decode_persist_items(body, validate_keys=False).rejected == {
        "invalid-key": 1,
        "invalid-t0": 1,
        "invalid-item": 1,
    }


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"", "empty"),
        (b"\x82\xa1a\x01", "unknown-version"),
        (b"\x01" + b"[" * 900_000, "invalid-json"),
        (b"\x01" + b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "invalid-json"),
        (b"\x01{\xff\xfe}", "invalid-json"),
    ],
)
def test_items_envelope_errors(raw: bytes, reason: str) -> None:
    from metrictank.schema.persist import decode_persist_items

    with pytest.raises(DecodeError) as e:
        decode_persist_items(raw)
    assert e.value.reason == reason
