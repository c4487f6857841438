"""JwksKeySource against a real local IdP: caching, rotation, rate limits, outages, discovery."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.authn.key_source import (
    Fetch,
    JwksKeySource,
    discovery_fetcher,
    jwks_file_fetcher,
    jwks_uri_fetcher,
)
from gateway.authn.keys import VerificationKey
from gateway.errors import RpcError, StatusCode
from gateway.testing.idp import LocalIdp, local_idp
from gateway.testing.loop import LoopThread
from gateway.testing.tokens import SigningKey, ec_key, ed_key, jwks, rsa_key

ISSUER = "https://idp.test"
TTL = 300.0
INTERVAL = 30.0
GRACE = 3600.0
DISCOVERY = "/.well-known/openid-configuration"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def idp_server() -> Iterator[LocalIdp]:
    # One server per module: stopping one takes half a second (its poll interval).
    with local_idp() as server:
        yield server


@pytest.fixture
def idp(idp_server: LocalIdp) -> LocalIdp:
    """The module's IdP, as good as new: no routes, no hits, up and quick."""
    idp_server.routes.clear()
    idp_server.hits.clear()
    idp_server.requests.clear()
    idp_server.down = False
    idp_server.delay_s = 0.0
    return idp_server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def authn_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="opsgate.authn")
    return caplog


def source(fetch: Fetch, clock: FakeClock) -> JwksKeySource:
    return JwksKeySource(
        fetch,
        ISSUER,
        ttl_s=TTL,
        min_refresh_interval_s=INTERVAL,
        stale_grace_s=GRACE,
        clock=clock,
    )


def serving(idp: LocalIdp, clock: FakeClock, *keys: SigningKey) -> JwksKeySource:
    """A key source for an IdP that serves `keys` at /jwks."""
    idp.serve_json("/jwks", jwks(*keys))
    return source(jwks_uri_fetcher(idp.url("/jwks")), clock)


def without(jwk: dict[str, Any], *fields: str) -> dict[str, Any]:
    return {name: value for name, value in jwk.items() if name not in fields}


def is_key(got: VerificationKey, signer: SigningKey) -> bool:
    return got.kid == signer.kid and got.algorithms == {signer.algorithm}


def rejected(loop: LoopThread, keys: JwksKeySource, kid: str | None, alg: str) -> RpcError:
    with pytest.raises(RpcError) as info:
        loop.run(keys.key_for(kid, alg))
    return info.value


def assert_invalid(error: RpcError) -> None:
    assert error.code == StatusCode.UNAUTHENTICATED
    assert error.reason == "JWT_TOKEN_INVALID"


def assert_unavailable(error: RpcError) -> None:
    assert error.code == StatusCode.UNAVAILABLE
    assert error.reason == "AUTHENTICATION_BACKEND_UNAVAILABLE"


def fetch_warnings(logs: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in logs.records
        if r.name == "opsgate.authn"
        and r.levelno == logging.WARNING
        and r.getMessage().startswith(f"keys for {ISSUER} ")
    ]


def test_known_kid_is_served_from_the_cache(
    loop: LoopThread, idp: LocalIdp, clock: FakeClock
) -> None:
    rsa, ec = rsa_key("RS256"), ec_key("ES256")
    keys = serving(idp, clock, rsa, ec)
    loop.run(keys.prefetch())

    assert keys.ready
    assert is_key(loop.run(keys.key_for(rsa.kid, "RS256")), rsa)
    assert is_key(loop.run(keys.key_for(ec.kid, "ES256")), ec)
    assert (keys.fetch_count, keys.fetch_failures, idp.hit_count("/jwks")) == (1, 0, 1)


