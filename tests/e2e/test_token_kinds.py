"""The token kinds besides plain issuer JWTs, end to end: Google ID tokens, self-signed
service-account JWTs, opaque tokens by RFC 7662 introspection, and Google access tokens (ya29.)
by tokeninfo; at opsgate's own door and through a real Envoy asking opsgate (the `door` param).

Each kind runs a real gateway in front of a real reference upstream, with a real local HTTP IdP
serving keys or answering token checks, and is called through google-api-core's
OperationsClient. Every call checks that a refused call never reaches the upstream and that an
accepted one reaches it with the verified member in `x-opsgate-principal`; every test checks
that no token (nor any 12-character piece of one) and no client secret shows up in an error
message or a log record.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.api_core import exceptions as core_exceptions
from google.api_core import operations_v1

from gateway.config import load_settings
from gateway.envoy.bootstrap import GRPC_LISTENER, EnvoyLayout, render_bootstrap
from gateway.outcome import AccessLogSink, CallOutcome
from gateway.reference_upstream import ReferenceUpstream, start_reference_upstream
from gateway.server import Gateway, start_gateway
from gateway.testing.envoy import envoy_process
from gateway.testing.idp import LocalIdp, Request, local_idp
from gateway.testing.loop import LoopThread
from gateway.testing.tokens import SigningKey, claims, ec_key, jwks, rsa_key
from tests.support.stack import FULL_PROFILE, OPEN_POLICY, quiet_audit

NAME = "projects/acme/locations/us-central1/operations/token-kinds"
AUD = "https://opsgate.acme.example"
CLOUD = "https://www.googleapis.com/auth/cloud-platform"
GOOGLE_ISS = "https://accounts.google.com"
CERTS = "/oauth2/v3/certs"
CI_BOT = "ci-bot@acme-prod.iam.gserviceaccount.com"
DEPLOY = "deploy@acme-prod.iam.gserviceaccount.com"
OPAQUE_ISSUER = "https://opaque.idp.test"
SCOPE_MESSAGE = "Request had insufficient authentication scopes."

OK = ("OK", "")
INVALID = ("UNAUTHENTICATED", "JWT_TOKEN_INVALID")
EXPIRED = ("UNAUTHENTICATED", "ACCESS_TOKEN_EXPIRED")
UNSUPPORTED = ("UNAUTHENTICATED", "ACCESS_TOKEN_TYPE_UNSUPPORTED")
SCOPE = ("PERMISSION_DENIED", "ACCESS_TOKEN_SCOPE_INSUFFICIENT")
UNAVAILABLE = ("UNAVAILABLE", "AUTHENTICATION_BACKEND_UNAVAILABLE")
LEAK_WINDOW = 12  # no run of this many characters of a secret may show up anywhere


# --- a running stack and the calls made through it -------------------------------------------


class LoggedCalls(AccessLogSink):
    """The gateway's access log, counting the calls it has logged so a test can wait for one."""

    def __init__(self) -> None:
        super().__init__()
        self._logged = 0
        self._changed = threading.Condition()

    def record(self, outcome: CallOutcome) -> None:
        super().record(outcome)
        with self._changed:
            self._logged += 1
            self._changed.notify_all()

    @property
    def logged(self) -> int:
        with self._changed:
            return self._logged

    def wait_beyond(self, count: int, timeout: float = 5.0) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: self._logged > count, timeout), "call not logged"


@dataclass
class Stack:
    """An upstream holding NAME and a gateway in front of it, configured by `authentication`."""

    idp: LocalIdp
    upstream: ReferenceUpstream
    gateway: Gateway
    client: operations_v1.OperationsClient
    access_log: LoggedCalls


def authorization(tmp: Path) -> dict[str, Any]:
    """A policy letting every authenticated caller do anything under projects/acme, so these
    tests stay about authentication."""
    policy = tmp / "open-policy.yaml"
    policy.write_text(OPEN_POLICY)
    return {"authorization": {"policy_file": str(policy), "profile_file": str(FULL_PROFILE)}}


