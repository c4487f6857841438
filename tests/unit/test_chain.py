"""The chain's order is data, defined once; this pins it."""

from __future__ import annotations

from pathlib import Path

from gateway.authn.factory import build_authn
from gateway.authn.settings import AuthnSettings, IssuerConfig
from gateway.interceptors.chain import CHAIN_ORDER, build_chain


def test_chain_order_is_audit_authn_route_authz(tmp_path: Path) -> None:
    issuer = IssuerConfig(issuer="https://i", audiences=("a",), jwks_file=tmp_path / "jwks.json")
    authn = build_authn(AuthnSettings(issuers=(issuer,)))
    assert CHAIN_ORDER == ("audit", "authn", "route", "authz")
    assert [stage.name for stage in build_chain(authn.authenticator)] == list(CHAIN_ORDER)
