"""Signing keys and tokens for tests: the package's own testing helpers, under a short name."""

from __future__ import annotations

from gateway.testing.tokens import SigningKey, claims, ec_key, ed_key, jwks, rsa_key

__all__ = ["SigningKey", "claims", "ec_key", "ed_key", "jwks", "rsa_key"]