# Every test here runs twice: at opsgate's own gRPC door, and through a real Envoy that asks
# opsgate as its external authorizer; each token kind must be judged the same by both.
_DOOR = {"name": "own"}


@pytest.fixture(scope="module", params=["own", "envoy"], autouse=True)
def door(request: pytest.FixtureRequest) -> Iterator[str]:
    _DOOR["name"] = request.param
    yield request.param
    _DOOR["name"] = "own"


@contextmanager
def running_stack(
    loop: LoopThread, config_path: Path, idp: LocalIdp, authentication: dict[str, Any]
) -> Iterator[Stack]:
    behind_envoy = _DOOR["name"] == "envoy"
    upstream = loop.run(start_reference_upstream("127.0.0.1:0", seed=False))
    try:
        upstream.store.create(NAME)
        config = {
            "listen": "127.0.0.1:0",
            "upstream": {"target": upstream.address},
            "authentication": authentication,
            **authorization(config_path.parent),
            "audit": quiet_audit(config_path.parent),
            **({"envoy": {}} if behind_envoy else {}),
        }
        config_path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        access_log = LoggedCalls()
        settings = load_settings(config_path)
        gateway = loop.run(start_gateway(settings, sink=access_log))
        with ExitStack() as running:
            running.callback(lambda: loop.run(gateway.stop(0)))
            address = gateway.address
            if behind_envoy:
                layout = EnvoyLayout(
                    listen="127.0.0.1:0",
                    upstream=upstream.address,
                    authorizer=gateway.address,
                    admin="127.0.0.1:0",
                )
                envoy = running.enter_context(
                    envoy_process(render_bootstrap(settings, layout), name="envoy-tokens")
                )
                address = envoy.address(GRPC_LISTENER)
            channel = running.enter_context(grpc.insecure_channel(address))
            client = operations_v1.OperationsClient(channel)
            yield Stack(idp, upstream, gateway, client, access_log)
    finally:
        loop.run(upstream.stop(0))


@dataclass(frozen=True)
class Outcome:
    """What the caller got back, and the member the upstream was told (None if not reached)."""

    status: tuple[str, str]  # (grpc code name, ErrorInfo reason)
    message: str = ""
    member: str | None = None


def pieces(secret: str) -> set[str]:
    """Every LEAK_WINDOW-long run of `secret`: any longer leaked run contains one of them."""
    if len(secret) <= LEAK_WINDOW:
        return {secret}
    return {secret[i : i + LEAK_WINDOW] for i in range(len(secret) - LEAK_WINDOW + 1)}


class Caller:
    """Calls GetOperation with a bearer token; remembers tokens, secrets and error messages.

    Each call returns once the gateway has logged it (a refusal's access line may be written
    just after the caller has its answer), so the leak check sees every call's log.
    """

    def __init__(self) -> None:
        self.watched: list[str] = []
        self.messages: list[str] = []
        self.count = 0

    def watch(self, secret: str) -> None:
        self.watched.append(secret)

    def __call__(self, stack: Stack, token: str) -> Outcome:
        self.watch(token)
        self.count += 1
        logged = stack.access_log.logged
        outcome = self._call(stack, token)
        stack.access_log.wait_beyond(logged)
        return outcome

    def _call(self, stack: Stack, token: str) -> Outcome:
        before = len(stack.upstream.calls())
        try:
            stack.client.get_operation(
                NAME, metadata=[("authorization", f"Bearer {token}")], retry=None, timeout=10
            )
        except core_exceptions.GoogleAPICallError as err:
            self.messages += [err.message, str(err)]
            assert len(stack.upstream.calls()) == before, "a refused call reached the upstream"
            code = err.grpc_status_code.name if err.grpc_status_code else "UNKNOWN"
            return Outcome((code, err.reason or ""), err.message)
        calls = stack.upstream.calls()
        assert len(calls) == before + 1, "an accepted call did not reach the upstream once"
        member = calls[-1].header("x-opsgate-principal")
        return Outcome(OK, member=member if isinstance(member, str) else None)

    def assert_nothing_leaked(self, records: list[logging.LogRecord]) -> None:
        # Every call's access line was captured, so the search below is not vacuous.
        assert sum(record.name == "opsgate.access" for record in records) >= self.count
        formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
        log_text = "\n".join(formatter.format(record) for record in records)
        for secret in self.watched:
            for piece in pieces(secret):
                assert piece not in log_text, "a token or secret reached the log"
                for message in self.messages:
                    assert piece not in message, "a token or secret reached an error message"


