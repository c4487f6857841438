"""The demo's throwaway identity provider: a key, its JWKS file, a config trusting it, tokens."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

from gateway.testing.tokens import claims, jwks, rsa_key

DEMO_ISSUER = "https://idp.acme.example"
DEMO_AUDIENCE = "opsgate-demo"

# Callers that are not a person but a kind of bad credential, all made from alice's claims.
BAD_CREDENTIALS = ("no token", "expired token", "forged token", "narrow-scope token")


def example_policy_text() -> str:
    resource = importlib.resources.files("gateway.data.policies").joinpath("example.yaml")
    return resource.read_text(encoding="utf-8")


class DemoIdentity:
    """Signs tokens for any email, and the bad credentials in BAD_CREDENTIALS; its gateway
    writes the audit trail to `audit_file` (in `directory` unless given)."""

    def __init__(self, directory: Path, audit_file: Path | None = None) -> None:
        self.directory = directory
        self.audit_file = (audit_file or directory / "audit.log").absolute()
        self.key = rsa_key(kid="demo-key")
        self.jwks_file = directory / "jwks.json"
        self.jwks_file.write_text(json.dumps(jwks(self.key)))
        self.policy_file = directory / "policy.yaml"
        self.policy_file.write_text(example_policy_text())

    def write_config(self, upstream: str, *, envoy: bool = False) -> Path:
        """opsgate's config for the demo; with `envoy`, it also answers Envoy's Check calls."""
        path = self.directory / "opsgate.yaml"
        path.write_text(
            "listen: 127.0.0.1:0\n"
            + ("envoy: {http_listen: 127.0.0.1:0}\n" if envoy else "")
            + f"upstream:\n  target: {upstream}\n"
            "authentication:\n"
            "  issuers:\n"
            f"    - issuer: {DEMO_ISSUER}\n"
            f"      audiences: [{DEMO_AUDIENCE}]\n"
            f"      jwks_file: {self.jwks_file}\n"
            "      groups_claim: groups\n"
            "authorization:\n"
            f"  policy_file: {self.policy_file}\n"
            "rest:\n"
            "  listen: 127.0.0.1:0\n"
            "audit:\n"
            "  sink: file\n"
            "  file:\n"
            f"    path: {json.dumps(str(self.audit_file))}\n"
        )
        return path

    def token(self, caller: str) -> str | None:
        """A token for `caller`: an email, or one of BAD_CREDENTIALS (None for 'no token')."""
        alice = claims(DEMO_ISSUER, DEMO_AUDIENCE, email="alice@acme.example")
        if caller == "no token":
            return None
        if caller == "expired token":
            return self.key.sign({**alice, "iat": alice["iat"] - 7200, "exp": alice["iat"] - 60})
        if caller == "forged token":  # same kid, a key the IdP never published
            return rsa_key(kid="demo-key", fresh=True).sign(alice)
        if caller == "narrow-scope token":
            return self.key.sign({**alice, "scope": "openid email"})
        return self.key.sign(claims(DEMO_ISSUER, DEMO_AUDIENCE, email=caller))

    def metadata(self, caller: str) -> tuple[tuple[str, str], ...]:
        token = self.token(caller)
        return () if token is None else (("authorization", f"Bearer {token}"),)
