"""ListOperations request parsing: the done filter, page size bounds and page tokens."""

from __future__ import annotations

import base64

import pytest

from gateway.reference_upstream.errors import InvalidArgument
from gateway.reference_upstream.listing import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    decode_page_token,
    encode_page_token,
    list_query,
    page_limit,
    parse_filter,
)

PARENT = "projects/p/locations/l"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("   ", None),
        ("done=true", True),
        ("done = TRUE", True),
        ("  done=False ", False),
        ("DONE=false", False),
    ],
    ids=["empty", "blank", "true", "spaces-upper", "padded-false", "upper-key"],
)
def test_parse_filter_accepts_done(text: str, expected: bool | None) -> None:
    assert parse_filter(text) is expected


@pytest.mark.parametrize(
    "text",
    ["done=yes", "name=foo", "done=true AND done=false", "done", "done:true", "done=fal\u017fe"],
    ids=["bad-value", "other-field", "conjunction", "no-value", "colon", "long-s"],
)
def test_parse_filter_rejects_other_filters_naming_them(text: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        parse_filter(text)
    assert f"'{text}'" in raised.value.status.message
    assert raised.value.status.code == 3  # INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("page_size", "expected"),
    [(0, DEFAULT_PAGE_SIZE), (7, 7), (MAX_PAGE_SIZE, MAX_PAGE_SIZE), (50_000, MAX_PAGE_SIZE)],
    ids=["default", "small", "max", "capped"],
)
def test_page_limit(page_size: int, expected: int) -> None:
    assert page_limit(page_size) == expected


def test_negative_page_size_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match="page_size"):
        page_limit(-1)


def test_token_round_trips_for_the_same_parent_and_equivalent_filter() -> None:
    token = encode_page_token(PARENT, True, f"{PARENT}/operations/7")
    assert decode_page_token(token, PARENT, True) == f"{PARENT}/operations/7"
    # Equivalent spellings of a filter parse the same, so they share tokens.
    assert list_query(PARENT, "DONE = true", 0, token).after == f"{PARENT}/operations/7"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


@pytest.mark.parametrize(
    ("token", "parent", "done"),
    [
        ("not base64 at all!", PARENT, None),
        (_b64(b"\xff\xfe"), PARENT, None),
        (_b64(b"[1, 2]"), PARENT, None),
        (_b64(b'{"after": "x"}'), PARENT, None),
        (_b64(b'{"after": 3, "fp": "0"}'), PARENT, None),
        (encode_page_token(PARENT, None, f"{PARENT}/operations/1"), PARENT, True),
        (encode_page_token(PARENT, None, f"{PARENT}/operations/1"), "projects/q/locations/l", None),
        ("Zm9väöü", PARENT, None),
    ],
    ids=[
        "garbage",
        "not-utf8",
        "not-an-object",
        "no-fingerprint",
        "after-not-a-string",
        "other-filter",
        "other-parent",
        "non-ascii",
    ],
)
def test_foreign_or_garbled_tokens_are_invalid(token: str, parent: str, done: bool | None) -> None:
    with pytest.raises(InvalidArgument, match=r"^Invalid page token\.$"):
        decode_page_token(token, parent, done)


def test_empty_token_starts_at_the_beginning() -> None:
    query = list_query(PARENT, "", 0, "")
    assert (query.parent, query.done, query.after, query.limit) == (
        PARENT,
        None,
        None,
        DEFAULT_PAGE_SIZE,
    )
