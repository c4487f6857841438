"""The chain's order is data, defined once; this pins it."""

from __future__ import annotations

from gateway.interceptors.chain import CHAIN_ORDER, build_chain


def test_chain_order_is_audit_authn_route_authz() -> None:
    assert CHAIN_ORDER == ("audit", "authn", "route", "authz")
    assert [stage.name for stage in build_chain()] == list(CHAIN_ORDER)
