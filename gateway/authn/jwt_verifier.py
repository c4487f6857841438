"""Verifies one issuer's JWTs: header rules, signature with a prepared key, typed claim checks."""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

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
from gateway.policy.members import canonical_identity, is_email

# Keys come from config, never from the token: the jku, x5u, jwk and x5c headers are never
# read. `crit` names extensions we do not implement, so RFC 7515 4.1.11 says reject.


class KeyResolver(Protocol):
    """Finds the verification key for a token; raises token_invalid or verification_unavailable."""

    async def key_for(self, kid: str | None, alg: str, unverified: Mapping[str, Any]) -> Any: ...


@dataclass(frozen=True, slots=True)
class UnverifiedJwt:
    """A JWT split and decoded but not yet trusted: only for choosing issuer and key.

    It keeps the token and its three segments as sent, so that JwtVerifier.verify checks the
    signature over exactly the bytes `claims` were decoded from, without decoding them again.
    """

    header: Mapping[str, Any]
    claims: Mapping[str, Any]
    # Out of repr: together they are the token, which must not end up in a log line.
    token: str = field(repr=False)
    segments: tuple[str, str, str] = field(repr=False)  # header, payload, signature (base64url)


def _b64_json(segment: str) -> Any:
    padded = segment + "=" * (-len(segment) % 4)
    return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))


def peek(token: str) -> UnverifiedJwt:
    """Decode header and claims without verifying anything; malformed tokens are invalid."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise token_invalid("not a JWS compact serialization (three non-empty parts)")
    header_b64, payload_b64, signature_b64 = parts
    try:
        header = _b64_json(header_b64)
        claims = _b64_json(payload_b64)
    # RecursionError: deeply nested JSON arrays, which fit easily in a 16 KiB token.
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError) as exc:
        raise token_invalid("header or payload is not base64url JSON") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise token_invalid("header or payload is not a JSON object")
    return UnverifiedJwt(header, claims, token, (header_b64, payload_b64, signature_b64))


# --- signatures -------------------------------------------------------------------------------
# The signature is checked with the prepared `cryptography` key over the ASCII bytes
# "header.payload" (RFC 7515 5.2), each algorithm bound to the one key type (and for ECDSA the
# one curve) it is defined for: a key of another type is refused, never tried.

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
# The last character of a segment whose length is 2 or 3 (mod 4) carries 4 or 2 unused bits;
# canonical encoders leave them zero, so only these characters can end such a segment.
_LAST_OF_2 = frozenset("AQgw")
_LAST_OF_3 = frozenset("AEIMQUYcgkosw048")


def _canonical_base64url(segment: str) -> bool:
    """Whether `segment` is base64url as pyjwt's decoder accepted it (what we verified before).

    The URL-safe alphabet only, optional "=" padding to a multiple of 4 (at most two), and the
    canonical encoding of its bytes: nothing skipped, no stray bits in the last character.
    """
    stripped = segment.rstrip("=")
    padding_chars = len(segment) - len(stripped)
    if padding_chars > 2 or (padding_chars and len(segment) % 4):
        return False
    tail = len(stripped) % 4
    if tail == 1 or not _BASE64URL.fullmatch(stripped):
        return False
    if tail == 2:
        return stripped[-1] in _LAST_OF_2
    if tail == 3:
        return stripped[-1] in _LAST_OF_3
    return True


# Checks `signature` over `signed` with `key`: raises InvalidSignature when it does not verify,
# _WrongKey when the key cannot be used with the algorithm at all.
_Check = Callable[[Any, bytes, bytes], None]


class _WrongKey(Exception):
    """The resolved key is not of the type (or curve) the token's algorithm is defined for."""


def _rsa_check(scheme: padding.AsymmetricPadding, digest: hashes.HashAlgorithm) -> _Check:
    def check(key: Any, signature: bytes, signed: bytes) -> None:
        if not isinstance(key, rsa.RSAPublicKey):
            raise _WrongKey
        key.verify(signature, signed, scheme, digest)

    return check


def _pss(digest: hashes.HashAlgorithm) -> padding.PSS:
    # The salt as long as the digest (RFC 7518 3.5), exactly as pyjwt verified it.
    return padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)


