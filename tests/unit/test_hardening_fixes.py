"""Regression tests for what the hardening suite found (KB-2, KB-3, KB-4, KB-5)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from gateway.authorizer import PolicyHolder
from gateway.call import recorded_method
from gateway.policy.loader import load_policy
from gateway.policy_reload import PolicyReloader
from gateway.rest.logfilter import MalformedRequestFilter
from gateway.upstream.forwarder import header_safe
from tests.support.stack import EXAMPLE_POLICY


@pytest.mark.parametrize(
    ("path", "recorded"),
    [
        (
            "/google.longrunning.Operations/GetOperation",
            "/google.longrunning.Operations/GetOperation",
        ),
        (
            "/google.longrunning.Operations/GetOperation?access_token=eyJ.x.y",
            "/google.longrunning.Operations/GetOperation",
        ),
        ("/x/" + "a" * 500, "/x/" + "a" * 197),
    ],
    ids=["plain", "query-string-dropped", "bounded"],
)
def test_recorded_method_never_carries_a_query_and_is_bounded(path: str, recorded: str) -> None:
    assert recorded_method(path) == recorded


@pytest.mark.parametrize(
    ("value", "sent"),
    [
        ("user:alice@acme.example", "user:alice@acme.example"),
        ("user:zoë@acme.example", "user:zo%C3%AB@acme.example"),
        ("user:a@b\r\nx: y", "user:a@b%0D%0Ax: y"),
        ("user:100%@x", "user:100%25@x"),
    ],
    ids=["ascii", "idn", "crlf", "percent"],
)
def test_identity_header_is_plain_ascii(value: str, sent: str) -> None:
    assert header_safe(value) == sent


def test_a_policy_file_that_cannot_be_constructed_is_rejected_and_watching_goes_on(
    tmp_path: Path,
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(EXAMPLE_POLICY.read_text())
    holder = PolicyHolder(load_policy(path))
    reloader = PolicyReloader(holder, path, load_policy, interval_s=0.01)
    good = holder.current.etag

    async def scenario() -> None:
        path.write_text(EXAMPLE_POLICY.read_text() + "description: 2024-02-30\n")
        assert not await reloader.reload("test")
        assert holder.current.etag == good and reloader.rejected == 1
        path.write_text("allow: []\n")
        assert await reloader.reload("test")  # a later valid version still applies

    asyncio.run(scenario())
    assert holder.current.etag != good


def test_aiohttp_refusals_are_logged_without_the_request(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("aiohttp.server.test")
    logger.addFilter(MalformedRequestFilter())
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    try:
        raise ValueError(f"Invalid header value: b'Bearer {token}\\x0b'")
    except ValueError:
        logger.exception("Error handling request")
    assert token not in caplog.text
    assert "refused a malformed HTTP request on the REST door (ValueError)" in caplog.text
    assert all(record.levelno == logging.WARNING for record in caplog.records)


def test_transport_wording_is_classed_as_upstream_unreachable() -> None:
    from gateway.upstream.forwarder import _TRANSPORT_FAILURES

    message = "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:5: refused"
    assert message.startswith(_TRANSPORT_FAILURES)
    assert not "Quota exceeded".startswith(_TRANSPORT_FAILURES)  # an upstream's own words
