"""RFC 7662 introspection against a real local HTTP endpoint."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import unquote_plus

import pytest

from gateway.authn.introspection import IntrospectionSettings, Introspector
from gateway.errors import RpcError, StatusCode
from gateway.testing.idp import LocalIdp, local_idp
from gateway.testing.loop import LoopThread
from gateway.testing.ports import free_port
from tests.unit.authn_opaque.test_token_cache import (
    NOW,
    FakeClock,
    assert_nothing_leaked,
    make_token,
    reset,
)

PATH = "/oauth2/introspect"
CLIENT_ID = "opsgate gw:1"  # a space and a colon, to see RFC 6749 2.3.1 encoding at work
CLIENT_SECRET = "s3cr/et+=:é"
ACTIVE = {"active": True, "sub": "alice", "client_id": "cli", "scope": "ops.read", "exp": NOW + 600}

INVALID = (StatusCode.UNAUTHENTICATED, "JWT_TOKEN_INVALID")
EXPIRED = (StatusCode.UNAUTHENTICATED, "ACCESS_TOKEN_EXPIRED")
UNAVAILABLE = (StatusCode.UNAVAILABLE, "AUTHENTICATION_BACKEND_UNAVAILABLE")


@pytest.fixture(scope="module")
def idp_server() -> Iterator[LocalIdp]:
    with local_idp() as server:
        yield server


@pytest.fixture
def idp(idp_server: LocalIdp) -> LocalIdp:
    return reset(idp_server)


def introspector(endpoint: str, clock: FakeClock, cache_ttl_s: float = 300) -> Introspector:
    settings = IntrospectionSettings(
        endpoint=endpoint,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        cache_ttl_s=cache_ttl_s,
        timeout_s=2.0,
    )
    return Introspector(settings, clock=clock)


def test_active_token_answers_its_claims(idp: LocalIdp, loop: LoopThread) -> None:
    idp.serve_json(PATH, ACTIVE)
    claims = loop.run(introspector(idp.url(PATH), FakeClock()).introspect(make_token()))
    assert claims == ACTIVE


def test_request_posts_token_and_hint_with_basic_client_auth(
    idp: LocalIdp, loop: LoopThread
) -> None:
    idp.serve_json(PATH, ACTIVE)
    token = make_token()
    loop.run(introspector(idp.url(PATH), FakeClock()).introspect(token))

    (request,) = idp.requests
    assert request.method == "POST"
    assert request.query == {}
    assert request.form == {"token": [token], "token_type_hint": ["access_token"]}
    scheme, _, credentials = request.headers["authorization"].partition(" ")
    encoded_id, _, encoded_secret = base64.b64decode(credentials).decode().partition(":")
    assert scheme == "Basic"
    assert encoded_id == "opsgate+gw%3A1"
    assert (unquote_plus(encoded_id), unquote_plus(encoded_secret)) == (CLIENT_ID, CLIENT_SECRET)


def test_settings_never_print_the_secret() -> None:
    settings = IntrospectionSettings(
        endpoint="https://idp/introspect", client_id="c", client_secret="hush"
    )
    assert "hush" not in repr(settings)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        pytest.param(200, {"active": False}, INVALID, id="inactive"),
        pytest.param(200, {"active": True, "exp": NOW - 1}, EXPIRED, id="exp-past"),
        pytest.param(200, {"active": True, "exp": NOW}, EXPIRED, id="exp-now"),
        pytest.param(200, {"active": True, "exp": str(int(NOW + 600))}, INVALID, id="exp-string"),
        pytest.param(200, {"active": True, "exp": True}, INVALID, id="exp-bool"),
        pytest.param(200, {"active": True, "exp": None}, INVALID, id="exp-null"),
        pytest.param(200, {"active": "true"}, UNAVAILABLE, id="active-string"),
        pytest.param(200, {"active": 1}, UNAVAILABLE, id="active-number"),
        pytest.param(200, {"sub": "alice"}, UNAVAILABLE, id="active-missing"),
        pytest.param(200, [ACTIVE], UNAVAILABLE, id="not-an-object"),
        pytest.param(200, b"<html>welcome</html>", UNAVAILABLE, id="not-json"),
        pytest.param(400, {"active": False}, UNAVAILABLE, id="http-400"),
        pytest.param(401, {"error": "invalid_client"}, UNAVAILABLE, id="http-401"),
        pytest.param(500, {"error": "oops"}, UNAVAILABLE, id="http-500"),
    ],
)
def test_unusable_answers_are_refused_without_leaking_the_token(
    idp: LocalIdp,
    loop: LoopThread,
    caplog: pytest.LogCaptureFixture,
    status: int,
    body: Any,
    expected: tuple[StatusCode, str],
) -> None:
    caplog.set_level(logging.DEBUG)
    idp.serve_json(PATH, body, status=status)
    token = make_token()

    with pytest.raises(RpcError) as caught:
        loop.run(introspector(idp.url(PATH), FakeClock()).introspect(token))

    assert (caught.value.code, caught.value.reason) == expected
    assert caught.value.log_detail.startswith("introspection: ")
    assert_nothing_leaked(token, caught.value, caplog)


def _closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}{PATH}"


@pytest.mark.parametrize("how", ["down-503", "connection-refused"])
def test_endpoint_out_of_reach_is_unavailable_and_not_cached(
    idp: LocalIdp, loop: LoopThread, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    caplog.set_level(logging.DEBUG)
    idp.down = True
    endpoint = idp.url(PATH) if how == "down-503" else _closed_port_url()
    verifier = introspector(endpoint, FakeClock())
    token = make_token()

    for _ in range(2):  # a failure to check is never remembered: each call tries again
        with pytest.raises(RpcError) as caught:
            loop.run(verifier.introspect(token))
        assert (caught.value.code, caught.value.reason) == UNAVAILABLE
        assert_nothing_leaked(token, caught.value, caplog)
    assert idp.hit_count(PATH) == (2 if how == "down-503" else 0)


@pytest.mark.parametrize(
    ("exp", "cache_ttl_s", "lifetime"),
    [
        pytest.param(NOW + 100, 300, 100, id="until-exp"),
        pytest.param(NOW + 3600, 300, 300, id="until-cache-ttl"),
        pytest.param(None, 300, 300, id="no-exp"),
    ],
)
def test_active_answer_is_cached_until_exp_at_most_cache_ttl(
    idp: LocalIdp, loop: LoopThread, exp: float | None, cache_ttl_s: float, lifetime: float
) -> None:
    answer = {"active": True, "sub": "alice"} | ({} if exp is None else {"exp": exp})
    idp.serve_json(PATH, answer)
    clock = FakeClock()
    verifier = introspector(idp.url(PATH), clock, cache_ttl_s)
    token = make_token()

    first = loop.run(verifier.introspect(token))
    clock.now = NOW + lifetime - 0.01
    second = loop.run(verifier.introspect(token))
    assert second == first == answer
    assert idp.hit_count(PATH) == 1

    clock.now = NOW + lifetime
    idp.serve_json(PATH, {"active": True, "sub": "alice"})
    assert loop.run(verifier.introspect(token)) == {"active": True, "sub": "alice"}
    assert idp.hit_count(PATH) == 2


@pytest.mark.parametrize(
    ("cache_ttl_s", "lifetime"),
    [pytest.param(300, 30, id="at-most-30s"), pytest.param(10, 10, id="at-most-cache-ttl")],
)
def test_inactive_answer_is_cached_briefly(
    idp: LocalIdp, loop: LoopThread, cache_ttl_s: float, lifetime: float
) -> None:
    idp.serve_json(PATH, {"active": False})
    clock = FakeClock()
    verifier = introspector(idp.url(PATH), clock, cache_ttl_s)
    token = make_token()

    for now, hits in ((NOW, 1), (NOW + lifetime - 0.01, 1), (NOW + lifetime, 2)):
        clock.now = now
        with pytest.raises(RpcError) as caught:
            loop.run(verifier.introspect(token))
        assert caught.value.reason == "JWT_TOKEN_INVALID"
        assert idp.hit_count(PATH) == hits


@pytest.mark.parametrize(
    ("distinct_tokens", "hits"),
    [pytest.param(1, 1, id="same-token"), pytest.param(2, 2, id="two-tokens")],
)
def test_concurrent_introspections_of_a_token_share_one_request(
    idp: LocalIdp, loop: LoopThread, distinct_tokens: int, hits: int
) -> None:
    idp.serve_json(PATH, ACTIVE)
    idp.delay_s = 0.05  # so the calls overlap on the wire
    verifier = introspector(idp.url(PATH), FakeClock())
    tokens = [make_token() for _ in range(distinct_tokens)]

    async def twenty_calls() -> list[Mapping[str, Any]]:
        return await asyncio.gather(
            *(verifier.introspect(tokens[i % len(tokens)]) for i in range(20))
        )

    assert loop.run(twenty_calls()) == [ACTIVE] * 20
    assert idp.hit_count(PATH) == hits


def test_concurrent_callers_each_get_their_own_unavailable_error(
    idp: LocalIdp, loop: LoopThread
) -> None:
    idp.down = True
    idp.delay_s = 0.05
    verifier = introspector(idp.url(PATH), FakeClock())
    token = make_token()

    async def twenty_calls() -> list[BaseException | Mapping[str, Any]]:
        calls = (verifier.introspect(token) for _ in range(20))
        return await asyncio.gather(*calls, return_exceptions=True)

    errors = loop.run(twenty_calls())
    assert all(isinstance(e, RpcError) and e.code == StatusCode.UNAVAILABLE for e in errors)
    assert len({id(e) for e in errors}) == 20
    assert idp.hit_count(PATH) == 1
