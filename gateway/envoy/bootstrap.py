"""Envoy's bootstrap for opsgate as its external authorizer, off a mesh: listeners that ask opsgate
about every call (ext_authz, fail closed) and tell it how each ended (the gRPC access log).

`opsgate envoy-config` writes it; every knob that decides who gets through is set here, with why.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gateway import __version__
from gateway.config import ServerTls, Settings, UpstreamTls, load_settings
from gateway.envoy.descriptors import descriptor_bin
from gateway.envoy.google_errors import google_errors_filter
from gateway.envoy.settings import (
    CALL_ID_KEY,
    CHECK_CONTENT_TYPE,
    DOOR_KEY,
    FRAME_HEADER_BYTES,
    GRPC_DOOR,
    HTTP_CERTIFICATE_HEADER,
    HTTP_CONTENT_TYPE_HEADER,
    HTTP_METHOD_HEADER,
    HTTP_PEER_HEADER,
    LOGGED_RESPONSE_HEADERS,
    METADATA_NAMESPACE,
    REST_DOOR,
    EnvoySettings,
)
from gateway.errors import ConfigError
from gateway.headers import DEFAULT_IDENTITY_HEADER, REQUEST_ID_KEY
from gateway.profile import ServiceProfile, load_profile
from gateway.routing import SERVICE

# Names the rendered config uses: the harness and the tests find listeners by them.
GRPC_LISTENER = "opsgate_grpc"
REST_LISTENER = "opsgate_rest"
UPSTREAM_CLUSTER = "upstream"
AUTHORIZER_CLUSTER = "opsgate_authorizer"
AUTHORIZER_HTTP_CLUSTER = (
    "opsgate_authorizer_http"  # the HTTP check (HTTP/1.1: a connection a call)
)
# ext_authz keeps the authorizer's dynamic metadata under its filter's name, so the filter is
# named exactly that (and the route's per-filter config is keyed by it).
EXT_AUTHZ = METADATA_NAMESPACE
TRANSCODER = "envoy.filters.http.grpc_json_transcoder"
# The context each listener hands the authorizer with every Check: which door the call came in
# by, so a refusal is shaped as that door answers (grpc-status headers, or Google's JSON error).

_TYPE = "type.googleapis.com/"
_HCM = _TYPE + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_TLS_SOCKET = "envoy.transport_sockets.tls"
_WILDCARDS = ("0.0.0.0", "::", "")
# Concurrent requests per cluster (Envoy's default is 1,024): held WaitOperation calls count.
_MAX_REQUESTS = 65536
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """HOST:PORT, [V6]:PORT or unix:PATH, as Envoy's `address` wants it."""

    host: str = ""
    port: int = 0
    path: str = ""  # a unix socket

    @classmethod
    def parse(cls, text: str, key: str) -> Endpoint:
        for scheme in ("dns:///", "ipv4:", "ipv6:"):
            text = text.removeprefix(scheme)  # gRPC target spellings of the same address
        if text.startswith("unix:"):
            path = text.removeprefix("unix:").removeprefix("//")
            if not path.startswith("/"):
                raise ConfigError("<flags>", key, f"'{text}' is not unix:/ABSOLUTE/PATH")
            return cls(path=path)
        host, sep, port = text.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not host or not (port.isascii() and port.isdigit()) or int(port) > 65535:
            raise ConfigError("<flags>", key, f"'{text}' is not HOST:PORT or unix:/PATH")
        return cls(host=host, port=int(port))

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    @property
    def dialable(self) -> Endpoint:
        """The same port on loopback if it names every interface (a listener's own wildcard)."""
        if self.path or self.host not in _WILDCARDS:
            return self
        return Endpoint("127.0.0.1", self.port)

    def __str__(self) -> str:
        if self.path:
            return f"unix:{self.path}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def address(self) -> dict[str, Any]:
        if self.path:
            return {"pipe": {"path": self.path}}
        return {"socket_address": {"address": self.host, "port_value": self.port}}


