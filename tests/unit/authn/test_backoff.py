"""Backoff for the key, discovery and introspection endpoints: the delays, the sources and the
circuit that follow them, Retry-After, and a log that speaks once when an endpoint fails and once
when it is back."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import pytest

from gateway.authn.factory import AuthnRuntime
from gateway.authn.http import FetchError, fetch_json, retry_after_s
from gateway.authn.introspection import (
    FAILURES_TO_OPEN,
    MAX_IN_FLIGHT,
    EndpointCircuit,
    IntrospectionSettings,
    Introspector,
)
from gateway.authn.key_source import JwksKeySource, discovery_fetcher
from gateway.backoff import Backoff
from gateway.errors import RpcError, StatusCode
from gateway.testing.idp import LocalIdp, local_idp
from gateway.testing.loop import LoopThread
from gateway.testing.tokens import jwks, rsa_key
from tests.unit.authn_opaque.test_token_cache import NOW, make_token, reset
from tests.unit.authn_opaque.test_token_cache import FakeClock as UnixClock

ISSUER = "https://idp.backoff.test"
PATH = "/oauth2/introspect"
DISCOVERY = "/.well-known/openid-configuration"
UNAVAILABLE = (StatusCode.UNAVAILABLE, "AUTHENTICATION_BACKEND_UNAVAILABLE")
ACTIVE = {"active": True, "sub": "alice", "exp": NOW + 600}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def always(value: float) -> Any:
    """A jitter source that always draws `value` (1.0: every delay is its bound)."""
    return lambda: value


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def idp_server() -> Iterator[LocalIdp]:
    with local_idp() as server:
        yield server


@pytest.fixture
def idp(idp_server: LocalIdp) -> LocalIdp:
    return reset(idp_server)


@pytest.fixture
def authn_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="opsgate.authn")
    return caplog


def said(logs: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage() for r in logs.records if r.name == "opsgate.authn" and r.levelno == level
    ]


# --- the delays --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("draw", "expected"),
    [
        (1.0, [1, 2, 4, 8, 16, 32, 60, 60, 60]),
        (0.5, [0.5, 1, 2, 4, 8, 16, 30, 30, 30]),
        (0.0, [0] * 9),
    ],
    ids=["top-of-window", "middle", "bottom"],
)
def test_delays_double_per_failure_up_to_the_cap_with_full_jitter(
    draw: float, expected: list[float]
) -> None:
    backoff = Backoff(1.0, 60.0, rand=always(draw))
    assert [backoff.delay(n) for n in range(1, 10)] == expected
    assert backoff.bound(1000) == 60.0  # no overflow however long the outage


def test_real_jitter_stays_within_the_window() -> None:
    backoff = Backoff(1.0, 60.0)
    for failures in range(1, 10):
        delays = [backoff.delay(failures) for _ in range(200)]
        assert all(0 <= d <= backoff.bound(failures) for d in delays)
        assert len(set(delays)) > 150  # spread, not in step


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [(None, 0.0), (30.0, 30.0), (3600.0, 60.0), (0.0, 0.0)],
    ids=["none", "honoured", "capped", "zero"],
)
def test_retry_after_is_a_floor_shortened_to_the_cap(
    retry_after: float | None, expected: float
) -> None:
    assert Backoff(1.0, 60.0, rand=always(0.0)).delay(1, retry_after) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # in the past: now
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("٣", None),  # a digit to str.isdigit, not to HTTP
        (None, None),
    ],
)
def test_retry_after_header(header: str | None, expected: float | None) -> None:
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert retry_after_s(header, now=now) == expected


@pytest.fixture
def unavailable_endpoint() -> Iterator[str]:
    """A real HTTP endpoint answering 503 with Retry-After: 7."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(503)
            self.send_header("Retry-After", "7")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks"
    finally:
        server.shutdown()
        server.server_close()


def test_a_503_carries_its_retry_after(loop: LoopThread, unavailable_endpoint: str) -> None:
    with pytest.raises(FetchError) as caught:
        loop.run(fetch_json(unavailable_endpoint))
    assert (caught.value.status, caught.value.retry_after) == (503, 7.0)


# --- key sources -------------------------------------------------------------------------


