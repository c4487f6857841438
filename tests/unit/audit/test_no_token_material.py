"""No token, signature or authorization header can reach an audit record."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from gateway.audit.event import AuditEvent
from gateway.audit.logentry import to_log_entry
from gateway.audit.sinks import RotatingFileSink
from gateway.audit.writer import AuditWriter
from gateway.testing.tokens import claims, ec_key, rsa_key
from tests.unit.audit.builders import CANCEL, denied, event, unauthenticated

# Three base64url segments joined by dots, the first a JSON object ('{"' encodes as "eyJ").
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_FORBIDDEN_FIELD = re.compile(r"authorization|signature|header|secret|credential|bearer|jwt")


def _tokens() -> list[str]:
    issuer = "https://idp.acme.example"
    return [
        rsa_key(kid="audit-rsa").sign(claims(issuer, "opsgate", email="alice@acme.example")),
        ec_key(kid="audit-ec").sign(claims(issuer, "opsgate", sub="svc-7", email=None)),
    ]


def _events_from_realistic_calls(tokens: list[str]) -> list[AuditEvent]:
    """Events as the gateway builds them for calls that carried these tokens."""
    return [
        event(token_kind="jwt"),
        event(
            principal_email=None,
            principal_subject="principal://idp.acme.example/subject/svc-7",
            principal_member="principal://idp.acme.example/subject/svc-7",
            token_kind="jwt",
            user_agent="google-api-core/2.19.0 gl-python/3.11.9 grpc/1.66.1",
        ),
        denied(method=CANCEL, permission="contactcenterinsights.operations.cancel"),
        unauthenticated(detail="JWT signature verification failed (kid 'audit-rsa', alg RS256)"),
        unauthenticated(
            status_message="Request had invalid authentication credentials.",
            reason="ACCESS_TOKEN_TYPE_UNSUPPORTED",
            detail="the request metadata carried no credentials",
        ),
        unauthenticated(detail="introspection said active=false", token_kind="opaque"),
        event(
            shadow_decision={"granted": False, "reason": "denied by rule 2", "trace": ()},
            decision_cached=True,
        ),
        event(status_code=14, status_message="The service is currently unavailable.",
              reason="UPSTREAM_UNAVAILABLE", detail="upstream 10.0.0.7:8443 refused the connection"),
    ]  # fmt: skip


def _keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [k for key, item in value.items() for k in [key, *_keys(item)]]
    if isinstance(value, list):
        return [k for item in value for k in _keys(item)]
    return []


def _assert_no_token_material(text: str, tokens: list[str]) -> None:
    assert "Bearer" not in text
    assert not _JWT.search(text), _JWT.search(text)
    for token in tokens:
        for part in [token, *token.split(".")[1:]]:
            assert part not in text


def test_an_audit_event_has_no_field_that_could_carry_a_token() -> None:
    names = [field.name for field in dataclasses.fields(AuditEvent)]
    assert [name for name in names if _FORBIDDEN_FIELD.search(name)] == []
    # token_kind names the kind ("jwt", "opaque"), never the token.
    assert [name for name in names if "token" in name] == ["token_kind"]


@pytest.mark.parametrize("index", range(8))
def test_records_of_realistic_calls_hold_no_token_material(index: int) -> None:
    tokens = _tokens()
    entry = to_log_entry(_events_from_realistic_calls(tokens)[index])
    text = json.dumps(entry, sort_keys=True)
    _assert_no_token_material(text, tokens)
    assert not [key for key in _keys(entry) if key.lower() == "authorization"]


def test_the_written_file_holds_no_token_material(tmp_path: Path) -> None:
    tokens = _tokens()
    path = tmp_path / "audit.log"
    writer = AuditWriter(RotatingFileSink(path, max_bytes=0, backups=0, fsync="never"))
    for source in _events_from_realistic_calls(tokens):
        writer.submit(source)
    assert writer.close(timeout=5)
    text = path.read_text()
    assert len(text.splitlines()) == 8
    _assert_no_token_material(text, tokens)
    assert '"authorization":' not in text.lower()