@pytest.mark.parametrize(
    ("signer", "restrict", "alg"),
    [
        (lambda: rsa_key("RS256"), False, "HS256"),
        (lambda: rsa_key("RS256"), True, "HS256"),
        (lambda: rsa_key("RS256"), True, "RS384"),
        (lambda: rsa_key("RS256"), False, "ES256"),
        (lambda: ec_key("ES256"), True, "ES384"),
        (ed_key, True, "RS256"),
    ],
    ids=[
        "rsa-any-HS256",
        "rsa-RS256-HS256",
        "rsa-RS256-RS384",
        "rsa-any-ES256",
        "ec-P256-ES384",
        "ed25519-RS256",
    ],
)
def test_an_alg_the_key_does_not_allow_is_invalid(
    loop: LoopThread,
    idp: LocalIdp,
    clock: FakeClock,
    signer: Callable[[], SigningKey],
    restrict: bool,
    alg: str,
) -> None:
    key = signer()
    jwk = key.jwk if restrict else without(key.jwk, "alg")
    idp.serve_json("/jwks", {"keys": [jwk]})
    keys = source(jwks_uri_fetcher(idp.url("/jwks")), clock)

    assert_invalid(rejected(loop, keys, key.kid, alg))
    assert idp.hit_count("/jwks") == 1  # a known kid with a wrong alg is no reason to refetch


@pytest.mark.parametrize(
    ("kid_in_jwks", "count", "found"),
    [(False, 1, True), (True, 1, True), (True, 2, False)],
    ids=["only-key-without-kid", "only-key-with-kid", "several-keys"],
)
def test_a_token_without_kid_may_use_the_only_key(
    loop: LoopThread, idp: LocalIdp, clock: FakeClock, kid_in_jwks: bool, count: int, found: bool
) -> None:
    signers = [ec_key("ES256") for _ in range(count)]
    drop = () if kid_in_jwks else ("kid",)
    idp.serve_json("/jwks", {"keys": [without(s.jwk, *drop) for s in signers]})
    keys = source(jwks_uri_fetcher(idp.url("/jwks")), clock)

    if found:
        assert loop.run(keys.key_for(None, "ES256")).algorithms == {"ES256"}
    else:
        assert_invalid(rejected(loop, keys, None, "ES256"))


def test_a_rotated_in_key_is_accepted_after_the_interval(
    loop: LoopThread, idp: LocalIdp, clock: FakeClock, authn_logs: pytest.LogCaptureFixture
) -> None:
    old, new = rsa_key("RS256", kid="old"), ec_key("ES256", kid="new")
    keys = serving(idp, clock, old)
    loop.run(keys.prefetch())
    idp.serve_json("/jwks", jwks(old, new))

    # Right after a fetch an unknown kid is refused at once, without asking the IdP.
    assert_invalid(rejected(loop, keys, "new", "ES256"))
    assert idp.hit_count("/jwks") == 1

    clock.advance(INTERVAL)
    assert is_key(loop.run(keys.key_for("new", "ES256")), new)
    assert idp.hit_count("/jwks") == 2
    assert "added new; removed none" in authn_logs.text


def test_an_old_key_works_until_removed_and_refetched(
    loop: LoopThread, idp: LocalIdp, clock: FakeClock, authn_logs: pytest.LogCaptureFixture
) -> None:
    old, new = rsa_key("RS256", kid="old"), ec_key("ES256", kid="new")
    keys = serving(idp, clock, old, new)
    loop.run(keys.prefetch())
    idp.serve_json("/jwks", jwks(new))

    clock.advance(TTL - 1)
    assert is_key(loop.run(keys.key_for("old", "RS256")), old)
    assert idp.hit_count("/jwks") == 1

    clock.advance(1)
    # The TTL refetch drops the key; the miss right after it does not fetch a second time.
    assert_invalid(rejected(loop, keys, "old", "RS256"))
    assert is_key(loop.run(keys.key_for("new", "ES256")), new)
    assert idp.hit_count("/jwks") == 2
    assert "added none; removed old" in authn_logs.text