@dataclass(frozen=True, slots=True)
class EnvoyLayout:
    """Where Envoy listens, where it sends allowed calls and asks opsgate, and its timeouts."""

    listen: str = "0.0.0.0:10000"  # Envoy's gRPC listener
    rest_listen: str | None = None  # Envoy's REST/JSON listener (the profile's paths); None: off
    upstream: str | None = None  # None: the config's upstream.target
    authorizer: str | None = None  # None: the config's `listen` (a wildcard dialled on loopback)
    # How Envoy asks: "http" (opsgate's envoy.http_listen; about half the CPU of a gRPC Check,
    # see the benchmarks) or "grpc" (envoy.service.auth.v3 on `listen`). None: http if opsgate
    # serves the HTTP check, else grpc. The access log always goes to `listen` over gRPC.
    protocol: Literal["grpc", "http"] | None = None
    authorizer_http: str | None = None  # None: the config's envoy.http_listen
    admin: str = "127.0.0.1:9901"
    check_timeout_s: float = 2.0  # one Check, including a token introspection on a cold cache
    # The longest call Envoy lets run (WaitOperation is the long one): no route timeout, the
    # caller's grpc-timeout honoured, and no call outlives this, so every allowed call's
    # access-log entry reaches opsgate before envoy.completion_timeout_s gives up on it.
    longest_call_s: float = 3600.0
    upstream_health_service: str = ""  # grpc.health.v1 service asked of the upstream
    tls: ServerTls | None = None  # TLS on Envoy's listeners (client certificates: client_ca)
    authorizer_tls: UpstreamTls | None = None  # how Envoy verifies opsgate's TLS listener
    access_log_flush_s: float = 0.1  # how long an access-log entry may wait in Envoy's buffer


@dataclass(frozen=True, slots=True)
class _Plan:
    """Everything the renderers need, checked once."""

    envoy: EnvoySettings
    profile: ServiceProfile
    layout: EnvoyLayout
    listen: Endpoint
    rest_listen: Endpoint | None
    upstream: Endpoint
    upstream_tls: UpstreamTls | None
    upstream_keepalive_s: float
    authorizer: Endpoint
    authorizer_http: Endpoint | None  # set when Envoy asks over HTTP
    identity_header: str
    authorizer_tls: UpstreamTls | None
    admin: Endpoint


def render_bootstrap(
    settings: Settings,
    layout: EnvoyLayout,
    *,
    profile: ServiceProfile | None = None,
    source: str = "<config>",
) -> dict[str, Any]:
    """The whole bootstrap as a dict (emit it as YAML or JSON): one file, descriptors inline."""
    plan = _plan(settings, layout, profile, source)
    listeners = [_listener(plan, GRPC_LISTENER, plan.listen, GRPC_DOOR)]
    if plan.rest_listen is not None:
        listeners.append(_listener(plan, REST_LISTENER, plan.rest_listen, REST_DOOR))
    return {
        "node": {"id": "opsgate-envoy", "cluster": "opsgate-envoy"},
        "admin": {"address": plan.admin.address()},
        "static_resources": {
            "listeners": listeners,
            "clusters": [
                _upstream_cluster(plan),
                _authorizer_cluster(plan),
                *([_authorizer_http_cluster(plan)] if plan.authorizer_http else []),
            ],
        },
        # Without a cap Envoy warns at start and accepts connections until memory runs out.
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": _TYPE + "envoy.extensions.resource_monitors."
                        "downstream_connections.v3.DownstreamConnectionsConfig",
                        "max_active_downstream_connections": 50000,
                    },
                }
            ]
        },
    }


