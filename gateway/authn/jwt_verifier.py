"""Verifies one issuer's JWTs: header rules, signature with a prepared key, typed claim checks."""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import jwt

from gateway.authn.claims import (
    PrincipalRules,
    TimeRules,
    audiences,
    check_times,
    principal_from,
    scopes,
    string_claim,
)
from gateway.authn.principal import SERVICE_ACCOUNT_DOMAIN, Principal
from gateway.errors import token_invalid

# Keys come from config, never from the token: the jku, x5u, jwk and x5c headers are never
# read. `crit` names extensions we do not implement, so RFC 7515 4.1.11 says reject.


class KeyResolver(Protocol):
    """Finds the verification key for a token; raises token_invalid or verification_unavailable."""

    async def key_for(self, kid: str | None, alg: str, unverified: Mapping[str, Any]) -> Any: ...


@dataclass(frozen=True, slots=True)
class UnverifiedJwt:
    """A JWT split and decoded but not yet trusted: only for choosing issuer and key."""

    header: Mapping[str, Any]
    claims: Mapping[str, Any]


def _b64_json(segment: str) -> Any:
    padded = segment + "=" * (-len(segment) % 4)
    return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))


def peek(token: str) -> UnverifiedJwt:
    """Decode header and claims without verifying anything; malformed tokens are invalid."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise token_invalid("not a JWS compact serialization (three non-empty parts)")
    try:
        header = _b64_json(parts[0])
        claims = _b64_json(parts[1])
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise token_invalid("header or payload is not base64url JSON") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise token_invalid("header or payload is not a JSON object")
    return UnverifiedJwt(header, claims)


@dataclass(frozen=True, slots=True)
class JwtRules:
    """What one issuer's tokens must satisfy."""

    issuers: frozenset[str]  # exact `iss` values (Google ID tokens have two spellings)
    audiences: frozenset[str]
    algorithms: frozenset[str]
    times: TimeRules
    principal: PrincipalRules
    # Self-signed service-account JWTs: any iss == sub ending in .iam.gserviceaccount.com
    # (the key resolver fetches that account's own keys), and `scope` may stand in for `aud`.
    self_signed: bool = False


class JwtVerifier:
    """Verifies tokens of one issuer with keys from its resolver; returns the Principal."""

    def __init__(
        self, rules: JwtRules, keys: KeyResolver, clock: Callable[[], float] = time.time
    ) -> None:
        self.rules = rules
        self._keys = keys
        self._clock = clock
        self._jws = jwt.PyJWS()

    async def verify(self, token: str, unverified: UnverifiedJwt) -> Principal:
        rules = self.rules
        header = unverified.header
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in rules.algorithms:
            raise token_invalid("the token's alg is not one this issuer may use")
        if "crit" in header:
            raise token_invalid("the token has critical header extensions we do not implement")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise token_invalid("the token's kid is not a string")
        key = await self._keys.key_for(kid, alg, unverified.claims)
        try:
            verified = self._jws.decode_complete(token, key=key, algorithms=[alg])
            claims = json.loads(verified["payload"])
        except jwt.InvalidSignatureError as exc:
            raise token_invalid("the signature does not verify") from exc
        except (jwt.PyJWTError, ValueError) as exc:
            raise token_invalid("the token could not be decoded") from exc
        if not isinstance(claims, dict):
            raise token_invalid("the payload is not a JSON object")
        return self._principal(claims)

    def _principal(self, claims: Mapping[str, Any]) -> Principal:
        rules = self.rules
        issuer = string_claim(claims, "iss", required=True)
        if not (is_self_signed(claims) if rules.self_signed else issuer in rules.issuers):
            raise token_invalid("the iss claim does not match the issuer")
        token_audiences = audiences(claims)
        if not rules.audiences.intersection(token_audiences):
            allowed_without = rules.self_signed and not token_audiences
            if not (allowed_without and scopes(claims)):
                raise token_invalid("the aud claim names none of the accepted audiences")
        exp = check_times(claims, self._clock(), rules.times)
        return principal_from(claims, rules.principal, exp)


def is_self_signed(claims: Mapping[str, Any]) -> bool:
    """A service account's own JWT: iss == sub == its email."""
    issuer = claims.get("iss")
    return (
        isinstance(issuer, str)
        and issuer == claims.get("sub")
        and issuer.lower().endswith(SERVICE_ACCOUNT_DOMAIN)
    )
