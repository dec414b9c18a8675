"""The lease epoch in persist messages: an extra field that Metrictank's decoder ignores, absent when 0."""

from __future__ import annotations

import json

import pytest

from metrictank.schema import DecodeError, decode_persist, encode_persist
from metrictank.schema.persist import decode_persist_items

KEY = "1." + "ab" * 16


def test_without_epoch_the_bytes_are_metrictanks():
    assert encode_persist("mt1", [(KEY, 600)]) == (
        b'\x01{"instance":"mt1","saved_chunks":[{"key":"' + KEY.encode() + b'","t0":600}]}\n'
    )
    assert encode_persist("mt1", [(KEY, 600)], epoch=0) == encode_persist("mt1", [(KEY, 600)])


def test_epoch_follows_saved_chunks_and_round_trips():
    b = encode_persist("mt1", [(KEY, 600)], epoch=42)
    obj = json.loads(b[1:])
    assert list(obj) == ["instance", "saved_chunks", "epoch"]
    assert decode_persist_items(b).epoch == 42
    # the strict (Go-like) decoder ignores the field, as Metrictank does
    assert decode_persist(b) == ("mt1", [(KEY, 600)])


def test_missing_epoch_is_zero():
    assert decode_persist_items(encode_persist("mt1", [(KEY, 600)])).epoch == 0


@pytest.mark.parametrize("bad", ['"7"', "-1", "1.5", "true", "99999999999999999999"])
def test_a_bad_epoch_makes_the_message_invalid(bad):
    b = b'\x01{"instance":"x","saved_chunks":[],"epoch":' + bad.encode() + b"}\n"
    with pytest.raises(DecodeError) as e:
        decode_persist_items(b)
    assert e.value.reason == "invalid-json"