def _plan(
    settings: Settings, layout: EnvoyLayout, profile: ServiceProfile | None, source: str
) -> _Plan:
    if settings.envoy is None:
        raise ConfigError(
            source, "envoy", "is missing: without it opsgate does not answer Envoy's Check calls"
        )
    upstream_text = layout.upstream or (settings.upstream.target if settings.upstream else None)
    if upstream_text is None:
        raise ConfigError(
            source, "upstream", "is not set: give --upstream HOST:PORT (where Envoy sends calls)"
        )
    authorizer = Endpoint.parse(layout.authorizer or settings.listen, "--authorizer").dialable
    protocol = layout.protocol or ("http" if settings.envoy.http_listen else "grpc")
    authorizer_http = None
    if protocol == "http":
        http_text = layout.authorizer_http or settings.envoy.http_listen
        if http_text is None:
            raise ConfigError(
                source,
                "envoy.http_listen",
                "is not set: opsgate serves no HTTP check (set it, or use --protocol grpc)",
            )
        authorizer_http = Endpoint.parse(http_text, "--authorizer-http").dialable
    authorizer_tls = layout.authorizer_tls
    if settings.tls is not None:
        authorizer_tls = authorizer_tls or UpstreamTls()
        if authorizer_tls.ca_file is None:
            raise ConfigError(
                source, "tls", "is set: give --authorizer-ca (the CA that signed its certificate)"
            )
        if settings.tls.require_client_cert and authorizer_tls.cert_file is None:
            raise ConfigError(
                source,
                "tls.require_client_cert",
                "is true: give --authorizer-cert and --authorizer-key (Envoy's client certificate)",
            )
    elif authorizer_tls is not None:
        raise ConfigError(
            source, "tls", "is not set: opsgate listens in plaintext, drop the TLS flags"
        )
    if settings.authentication.client_certificates is not None and (
        layout.tls is None or layout.tls.client_ca_file is None
    ):
        raise ConfigError(
            source,
            "authentication.client_certificates",
            "needs Envoy to verify client certificates: give --tls-cert, --tls-key and --client-ca",
        )
    if layout.longest_call_s >= settings.envoy.completion_timeout_s:
        raise ConfigError(
            source,
            "envoy.completion_timeout_s",
            f"must exceed the longest call Envoy allows ({layout.longest_call_s:g} s), or calls "
            "still running are written as not reported",
        )
    upstream = settings.upstream
    return _Plan(
        envoy=settings.envoy,
        profile=profile
        or load_profile(settings.authorization.profile, settings.authorization.profile_file),
        layout=layout,
        listen=Endpoint.parse(layout.listen, "--listen"),
        rest_listen=(
            Endpoint.parse(layout.rest_listen, "--rest-listen") if layout.rest_listen else None
        ),
        upstream=Endpoint.parse(upstream_text, "--upstream"),
        upstream_tls=upstream.tls if upstream is not None else None,
        upstream_keepalive_s=upstream.keepalive_time_s if upstream is not None else 30.0,
        authorizer=authorizer,
        authorizer_http=authorizer_http,
        identity_header=(
            settings.authentication.identity_header or DEFAULT_IDENTITY_HEADER
        ).lower(),
        authorizer_tls=authorizer_tls,
        admin=Endpoint.parse(layout.admin, "--admin"),
    )


def _seconds(value: float) -> str:
    return f"{value:g}s"


# --- listeners ---------------------------------------------------------------------------------


def _listener(plan: _Plan, name: str, endpoint: Endpoint, door: str) -> dict[str, Any]:
    chain: dict[str, Any] = {
        "filters": [
            {
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": _connection_manager(plan, name, door),
            }
        ]
    }
    if plan.layout.tls is not None:
        chain["transport_socket"] = _downstream_tls(plan.layout.tls)
    return {"name": name, "address": endpoint.address(), "filter_chains": [chain]}


def _connection_manager(plan: _Plan, name: str, door: str) -> dict[str, Any]:
    filters = [_ext_authz(plan, door), router()]
    if door == REST_DOOR:
        # Before ext_authz: the authorizer decides on the gRPC frame the upstream will decode.
        filters.insert(0, _transcoder(plan))
        # First, so last on the way out: the upstream's errors as Google's JSON error.
        filters.insert(0, google_errors_filter())
    manager = connection_manager(name, door, plan.layout.longest_call_s)
    manager["route_config"] = _routes(plan, name, door)
    manager["http_filters"] = filters
    manager["access_log"] = [_access_log(plan)]
    return manager