@pytest.fixture
def call(caplog: pytest.LogCaptureFixture) -> Iterator[Caller]:
    """The test's caller; afterwards, nothing it sent may appear in messages or logs."""
    caplog.set_level(logging.DEBUG)
    caller = Caller()
    yield caller
    caller.assert_nothing_leaked([*caplog.get_records("setup"), *caplog.get_records("call")])


def check(outcome: Outcome, expected: tuple[str, str], member: str | None) -> None:
    assert outcome.status == expected, outcome.message
    assert outcome.member == member
    if expected == SCOPE:
        assert outcome.message == SCOPE_MESSAGE


def now() -> int:
    return int(time.time())


def lifetime(seconds: int, *, ago: int = 0) -> dict[str, Any]:
    """iat and exp of a token issued `ago` seconds back that lives `seconds`."""
    issued = now() - ago
    return {"iat": issued, "exp": issued + seconds}


# --- Google ID tokens ------------------------------------------------------------------------


@dataclass
class GoogleWorld:
    stack: Stack
    rsa: SigningKey
    ec: SigningKey

    def token(self, key: SigningKey | None = None, iss: str = GOOGLE_ISS, **extra: Any) -> str:
        fields: dict[str, Any] = {"email": "gina@acme.example", "scope": None, **extra}
        return (key or self.rsa).sign(claims(iss, AUD, **fields))


@pytest.fixture(scope="class")
def google(loop: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GoogleWorld]:
    rsa, ec = rsa_key(kid="google-rsa-1"), ec_key("ES256", kid="google-ec-1")
    with local_idp() as idp:
        # The EC key is published too, so the ES256 case is refused for its alg, not its kid.
        idp.serve_json(CERTS, jwks(rsa, ec))
        authentication = {"google_id_tokens": {"audiences": [AUD], "certs_url": idp.url(CERTS)}}
        path = tmp_path_factory.mktemp("google") / "opsgate.yaml"
        with running_stack(loop, path, idp, authentication) as stack:
            yield GoogleWorld(stack, rsa, ec)


GoogleCase = tuple[str, Callable[[GoogleWorld], str], tuple[str, str], str | None]
GOOGLE_CASES: list[GoogleCase] = [
    ("iss-https", lambda w: w.token(), OK, "user:gina@acme.example"),
    ("iss-bare-host", lambda w: w.token(iss="accounts.google.com"), OK, "user:gina@acme.example"),
    ("aud-in-list", lambda w: w.token(aud=["other", AUD]), OK, "user:gina@acme.example"),
    ("lifetime-exactly-1h", lambda w: w.token(**lifetime(3600)), OK, "user:gina@acme.example"),
    (
        "service-account-email",
        lambda w: w.token(email=CI_BOT),
        OK,
        f"serviceAccount:{CI_BOT}",
    ),
    ("wrong-audience", lambda w: w.token(aud="https://elsewhere.example"), INVALID, None),
    ("es256-signed", lambda w: w.token(w.ec), INVALID, None),
    ("expired", lambda w: w.token(**lifetime(900, ago=1000)), EXPIRED, None),
    ("lifetime-over-1h", lambda w: w.token(**lifetime(3700)), INVALID, None),
    ("lifetime-over-1h-no-iat", lambda w: w.token(iat=None, exp=now() + 7200), INVALID, None),
    (
        "look-alike-issuer",
        lambda w: w.token(iss="https://accounts.google.com.evil.test"),
        INVALID,
        None,
    ),
    ("email-unverified", lambda w: w.token(email_verified=False), INVALID, None),
    ("email-verified-absent", lambda w: w.token(email_verified=None), INVALID, None),
    (
        "signed-by-another-key",
        lambda w: w.token(rsa_key(kid="google-rsa-1", fresh=True)),
        INVALID,
        None,
    ),
]


