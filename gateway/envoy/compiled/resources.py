"""The compiled tier on disk: a bootstrap that reads its listener and clusters from files, and
those files, replaced atomically so that Envoy picks up a new policy without a restart."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import Settings
from gateway.envoy.bootstrap import (
    GRPC_LISTENER,
    Endpoint,
    connection_manager,
    one_address_cluster,
    router,
    upstream_cluster,
)
from gateway.envoy.compiled.compiler import Compiled
from gateway.envoy.compiled.replies import local_replies
from gateway.envoy.compiled.routes import NAME_HEADER
from gateway.envoy.settings import GRPC_DOOR, LOGGED_RESPONSE_HEADERS
from gateway.errors import ConfigError

Json = dict[str, Any]
LISTENERS_FILE = "lds.json"
CLUSTERS_FILE = "cds.json"
AUDIT_CLUSTER = "opsgate_audit"
COMPILED_LOG_NAME = "opsgate-compiled"  # the access-log entries of the compiled tier
POLICY_ETAG_TAG = "opsgate-policy-etag"  # custom tag: the policy each entry was decided by
_TYPE = "type.googleapis.com/"
# Envoy refuses a regex whose RE2 program is larger than this runtime value (100 by default):
# the compiled matchers hold member lists, each regex at most a thousand alternatives long.
REGEX_PROGRAM_LIMIT = 5_000_000


@dataclass(frozen=True, slots=True)
class CompiledLayout:
    """Where the compiled Envoy listens, sends allowed calls, and reports each call."""

    directory: Path  # where lds.json and cds.json are written, and watched
    listen: str = "0.0.0.0:10000"
    upstream: str | None = None  # None: the config's upstream.target
    admin: str = "127.0.0.1:9901"
    audit: str | None = None  # opsgate's access-log service (its `listen`); None: no audit
    longest_call_s: float = 3600.0
    upstream_health_service: str = ""
    access_log_flush_s: float = 0.1


def bootstrap(layout: CompiledLayout) -> Json:
    """The static part: everything else comes from the two files, reloaded when replaced."""
    directory = str(layout.directory.resolve())

    def watched(name: str) -> Json:
        return {
            "path_config_source": {
                "path": os.path.join(directory, name),
                "watched_directory": {"path": directory},
            },
            "resource_api_version": "V3",
        }

    return {
        "node": {"id": "opsgate-compiled", "cluster": "opsgate-compiled"},
        "admin": {"address": Endpoint.parse(layout.admin, "--admin").address()},
        "dynamic_resources": {
            "lds_config": watched(LISTENERS_FILE),
            "cds_config": watched(CLUSTERS_FILE),
        },
        # Give freed memory back to the system: loading a large listener leaves its JSON's
        # transient in the allocator's free lists (about 6x the file) otherwise.
        "memory_allocator_manager": {
            "bytes_to_release": 64 * 1024 * 1024,
            "memory_release_interval": "1s",
        },
        "layered_runtime": {
            "layers": [
                {
                    "name": "opsgate",
                    "static_layer": {
                        "re2.max_program_size.error_level": REGEX_PROGRAM_LIMIT,
                        "re2.max_program_size.warn_level": REGEX_PROGRAM_LIMIT,
                    },
                }
            ]
        },
    }


def listener(compiled: Compiled, layout: CompiledLayout, service: str) -> Json:
    manager = connection_manager(GRPC_LISTENER, GRPC_DOOR, layout.longest_call_s)
    manager["route_config"] = {
        "name": GRPC_LISTENER,
        "virtual_hosts": [
            {
                "name": "operations",
                "domains": ["*"],
                "routes": [
                    {
                        "match": {"prefix": "/"},
                        "route": {
                            "cluster": "upstream",
                            "timeout": "0s",
                            "max_stream_duration": {"grpc_timeout_header_max": "0s"},
                        },
                        # The router drops them on the way out, at no filter's cost.
                        "request_headers_to_remove": list(compiled.internal_headers),
                    }
                ],
            }
        ],
    }
    manager["http_filters"] = [*compiled.http_filters, router()]
    manager["local_reply_config"] = local_replies(
        compiled.routes, service, google_accepted=compiled.google_accepted
    )
    if layout.audit is not None:
        manager["access_log"] = [_access_log(layout, compiled.policy_etag)]
    return {
        "@type": _TYPE + "envoy.config.listener.v3.Listener",
        "name": GRPC_LISTENER,
        "address": Endpoint.parse(layout.listen, "--listen").address(),
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


def _access_log(layout: CompiledLayout, policy_etag: str) -> Json:
    """Every call, allowed or refused, to opsgate's access-log service: each entry carries the
    deciding RBAC id, the verified claims and the name (dynamic metadata), the final status,
    and the etag of the policy compiled into this listener (a literal custom tag: an entry
    always names the policy that decided it, whatever Envoy reloads meanwhile)."""
    logged = list(LOGGED_RESPONSE_HEADERS)
    return {
        "name": "envoy.access_loggers.http_grpc",
        "typed_config": {
            "@type": _TYPE + "envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
            "common_config": {
                "log_name": COMPILED_LOG_NAME,
                "grpc_service": {"envoy_grpc": {"cluster_name": AUDIT_CLUSTER}},
                "transport_api_version": "V3",
                "buffer_flush_interval": f"{layout.access_log_flush_s:g}s",
                "buffer_size_bytes": 262144,
                "custom_tags": [{"tag": POLICY_ETAG_TAG, "literal": {"value": policy_etag}}],
            },
            "additional_request_headers_to_log": [NAME_HEADER],
            "additional_response_headers_to_log": logged,
            "additional_response_trailers_to_log": logged,
        },
    }


def clusters(compiled: Compiled, layout: CompiledLayout, settings: Settings) -> list[Json]:
    upstream_text = layout.upstream or (settings.upstream.target if settings.upstream else None)
    if upstream_text is None:
        raise ConfigError("<config>", "upstream", "is not set: give --upstream HOST:PORT")
    upstream = settings.upstream
    found = [
        upstream_cluster(
            Endpoint.parse(upstream_text, "--upstream"),
            upstream.keepalive_time_s if upstream else 30.0,
            upstream.tls if upstream else None,
            layout.upstream_health_service,
        ),
        *compiled.clusters,
    ]
    if layout.audit is not None:
        audit = Endpoint.parse(layout.audit, "--audit").dialable
        found.append(one_address_cluster(AUDIT_CLUSTER, audit, 30.0, None))
    return [{"@type": _TYPE + "envoy.config.cluster.v3.Cluster", **c} for c in found]


def write_atomically(path: Path, content: str) -> None:
    """Write beside `path`, then rename over it: Envoy never reads half a file."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(handle, 0o644)  # Envoy may run as another user
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def render_resources(
    compiled: Compiled, layout: CompiledLayout, settings: Settings, service: str
) -> dict[str, str]:
    """file name -> content, clusters first (the listener names them); raises ConfigError
    (before anything is written) when the config lacks what they need."""
    version = compiled.policy_etag
    documents = {
        CLUSTERS_FILE: clusters(compiled, layout, settings),
        LISTENERS_FILE: [listener(compiled, layout, service)],
    }
    return {
        name: json.dumps({"version_info": version, "resources": resources}, separators=(",", ":"))
        for name, resources in documents.items()
    }


def write_resources(directory: Path, documents: dict[str, str]) -> None:
    """Each document replaced atomically, in order."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in documents.items():
        write_atomically(directory / name, content)