def connection_manager(name: str, door: str, longest_call_s: float) -> dict[str, Any]:
    """The connection manager's settings every opsgate listener shares (Envoy at the edge);
    the caller adds route_config, http_filters and access_log."""
    longest = _seconds(longest_call_s)
    return {
        "@type": _HCM,
        "stat_prefix": name,
        # gRPC needs HTTP/2; REST callers may speak HTTP/1.1 too.
        "codec_type": "HTTP2" if door == GRPC_DOOR else "AUTO",
        # The caller's address is the TCP peer's, never an X-Forwarded-For it wrote, and
        # Envoy's own x-envoy-* headers from outside are dropped (it is the edge).
        "use_remote_address": True,
        "xff_num_trusted_hops": 0,
        # Every call gets a fresh x-request-id: the id in the audit record is never the caller's.
        "generate_request_id": True,
        "preserve_external_request_id": False,
        "common_http_protocol_options": {
            # `x_opsgate_principal` would reach a lenient upstream (CGI-style servers, some
            # frameworks) as the identity header: such requests are refused outright.
            "headers_with_underscores_action": "REJECT_REQUEST",
            "max_stream_duration": longest,
        },
        "stream_idle_timeout": longest,  # a held WaitOperation is idle until it ends
        "request_headers_timeout": "10s",
    }


def _routes(plan: _Plan, name: str, door: str) -> dict[str, Any]:
    # One route for every path: each request carries the door's context to the authorizer,
    # which refuses what is not an Operations call.
    route = {
        "match": {"prefix": "/"},
        "route": {
            "cluster": UPSTREAM_CLUSTER,
            "timeout": "0s",  # no route timeout: WaitOperation may be held long
            # The caller's grpc-timeout is enforced as is (0s: no cap but longest_call_s).
            "max_stream_duration": {"grpc_timeout_header_max": "0s"},
        },
        "typed_per_filter_config": {
            EXT_AUTHZ: {
                "@type": _TYPE + "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
                "check_settings": {"context_extensions": {DOOR_KEY: door}},
            }
        },
    }
    return {
        "name": name,
        "virtual_hosts": [{"name": "operations", "domains": ["*"], "routes": [route]}],
    }


def _ext_authz(plan: _Plan, door: str) -> dict[str, Any]:
    return {
        "name": EXT_AUTHZ,
        "typed_config": {
            "@type": _TYPE + "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            **(
                _http_service(plan, door)
                if plan.authorizer_http
                else {
                    "grpc_service": {
                        "envoy_grpc": {"cluster_name": AUTHORIZER_CLUSTER},
                        "timeout": _seconds(plan.layout.check_timeout_s),
                    }
                }
            ),
            "transport_api_version": "V3",
            # Fail closed: no answer is a refusal, and a gRPC caller sees UNAVAILABLE (503)
            # rather than Envoy's default 403 (PERMISSION_DENIED, which would blame the caller).
            "failure_mode_allow": False,
            "status_on_error": {"code": "ServiceUnavailable"},
            # The request message is what names the resource: the authorizer gets the body,
            # whole or marked partial (which it refuses), as raw bytes.
            "with_request_body": {
                # The limit is the message's; Envoy counts the frame header too.
                "max_request_bytes": plan.envoy.max_body_bytes + FRAME_HEADER_BYTES,
                "allow_partial_message": False,
                "pack_as_bytes": True,
            },
            "include_peer_certificate": True,
            # An answer whose header changes are not valid HTTP is an error, not a pass.
            "validate_mutations": True,
        },
    }