def _ecdsa_check(curve: type[ec.EllipticCurve], digest: hashes.HashAlgorithm) -> _Check:
    ecdsa = ec.ECDSA(digest)

    def check(key: Any, signature: bytes, signed: bytes) -> None:
        key_curve = key.curve if isinstance(key, ec.EllipticCurvePublicKey) else None
        if not isinstance(key_curve, curve):
            raise _WrongKey
        # JWS carries r || s, each as long as the curve's order (RFC 7518 3.4); cryptography
        # wants DER. Another length cannot be a signature of this curve.
        size = (key_curve.key_size + 7) // 8
        if len(signature) != 2 * size:
            raise InvalidSignature
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        key.verify(encode_dss_signature(r, s), signed, ecdsa)

    return check


def _eddsa_check(key: Any, signature: bytes, signed: bytes) -> None:
    if not isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        raise _WrongKey
    key.verify(signature, signed)


# Exactly the algorithms gateway.authn.keys prepares keys for (RSA_ALGORITHMS, EC_ALGORITHMS,
# EdDSA for the OKP curves); the config allows a subset (settings.ASYMMETRIC_ALGORITHMS).
SIGNATURE_CHECKS: Mapping[str, _Check] = {
    "RS256": _rsa_check(padding.PKCS1v15(), hashes.SHA256()),
    "RS384": _rsa_check(padding.PKCS1v15(), hashes.SHA384()),
    "RS512": _rsa_check(padding.PKCS1v15(), hashes.SHA512()),
    "PS256": _rsa_check(_pss(hashes.SHA256()), hashes.SHA256()),
    "PS384": _rsa_check(_pss(hashes.SHA384()), hashes.SHA384()),
    "PS512": _rsa_check(_pss(hashes.SHA512()), hashes.SHA512()),
    "ES256": _ecdsa_check(ec.SECP256R1, hashes.SHA256()),
    "ES384": _ecdsa_check(ec.SECP384R1, hashes.SHA384()),
    "ES512": _ecdsa_check(ec.SECP521R1, hashes.SHA512()),
    "EdDSA": _eddsa_check,
}


def check_signature(unverified: UnverifiedJwt, alg: str, key: Any) -> None:
    """Raise token_invalid unless the token's signature verifies with `key` under `alg`."""
    check = SIGNATURE_CHECKS.get(alg)
    header_b64, payload_b64, signature_b64 = unverified.segments
    # An unencoded payload (RFC 7797) is not supported; pyjwt refused it without a crit too.
    if (
        check is None
        or unverified.header.get("b64", True) is False
        or not _canonical_base64url(header_b64)
        or not _canonical_base64url(payload_b64)
        or not _canonical_base64url(signature_b64)
    ):
        raise token_invalid("the token could not be decoded")
    # Valid base64url by now, so neither can fail; the segments are ASCII (peek decoded them).
    signature = base64.urlsafe_b64decode(signature_b64 + "=" * (-len(signature_b64) % 4))
    signed = unverified.token[: len(header_b64) + 1 + len(payload_b64)].encode("ascii")
    try:
        check(key, signature, signed)
    except InvalidSignature:
        raise token_invalid("the signature does not verify") from None
    except _WrongKey:
        raise token_invalid("the token could not be decoded") from None


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
        unsupported = rules.algorithms - SIGNATURE_CHECKS.keys()
        if unsupported:
            raise ValueError(f"unsupported JWS algorithm(s) {sorted(unsupported)}")
        self.rules = rules
        self._keys = keys
        self._clock = clock

    async def verify(self, token: str, unverified: UnverifiedJwt) -> Principal:
        """The Principal of `token`, whose `peek` is `unverified`; raises token_invalid etc."""
        if token is not unverified.token and token != unverified.token:
            raise ValueError("unverified is not the peek of this token")
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
        check_signature(unverified, alg, key)
        # The claims peek decoded from the very payload segment the signature covers.
        claims = unverified.claims
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
    """A service account's own JWT: iss == sub == its email (an ASCII IAM email)."""
    issuer = claims.get("iss")
    return (
        isinstance(issuer, str)
        and issuer == claims.get("sub")
        and is_email(issuer)
        and canonical_identity(issuer).endswith(SERVICE_ACCOUNT_DOMAIN)
    )