class TestGoogleIdTokens:
    @pytest.mark.parametrize(
        ("build", "expected", "member"),
        [case[1:] for case in GOOGLE_CASES],
        ids=[case[0] for case in GOOGLE_CASES],
    )
    def test_token(
        self,
        google: GoogleWorld,
        call: Caller,
        build: Callable[[GoogleWorld], str],
        expected: tuple[str, str],
        member: str | None,
    ) -> None:
        check(call(google.stack, build(google)), expected, member)

    def test_certs_are_fetched_once_not_per_call(self, google: GoogleWorld, call: Caller) -> None:
        same = google.token(jti="same")
        different = [google.token(jti=f"different-{i}") for i in range(4)]
        different.append(google.token(iss="accounts.google.com", jti="bare-host"))
        for token in [same, same, same, *different]:
            assert call(google.stack, token).status == OK
        assert google.stack.idp.hit_count(CERTS) == 1


# --- self-signed service-account JWTs --------------------------------------------------------


def sa_path(email: str) -> str:
    return "/sa/" + urllib.parse.quote(email, safe="@")


@dataclass
class ServiceAccountWorld:
    open: Stack  # any service account
    restricted: Stack  # allowed: [DEPLOY]
    ci_bot: SigningKey
    deploy: SigningKey
    impostor: SigningKey  # ci-bot's kid, but a key ci-bot never published

    def token(self, key: SigningKey | None = None, account: str = CI_BOT, **extra: Any) -> str:
        fields: dict[str, Any] = {"iss": account, "sub": account, "aud": AUD, **lifetime(600)}
        fields.update(extra)
        return (key or self.ci_bot).sign({k: v for k, v in fields.items() if v is not None})


@pytest.fixture(scope="class")
def service_accounts(
    loop: LoopThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceAccountWorld]:
    ci_bot = rsa_key(kid="ci-bot-key-1", fresh=True)
    deploy = rsa_key(kid="deploy-key-1")
    impostor = rsa_key(kid="ci-bot-key-1", fresh=True)
    tmp = tmp_path_factory.mktemp("service-accounts")
    with local_idp() as idp:
        idp.serve_json(sa_path(CI_BOT), jwks(ci_bot))
        idp.serve_json(sa_path(DEPLOY), jwks(deploy))
        config = {"audiences": [AUD], "keys_url": idp.url("/sa/{email}")}
        with (
            running_stack(loop, tmp / "open.yaml", idp, {"service_account_jwts": config}) as open_,
            running_stack(
                loop,
                tmp / "restricted.yaml",
                idp,
                {"service_account_jwts": {**config, "allowed": [DEPLOY]}},
            ) as restricted,
        ):
            yield ServiceAccountWorld(open_, restricted, ci_bot, deploy, impostor)


SaCase = tuple[str, Callable[[ServiceAccountWorld], str], tuple[str, str], str | None]
SA_CASES: list[SaCase] = [
    ("aud", lambda w: w.token(), OK, f"serviceAccount:{CI_BOT}"),
    ("aud-in-list", lambda w: w.token(aud=["other", AUD]), OK, f"serviceAccount:{CI_BOT}"),
    (
        "no-aud-cloud-platform-scope",
        lambda w: w.token(aud=None, scope=f"openid {CLOUD}"),
        OK,
        f"serviceAccount:{CI_BOT}",
    ),
    (
        "email-claim-does-not-name-the-caller",
        lambda w: w.token(email="admin@acme.example", email_verified=True),
        OK,
        f"serviceAccount:{CI_BOT}",
    ),
    ("no-aud-no-scope", lambda w: w.token(aud=None), INVALID, None),
    ("no-aud-empty-scope", lambda w: w.token(aud=None, scope=""), INVALID, None),
    (
        "other-aud-despite-scope",
        lambda w: w.token(aud="https://elsewhere.example", scope=CLOUD),
        INVALID,
        None,
    ),
    ("no-aud-scope-lacks-cloud-platform", lambda w: w.token(aud=None, scope="openid"), SCOPE, None),
    ("iss-differs-from-sub", lambda w: w.token(sub=DEPLOY), INVALID, None),
    (
        "not-a-service-account",
        lambda w: w.token(account="ci-bot@acme.example"),
        INVALID,
        None,
    ),
    ("key-not-published-by-account", lambda w: w.token(w.impostor), INVALID, None),
    ("unknown-kid", lambda w: w.token(rsa_key(kid="never-published")), INVALID, None),
    ("signed-by-another-account", lambda w: w.token(w.deploy), INVALID, None),
    ("es256-signed", lambda w: w.token(ec_key("ES256", kid="ci-bot-key-1")), INVALID, None),
    ("expired", lambda w: w.token(**lifetime(900, ago=1000)), EXPIRED, None),
    ("lifetime-over-1h", lambda w: w.token(**lifetime(3700)), INVALID, None),
]