def _http_service(plan: _Plan, door: str) -> dict[str, Any]:
    """The HTTP check: the path names the listener; Envoy adds the caller's address, certificate
    and method (overriding any caller copy); the answer's headers say what Envoy sets upstream,
    tells the caller, and keeps as the join key (dynamic metadata, like the gRPC Check's)."""
    assert plan.authorizer_http is not None
    return {
        "http_service": {
            "server_uri": {
                "uri": f"http://{plan.authorizer_http.host or 'opsgate'}",
                "cluster": AUTHORIZER_HTTP_CLUSTER,
                "timeout": _seconds(plan.layout.check_timeout_s),
            },
            "path_prefix": f"/{door}",
            "authorization_request": {
                # Every caller header: the authorizer sees what the upstream would.
                "allowed_headers": {"patterns": [{"safe_regex": {"regex": ".*"}}]},
                "headers_to_add": [
                    {"key": HTTP_PEER_HEADER, "value": "%DOWNSTREAM_REMOTE_ADDRESS%"},
                    {"key": HTTP_CERTIFICATE_HEADER, "value": "%DOWNSTREAM_PEER_CERT%"},
                    {"key": HTTP_METHOD_HEADER, "value": "%REQ(:METHOD)%"},
                    # Never application/grpc on the check itself: see settings.py (fail-open).
                    {"key": HTTP_CONTENT_TYPE_HEADER, "value": "%REQ(CONTENT-TYPE)%"},
                    {"key": "content-type", "value": CHECK_CONTENT_TYPE},
                ],
            },
            "authorization_response": {
                "allowed_upstream_headers": {"patterns": [{"exact": plan.identity_header}]},
                "allowed_client_headers_on_success": {"patterns": [{"exact": REQUEST_ID_KEY}]},
                "dynamic_metadata_from_headers": {"patterns": [{"exact": CALL_ID_KEY}]},
            },
        }
    }


def _transcoder(plan: _Plan) -> dict[str, Any]:
    return {
        "name": TRANSCODER,
        "typed_config": {
            "@type": _TYPE
            + "envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
            "proto_descriptor_bin": descriptor_bin(plan.profile),
            "services": [SERVICE],
            # Only the profile's paths are transcoded; anything else is 404 here, never passed
            # upstream as an HTTP request nobody checked the shape of.
            "request_validation_options": {
                "reject_unknown_method": True,
                "reject_unknown_query_parameters": True,
                "reject_binding_body_field_collisions": True,
            },
            # An error from the upstream reaches a REST caller as a google.rpc.Status JSON body
            # and its HTTP status, not as an empty 200.
            "convert_grpc_status": True,
            "print_options": {"add_whitespace": False, "always_print_primitive_fields": False},
        },
    }


def router() -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": _TYPE + "envoy.extensions.filters.http.router.v3.Router"},
    }


def _access_log(plan: _Plan) -> dict[str, Any]:
    """Each call Envoy let through, reported to opsgate when it ends: the call id the
    authorizer set (dynamic metadata) and the status the caller got."""
    logged = list(LOGGED_RESPONSE_HEADERS)
    return {
        "name": "envoy.access_loggers.http_grpc",
        # Calls the authorizer let through carry the call id: their entries end their records.
        # Calls ext_authz refused (UAEX) are sent too, for those Envoy refused because it could
        # not reach the authorizer: opsgate never saw them and records them from this entry
        # (its own refusals were recorded at Check time; their entries are dropped unread).
        "filter": {
            "or_filter": {
                "filters": [
                    {
                        "metadata_filter": {
                            "matcher": {
                                "filter": METADATA_NAMESPACE,
                                "path": [{"key": CALL_ID_KEY}],
                                "value": {"present_match": True},
                            },
                            "match_if_key_not_found": False,
                        }
                    },
                    {"response_flag_filter": {"flags": ["UAEX"]}},
                ]
            }
        },
        "typed_config": {
            "@type": _TYPE + "envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
            "common_config": {
                "log_name": plan.envoy.log_name,
                "grpc_service": {"envoy_grpc": {"cluster_name": AUTHORIZER_CLUSTER}},
                "transport_api_version": "V3",
                "buffer_flush_interval": _seconds(plan.layout.access_log_flush_s),
                # Entries go out every flush interval, or when this much is buffered: large
                # enough that a busy Envoy sends a few messages a flush, not one per 16 KiB
                # (each message costs both sides a gRPC read and write).
                "buffer_size_bytes": 262144,
            },
            # A gRPC status is in the trailers, or in the headers of a trailers-only answer.
            "additional_response_headers_to_log": logged,
            "additional_response_trailers_to_log": logged,
        },
    }


# --- clusters ----------------------------------------------------------------------------------


