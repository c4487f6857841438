"""The session's token-leak check finds a token, or its payload or signature, wherever it stands."""

from __future__ import annotations

import pytest

from tests.support.leaks import leaked

PAYLOAD = "eyJpc3MiOiJodHRwczovL2lkcCIsInN1YiI6ImFsaWNlIn0"
SIGNATURE = "c2lnbmF0dXJlX2J5dGVzX2FyZV9oZXJlX2FuZF9tb3Jl"
TOKEN = f"eyJhbGciOiJSUzI1NiJ9.{PAYLOAD}.{SIGNATURE}"


@pytest.mark.parametrize(
    "text",
    [
        f"authorization: Bearer {TOKEN}",
        f"claims={PAYLOAD}",
        f"sig {SIGNATURE}\n",
        f"glued{PAYLOAD}toothers",  # inside a longer base64url run
        f'{{"token": "{TOKEN}"}}',
    ],
)
def test_a_token_part_anywhere_in_the_logs_is_found(text: str) -> None:
    assert leaked([TOKEN], f"some line\n{text}\nanother line")


@pytest.mark.parametrize(
    "text",
    ["", "request_id=0d003305c092ee690000000000000001", PAYLOAD[:30], f"{SIGNATURE[:-1]}!"],
)
def test_nothing_is_found_where_no_whole_part_stands(text: str) -> None:
    assert leaked([TOKEN], text) == []
