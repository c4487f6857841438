"""Google access tokens checked by a real local stand-in for Google's tokeninfo endpoint."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from gateway.authn.tokeninfo import TokenInfoSettings, TokenInfoVerifier
from gateway.errors import RpcError, StatusCode
from gateway.testing.idp import LocalIdp, local_idp
from gateway.testing.loop import LoopThread
from tests.unit.authn_opaque.test_token_cache import (
    NOW,
    FakeClock,
    assert_nothing_leaked,
    make_token,
    reset,
)

PATH = "/tokeninfo"
EXP = int(NOW) + 3599
CLIENT = "123-abc.apps.googleusercontent.com"
DROP = object()  # a key the answer leaves out

INVALID = (StatusCode.UNAUTHENTICATED, "JWT_TOKEN_INVALID")
EXPIRED = (StatusCode.UNAUTHENTICATED, "ACCESS_TOKEN_EXPIRED")
UNAVAILABLE = (StatusCode.UNAVAILABLE, "AUTHENTICATION_BACKEND_UNAVAILABLE")


def google_answer(**changes: Any) -> dict[str, Any]:
    """What tokeninfo answers for a live token: numbers and booleans as strings."""
    answer = {
        "azp": CLIENT,
        "aud": CLIENT,
        "sub": "110248495921238986420",
        "scope": "openid https://www.googleapis.com/auth/cloud-platform",
        "exp": str(EXP),
        "expires_in": "3599",
        "email": "alice@example.com",
        "email_verified": "true",
        "access_type": "online",
    } | changes
    return {key: value for key, value in answer.items() if value is not DROP}


@pytest.fixture(scope="module")
def idp_server() -> Iterator[LocalIdp]:
    with local_idp() as server:
        yield server


@pytest.fixture
def idp(idp_server: LocalIdp) -> LocalIdp:
    return reset(idp_server)


def verifier(
    url: str, clock: FakeClock, audiences: tuple[str, ...] = (), cache_ttl_s: float = 300
) -> TokenInfoVerifier:
    settings = TokenInfoSettings(
        url=url, audiences=audiences, cache_ttl_s=cache_ttl_s, timeout_s=2.0
    )
    return TokenInfoVerifier(settings, clock=clock)


def test_live_token_answers_normalised_claims(idp: LocalIdp, loop: LoopThread) -> None:
    idp.serve_json(PATH, google_answer())
    claims = loop.run(verifier(idp.url(PATH), FakeClock()).verify(make_token()))

    assert claims == {
        "azp": CLIENT,
        "aud": CLIENT,
        "sub": "110248495921238986420",
        "scope": "openid https://www.googleapis.com/auth/cloud-platform",
        "exp": EXP,
        "email": "alice@example.com",
        "email_verified": True,
        "access_type": "online",
    }  # expires_in is gone: relative to Google's answer, it goes stale in the cache


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({"exp": EXP}, {"exp": EXP}, id="exp-already-int"),
        pytest.param({"email_verified": "false"}, {"email_verified": False}, id="unverified"),
        pytest.param({"email_verified": True}, {"email_verified": True}, id="verified-bool"),
        pytest.param({"email_verified": "TRUE"}, {"email_verified": False}, id="verified-odd"),
        pytest.param({"email_verified": DROP}, {"email_verified": False}, id="verified-absent"),
        pytest.param({"scope": DROP}, {"scope": ""}, id="scope-absent"),
    ],
)
def test_claims_are_normalised(
    idp: LocalIdp, loop: LoopThread, changes: dict[str, Any], expected: dict[str, Any]
) -> None:
    idp.serve_json(PATH, google_answer(**changes))
    claims = loop.run(verifier(idp.url(PATH), FakeClock()).verify(make_token()))
    assert {key: claims[key] for key in expected} == expected
    assert {key: type(claims[key]) for key in expected} == {
        key: type(value) for key, value in expected.items()
    }


def test_token_goes_in_the_body_never_the_url(idp: LocalIdp, loop: LoopThread) -> None:
    idp.serve_json(PATH, google_answer())
    token = make_token()
    loop.run(verifier(idp.url(PATH), FakeClock()).verify(token))

    (request,) = idp.requests
    assert request.method == "POST"
    assert request.query == {}
    assert token not in request.path
    assert request.form == {"access_token": [token]}


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        pytest.param(
            400,
            {"error": "invalid_token", "error_description": "Invalid Value"},
            INVALID,
            id="invalid-token-400",
        ),
        pytest.param(
            400,
            {"error": "invalid_token", "error_description": "Token has expired"},
            EXPIRED,
            id="expired-400",
        ),
        pytest.param(400, b"Bad Request", INVALID, id="400-without-json"),
        pytest.param(200, google_answer(exp=str(int(NOW) - 1)), EXPIRED, id="exp-past"),
        pytest.param(200, google_answer(exp=str(int(NOW))), EXPIRED, id="exp-now"),
        pytest.param(200, google_answer(exp=DROP), INVALID, id="exp-missing"),
        pytest.param(200, google_answer(exp="soon"), INVALID, id="exp-words"),
        pytest.param(200, google_answer(exp="1.7e9"), INVALID, id="exp-float-string"),
        pytest.param(200, google_answer(exp="-5"), INVALID, id="exp-negative"),
        pytest.param(
            200,
            google_answer(exp="\u0661\u0667" + "\u0660" * 8),
            INVALID,
            id="exp-non-ascii-digits",
        ),
        pytest.param(200, google_answer(exp=True), INVALID, id="exp-bool"),
        pytest.param(200, google_answer(exp=float(EXP)), INVALID, id="exp-float"),
        pytest.param(200, google_answer(scope=["openid"]), INVALID, id="scope-list"),
        pytest.param(200, [google_answer()], UNAVAILABLE, id="not-an-object"),
        pytest.param(200, b"<html>hello</html>", UNAVAILABLE, id="not-json"),
        pytest.param(401, {"error": "unauthorized"}, UNAVAILABLE, id="http-401"),
        pytest.param(429, {"error": "rate_limited"}, UNAVAILABLE, id="http-429"),
        pytest.param(500, {"error": "backend"}, UNAVAILABLE, id="http-500"),
    ],
)
def test_unusable_tokens_and_answers_are_refused_without_leaking_the_token(
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
        loop.run(verifier(idp.url(PATH), FakeClock()).verify(token))

    assert (caught.value.code, caught.value.reason) == expected
    assert caught.value.log_detail.startswith("tokeninfo: ")
    assert_nothing_leaked(token, caught.value, caplog)


def test_endpoint_down_is_unavailable_and_not_cached(
    idp: LocalIdp, loop: LoopThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    idp.down = True
    check = verifier(idp.url(PATH), FakeClock())
    token = make_token()

    for _ in range(2):
        with pytest.raises(RpcError) as caught:
            loop.run(check.verify(token))
        assert (caught.value.code, caught.value.reason) == UNAVAILABLE
        assert_nothing_leaked(token, caught.value, caplog)
    assert idp.hit_count(PATH) == 2


@pytest.mark.parametrize(
    ("aud", "azp", "accepted"),
    [
        pytest.param(CLIENT, "other", True, id="aud-matches"),
        pytest.param("other", CLIENT, True, id="azp-matches"),
        pytest.param("other", "another", False, id="neither-matches"),
        pytest.param(DROP, DROP, False, id="both-absent"),
        pytest.param([CLIENT], DROP, False, id="aud-not-a-string"),
    ],
)
def test_audience_must_be_one_of_the_configured(
    idp: LocalIdp, loop: LoopThread, aud: Any, azp: Any, accepted: bool
) -> None:
    idp.serve_json(PATH, google_answer(aud=aud, azp=azp))
    check = verifier(idp.url(PATH), FakeClock(), audiences=("someone-else", CLIENT))

    if accepted:
        assert loop.run(check.verify(make_token()))["exp"] == EXP
    else:
        with pytest.raises(RpcError) as caught:
            loop.run(check.verify(make_token()))
        assert (caught.value.code, caught.value.reason) == INVALID


def test_no_configured_audiences_accept_any(idp: LocalIdp, loop: LoopThread) -> None:
    idp.serve_json(PATH, google_answer(aud="anyone", azp="anyone"))
    assert loop.run(verifier(idp.url(PATH), FakeClock()).verify(make_token()))["aud"] == "anyone"


@pytest.mark.parametrize(
    ("exp", "cache_ttl_s", "lifetime"),
    [
        pytest.param(int(NOW) + 100, 300, 100, id="until-exp"),
        pytest.param(int(NOW) + 3600, 300, 300, id="until-cache-ttl"),
    ],
)
def test_answer_is_cached_until_exp_at_most_cache_ttl(
    idp: LocalIdp, loop: LoopThread, exp: int, cache_ttl_s: float, lifetime: float
) -> None:
    idp.serve_json(PATH, google_answer(exp=str(exp)))
    clock = FakeClock()
    check = verifier(idp.url(PATH), clock, cache_ttl_s=cache_ttl_s)
    token = make_token()

    first = loop.run(check.verify(token))
    clock.now = NOW + lifetime - 0.01
    assert loop.run(check.verify(token)) == first
    assert idp.hit_count(PATH) == 1

    clock.now = NOW + lifetime  # gone from the cache: Google is asked again
    if exp > clock.now:
        assert loop.run(check.verify(token)) == first
    else:
        with pytest.raises(RpcError) as caught:
            loop.run(check.verify(token))
        assert caught.value.reason == "ACCESS_TOKEN_EXPIRED"
    assert idp.hit_count(PATH) == 2


def test_invalid_token_is_cached_briefly(idp: LocalIdp, loop: LoopThread) -> None:
    idp.serve_json(PATH, {"error": "invalid_token", "error_description": "Invalid Value"}, 400)
    clock = FakeClock()
    check = verifier(idp.url(PATH), clock)
    token = make_token()

    for now, hits in ((NOW, 1), (NOW + 29.99, 1), (NOW + 30, 2)):
        clock.now = now
        with pytest.raises(RpcError) as caught:
            loop.run(check.verify(token))
        assert caught.value.reason == "JWT_TOKEN_INVALID"
        assert idp.hit_count(PATH) == hits


def test_concurrent_checks_of_a_token_share_one_request(idp: LocalIdp, loop: LoopThread) -> None:
    idp.serve_json(PATH, google_answer())
    idp.delay_s = 0.05
    check = verifier(idp.url(PATH), FakeClock())
    token = make_token()

    async def twenty_calls() -> list[Mapping[str, Any]]:
        return await asyncio.gather(*(check.verify(token) for _ in range(20)))

    answers = loop.run(twenty_calls())
    assert len(answers) == 20
    assert all(answer["exp"] == EXP for answer in answers)
    assert idp.hit_count(PATH) == 1