def one_address_cluster(
    name: str,
    endpoint: Endpoint,
    keepalive_s: float,
    tls: UpstreamTls | None,
    *,
    http2: bool = True,
) -> dict[str, Any]:
    """A cluster of one address, HTTP/2 (gRPC) unless told otherwise."""
    cluster: dict[str, Any] = {
        "name": name,
        # A DNS name is re-resolved (a headless Service's pods come and go).
        "type": "STATIC" if endpoint.path or endpoint.is_ip else "STRICT_DNS",
        "connect_timeout": "2s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": endpoint.address()}}]}],
        },
        "typed_extension_protocol_options": {
            _HTTP_OPTIONS: {
                "@type": _TYPE + _HTTP_OPTIONS,
                "explicit_http_config": (
                    {
                        "http2_protocol_options": {
                            "connection_keepalive": {
                                "interval": _seconds(keepalive_s),
                                "timeout": "20s",
                            }
                        }
                    }
                    if http2
                    else {"http_protocol_options": {}}
                ),
            }
        },
        "circuit_breakers": {
            "thresholds": [
                {"priority": "DEFAULT", "max_requests": _MAX_REQUESTS},
                {"priority": "HIGH", "max_requests": _MAX_REQUESTS},
            ]
        },
    }
    if tls is not None:
        cluster["transport_socket"] = _upstream_tls(endpoint, tls)
    return cluster


def _health_check(service: str) -> dict[str, Any]:
    return {
        "timeout": "1s",
        "interval": "5s",
        "no_traffic_interval": "5s",
        "unhealthy_threshold": 2,
        "healthy_threshold": 1,
        "grpc_health_check": {"service_name": service},
    }


def _upstream_cluster(plan: _Plan) -> dict[str, Any]:
    return upstream_cluster(
        plan.upstream,
        plan.upstream_keepalive_s,
        plan.upstream_tls,
        plan.layout.upstream_health_service,
    )


def upstream_cluster(
    endpoint: Endpoint, keepalive_s: float, tls: UpstreamTls | None, health_service: str
) -> dict[str, Any]:
    """Where allowed calls go, health-checked over grpc.health.v1."""
    cluster = one_address_cluster(UPSTREAM_CLUSTER, endpoint, keepalive_s, tls)
    cluster["health_checks"] = [_health_check(health_service)]
    return cluster


def _authorizer_http_cluster(plan: _Plan) -> dict[str, Any]:
    """The HTTP check over HTTP/1.1: a connection per check in flight, so the checks spread
    over `serve --workers N` (SO_REUSEPORT hands out connections, not requests)."""
    assert plan.authorizer_http is not None
    cluster = one_address_cluster(
        AUTHORIZER_HTTP_CLUSTER, plan.authorizer_http, 30.0, plan.authorizer_tls, http2=False
    )
    return cluster


def _authorizer_cluster(plan: _Plan) -> dict[str, Any]:
    cluster = one_address_cluster(AUTHORIZER_CLUSTER, plan.authorizer, 30.0, plan.authorizer_tls)
    # Readiness ('' is SERVING once the policy and the issuers' keys are loaded): a replica
    # still starting or draining is not asked.
    cluster["health_checks"] = [_health_check("")]
    return cluster


def _upstream_tls(endpoint: Endpoint, tls: UpstreamTls) -> dict[str, Any]:
    """Verify the server's chain AND its name (Envoy checks no name unless told to)."""
    name = tls.server_name or endpoint.host
    # Without a CA Envoy verifies nothing: no ca_file means the system's bundle (the path on
    # Debian and Ubuntu, Envoy's own images included).
    ca_file = tls.ca_file or Path(SYSTEM_CA_BUNDLE)
    validation: dict[str, Any] = {"trusted_ca": {"filename": str(ca_file)}}
    if name:
        san_type = "IP_ADDRESS" if _is_ip(name) else "DNS"
        validation["match_typed_subject_alt_names"] = [
            {"san_type": san_type, "matcher": {"exact": name}}
        ]
    context: dict[str, Any] = {
        "common_tls_context": {
            "validation_context": validation,
            "alpn_protocols": ["h2"],
        }
    }
    if name and not _is_ip(name):
        context["sni"] = name
    if tls.cert_file is not None and tls.key_file is not None:
        context["common_tls_context"]["tls_certificates"] = [
            _certificate(tls.cert_file, tls.key_file)
        ]
    return {
        "name": _TLS_SOCKET,
        "typed_config": {
            "@type": _TYPE + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            **context,
        },
    }


