"""Authentication end to end: real keys, a real JWKS server, real tokens, google-api-core's client.

Each bad token gets the code and ErrorInfo reason Google's APIs give, the upstream never sees
a refused call, and no token (or any part of one) appears in an error or a log line.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from google.api_core import exceptions as core_exceptions
from google.api_core import operations_v1

from gateway.config import load_settings
from gateway.reference_upstream import ReferenceUpstream, start_reference_upstream
from gateway.server import Gateway, start_gateway
from gateway.testing.idp import LocalIdp, local_idp
from gateway.testing.loop import LoopThread
from gateway.testing.tokens import SigningKey, claims, ec_key, ed_key, jwks, rsa_key
from tests.support.stack import FULL_PROFILE, OPEN_POLICY, quiet_audit_yaml

ISSUER = "https://idp.authn.test"
AUDIENCE = "opsgate-authn"
NAME = "projects/acme/locations/us-central1/operations/authn"
CLOUD = "https://www.googleapis.com/auth/cloud-platform"


@dataclass
class AuthnWorld:
    """A JWKS server, an upstream with one operation, and a gateway trusting the JWKS server."""

    idp: LocalIdp
    upstream: ReferenceUpstream
    gateway: Gateway
    rsa: SigningKey
    ec: SigningKey
    ed: SigningKey
    channel: grpc.Channel
    loop: LoopThread

    def client(self) -> operations_v1.OperationsClient:
        return operations_v1.OperationsClient(self.channel)

    def token(
        self, key: SigningKey | None = None, headers: dict[str, Any] | None = None, **extra: Any
    ) -> str:
        return (key or self.rsa).sign(claims(ISSUER, AUDIENCE, **extra), headers)

    def get(self, metadata: list[tuple[str, str]]) -> Any:
        return self.client().get_operation(NAME, metadata=metadata, retry=None, timeout=10)

    def upstream_calls(self) -> int:
        return len(self.upstream.calls())


def _open_policy(tmp: Path) -> Path:
    path = tmp / "policy.yaml"
    path.write_text(OPEN_POLICY)
    return path


def _config(tmp: Path, idp: LocalIdp, upstream: str, **issuer: Any) -> Path:
    fields = {"jwks_min_refresh_interval_s": 30, **issuer}
    extra = "".join(f"      {key}: {json.dumps(value)}\n" for key, value in fields.items())
    path = tmp / "opsgate.yaml"
    path.write_text(
        f"listen: 127.0.0.1:0\nupstream:\n  target: {upstream}\n"
        "authentication:\n  issuers:\n"
        f"    - issuer: {ISSUER}\n      audiences: [{AUDIENCE}, other-audience]\n"
        f"      jwks_uri: {idp.url('/jwks')}\n      max_lifetime_s: 3600\n{extra}"
        f"authorization:\n  policy_file: {_open_policy(tmp)}\n  profile_file: {FULL_PROFILE}\n"
        + quiet_audit_yaml(tmp)
    )
    return path


@contextmanager
def authn_world(
    loop: LoopThread, tmp: Path, *, jwks_up: bool = True, **issuer: Any
) -> Iterator[AuthnWorld]:
    keys = (rsa_key(kid="rsa-1"), ec_key("ES256", kid="ec-1"), ed_key(kid="ed-1"))
    with local_idp() as idp:
        idp.serve_json("/jwks", jwks(*keys))
        idp.down = not jwks_up
        upstream = loop.run(start_reference_upstream("127.0.0.1:0", seed=False))
        upstream.store.create(NAME)
        settings = load_settings(_config(tmp, idp, upstream.address, **issuer))
        gateway = loop.run(start_gateway(settings))
        channel = grpc.insecure_channel(gateway.address)
        try:
            yield AuthnWorld(idp, upstream, gateway, *keys, channel, loop)
        finally:
            channel.close()
            loop.run(gateway.stop(0))
            loop.run(upstream.stop(0))


@pytest.fixture(scope="module")
def world(loop: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthnWorld]:
    with authn_world(loop, tmp_path_factory.mktemp("authn")) as running:
        yield running


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def _hs256_with_public_key(world: AuthnWorld) -> str:
    public_pem = world.rsa.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # pyjwt refuses PEM keys as HMAC secrets, which is the point; forge the token by hand.
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    payload = b64(json.dumps(claims(ISSUER, AUDIENCE)).encode())
    signature = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


def _unsigned(world: AuthnWorld) -> str:
    return jwt.encode(claims(ISSUER, AUDIENCE), None, algorithm="none", headers={"kid": "rsa-1"})


def _tampered(world: AuthnWorld) -> str:
    header, _, signature = world.token().split(".")
    payload = jwt.utils.base64url_encode(
        json.dumps(claims(ISSUER, AUDIENCE, email="mallory@example.com")).encode()
    ).decode()
    return f"{header}.{payload}.{signature}"


def _forged(world: AuthnWorld) -> str:
    impostor = rsa_key(kid="rsa-1", fresh=True)
    return impostor.sign(claims(ISSUER, AUDIENCE))


def _now() -> int:
    return int(time.time())


MISSING = ("UNAUTHENTICATED", "CREDENTIALS_MISSING")
INVALID = ("UNAUTHENTICATED", "JWT_TOKEN_INVALID")
EXPIRED = ("UNAUTHENTICATED", "ACCESS_TOKEN_EXPIRED")
UNSUPPORTED = ("UNAUTHENTICATED", "ACCESS_TOKEN_TYPE_UNSUPPORTED")
SCOPE = ("PERMISSION_DENIED", "ACCESS_TOKEN_SCOPE_INSUFFICIENT")
OK = ("OK", "")

# (id, metadata builder, expected (code, reason))
Case = tuple[str, Callable[[AuthnWorld], list[tuple[str, str]]], tuple[str, str]]
CASES: list[Case] = [
    ("no-header", lambda w: [], MISSING),
    ("empty-header", lambda w: [("authorization", "")], MISSING),
    ("bare-bearer", lambda w: [("authorization", "Bearer")], MISSING),
    ("bearer-spaces", lambda w: [("authorization", "Bearer    ")], MISSING),
    ("basic-scheme", lambda w: [("authorization", "Basic dXNlcjpwYXNz")], MISSING),
    ("two-headers", lambda w: bearer(w.token()) + bearer(w.token()), INVALID),
    (
        "two-tokens-one-header",
        lambda w: [("authorization", f"Bearer {w.token()} {w.token()}")],
        INVALID,
    ),
    ("alg-none", lambda w: bearer(_unsigned(w)), INVALID),
    ("hs256-with-public-key", lambda w: bearer(_hs256_with_public_key(w)), INVALID),
    ("wrong-signature", lambda w: bearer(_forged(w)), INVALID),
    ("tampered-payload", lambda w: bearer(_tampered(w)), INVALID),
    (
        "unknown-kid",
        lambda w: bearer(rsa_key(kid="never-published").sign(claims(ISSUER, AUDIENCE))),
        INVALID,
    ),
    ("expired", lambda w: bearer(w.token(iat=_now() - 600, exp=_now() - 120)), EXPIRED),
    ("expired-within-skew", lambda w: bearer(w.token(iat=_now() - 600, exp=_now() - 10)), OK),
    ("not-yet-valid", lambda w: bearer(w.token(nbf=_now() + 300)), INVALID),
    ("iat-in-future", lambda w: bearer(w.token(iat=_now() + 300, exp=_now() + 900)), INVALID),
    ("lifetime-over-max", lambda w: bearer(w.token(exp=_now() + 7200)), INVALID),
    ("wrong-issuer", lambda w: bearer(w.rsa.sign(claims("https://evil.test", AUDIENCE))), INVALID),
    ("wrong-audience", lambda w: bearer(w.token(aud="someone-else")), INVALID),
    ("audience-list", lambda w: bearer(w.token(aud=["x", AUDIENCE])), OK),
    (
        "missing-exp",
        lambda w: bearer(
            w.rsa.sign({k: v for k, v in claims(ISSUER, AUDIENCE).items() if k != "exp"})
        ),
        INVALID,
    ),
    ("string-exp", lambda w: bearer(w.token(exp=str(_now() + 300))), INVALID),
    ("bool-iat", lambda w: bearer(w.token(iat=True)), INVALID),
    ("nan-exp", lambda w: bearer(w.token(exp=float("nan"))), INVALID),
    (
        "nan-iat-skips-lifetime",
        lambda w: bearer(w.token(iat=float("nan"), exp=_now() + 10**8)),
        INVALID,
    ),
    ("numeric-aud", lambda w: bearer(w.token(aud=12)), INVALID),
    (
        "missing-email",
        lambda w: bearer(
            w.rsa.sign({k: v for k, v in claims(ISSUER, AUDIENCE).items() if k != "email"})
        ),
        INVALID,
    ),
    ("empty-email", lambda w: bearer(w.token(email="")), INVALID),
    ("unverified-email", lambda w: bearer(w.token(email_verified=False)), INVALID),
    ("email-verified-absent", lambda w: bearer(w.token(email_verified=None)), INVALID),
    ("email-verified-string", lambda w: bearer(w.token(email_verified="true")), INVALID),
    ("truncated", lambda w: bearer(w.token()[:-20]), INVALID),
    ("two-segments", lambda w: bearer(".".join(w.token().split(".")[:2])), INVALID),
    ("garbage-dots", lambda w: bearer("abc.def.ghi"), INVALID),
    ("garbage-characters", lambda w: bearer("!!not*a*token!!"), INVALID),
    ("opaque-without-introspection", lambda w: bearer("2YotnFZFEjr1zCsicMWpAA"), UNSUPPORTED),
    (
        "google-access-token-not-configured",
        lambda w: bearer("ya29.a0AfH6SMBx-example"),
        UNSUPPORTED,
    ),
    ("oversized-token", lambda w: bearer("a" * 20000), INVALID),
    ("9kib-valid-token", lambda w: bearer(w.token(padding="x" * 9000)), OK),
    (
        "jku-elsewhere",
        lambda w: bearer(
            rsa_key(kid="attacker", fresh=True).sign(
                claims(ISSUER, AUDIENCE), {"jku": w.idp.url("/evil")}
            )
        ),
        INVALID,
    ),
    (
        "x5u-elsewhere",
        lambda w: bearer(
            rsa_key(kid="attacker", fresh=True).sign(
                claims(ISSUER, AUDIENCE), {"x5u": w.idp.url("/evil")}
            )
        ),
        INVALID,
    ),
    ("crit-header", lambda w: bearer(w.token(headers={"crit": ["exp"]})), INVALID),
    (
        "alg-key-mismatch",
        lambda w: bearer(ec_key("ES256", kid="rsa-1").sign(claims(ISSUER, AUDIENCE))),
        INVALID,
    ),
    ("scope-missing", lambda w: bearer(w.token(scope="openid email")), SCOPE),
    ("scp-list-ok", lambda w: bearer(w.token(scope=None, scp=[CLOUD, "openid"])), OK),
    ("no-scope-claim-ok", lambda w: bearer(w.token(scope=None)), OK),
    ("lowercase-scheme-ok", lambda w: [("authorization", f"bearer {w.token()}")], OK),
    ("es256-ok", lambda w: bearer(w.token(w.ec)), OK),
    ("eddsa-ok", lambda w: bearer(w.token(w.ed)), OK),
    (
        "service-account-email",
        lambda w: bearer(w.token(email="ci@acme-prod.iam.gserviceaccount.com")),
        OK,
    ),
]


def _outcome(world: AuthnWorld, metadata: list[tuple[str, str]]) -> tuple[tuple[str, str], str]:
    try:
        world.get(metadata)
    except core_exceptions.GoogleAPICallError as err:
        return (err.grpc_status_code.name, err.reason or ""), err.message
    return OK, ""


@pytest.mark.parametrize(("build", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_token_table(
    world: AuthnWorld, build: Any, expected: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    metadata = build(world)
    before = world.upstream_calls()
    with caplog.at_level(logging.DEBUG):
        (code, reason), message = _outcome(world, metadata)
    assert (code, reason) == expected, message
    assert world.upstream_calls() == before + (1 if expected == OK else 0)
    for _, value in metadata:
        token = value.partition(" ")[2]
        for part in [token, *token.split(".")]:
            if len(part) >= 12:
                assert part not in message
                assert part not in caplog.text
    if expected == SCOPE:
        assert message == "Request had insufficient authentication scopes."
    assert world.idp.hit_count("/evil") == 0  # jku/x5u are never followed


def test_table_is_big_enough() -> None:
    assert len([c for c in CASES if c[2] != OK]) >= 30


def test_unknown_kid_refetches_once(world: AuthnWorld) -> None:
    stranger = rsa_key(kid=f"stranger-{uuid.uuid4().hex[:6]}", fresh=True)
    before = world.idp.hit_count("/jwks")
    (code, reason), _ = _outcome(world, bearer(stranger.sign(claims(ISSUER, AUDIENCE))))
    assert (code, reason) == INVALID
    assert world.idp.hit_count("/jwks") - before <= 1


def test_a_flood_of_random_kids_is_rate_limited(loop: LoopThread, tmp_path: Path) -> None:
    with authn_world(loop, tmp_path) as world:
        world.get(bearer(world.token()))  # keys fetched
        before = world.idp.hit_count("/jwks")
        for _ in range(100):
            key = SigningKey(uuid.uuid4().hex, "RS256", world.rsa.private)
            (code, reason), _ = _outcome(world, bearer(key.sign(claims(ISSUER, AUDIENCE))))
            assert (code, reason) == INVALID
        assert world.idp.hit_count("/jwks") - before <= 1


def test_key_rotation_at_the_idp(loop: LoopThread, tmp_path: Path) -> None:
    with authn_world(loop, tmp_path, jwks_min_refresh_interval_s=0.2, jwks_ttl_s=1) as world:
        old = world.rsa
        assert _outcome(world, bearer(world.token(old)))[0] == OK
        new = rsa_key(kid="rsa-2", fresh=True)
        world.idp.serve_json("/jwks", jwks(old, new, world.ec, world.ed))
        time.sleep(0.3)  # past the minimum refetch interval
        assert _outcome(world, bearer(world.token(new)))[0] == OK  # new kid: one refetch
        assert _outcome(world, bearer(world.token(old, jti="again")))[0] == OK  # old still listed
        world.idp.serve_json("/jwks", jwks(new, world.ec, world.ed))
        time.sleep(1.1)  # past the TTL: the next call refetches and old is gone
        assert _outcome(world, bearer(world.token(old, jti="after-removal")))[0] == INVALID


def test_jwks_down_with_keys_cached_still_accepts(loop: LoopThread, tmp_path: Path) -> None:
    with authn_world(loop, tmp_path, jwks_ttl_s=0.2) as world:
        assert _outcome(world, bearer(world.token()))[0] == OK
        world.idp.down = True
        time.sleep(0.3)  # keys are stale now, the refetch fails, the grace period holds
        assert _outcome(world, bearer(world.token(jti="while-down")))[0] == OK


def test_jwks_down_without_keys_is_unavailable_then_recovers(
    loop: LoopThread, tmp_path: Path
) -> None:
    # Retries back off from 0.1 s, capped at 0.1 s: the keys are back within moments.
    backoff = {"jwks_retry_initial_s": 0.1, "jwks_retry_max_s": 0.1}
    with authn_world(
        loop, tmp_path, jwks_up=False, jwks_min_refresh_interval_s=0.2, **backoff
    ) as world:
        (code, _), _ = _outcome(world, bearer(world.token()))
        assert code == "UNAVAILABLE"
        assert world.upstream_calls() == 0
        world.idp.down = False
        time.sleep(0.3)
        assert _outcome(world, bearer(world.token(jti="after")))[0] == OK


def test_identity_reaches_upstream_and_authorization_does_not(world: AuthnWorld) -> None:
    token = world.token(email="carol@acme.example", jti="identity")
    world.get([*bearer(token), ("x-opsgate-principal", "user:admin@acme.example")])
    record = world.upstream.calls()[-1]
    received = dict(record.metadata)
    assert received["x-opsgate-principal"] == "user:carol@acme.example"  # not the spoofed one
    assert "authorization" not in received


def test_an_internationalised_email_reaches_the_upstream_percent_encoded(world: AuthnWorld) -> None:
    world.get(bearer(world.token(email="zoë@acme.example", jti="idn")))
    received = dict(world.upstream.calls()[-1].metadata)
    assert received["x-opsgate-principal"] == "user:zo%C3%AB@acme.example"


def test_the_upstream_gets_the_canonical_email_and_a_look_alike_exactly(
    world: AuthnWorld,
) -> None:
    world.get(bearer(world.token(email="Carol@ACME.example", jti="case")))
    assert dict(world.upstream.calls()[-1].metadata)["x-opsgate-principal"] == (
        "user:carol@acme.example"
    )
    # The Kelvin sign would lower-case to 'k'; kept exact, it is nobody's ASCII member.
    world.get(bearer(world.token(email="\u212aim@acme.example", jti="kelvin")))
    assert dict(world.upstream.calls()[-1].metadata)["x-opsgate-principal"] == (
        "user:%E2%84%AAim@acme.example"
    )


def test_an_issuer_vouching_for_its_emails_needs_no_email_verified(
    loop: LoopThread, tmp_path: Path
) -> None:
    with authn_world(loop, tmp_path, emails_verified=True) as world:
        assert _outcome(world, bearer(world.token(email_verified=None)))[0] == OK
        assert _outcome(world, bearer(world.token(email_verified=False)))[0] == INVALID


def test_crlf_in_an_email_cannot_forge_a_second_header(world: AuthnWorld) -> None:
    email = "bob@acme.example\r\nx-opsgate-principal: user:alice@acme.example"
    world.get(bearer(world.token(email=email, jti="crlf")))
    received = [v for k, v in world.upstream.calls()[-1].metadata if k == "x-opsgate-principal"]
    assert received == ["user:bob@acme.example%0D%0Ax-opsgate-principal: user:alice@acme.example"]