def test_a_flood_of_unknown_kids_fetches_once_per_interval(
    loop: LoopThread, idp: LocalIdp, clock: FakeClock, authn_logs: pytest.LogCaptureFixture
) -> None:
    keys = serving(idp, clock, rsa_key("RS256"))
    loop.run(keys.prefetch())
    clock.advance(INTERVAL)
    kids = [uuid.uuid4().hex for _ in range(200)]

    async def flood() -> list[RpcError]:
        errors = []
        for kid in kids:
            clock.advance(0.1)  # 200 tokens over 20 s, all inside one interval
            try:
                await keys.key_for(kid, "RS256")
            except RpcError as error:
                errors.append(error)
        return errors

    errors = loop.run(flood())

    assert len(errors) == 200
    for error in errors:
        assert_invalid(error)
    assert (keys.fetch_count, idp.hit_count("/jwks")) == (2, 2)
    # Kids come from tokens: they are in neither logs nor log details.
    logged = authn_logs.text + " ".join(error.log_detail for error in errors)
    assert not any(kid in logged for kid in kids)

    clock.advance(INTERVAL)
    assert_invalid(rejected(loop, keys, uuid.uuid4().hex, "RS256"))
    assert idp.hit_count("/jwks") == 3


@pytest.mark.parametrize("warm", [False, True], ids=["cold-start", "unknown-kid"])
def test_concurrent_callers_share_one_fetch(
    loop: LoopThread, idp: LocalIdp, clock: FakeClock, warm: bool
) -> None:
    old, new = rsa_key("RS256", kid="old"), ec_key("ES256", kid="new")
    keys = serving(idp, clock, old)
    if warm:
        loop.run(keys.prefetch())
        clock.advance(INTERVAL)
    idp.serve_json("/jwks", jwks(old, new))
    idp.delay_s = 0.05  # the fetch is surely still in flight while the others ask

    async def fifty() -> list[VerificationKey]:
        return await asyncio.gather(*(keys.key_for("new", "ES256") for _ in range(50)))

    got = loop.run(fifty())

    assert len(got) == 50
    assert all(key is got[0] and is_key(key, new) for key in got)
    assert idp.hit_count("/jwks") == (2 if warm else 1)


def test_a_caller_giving_up_does_not_cancel_the_shared_fetch(
    loop: LoopThread, idp: LocalIdp, clock: FakeClock
) -> None:
    signer = ec_key("ES256")
    keys = serving(idp, clock, signer)
    idp.delay_s = 0.2

    async def impatient_then_patient() -> VerificationKey:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(keys.key_for(signer.kid, "ES256"), 0.05)
        return await keys.key_for(signer.kid, "ES256")

    assert is_key(loop.run(impatient_then_patient()), signer)
    assert keys.fetch_count == 1


def test_cached_keys_outlive_an_outage_until_the_grace_ends(
    loop: LoopThread, idp: LocalIdp, clock: FakeClock, authn_logs: pytest.LogCaptureFixture
) -> None:
    signer = rsa_key("RS256")
    keys = serving(idp, clock, signer)
    loop.run(keys.prefetch())
    idp.down = True

    clock.advance(TTL)
    for _ in range(10):  # many calls, one refetch, one warning
        assert is_key(loop.run(keys.key_for(signer.kid, "RS256")), signer)
        clock.advance(1)
    assert (keys.fetch_failures, idp.hit_count("/jwks")) == (1, 2)
    [warning] = fetch_warnings(authn_logs)
    assert "still using keys fetched 300s ago" in warning

    clock.advance(GRACE - 11)  # 1 s before the grace ends: another failed refetch, keys still good
    assert is_key(loop.run(keys.key_for(signer.kid, "RS256")), signer)
    assert (keys.fetch_failures, idp.hit_count("/jwks")) == (2, 3)

    clock.advance(1)
    assert not keys.ready
    assert_unavailable(rejected(loop, keys, signer.kid, "RS256"))

    idp.down = False
    clock.advance(INTERVAL)
    assert is_key(loop.run(keys.key_for(signer.kid, "RS256")), signer)
    assert keys.ready