def _downstream_tls(tls: ServerTls) -> dict[str, Any]:
    common: dict[str, Any] = {
        "tls_certificates": [_certificate(tls.cert_file, tls.key_file)],
        "alpn_protocols": ["h2", "http/1.1"],
    }
    context: dict[str, Any] = {"common_tls_context": common}
    if tls.client_ca_file is not None:
        common["validation_context"] = {"trusted_ca": {"filename": str(tls.client_ca_file)}}
        context["require_client_certificate"] = tls.require_client_cert
    return {
        "name": _TLS_SOCKET,
        "typed_config": {
            "@type": _TYPE + "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            **context,
        },
    }


def _certificate(cert: Path, key: Path) -> dict[str, Any]:
    return {
        "certificate_chain": {"filename": str(cert)},
        "private_key": {"filename": str(key)},
    }


def _is_ip(host: str) -> bool:
    return Endpoint(host=host).is_ip


# --- emitting ----------------------------------------------------------------------------------


def to_yaml(bootstrap: dict[str, Any], header: Sequence[str] = ()) -> str:
    """The bootstrap as YAML (keys in the order built), after `header` lines as comments."""
    import yaml

    comments = "".join(f"# {line}\n" for line in header)
    return comments + yaml.safe_dump(bootstrap, sort_keys=False, width=100)


def layout_from_args(args: argparse.Namespace) -> EnvoyLayout:
    """The `opsgate envoy-config` flags as a layout (an unset flag keeps the default)."""
    defaults = EnvoyLayout()
    tls = None
    if args.tls_cert or args.tls_key or args.client_ca:
        if not (args.tls_cert and args.tls_key):
            raise ConfigError("<flags>", "--tls-cert", "needs --tls-key (and the other way round)")
        client_ca = Path(args.client_ca) if args.client_ca else None
        tls = ServerTls(Path(args.tls_cert), Path(args.tls_key), client_ca, client_ca is not None)
    authorizer_tls = None
    if args.authorizer_ca or args.authorizer_cert or args.authorizer_key:
        if bool(args.authorizer_cert) != bool(args.authorizer_key):
            problem = "--authorizer-cert and --authorizer-key go together"
            raise ConfigError("<flags>", "--authorizer-cert", problem)
        authorizer_tls = UpstreamTls(
            ca_file=Path(args.authorizer_ca) if args.authorizer_ca else None,
            cert_file=Path(args.authorizer_cert) if args.authorizer_cert else None,
            key_file=Path(args.authorizer_key) if args.authorizer_key else None,
        )
    return EnvoyLayout(
        listen=args.listen or defaults.listen,
        rest_listen=args.rest_listen,
        upstream=args.upstream,
        authorizer=args.authorizer,
        protocol=args.protocol,
        authorizer_http=args.authorizer_http,
        admin=args.admin or defaults.admin,
        check_timeout_s=args.check_timeout or defaults.check_timeout_s,
        tls=tls,
        authorizer_tls=authorizer_tls,
    )


def write_config(args: argparse.Namespace) -> int:
    """`opsgate envoy-config`: the bootstrap as YAML, to --out or stdout."""
    settings = load_settings(args.config, require_upstream=False)
    layout = layout_from_args(args)
    bootstrap = render_bootstrap(settings, layout, source=str(args.config))
    rest = f", REST/JSON on {layout.rest_listen}" if layout.rest_listen else ""
    authorizer = Endpoint.parse(layout.authorizer or settings.listen, "--authorizer").dialable
    header = (
        f"Envoy bootstrap written by `opsgate envoy-config` (opsgate {__version__}) from "
        f"{args.config}.",
        f"Envoy serves gRPC on {layout.listen}{rest};",
        f"it asks opsgate at {authorizer} about every call and reports each ending to it.",
        "Regenerate it when the service profile or `envoy:` changes. Check it with:",
        "  envoy --mode validate -c THIS_FILE",
    )
    text = to_yaml(bootstrap, header)
    if args.out is None:
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text)
    return 0
