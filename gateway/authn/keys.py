"""JWKS documents parsed into prepared public keys, each with the JWS algorithms it may verify."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from jwt.exceptions import PyJWTError

from gateway.errors import OpsgateError

log = logging.getLogger("opsgate.authn")

RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGORITHMS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
OKP_CURVES = frozenset({"Ed25519", "Ed448"})
PEM_CERTIFICATE = "-----BEGIN CERTIFICATE-----"


class JwksError(OpsgateError, ValueError):
    """A key document is unusable as a whole (single bad keys in it are only skipped)."""

    reason = "JWKS_INVALID"


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A public key prepared once at fetch time, and the JWS algorithms it may verify."""

    kid: str | None
    algorithms: frozenset[str]
    key: Any


class _Skip(Exception):
    """Why one key of a document is not used; logged, and the next key is read."""


def _family(jwk: dict[str, Any]) -> tuple[frozenset[str], Callable[[dict[str, Any]], Any]]:
    """The algorithms a key type allows and the parser for it; only asymmetric signature keys."""
    kty = jwk.get("kty")
    crv = jwk.get("crv")
    if kty == "RSA":
        return RSA_ALGORITHMS, RSAAlgorithm.from_jwk
    if kty == "EC":
        alg = EC_ALGORITHMS.get(crv) if isinstance(crv, str) else None
        if alg is None:
            raise _Skip(f"unsupported EC curve {crv!r}")
        return frozenset({alg}), ECAlgorithm.from_jwk
    if kty == "OKP":
        if not isinstance(crv, str) or crv not in OKP_CURVES:
            raise _Skip(f"unsupported OKP curve {crv!r}")
        return frozenset({"EdDSA"}), OKPAlgorithm.from_jwk
    if kty == "oct":
        # A shared secret has no place in a public key set, and accepting HS* at all is what
        # lets a token "signed" with a public key as HMAC secret through.
        raise _Skip("symmetric (oct) keys are never used")
    raise _Skip(f"unsupported kty {kty!r}")


def _from_jwk(jwk: Any) -> VerificationKey:
    if not isinstance(jwk, dict):
        raise _Skip("not a JSON object")
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise _Skip("kid is not a string")
    if "d" in jwk:
        # A published private key is an IdP mistake: whoever read the document can sign.
        raise _Skip("it is a private key")
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise _Skip(f"use is {use!r}, not 'sig'")
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        raise _Skip("key_ops does not include 'verify'")
    algorithms, parse = _family(jwk)
    alg = jwk.get("alg")
    if alg is not None:
        if not isinstance(alg, str) or alg not in algorithms:
            raise _Skip(f"alg {alg!r} does not fit a {jwk['kty']} key")
        algorithms = frozenset({alg})
    try:
        key = parse(jwk)
    except (PyJWTError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise _Skip(f"malformed key material ({exc})") from exc
    return VerificationKey(kid, algorithms, key)


def _from_certificate(kid: str, pem: str) -> VerificationKey:
    try:
        certificate = x509.load_pem_x509_certificate(pem.encode())
    except ValueError as exc:
        raise _Skip("not a readable PEM certificate") from exc
    public = certificate.public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        raise _Skip("the certificate's key is not RSA")
    # Google's certs format carries no alg; its tokens are RS256 only.
    return VerificationKey(kid, frozenset({"RS256"}), public)


def _is_certificate_map(document: Any) -> bool:
    """Google's x509 format (oauth2/v1/certs): {kid: PEM certificate}, no "keys" list."""
    return (
        isinstance(document, dict)
        and bool(document)
        and "keys" not in document
        and all(
            isinstance(value, str) and value.lstrip().startswith(PEM_CERTIFICATE)
            for value in document.values()
        )
    )


def _candidates(document: Any, source: str) -> list[tuple[str, Callable[[], VerificationKey]]]:
    """(label for logs, preparer) for each key the document offers."""
    if _is_certificate_map(document):
        return [(repr(kid), partial(_from_certificate, kid, pem)) for kid, pem in document.items()]
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise JwksError(f"{source}: not a JWKS document (a JSON object with a 'keys' list)")
    return [
        (_label(entry, index), partial(_from_jwk, entry)) for index, entry in enumerate(entries)
    ]


def _label(entry: Any, index: int) -> str:
    kid = entry.get("kid") if isinstance(entry, dict) else None
    return repr(kid) if isinstance(kid, str) else f"#{index}"


def parse_jwks(document: Any, source: str) -> dict[str | None, VerificationKey]:
    """The usable signature keys of a JWKS (or Google x509 certs) document, by kid.

    Unusable keys are skipped with a warning; a document without any usable key raises
    JwksError, as does one that is not a key document at all. `source` names it in messages.
    """
    usable: list[VerificationKey] = []
    for label, prepare in _candidates(document, source):
        try:
            usable.append(prepare())
        except _Skip as why:
            log.warning("%s: skipping key %s: %s", source, label, why)
    keys: dict[str | None, VerificationKey] = {}
    for key in usable:
        if key.kid is None and len(usable) > 1:
            # With several keys, nothing says which one a kid-less token means.
            log.warning("%s: skipping a key without kid: the document has other keys", source)
        elif key.kid in keys:
            log.warning("%s: skipping a second key with kid %r", source, key.kid)
        else:
            keys[key.kid] = key
    if not keys:
        raise JwksError(f"{source}: no usable signature keys in the document")
    return keys