def test_start_up_while_the_endpoint_is_down_recovers_after_the_interval(
    loop: LoopThread, idp: LocalIdp, clock: FakeClock
) -> None:
    signer = ec_key("ES256")
    keys = serving(idp, clock, signer)
    idp.down = True

    assert loop.run(keys.prefetch()) is None  # logged, not raised
    assert not keys.ready
    assert_unavailable(rejected(loop, keys, signer.kid, "ES256"))

    idp.down = False
    assert_unavailable(rejected(loop, keys, signer.kid, "ES256"))  # within the interval
    assert (keys.fetch_failures, idp.hit_count("/jwks")) == (1, 1)

    clock.advance(INTERVAL)
    assert is_key(loop.run(keys.key_for(signer.kid, "ES256")), signer)
    assert keys.ready
    assert (keys.fetch_count, idp.hit_count("/jwks")) == (2, 2)


def test_keys_are_refetched_when_the_ttl_ends(
    loop: LoopThread, idp: LocalIdp, clock: FakeClock
) -> None:
    first, second = ec_key("ES256"), ec_key("ES384")
    keys = serving(idp, clock, first)
    loop.run(keys.prefetch())
    idp.serve_json("/jwks", jwks(first, second))

    clock.advance(TTL - 1)
    assert is_key(loop.run(keys.key_for(first.kid, "ES256")), first)
    assert keys.fetch_count == 1

    clock.advance(1)
    assert is_key(loop.run(keys.key_for(first.kid, "ES256")), first)
    assert keys.fetch_count == 2
    assert is_key(loop.run(keys.key_for(second.kid, "ES384")), second)  # already in the new set
    assert keys.fetch_count == 2


# Sets up a failing key endpoint (an IdP route or a file) and returns the fetch for it.
Setup = Callable[[LocalIdp, Path], Fetch]


def idp_answering(status: int, body: Any) -> Setup:
    def setup(idp: LocalIdp, _tmp: Path) -> Fetch:
        idp.route("/jwks", lambda _request: (status, body))
        return jwks_uri_fetcher(idp.url("/jwks"))

    return setup


def file_holding(content: str | None) -> Setup:
    def setup(_idp: LocalIdp, tmp: Path) -> Fetch:
        path = tmp / "jwks.json"
        if content is not None:
            path.write_text(content)
        return jwks_file_fetcher(path)

    return setup


@pytest.mark.parametrize(
    "setup",
    [
        idp_answering(503, {"error": "down"}),
        idp_answering(200, b"<html>"),
        idp_answering(200, {"error": "not a jwks"}),
        file_holding(None),
        file_holding("{"),
        file_holding(json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]})),
        lambda idp, _tmp: discovery_fetcher(idp.base_url),
    ],
    ids=[
        "http-503",
        "not-json",
        "not-a-jwks",
        "file-missing",
        "file-not-json",
        "file-only-hmac",
        "no-discovery-document",
    ],
)
def test_failed_fetches_mean_unavailable_not_a_crash(
    loop: LoopThread,
    idp: LocalIdp,
    clock: FakeClock,
    tmp_path: Path,
    authn_logs: pytest.LogCaptureFixture,
    setup: Setup,
) -> None:
    keys = source(setup(idp, tmp_path), clock)

    loop.run(keys.prefetch())

    assert not keys.ready
    assert (keys.fetch_count, keys.fetch_failures) == (1, 1)
    assert_unavailable(rejected(loop, keys, "any", "RS256"))
    [warning] = fetch_warnings(authn_logs)
    assert warning.startswith(f"keys for {ISSUER} unavailable: ")
    assert warning.endswith("; retrying with backoff")


