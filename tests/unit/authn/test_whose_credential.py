"""Whose credential it was: Google's help link only for Google's, and another issuer's callers
named in their issuer's namespace (never Google's principal://goog/) in audit records."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.audit.logentry import to_log_entry
from gateway.audit.query import RecordFilter
from gateway.authn.factory import build_authn
from gateway.authn.principal import Principal
from gateway.authn.settings import AuthnSettings, IssuerConfig, ServiceAccountJwtConfig
from gateway.errors import (
    INVALID_CREDENTIALS_MESSAGE,
    MISSING_CREDENTIALS_MESSAGE,
    OTHER_INVALID_CREDENTIALS_MESSAGE,
    OTHER_MISSING_CREDENTIALS_MESSAGE,
    Unauthenticated,
    is_missing_credentials,
    token_expired,
    without_google_help,
)
from gateway.testing.tokens import SigningKey, claims, jwks, rsa_key
from tests.unit.audit.builders import event

CORP = "https://login.corp.example/oauth2"
GOOGLE = "https://accounts.google.com"
AUD = "opsgate"
HELP = "https://developers.google.com/"


def test_the_other_words_keep_the_refusal_and_drop_only_googles_link() -> None:
    google = token_expired("exp passed")
    other = without_google_help(google)
    assert (other.reason, other.domain, other.log_detail, other.code) == (
        google.reason,
        google.domain,
        google.log_detail,
        google.code,
    )
    assert HELP in google.message and HELP not in other.message
    assert other.message == OTHER_INVALID_CREDENTIALS_MESSAGE
    # Google's own first sentence stays: clients matching on it still match.
    assert other.message.split(". ")[0] == google.message.split(". ")[0]
    assert without_google_help(other) is other
    for message in (MISSING_CREDENTIALS_MESSAGE, OTHER_MISSING_CREDENTIALS_MESSAGE):
        assert is_missing_credentials(message)
    assert not is_missing_credentials(INVALID_CREDENTIALS_MESSAGE)


# --- the Authenticator's rule ----------------------------------------------------------------


def _authenticator(tmp_path: Path, key: SigningKey, *, google: bool, corp: bool = True) -> Any:
    """Issuers with keys in a file: the corporate IdP, and Google's issuer (a configured issuer
    entry with Google's iss is Google's, as google_id_tokens is)."""
    keys = tmp_path / "jwks.json"
    keys.write_text(json.dumps(jwks(key)))
    issuers = []
    if corp:
        issuers.append(IssuerConfig(issuer=CORP, audiences=(AUD,), jwks_file=keys))
    if google:
        issuers.append(IssuerConfig(issuer=GOOGLE, audiences=(AUD,), jwks_file=keys))
    return build_authn(AuthnSettings(issuers=tuple(issuers))).authenticator


def _refusal(authenticator: Any, token: str | None) -> Unauthenticated:
    metadata = [] if token is None else [("authorization", f"Bearer {token}")]

    async def verify() -> None:
        await authenticator.verify(metadata)

    with pytest.raises(Unauthenticated) as raised:
        asyncio.run(verify())
    return raised.value


def _expired() -> dict[str, int]:
    return {"iat": int(time.time()) - 1000, "exp": int(time.time()) - 400}


KEY = rsa_key(kid="k1")
# (id, Google among the accepted, the token, Google's link expected, reason). Tokens are signed
# when the test runs, not when the module is collected: a suite runs longer than their ten
# minutes of life.
CASES: list[tuple[str, bool, Callable[[], str | None], bool, str]] = [
    ("corp-expired", True, lambda: KEY.sign(claims(CORP, AUD, **_expired())), False, "ACCESS_TOKEN_EXPIRED"),
    ("corp-wrong-aud", True, lambda: KEY.sign(claims(CORP, "other")), False, "JWT_TOKEN_INVALID"),
    ("corp-unverified-email", True, lambda: KEY.sign(claims(CORP, AUD, email_verified=False)), False, "JWT_TOKEN_INVALID"),
    ("google-expired", True, lambda: KEY.sign(claims(GOOGLE, AUD, **_expired())), True, "ACCESS_TOKEN_EXPIRED"),
    ("google-wrong-aud", True, lambda: KEY.sign(claims(GOOGLE, AUD + "x")), True, "JWT_TOKEN_INVALID"),
    ("none-google-accepted", True, lambda: None, True, "CREDENTIALS_MISSING"),
    ("none-corp-only", False, lambda: None, False, "CREDENTIALS_MISSING"),
    ("not-a-jwt-google-accepted", True, lambda: "a.b.c", True, "JWT_TOKEN_INVALID"),
    ("not-a-jwt-corp-only", False, lambda: "a.b.c", False, "JWT_TOKEN_INVALID"),
    ("untrusted-issuer-corp-only", False, lambda: KEY.sign(claims(GOOGLE, AUD)), False, "JWT_TOKEN_INVALID"),
    ("bad-characters-corp-only", False, lambda: "a b", False, "JWT_TOKEN_INVALID"),
    ("opaque-nobody-checks-corp-only", False, lambda: "opaque", False, "ACCESS_TOKEN_TYPE_UNSUPPORTED"),
    ("ya29-is-googles-even-unaccepted", False, lambda: "ya29.abc", True, "ACCESS_TOKEN_TYPE_UNSUPPORTED"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("google", "token", "linked", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_googles_link_only_for_googles_credentials(
    tmp_path: Path, google: bool, token: Callable[[], str | None], linked: bool, reason: str
) -> None:
    refusal = _refusal(_authenticator(tmp_path, KEY, google=google), token())
    assert refusal.reason == reason
    assert (HELP in refusal.message) is linked
    expected = {
        (True, True): MISSING_CREDENTIALS_MESSAGE,
        (True, False): OTHER_MISSING_CREDENTIALS_MESSAGE,
        (False, True): INVALID_CREDENTIALS_MESSAGE,
        (False, False): OTHER_INVALID_CREDENTIALS_MESSAGE,
    }[(reason == "CREDENTIALS_MISSING", linked)]
    if reason != "ACCESS_TOKEN_TYPE_UNSUPPORTED":
        assert refusal.message == expected


def test_a_service_accounts_own_jwt_is_googles(tmp_path: Path) -> None:
    keys = tmp_path / "jwks.json"
    keys.write_text(json.dumps(jwks(KEY)))
    settings = AuthnSettings(
        issuers=(IssuerConfig(issuer=CORP, audiences=(AUD,), jwks_file=keys),),
        service_account_jwts=ServiceAccountJwtConfig(
            audiences=(AUD,), keys_url="http://127.0.0.1:9/{email}", allowed=("a@b.com",)
        ),
    )
    account = "ci@p.iam.gserviceaccount.com"
    token = KEY.sign({"iss": account, "sub": account, "aud": AUD, **_expired()})
    refusal = _refusal(build_authn(settings).authenticator, token)
    assert refusal.message == INVALID_CREDENTIALS_MESSAGE  # not allowed: Google's words


# --- the names in records ---------------------------------------------------------------------


def _principal(**fields: Any) -> Principal:
    base: dict[str, Any] = {
        "member": "user:carol@corp.example",
        "issuer": CORP,
        "subject": "00u-carol",
        "email": "carol@corp.example",
        "email_verified": True,
    }
    return Principal(**{**base, **fields})


NAMES = [
    pytest.param(
        _principal(),
        (None, "principal://login.corp.example/oauth2/subject/00u-carol"),
        {"iss": CORP, "sub": "00u-carol", "email": "carol@corp.example"},
        id="corp-by-email",
    ),
    pytest.param(
        _principal(namespace="principal://iam.googleapis.com/locations/global/workforcePools/p/subject/"),
        (None, "principal://iam.googleapis.com/locations/global/workforcePools/p/subject/00u-carol"),
        {"iss": CORP, "sub": "00u-carol", "email": "carol@corp.example"},
        id="corp-with-the-operators-subject-prefix",
    ),
    pytest.param(
        _principal(email_verified=False, member="principal://login.corp.example/oauth2/subject/00u-carol"),
        (None, "principal://login.corp.example/oauth2/subject/00u-carol"),
        {"iss": CORP, "sub": "00u-carol"},  # an unverified email names nobody
        id="corp-unverified-email",
    ),
    pytest.param(
        _principal(subject="", token_kind="introspection"),
        (None, None),
        {"iss": CORP, "email": "carol@corp.example"},
        id="introspected-without-sub",
    ),
    pytest.param(
        _principal(issuer=GOOGLE, member="user:gina@acme.example", email="gina@acme.example", token_kind="google_id_token"),
        ("gina@acme.example", "principal://goog/subject/gina@acme.example"),
        None,
        id="google-id-token",
    ),
    pytest.param(
        _principal(issuer=GOOGLE, member="user:gina@acme.example", email="gina@acme.example"),
        ("gina@acme.example", "principal://goog/subject/gina@acme.example"),
        None,
        id="issuer-entry-with-googles-iss",
    ),
    pytest.param(
        _principal(issuer="self-signed", member="serviceAccount:ci@p.iam.gserviceaccount.com", email="ci@p.iam.gserviceaccount.com", token_kind="service_account_jwt"),
        ("ci@p.iam.gserviceaccount.com", "principal://goog/subject/ci@p.iam.gserviceaccount.com"),
        None,
        id="service-account-jwt",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("principal", "names", "third_party"), NAMES)
def test_record_names(
    principal: Principal, names: tuple[str | None, str | None], third_party: Any
) -> None:
    assert (principal.principal_email, principal.principal_subject) == names
    assert principal.third_party_principal == third_party
    assert "principal://goog/" not in str(principal.principal_subject) or not principal.third_party


def test_a_third_party_record_is_found_by_email_subject_and_member() -> None:
    principal = _principal()
    record = to_log_entry(
        event(
            principal_email=principal.principal_email,
            principal_subject=principal.principal_subject,
            principal_member=principal.member,
            third_party_principal=principal.third_party_principal,
        )
    )
    info = record["protoPayload"]["authenticationInfo"]
    assert info == {
        "principalSubject": "principal://login.corp.example/oauth2/subject/00u-carol",
        "thirdPartyPrincipal": {"iss": CORP, "sub": "00u-carol", "email": "carol@corp.example"},
    }
    for name in (
        "carol@corp.example",
        "principal://login.corp.example/oauth2/subject/00u-carol",
        "user:carol@corp.example",
    ):
        assert RecordFilter(principal=name).matches(record), name
    assert not RecordFilter(principal="principal://goog/subject/carol@corp.example").matches(record)
    assert not RecordFilter(principal="00u-carol").matches(record)