class TestServiceAccountJwts:
    @pytest.mark.parametrize(
        ("build", "expected", "member"),
        [case[1:] for case in SA_CASES],
        ids=[case[0] for case in SA_CASES],
    )
    def test_token(
        self,
        service_accounts: ServiceAccountWorld,
        call: Caller,
        build: Callable[[ServiceAccountWorld], str],
        expected: tuple[str, str],
        member: str | None,
    ) -> None:
        check(call(service_accounts.open, build(service_accounts)), expected, member)

    def test_account_outside_allowed_is_refused_without_a_key_fetch(
        self, service_accounts: ServiceAccountWorld, call: Caller
    ) -> None:
        world = service_accounts
        idp = world.restricted.idp
        fetched = idp.hit_count(sa_path(CI_BOT))
        check(call(world.restricted, world.token()), INVALID, None)
        assert idp.hit_count(sa_path(CI_BOT)) == fetched
        allowed = world.token(world.deploy, account=DEPLOY)
        check(call(world.restricted, allowed), OK, f"serviceAccount:{DEPLOY}")

    def test_account_keys_are_fetched_once(
        self, service_accounts: ServiceAccountWorld, call: Caller
    ) -> None:
        world = service_accounts
        for i in range(4):
            assert call(world.open, world.token(jti=f"again-{i}")).status == OK
        # However many ci-bot calls the open gateway saw (any test order), one fetch served them.
        assert world.open.idp.hit_count(sa_path(CI_BOT)) == 1


# --- opaque tokens by RFC 7662 introspection -------------------------------------------------

INTROSPECT = "/introspect"
OPAQUE_SECRET = "gw-secret-" + secrets.token_hex(12)


@dataclass
class OpaqueWorld:
    stack: Stack
    secret: str
    active: dict[str, dict[str, Any]]  # token -> what the IdP says about it beyond the defaults

    def new_token(self, **answer: Any) -> str:
        """A token the IdP will call active, with `answer` over the default answer."""
        token = unknown_opaque()
        self.active[token] = answer
        return token


def unknown_opaque() -> str:
    return "opq_" + secrets.token_urlsafe(24).replace(".", "_")


def introspection_idp(idp: LocalIdp, active: dict[str, dict[str, Any]]) -> None:
    def introspect(request: Request) -> tuple[int, Any]:
        token = request.form.get("token", [""])[0]
        if token not in active:
            return 200, {"active": False}
        answer = {
            "active": True,
            "sub": "u1",
            "email": "dana@acme.example",
            "email_verified": True,
            "scope": CLOUD,
            "exp": now() + 300,
            **active[token],
        }
        return 200, {key: value for key, value in answer.items() if value is not None}

    idp.route(INTROSPECT, introspect)


def opaque_authentication(
    idp: LocalIdp, issuer_options: dict[str, Any] | None = None, **introspection: Any
) -> dict[str, Any]:
    fields = {"endpoint": idp.url(INTROSPECT), "client_id": "gw", **introspection}
    issuer = {"issuer": OPAQUE_ISSUER, "audiences": ["x"], "introspection": fields}
    return {"issuers": [{**issuer, **(issuer_options or {})}]}


