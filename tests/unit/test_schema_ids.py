"""Series ids, MKey and AMKey parsing/formatting."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metrictank.schema import AGG_METHODS, VALID_SPANS, AMKey, DecodeError, MKey, parse_mkey, series_id

IDENT = "1.0dd2132bf7bcb5dcbde9786f9eea621b"


def test_series_id_definition() -> None:
    want = hashlib.md5(b"n\0u\0gauge\x0010\0a=1\0b=2").hexdigest()
    assert series_id(3, "n", "u", "gauge", 10, ["b=2", "a=1"]) == f"3.{want}"


def test_series_id_skips_name_tags_but_not_bare_name_equals() -> None:
    base = series_id(1, "a.b", "", "gauge", 60, ["x=y"])
    assert series_id(1, "a.b", "", "gauge", 60, ["x=y", "name=a.b"]) == base
    assert series_id(1, "a.b", "", "gauge", 60, ["x=y", "name="]) != base


def test_series_id_sorts_by_bytes() -> None:
    # "Z" < "a" < "é" in byte order
    want = hashlib.md5("n\0\0gauge\x001\0Z=1\0a=1\0é=1".encode()).hexdigest()
    assert series_id(1, "n", "", "gauge", 1, ["é=1", "a=1", "Z=1"]) == f"1.{want}"


@given(st.binary(min_size=16, max_size=16), st.integers(0, 0xFFFFFFFF))
def test_mkey_roundtrip(key: bytes, org: int) -> None:
    mk = MKey(key, org)
    s = str(mk)
    assert s == f"{org}.{key.hex()}"
    assert parse_mkey(s) == mk
    assert MKey.from_words(*mk.words, org) == mk


def test_mkey_uppercase_hex_accepted_and_normalised() -> None:
    assert str(parse_mkey(IDENT.upper())) == IDENT


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "1",
        "0dd2132bf7bcb5dcbde9786f9eea621b",
        ".0dd2132bf7bcb5dcbde9786f9eea621b",
        "1.0dd2132bf7bcb5dcbde9786f9eea621",
        "1.0dd2132bf7bcb5dcbde9786f9eea621bb",
        "1.0dd2132bf7bcb5dcbde9786f9eea621g",
        "1x0dd2132bf7bcb5dcbde9786f9eea621b",
        "-1.0dd2132bf7bcb5dcbde9786f9eea621b",
        "+1.0dd2132bf7bcb5dcbde9786f9eea621b",
        " 1.0dd2132bf7bcb5dcbde9786f9eea621b",
        "1.0dd2132bf7bcb5dcbde9786f9eea621b\n",
        "1.0dd2132b f7bcb5dcbde9786f9eea621b",
        "4294967296.0dd2132bf7bcb5dcbde9786f9eea621b",
        "١.0dd2132bf7bcb5dcbde9786f9eea621b",  # Arabic-Indic digit one
    ],
)
def test_mkey_rejects(bad: str) -> None:
    with pytest.raises(DecodeError) as e:
        parse_mkey(bad)
    assert e.value.reason == "invalid-id"


def test_mkey_constructor_checks() -> None:
    with pytest.raises(ValueError):
        MKey(b"short", 1)
    with pytest.raises(ValueError):
        MKey(b"\0" * 16, -1)


@pytest.mark.parametrize("method", AGG_METHODS)
@pytest.mark.parametrize("span", [VALID_SPANS[0], 600, 3600, VALID_SPANS[-1]])
def test_amkey_roundtrip(method: str, span: int) -> None:
    s = f"{IDENT}_{method}_{span}"
    ak = AMKey.parse(s)
    assert ak == AMKey(parse_mkey(IDENT), method, span)
    assert str(ak) == s and not ak.is_raw


def test_amkey_raw() -> None:
    ak = AMKey.parse(IDENT)
    assert ak.is_raw and str(ak) == IDENT and ak.archive_code == 0


def test_amkey_archive_code_matches_go_layout() -> None:
    # Go: method in the low byte (sum = 2), span code in the high byte (600 is code 10)
    assert AMKey.parse(f"{IDENT}_sum_600").archive_code == 2 | (10 << 8)


@pytest.mark.parametrize(
    "bad",
    [
        f"{IDENT}_sum",
        f"{IDENT}_sum_600_1",
        f"{IDENT}_foo_600",
        f"{IDENT}_sum_601",
        f"{IDENT}_sum_+600",
        f"{IDENT}_sum_",
        f"{IDENT}__600",
        "1.zz_sum_600",
    ],
)
def test_amkey_rejects(bad: str) -> None:
    with pytest.raises(DecodeError):
        AMKey.parse(bad)


def test_amkey_constructor_checks() -> None:
    mk = parse_mkey(IDENT)
    with pytest.raises(ValueError):
        AMKey(mk, None, 600)
    with pytest.raises(ValueError):
        AMKey(mk, "sum", 7)
    with pytest.raises(ValueError):
        AMKey(mk, "median", 600)
