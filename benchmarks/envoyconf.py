"""Envoy bootstraps for the envoy phase's rows (JSON, which Envoy reads as YAML's subset).

Every bootstrap is one listener on 127.0.0.1 (h2c, HTTP connection manager, access log off)
whose only route goes to the seeded upstream over HTTP/2, with these HTTP filters before the
router:

- hop: none;
- jwt_rbac: `jwt_authn` verifying the benchmark's tokens against its local JWKS file (issuer,
  audience, a cache of verified tokens, the payload into dynamic metadata), then `rbac` allowing
  GetOperation to callers whose `groups` claim holds the benchmark's team group. Neither can see
  the resource name in the request body;
- ext_authz over gRPC (`envoy.service.auth.v3.Authorization/Check`) or HTTP (`http_service`),
  with the request body sent to the authorizer as opsgate's authorizer needs it
  (`with_request_body`, 64 KiB, no partial bodies), failing closed.

opsgate's own authorizer row does not use these: its bootstrap comes from
gateway.envoy.bootstrap, as a user's would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks import fixtures, wire

MAX_BODY_BYTES = 64 * 1024
_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
KINDS = ("hop", "jwt_rbac", "authz_grpc", "authz_http")


def _address(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def cluster(name: str, port: int, *, http2: bool) -> dict[str, Any]:
    """A static cluster of one local endpoint, HTTP/2 (prior knowledge) or HTTP/1.1."""
    found: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(port)}}]}],
        },
    }
    if http2:
        found["typed_extension_protocol_options"] = {
            _HTTP_OPTIONS: {
                "@type": f"type.googleapis.com/{_HTTP_OPTIONS}",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    return found


def _filter(name: str, type_url: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "typed_config": {"@type": f"type.googleapis.com/{type_url}", **(config or {})},
    }


def jwt_authn(jwks_file: Path) -> dict[str, Any]:
    provider = {
        "issuer": fixtures.ISSUER,
        "audiences": [fixtures.AUDIENCE],
        "local_jwks": {"filename": str(jwks_file)},
        "payload_in_metadata": "jwt_payload",
        "jwt_cache_config": {"jwt_cache_size": 1000},
    }
    return _filter(
        "envoy.filters.http.jwt_authn",
        "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        {
            "providers": {"bench": provider},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}],
        },
    )


def rbac() -> dict[str, Any]:
    in_team = {
        "sourced_metadata": {
            "metadata_matcher": {
                "filter": "envoy.filters.http.jwt_authn",
                "path": [{"key": "jwt_payload"}, {"key": "groups"}],
                "value": {
                    "list_match": {"one_of": {"string_match": {"exact": fixtures.TEAM_GROUP}}}
                },
            }
        }
    }
    policy = {
        "permissions": [{"url_path": {"path": {"exact": wire.GET_OPERATION}}}],
        "principals": [in_team],
    }
    return _filter(
        "envoy.filters.http.rbac",
        "envoy.extensions.filters.http.rbac.v3.RBAC",
        {"rules": {"action": "ALLOW", "policies": {"bench-team-get": policy}}},
    )


def ext_authz(protocol: str, port: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the ext_authz filter, the authorizer's cluster) for `grpc` or `http`."""
    config: dict[str, Any] = {
        "transport_api_version": "V3",
        "failure_mode_allow": False,
        "with_request_body": {
            "max_request_bytes": MAX_BODY_BYTES,
            "allow_partial_message": False,
            "pack_as_bytes": True,
        },
    }
    if protocol == "grpc":
        config["grpc_service"] = {"envoy_grpc": {"cluster_name": "authz"}, "timeout": "5s"}
    else:
        config["http_service"] = {
            "server_uri": {"uri": f"http://127.0.0.1:{port}", "cluster": "authz", "timeout": "5s"},
            "path_prefix": "/check",
        }
    found = _filter(
        "envoy.filters.http.ext_authz",
        "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
        config,
    )
    return found, cluster("authz", port, http2=protocol == "grpc")


def bootstrap(
    listen_port: int,
    upstream_port: int,
    filters: list[dict[str, Any]],
    clusters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One h2c listener routing everything to the upstream, `filters` before the router."""
    manager = {
        "@type": _HCM + "HttpConnectionManager",
        "stat_prefix": "bench",
        "codec_type": "AUTO",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {"prefix": "/"},
                            "route": {"cluster": "upstream", "timeout": "0s"},
                        }
                    ],
                }
            ]
        },
        "http_filters": [
            *filters,
            _filter("envoy.filters.http.router", "envoy.extensions.filters.http.router.v3.Router"),
        ],
    }
    listener = {
        "name": "bench",
        "address": _address(listen_port),
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": manager,
                    }
                ]
            }
        ],
    }
    return {
        "static_resources": {
            "listeners": [listener],
            "clusters": [cluster("upstream", upstream_port, http2=True), *(clusters or [])],
        }
    }


def for_kind(
    kind: str, listen_port: int, upstream_port: int, *, jwks_file: Path, authz_port: int = 0
) -> dict[str, Any]:
    """The bootstrap of one of KINDS."""
    if kind == "hop":
        return bootstrap(listen_port, upstream_port, [])
    if kind == "jwt_rbac":
        return bootstrap(listen_port, upstream_port, [jwt_authn(jwks_file), rbac()])
    protocol = {"authz_grpc": "grpc", "authz_http": "http"}[kind]
    found, authz = ext_authz(protocol, authz_port)
    return bootstrap(listen_port, upstream_port, [found], [authz])


def write(directory: Path, name: str, config: dict[str, Any]) -> Path:
    path = directory / f"{name}.envoy.json"
    path.write_text(json.dumps(config, indent=1))
    return path