def basic_credentials(request: Request) -> str:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    assert scheme == "Basic"
    return base64.b64decode(encoded).decode()


@contextmanager
def opaque_world(
    loop: LoopThread,
    tmp: Path,
    issuer_options: dict[str, Any] | None = None,
    **introspection: Any,
) -> Iterator[OpaqueWorld]:
    """An introspection-only issuer whose client secret is in a file."""
    secret_file = tmp / "introspection-secret"
    secret_file.write_text(OPAQUE_SECRET + "\n")
    active: dict[str, dict[str, Any]] = {}
    with local_idp() as idp:
        introspection_idp(idp, active)
        authentication = opaque_authentication(
            idp, issuer_options, client_secret_file=str(secret_file), **introspection
        )
        with running_stack(loop, tmp / "opsgate.yaml", idp, authentication) as stack:
            yield OpaqueWorld(stack, OPAQUE_SECRET, active)


@pytest.fixture(scope="class")
def opaque(loop: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpaqueWorld]:
    with opaque_world(loop, tmp_path_factory.mktemp("opaque")) as world:
        yield world


OpaqueCase = tuple[str, Callable[[OpaqueWorld], str], tuple[str, str], str | None]
OPAQUE_CASES: list[OpaqueCase] = [
    ("active", lambda w: w.new_token(), OK, "user:dana@acme.example"),
    (
        "active-service-account",
        lambda w: w.new_token(email=CI_BOT),
        OK,
        f"serviceAccount:{CI_BOT}",
    ),
    ("unknown-token", lambda w: unknown_opaque(), INVALID, None),
    ("scope-lacks-cloud-platform", lambda w: w.new_token(scope="openid"), SCOPE, None),
    ("active-but-past-exp", lambda w: w.new_token(exp=now() - 60), EXPIRED, None),
    ("email-unverified", lambda w: w.new_token(email_verified=False), INVALID, None),
    # RFC 7662 answers rarely say; an issuer that does not vouch for its emails is refused.
    ("email-verified-absent", lambda w: w.new_token(email_verified=None), INVALID, None),
    ("no-email", lambda w: w.new_token(email=None), INVALID, None),
]


