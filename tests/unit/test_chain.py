"""The chain's order is data, defined once; this pins it, and the gRPC door's code mapping."""

from __future__ import annotations

from pathlib import Path

import grpc

from gateway.config import load_settings
from gateway.errors import StatusCode
from gateway.interceptors.codes import grpc_code, rpc_code
from gateway.pipeline import build_pipeline
from gateway.stages.chain import CHAIN_ORDER
from tests.support.stack import EXAMPLE_POLICY


def test_chain_order_is_audit_authn_ratelimit_route_authz(tmp_path: Path) -> None:
    (tmp_path / "jwks.json").write_text('{"keys": []}')
    config = tmp_path / "opsgate.yaml"
    config.write_text(
        "authentication:\n  issuers:\n    - issuer: https://i\n      audiences: [a]\n"
        "      jwks_file: jwks.json\n"
        f"authorization:\n  policy_file: {EXAMPLE_POLICY}\n"
    )
    pipeline = build_pipeline(load_settings(config, require_upstream=False))
    assert CHAIN_ORDER == ("audit", "authn", "ratelimit", "route", "authz")
    assert [stage.name for stage in pipeline.runner.stages] == list(CHAIN_ORDER)


def test_the_grpc_door_maps_every_code_both_ways() -> None:
    for code in StatusCode:
        assert grpc_code(code).name == code.name
        assert rpc_code(grpc_code(code)) is code
    assert {grpc_code(code) for code in StatusCode} == set(grpc.StatusCode)
