"""Signing keys made on the spot, their public JWKs, and real signed tokens: for tests and demos."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class SigningKey:
    """A private key with its kid and algorithm; `jwk` is the public half as a JWKS entry."""

    kid: str
    algorithm: str
    private: PrivateKey

    @property
    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            data = json.loads(RSAAlgorithm.to_jwk(public))
        elif isinstance(public, ec.EllipticCurvePublicKey):
            data = json.loads(ECAlgorithm.to_jwk(public))
        else:
            data = json.loads(OKPAlgorithm.to_jwk(public))
        return {**data, "kid": self.kid, "alg": self.algorithm, "use": "sig"}

    def sign(self, claims: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
        return jwt.encode(
            claims,
            self.private,
            algorithm=self.algorithm,
            headers={"kid": self.kid, **(headers or {})},
        )


_RSA_CACHE: dict[int, rsa.RSAPrivateKey] = {}


def rsa_key(algorithm: str = "RS256", kid: str | None = None, *, fresh: bool = False) -> SigningKey:
    """An RSA-2048 key; reused across the run unless `fresh` (generation costs ~50 ms)."""
    slot = len(_RSA_CACHE) if fresh else 0
    if slot not in _RSA_CACHE:
        _RSA_CACHE[slot] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return SigningKey(kid or uuid.uuid4().hex[:12], algorithm, _RSA_CACHE[slot])


def ec_key(algorithm: str = "ES256", kid: str | None = None) -> SigningKey:
    curve = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1()}[algorithm]
    return SigningKey(kid or uuid.uuid4().hex[:12], algorithm, ec.generate_private_key(curve))


def ed_key(kid: str | None = None) -> SigningKey:
    return SigningKey(kid or uuid.uuid4().hex[:12], "EdDSA", ed25519.Ed25519PrivateKey.generate())


def jwks(*keys: SigningKey) -> dict[str, Any]:
    return {"keys": [key.jwk for key in keys]}


def claims(issuer: str, audience: str | list[str], **extra: Any) -> dict[str, Any]:
    """A valid claim set: issued now, expiring in ten minutes; `extra` overrides or adds."""
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": "1234567890",
        "email": "alice@example.com",
        "email_verified": True,
        "iat": now,
        "exp": now + 600,
        "scope": "https://www.googleapis.com/auth/cloud-platform",
    }
    base.update(extra)
    return {key: value for key, value in base.items() if value is not None}