class TestIntrospection:
    @pytest.mark.parametrize(
        ("build", "expected", "member"),
        [case[1:] for case in OPAQUE_CASES],
        ids=[case[0] for case in OPAQUE_CASES],
    )
    def test_token(
        self,
        opaque: OpaqueWorld,
        call: Caller,
        build: Callable[[OpaqueWorld], str],
        expected: tuple[str, str],
        member: str | None,
    ) -> None:
        call.watch(opaque.secret)
        idp = opaque.stack.idp
        asked = idp.hit_count(INTROSPECT)
        check(call(opaque.stack, build(opaque)), expected, member)
        assert idp.hit_count(INTROSPECT) == asked + 1

    def test_answer_is_cached(self, opaque: OpaqueWorld, call: Caller) -> None:
        call.watch(opaque.secret)
        token, idp = opaque.new_token(), opaque.stack.idp
        check(call(opaque.stack, token), OK, "user:dana@acme.example")
        asked = idp.hit_count(INTROSPECT)
        check(call(opaque.stack, token), OK, "user:dana@acme.example")
        assert idp.hit_count(INTROSPECT) == asked

    def test_endpoint_down_is_unavailable_and_not_cached(
        self, opaque: OpaqueWorld, call: Caller
    ) -> None:
        call.watch(opaque.secret)
        token, idp = opaque.new_token(), opaque.stack.idp
        idp.down = True
        try:
            check(call(opaque.stack, token), UNAVAILABLE, None)
        finally:
            idp.down = False
        check(call(opaque.stack, token), OK, "user:dana@acme.example")

    def test_client_authenticates_and_token_goes_in_the_body(
        self, opaque: OpaqueWorld, call: Caller
    ) -> None:
        call.watch(opaque.secret)
        token = opaque.new_token()
        check(call(opaque.stack, token), OK, "user:dana@acme.example")
        request = opaque.stack.idp.requests[-1]
        assert (request.method, request.path, request.query) == ("POST", INTROSPECT, {})
        assert request.form["token"] == [token]
        assert basic_credentials(request) == f"gw:{opaque.secret}"

    def test_revocation_is_seen_once_cache_ttl_s_has_passed(
        self, loop: LoopThread, tmp_path: Path, call: Caller
    ) -> None:
        """introspection.cache_ttl_s: "longest an answer is cached"; a token revoked at the
        IdP must be asked about again, and refused, once that time has passed."""
        call.watch(OPAQUE_SECRET)
        with opaque_world(loop, tmp_path, cache_ttl_s=0.5) as world:
            token = world.new_token()  # exp: five minutes away
            check(call(world.stack, token), OK, "user:dana@acme.example")
            del world.active[token]  # revoked: the IdP now answers {"active": false}
            time.sleep(0.7)
            check(call(world.stack, token), INVALID, None)
            assert world.stack.idp.hit_count(INTROSPECT) == 2

    def test_an_issuer_vouching_for_its_emails_needs_no_email_verified(
        self, loop: LoopThread, tmp_path: Path, call: Caller
    ) -> None:
        call.watch(OPAQUE_SECRET)
        with opaque_world(loop, tmp_path, {"emails_verified": True}) as world:
            check(
                call(world.stack, world.new_token(email_verified=None)),
                OK,
                "user:dana@acme.example",
            )
            check(call(world.stack, world.new_token(email_verified=False)), INVALID, None)

    def test_client_secret_from_environment(
        self, loop: LoopThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: Caller
    ) -> None:
        secret = "env-secret-" + secrets.token_hex(12)
        call.watch(secret)
        monkeypatch.setenv("OPSGATE_TEST_INTROSPECTION_SECRET", secret)
        active: dict[str, dict[str, Any]] = {}
        with local_idp() as idp:
            introspection_idp(idp, active)
            authentication = opaque_authentication(
                idp, client_secret_env="OPSGATE_TEST_INTROSPECTION_SECRET"
            )
            with running_stack(loop, tmp_path / "opsgate.yaml", idp, authentication) as stack:
                world = OpaqueWorld(stack, secret, active)
                check(call(stack, world.new_token()), OK, "user:dana@acme.example")
                check(call(stack, unknown_opaque()), INVALID, None)
                assert len(idp.requests) == 2
                assert {basic_credentials(r) for r in idp.requests} == {f"gw:{secret}"}


# --- Google access tokens by tokeninfo -------------------------------------------------------

TOKENINFO = "/tokeninfo"


@dataclass
class AccessTokenWorld:
    stack: Stack
    known: dict[str, dict[str, Any]]  # token -> tokeninfo's answer beyond the defaults

    def new_token(self, **answer: Any) -> str:
        token = unknown_ya29()
        self.known[token] = answer
        return token


def unknown_ya29() -> str:
    return "ya29.a0" + secrets.token_urlsafe(40).replace(".", "_")


def tokeninfo_idp(idp: LocalIdp, known: dict[str, dict[str, Any]]) -> None:
    def tokeninfo(request: Request) -> tuple[int, Any]:
        token = request.form.get("access_token", [""])[0]
        if token not in known:
            return 400, {"error": "invalid_token", "error_description": "Invalid Value"}
        answer = {
            "azp": "c",
            "aud": "c",
            "sub": "1",
            "scope": f"{CLOUD} openid",
            "exp": str(now() + 300),
            "expires_in": "299",
            "email": "erin@acme.example",
            "email_verified": "true",
            **known[token],
        }
        return 200, {key: value for key, value in answer.items() if value is not None}

    idp.route(TOKENINFO, tokeninfo)


@contextmanager
def access_token_world(loop: LoopThread, tmp: Path, **config: Any) -> Iterator[AccessTokenWorld]:
    known: dict[str, dict[str, Any]] = {}
    with local_idp() as idp:
        tokeninfo_idp(idp, known)
        authentication = {"google_access_tokens": {"tokeninfo_url": idp.url(TOKENINFO), **config}}
        with running_stack(loop, tmp / "opsgate.yaml", idp, authentication) as stack:
            yield AccessTokenWorld(stack, known)