class KeyEndpoint:
    """A scripted key endpoint: fails while `failing` (with `retry_after`), records attempts."""

    def __init__(self, clock: Any, failures: int | None = None) -> None:
        self.clock = clock
        self.failing = True
        self.failures = failures  # if set: fail this many times, then answer
        self.answered = asyncio.Event()
        self.retry_after: float | None = None
        self.attempts: list[float] = []
        self.document = jwks(rsa_key("RS256"))

    async def __call__(self) -> Any:
        self.attempts.append(self.clock())
        if self.failures is not None:
            self.failing = len(self.attempts) <= self.failures
        if self.failing:
            raise FetchError(
                "http://keys.test/jwks answered HTTP 503", status=503, retry_after=self.retry_after
            )
        self.answered.set()
        return self.document

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.attempts, self.attempts[1:], strict=False)]


def key_source(
    endpoint: Any, clock: Any, backoff: Backoff, interval: float = 30.0
) -> JwksKeySource:
    return JwksKeySource(
        endpoint,
        ISSUER,
        ttl_s=300.0,
        min_refresh_interval_s=interval,
        stale_grace_s=3600.0,
        backoff=backoff,
        clock=clock,
    )


def test_retries_without_keys_follow_the_backoff_and_the_log_speaks_twice(
    loop: LoopThread, authn_logs: pytest.LogCaptureFixture
) -> None:
    # Real time, the real retry loop: its 2 s look-around does not round the delays.
    endpoint = KeyEndpoint(time.monotonic, failures=7)
    source = key_source(endpoint, time.monotonic, Backoff(0.05, 0.4, rand=always(1.0)))
    runtime = AuthnRuntime(authenticator=cast(Any, None), key_sources=(source,))

    async def outage_then_recovery() -> None:
        await runtime.prefetch()
        retrying = asyncio.create_task(runtime.keep_trying(interval_s=2.0))
        await endpoint.answered.wait()
        await asyncio.sleep(0.1)  # time for a (wrong) extra attempt to show
        retrying.cancel()

    loop.run(outage_then_recovery(), timeout=20)

    bounds = [0.05, 0.1, 0.2, 0.4, 0.4, 0.4, 0.4]
    gaps = endpoint.gaps()
    assert len(gaps) == len(bounds), gaps
    for gap, bound in zip(gaps, bounds, strict=True):
        assert bound - 0.005 <= gap <= bound + 0.25, (gaps, bounds)
    assert (source.fetch_count, source.fetch_failures) == (8, 7)
    [warning] = said(authn_logs, logging.WARNING)
    assert warning == (
        f"keys for {ISSUER} unavailable: http://keys.test/jwks answered HTTP 503; "
        "no keys yet: its tokens get UNAVAILABLE; retrying with backoff"
    )
    recovered = [m for m in said(authn_logs, logging.INFO) if "fetched again" in m]
    assert len(recovered) == 1
    assert recovered[0].startswith(f"keys for {ISSUER} fetched again after 7 failures / ")
    assert len([m for m in said(authn_logs, logging.DEBUG) if "attempt" in m]) == 7


def test_calls_during_an_outage_refetch_no_sooner_than_interval_and_backoff(
    loop: LoopThread, clock: Clock, authn_logs: pytest.LogCaptureFixture
) -> None:
    endpoint = KeyEndpoint(clock)
    endpoint.failing = False
    backoff = Backoff(1.0, 60.0, rand=always(1.0))
    source = key_source(endpoint, clock, backoff, interval=30.0)
    loop.run(source.prefetch())
    kid = endpoint.document["keys"][0]["kid"]
    endpoint.failing = True
    clock.advance(300)  # the keys are stale: each call may refetch, if allowed

    for _ in range(600):  # a call a second for ten minutes, on the old keys
        loop.run(source.key_for(kid, "RS256"))
        clock.advance(1)

    gaps = endpoint.gaps()[1:]  # after the first failed refetch, the TTL's
    for failures_so_far, gap in enumerate(gaps, start=1):
        least = max(30.0, backoff.bound(failures_so_far))
        assert least <= gap <= least + 1, gaps
    assert gaps[-1] == 60  # the cap
    assert len(said(authn_logs, logging.WARNING)) == 1
    assert (
        "still using keys fetched 300s ago (for 3600s more)" in said(authn_logs, logging.WARNING)[0]
    )


