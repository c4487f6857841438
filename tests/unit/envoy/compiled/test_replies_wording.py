"""Envoy's own answers to refused tokens follow opsgate's rule for Google's help link: never for
a token another issuer verified; for one Envoy cannot tell the issuer of, only where Google's
tokens are accepted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.envoy.compiled import decisions
from gateway.envoy.compiled.authn_plan import AuthnPlan
from gateway.envoy.compiled.checks import _token_checks
from gateway.envoy.compiled.identity import Provider
from gateway.envoy.compiled.replies import local_replies
from gateway.envoy.compiled.tokens import KeySet, TokenRules
from gateway.errors import OTHER_INVALID_CREDENTIALS_MESSAGE

HELP = "https://developers.google.com/"


def _messages(google_accepted: bool) -> dict[str, str]:
    """Envoy's local reply messages keyed by what each mapper matches on (its filter's JSON)."""
    replies = local_replies((), "svc", google_accepted=google_accepted)
    return {
        json.dumps(mapper["filter"], sort_keys=True): mapper["body_format_override"][
            "text_format_source"
        ]["inline_string"]
        for mapper in replies["mappers"]
    }


@pytest.mark.parametrize("google_accepted", [True, False], ids=["google-accepted", "corp-only"])
def test_envoys_answers_follow_the_same_rule(google_accepted: bool) -> None:
    messages = _messages(google_accepted)
    other = [text for key, text in messages.items() if decisions.INVALID_OTHER_TOKEN in key]
    assert other == [OTHER_INVALID_CREDENTIALS_MESSAGE]  # another issuer's token: never linked
    unknown = [
        text
        for key, text in messages.items()
        if decisions.INVALID_OTHER_TOKEN not in key and "credential" in text
    ]
    assert len(unknown) == 4  # missing, jwt_authn's 401, invalid-token, the 403 fallback
    assert all((HELP in text) is google_accepted for text in unknown)


def _rule(provider: Provider) -> TokenRules:
    return TokenRules(
        provider=provider,
        keys=KeySet(file=Path("keys.json")),
        audiences=("a",),
        clock_skew_s=30,
        max_lifetime_s=3600.0,
        required_scopes=frozenset(),
        require_scope=False,
        max_token_bytes=8192,
    )


def test_a_token_is_refused_by_the_name_that_says_whose_it_is() -> None:
    corp = Provider(index=0, issuer="https://login.corp.example", kind="email")
    google = Provider(index=1, issuer="https://accounts.google.com", kind="email")
    account = "ci@p.iam.gserviceaccount.com"
    robot = Provider(index=2, issuer=account, kind="service_account", account=account)
    plan = AuthnPlan(tuple(map(_rule, (corp, google, robot))), (), False, (), False, problems=())
    assert plan.google_accepted
    refusals: dict[str, set[str]] = {}
    for matcher, on_match in _token_checks(plan):
        name = on_match["action"]["name"]
        for provider in (corp, google, robot):
            if provider.header("iss") in json.dumps(matcher):
                refusals.setdefault(provider.metadata_key, set()).add(name)
    assert refusals["p0"] >= {decisions.INVALID_OTHER_TOKEN}
    assert decisions.INVALID_TOKEN not in refusals["p0"]
    for key in ("p1", "p2"):
        assert decisions.INVALID_TOKEN in refusals[key]
        assert decisions.INVALID_OTHER_TOKEN not in refusals[key]
    corp_only = AuthnPlan((_rule(corp),), (), False, (), False, problems=())
    assert not corp_only.google_accepted