@pytest.fixture(scope="class")
def access_tokens(
    loop: LoopThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AccessTokenWorld]:
    with access_token_world(loop, tmp_path_factory.mktemp("access-tokens")) as world:
        yield world


AccessCase = tuple[str, Callable[[AccessTokenWorld], str], tuple[str, str], str | None, int]
# (id, token builder, expected status, member at the upstream, tokeninfo requests it costs)
ACCESS_CASES: list[AccessCase] = [
    ("valid", lambda w: w.new_token(), OK, "user:erin@acme.example", 1),
    (
        "service-account",
        lambda w: w.new_token(email=DEPLOY),
        OK,
        f"serviceAccount:{DEPLOY}",
        1,
    ),
    ("unknown-to-google", lambda w: unknown_ya29(), INVALID, None, 1),
    ("scope-lacks-cloud-platform", lambda w: w.new_token(scope="openid email"), SCOPE, None, 1),
    ("past-exp", lambda w: w.new_token(exp=str(now() - 60)), EXPIRED, None, 1),
    ("email-unverified", lambda w: w.new_token(email_verified="false"), INVALID, None, 1),
    ("email-verified-absent", lambda w: w.new_token(email_verified=None), INVALID, None, 1),
    ("not-ya29-and-no-introspection", lambda w: "2YotnFZFEjr1zCsicMWpAA", UNSUPPORTED, None, 0),
]


class TestGoogleAccessTokens:
    @pytest.mark.parametrize(
        ("build", "expected", "member", "cost"),
        [case[1:] for case in ACCESS_CASES],
        ids=[case[0] for case in ACCESS_CASES],
    )
    def test_token(
        self,
        access_tokens: AccessTokenWorld,
        call: Caller,
        build: Callable[[AccessTokenWorld], str],
        expected: tuple[str, str],
        member: str | None,
        cost: int,
    ) -> None:
        idp = access_tokens.stack.idp
        asked = idp.hit_count(TOKENINFO)
        check(call(access_tokens.stack, build(access_tokens)), expected, member)
        assert idp.hit_count(TOKENINFO) == asked + cost

    def test_answer_is_cached(self, access_tokens: AccessTokenWorld, call: Caller) -> None:
        token, idp = access_tokens.new_token(), access_tokens.stack.idp
        check(call(access_tokens.stack, token), OK, "user:erin@acme.example")
        asked = idp.hit_count(TOKENINFO)
        check(call(access_tokens.stack, token), OK, "user:erin@acme.example")
        assert idp.hit_count(TOKENINFO) == asked

    def test_token_is_posted_never_in_a_url(
        self, access_tokens: AccessTokenWorld, call: Caller
    ) -> None:
        good, bad = access_tokens.new_token(), unknown_ya29()
        check(call(access_tokens.stack, good), OK, "user:erin@acme.example")
        check(call(access_tokens.stack, bad), INVALID, None)
        requests = access_tokens.stack.idp.requests
        assert [r.form["access_token"] for r in requests[-2:]] == [[good], [bad]]
        for request in requests:
            assert (request.method, request.path, request.query) == ("POST", TOKENINFO, {})

    def test_revocation_is_seen_once_cache_ttl_s_has_passed(
        self, loop: LoopThread, tmp_path: Path, call: Caller
    ) -> None:
        """google_access_tokens.cache_ttl_s: "longest an answer is cached"; a token revoked
        at Google must be asked about again, and refused, once that time has passed."""
        with access_token_world(loop, tmp_path, cache_ttl_s=0.5) as world:
            token = world.new_token()  # exp: five minutes away
            check(call(world.stack, token), OK, "user:erin@acme.example")
            del world.known[token]  # revoked: tokeninfo now answers 400 invalid_token
            time.sleep(0.7)
            check(call(world.stack, token), INVALID, None)
            assert world.stack.idp.hit_count(TOKENINFO) == 2