def test_a_jwks_file_is_reread_on_refresh(
    loop: LoopThread, clock: FakeClock, tmp_path: Path
) -> None:
    before, after = ec_key("ES256"), ed_key()
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(before)))
    keys = source(jwks_file_fetcher(path), clock)
    assert is_key(loop.run(keys.key_for(before.kid, "ES256")), before)

    path.write_text(json.dumps(jwks(after)))
    clock.advance(INTERVAL)

    assert is_key(loop.run(keys.key_for(after.kid, "EdDSA")), after)
    assert keys.fetch_count == 2


@pytest.mark.parametrize("suffix", ["", "/"], ids=["issuer", "issuer-with-trailing-slash"])
def test_discovery_finds_the_jwks_and_remembers_where(
    loop: LoopThread, idp: LocalIdp, clock: FakeClock, suffix: str
) -> None:
    signer = rsa_key("RS256")
    issuer = idp.base_url + suffix
    idp.serve_json(DISCOVERY, {"issuer": issuer, "jwks_uri": idp.url("/keys")})
    idp.serve_json("/keys", jwks(signer))
    keys = source(discovery_fetcher(issuer), clock)

    assert is_key(loop.run(keys.key_for(signer.kid, "RS256")), signer)
    clock.advance(TTL)
    assert is_key(loop.run(keys.key_for(signer.kid, "RS256")), signer)

    assert (idp.hit_count(DISCOVERY), idp.hit_count("/keys")) == (1, 2)


@pytest.mark.parametrize(
    ("moved", "keys_hits"),
    [(True, (2, 1)), (False, (2, 0))],
    ids=["jwks-moved", "jwks-down"],
)
def test_discovery_is_asked_again_when_the_jwks_uri_fails(
    loop: LoopThread, idp: LocalIdp, clock: FakeClock, moved: bool, keys_hits: tuple[int, int]
) -> None:
    first, second = rsa_key("RS256"), ec_key("ES256")
    idp.serve_json(DISCOVERY, {"issuer": idp.base_url, "jwks_uri": idp.url("/keys-1")})
    idp.serve_json("/keys-1", jwks(first))
    keys = source(discovery_fetcher(idp.base_url), clock)
    loop.run(keys.prefetch())

    idp.serve_json("/keys-1", {"error": "gone"}, status=404)
    if moved:
        idp.serve_json(DISCOVERY, {"issuer": idp.base_url, "jwks_uri": idp.url("/keys-2")})
        idp.serve_json("/keys-2", jwks(second))
    clock.advance(TTL)
    loop.run(keys.prefetch())

    # Moved: the new location is used. Down: the old keys stay, and the failed URL is not
    # fetched twice in one attempt.
    accepted = [s is second for s in (first, second) if accepts(loop, keys, s)]
    assert accepted == [moved]
    assert idp.hit_count(DISCOVERY) == 2
    assert (idp.hit_count("/keys-1"), idp.hit_count("/keys-2")) == keys_hits


def accepts(loop: LoopThread, keys: JwksKeySource, signer: SigningKey) -> bool:
    try:
        return is_key(loop.run(keys.key_for(signer.kid, signer.algorithm)), signer)
    except RpcError:
        return False


@pytest.mark.parametrize(
    "named",
    [lambda idp: "https://evil.example", lambda idp: idp.base_url + "/", lambda idp: None],
    ids=["other-issuer", "trailing-slash-differs", "no-issuer"],
)
def test_discovery_refuses_a_document_for_another_issuer(
    loop: LoopThread, idp: LocalIdp, clock: FakeClock, named: Callable[[LocalIdp], str | None]
) -> None:
    idp.serve_json(DISCOVERY, {"issuer": named(idp), "jwks_uri": idp.url("/keys")})
    idp.serve_json("/keys", jwks(rsa_key("RS256")))
    keys = source(discovery_fetcher(idp.base_url), clock)

    loop.run(keys.prefetch())

    assert not keys.ready
    assert keys.fetch_failures == 1
    assert idp.hit_count("/keys") == 0  # keys named by a foreign document are never fetched
    assert_unavailable(rejected(loop, keys, "any", "RS256"))