def test_retry_after_holds_the_next_attempt_back(loop: LoopThread, clock: Clock) -> None:
    endpoint = KeyEndpoint(clock)
    endpoint.retry_after = 20.0
    source = key_source(endpoint, clock, Backoff(1.0, 60.0, rand=always(0.0)), interval=1.0)

    loop.run(source.prefetch())
    assert source.retry_in() == 20.0
    clock.advance(19.5)
    loop.run(source.retry_if_due())
    with pytest.raises(RpcError):
        loop.run(source.key_for("any", "RS256"))
    assert len(endpoint.attempts) == 1

    clock.advance(0.5)
    endpoint.failing = False
    loop.run(source.retry_if_due())
    assert source.ready
    assert len(endpoint.attempts) == 2


def test_running_out_of_keys_in_an_outage_is_said_once(
    loop: LoopThread, clock: Clock, authn_logs: pytest.LogCaptureFixture
) -> None:
    endpoint = KeyEndpoint(clock)
    endpoint.failing = False
    source = key_source(endpoint, clock, Backoff(1.0, 60.0, rand=always(1.0)))
    loop.run(source.prefetch())
    endpoint.failing = True

    clock.advance(300)
    loop.run(source.retry_if_due())  # healthy: due after the interval; this one fails
    for _ in range(5):  # past the grace, failing on
        clock.advance(1000)
        loop.run(source.retry_if_due())

    assert not source.ready
    first, gone = said(authn_logs, logging.WARNING)
    assert "still using keys" in first
    assert gone == (
        f"keys for {ISSUER} still unavailable after 5 failures: http://keys.test/jwks "
        "answered HTTP 503; old keys are past their stale grace: its tokens get UNAVAILABLE"
    )


def test_a_discovery_endpoint_that_is_down_is_retried_with_backoff(
    loop: LoopThread, idp: LocalIdp, clock: Clock, authn_logs: pytest.LogCaptureFixture
) -> None:
    idp.down = True
    backoff = Backoff(1.0, 60.0, rand=always(1.0))
    source = key_source(discovery_fetcher(idp.base_url), clock, backoff, interval=1.0)

    loop.run(source.prefetch())
    for expected in (1.0, 2.0, 4.0):
        assert source.retry_in() == expected
        clock.advance(expected - 0.1)
        loop.run(source.retry_if_due())  # not yet
        with pytest.raises(RpcError):
            loop.run(source.key_for("any", "RS256"))  # nor for a call
        clock.advance(0.1)
        loop.run(source.retry_if_due())
    assert idp.hit_count(DISCOVERY) == 4

    signer = rsa_key("RS256")
    idp.down = False
    idp.serve_json(DISCOVERY, {"issuer": idp.base_url, "jwks_uri": idp.url("/keys")})
    idp.serve_json("/keys", jwks(signer))
    clock.advance(8.0)
    assert loop.run(source.key_for(signer.kid, "RS256")).kid == signer.kid
    [warning] = said(authn_logs, logging.WARNING)
    assert warning.startswith(f"keys for {ISSUER} unavailable: {idp.base_url}{DISCOVERY} ")
    assert any("fetched again after 4 failures" in m for m in said(authn_logs, logging.INFO))


# --- the introspection circuit -----------------------------------------------------------


def introspector(idp: LocalIdp, clock: Clock) -> Introspector:
    settings = IntrospectionSettings(
        endpoint=idp.url(PATH), client_id="opsgate", client_secret="s3cret", timeout_s=2.0
    )
    circuit = EndpointCircuit(
        f"introspection at {idp.url(PATH)}",
        backoff=Backoff(1.0, 30.0, rand=always(1.0)),
        clock=clock,
    )
    return Introspector(settings, clock=UnixClock(), circuit=circuit)


def refused(loop: LoopThread, verifier: Introspector, token: str) -> tuple[StatusCode, str]:
    with pytest.raises(RpcError) as caught:
        loop.run(verifier.introspect(token))
    return caught.value.code, caught.value.reason


def test_a_down_endpoint_opens_the_circuit_and_calls_fail_fast(
    loop: LoopThread, idp: LocalIdp, clock: Clock, authn_logs: pytest.LogCaptureFixture
) -> None:
    idp.down = True
    verifier = introspector(idp, clock)

    for _ in range(50):  # fifty new tokens: the first few ask, the rest are refused at once
        assert refused(loop, verifier, make_token()) == UNAVAILABLE
    assert idp.hit_count(PATH) == FAILURES_TO_OPEN
    [warning] = said(authn_logs, logging.WARNING)
    assert warning == (
        f"introspection at {idp.url(PATH)} unavailable: {idp.url(PATH)} answered HTTP 503; "
        "failing its calls fast, retrying with backoff"
    )

    # One probe per backoff step: 1 s, then 2 s.
    for step in (1.0, 2.0):
        clock.advance(step - 0.01)
        assert refused(loop, verifier, make_token()) == UNAVAILABLE
        hits = idp.hit_count(PATH)
        clock.advance(0.01)
        assert refused(loop, verifier, make_token()) == UNAVAILABLE
        assert idp.hit_count(PATH) == hits + 1
        assert refused(loop, verifier, make_token()) == UNAVAILABLE  # the next waits again
        assert idp.hit_count(PATH) == hits + 1

    idp.down = False
    idp.serve_json(PATH, ACTIVE)
    clock.advance(4.0)
    assert loop.run(verifier.introspect(make_token()))["sub"] == "alice"
    assert not verifier.circuit.open
    assert loop.run(verifier.introspect(make_token()))["sub"] == "alice"  # closed: asks at once
    [back] = [m for m in said(authn_logs, logging.INFO) if "answering again" in m]
    assert back == f"introspection at {idp.url(PATH)} answering again after 5 failures / 7 s"


def test_a_flood_of_new_tokens_against_a_down_endpoint_costs_a_few_requests(
    loop: LoopThread, idp: LocalIdp, clock: Clock
) -> None:
    idp.down = True
    idp.delay_s = 0.05  # so the calls overlap on the wire
    verifier = introspector(idp, clock)

    async def flood() -> list[BaseException | Mapping[str, Any]]:
        calls = (verifier.introspect(make_token()) for _ in range(200))
        return await asyncio.gather(*calls, return_exceptions=True)

    answers = loop.run(flood())
    assert all(isinstance(a, RpcError) and a.code == StatusCode.UNAVAILABLE for a in answers)
    # The first slots' worth go out together; until FAILURES_TO_OPEN of them have failed, each
    # failure frees a slot for one more; then the circuit is open and the rest never ask.
    assert FAILURES_TO_OPEN <= idp.hit_count(PATH) <= MAX_IN_FLIGHT + FAILURES_TO_OPEN - 1


def test_answers_in_the_cache_keep_working_while_the_circuit_is_open(
    loop: LoopThread, idp: LocalIdp, clock: Clock
) -> None:
    idp.serve_json(PATH, ACTIVE)
    verifier = introspector(idp, clock)
    known = make_token()
    loop.run(verifier.introspect(known))
    idp.down = True
    for _ in range(FAILURES_TO_OPEN):
        refused(loop, verifier, make_token())
    assert verifier.circuit.open

    assert loop.run(verifier.introspect(known))["sub"] == "alice"


def test_one_failure_among_answers_costs_only_its_own_call(
    loop: LoopThread, idp: LocalIdp, clock: Clock
) -> None:
    answers = iter([(503, {"error": "blip"})] * (FAILURES_TO_OPEN - 1) + [(200, ACTIVE)] * 10)
    idp.route(PATH, lambda _request: next(answers))
    verifier = introspector(idp, clock)

    for _ in range(FAILURES_TO_OPEN - 1):
        assert refused(loop, verifier, make_token()) == UNAVAILABLE
    for _ in range(3):
        assert loop.run(verifier.introspect(make_token()))["sub"] == "alice"
    assert not verifier.circuit.open and verifier.circuit.failures == 0


def test_a_retry_after_opens_the_circuit_at_once_for_that_long(clock: Clock) -> None:
    circuit = EndpointCircuit("introspection", backoff=Backoff(1.0, 30.0), clock=clock)
    assert circuit.admit() is False
    circuit.failed(False, "answered HTTP 429", retry_after=12.0)
    assert circuit.open
    clock.advance(11.9)
    with pytest.raises(RpcError):
        circuit.admit()
    clock.advance(0.1)
    assert circuit.admit() is True  # the probe
    with pytest.raises(RpcError) as caught:
        circuit.admit()  # one probe at a time
    assert "a retry is in flight" in caught.value.log_detail
    circuit.abandoned(True)  # the probe's caller went away: another may go
    assert circuit.admit() is True
