"""The fields of Istio's and Envoy Gateway's resources that deploy/ uses, as a small strict schema.

kubernetes-validate knows only Kubernetes' own kinds, and the CRDs' OpenAPI schemas are not
available offline, so these are written by hand from the projects' API sources, for exactly the
fields the overlays set (a field not listed here is an error, so a misspelling cannot pass):

- Istio: istio/api mesh/v1alpha1/config.proto (MeshConfig.ExtensionProvider:
  EnvoyExternalAuthorizationGrpcProvider, EnvoyExternalAuthorizationRequestBody,
  EnvoyHttpGrpcV3LogProvider), security/v1 (AuthorizationPolicy, PeerAuthentication),
  telemetry/v1 (Telemetry), networking/v1alpha3 (EnvoyFilter); JSON names are camelCase.
- Envoy Gateway: envoyproxy/gateway api/v1alpha1 (SecurityPolicy.extAuth: ExtAuth,
  GRPCExtAuthService/BackendCluster, BodyToExtAuth; ClientTrafficPolicy.headers:
  HeaderSettings; EnvoyProxy.telemetry.accessLog: ProxyAccessLog, ProxyAccessLogSink,
  ALSEnvoyProxyAccessLog, ALSEnvoyProxyHTTPAccessLogConfig).
- Gateway API v1: Gateway (listeners, tls, allowedRoutes, infrastructure.parametersRef),
  GRPCRoute (parentRefs, hostnames, rules.matches.method, backendRefs).

A schema is a Python type (str, int, bool), a tuple of allowed values, a one-item list (a list
of that schema), or a dict of optional keys; REQUIRED lists the keys a dict must have, ANY takes
any value (an Envoy config fragment, checked elsewhere).
"""

from __future__ import annotations

from typing import Any

REQUIRED = "__required__"
ANY = object()

_LABELS: dict[str, Any] = {"matchLabels": {"*": str}}
_METADATA: dict[str, Any] = {
    "name": str,
    "namespace": str,
    "labels": {"*": str},
    "annotations": {"*": str},
    REQUIRED: ["name"],
}
_BACKEND_REF: dict[str, Any] = {
    "group": str,
    "kind": str,
    "name": str,
    "namespace": str,
    "port": int,
    REQUIRED: ["name", "port"],
}
_TARGET_REF: dict[str, Any] = {
    "group": str,
    "kind": str,
    "name": str,
    "sectionName": str,
    REQUIRED: ["group", "kind", "name"],
}


def _resource(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": str,
        "kind": str,
        "metadata": _METADATA,
        "spec": spec,
        REQUIRED: ["apiVersion", "kind", "metadata", "spec"],
    }


_REQUEST_BODY: dict[str, Any] = {
    "maxRequestBytes": int,
    "allowPartialMessage": bool,
    "packAsBytes": bool,
}
_EXTENSION_PROVIDER: dict[str, Any] = {
    "name": str,
    "envoyExtAuthzGrpc": {
        "service": str,
        "port": int,
        "timeout": str,
        "failOpen": bool,
        "statusOnError": str,
        "includeRequestBodyInCheck": _REQUEST_BODY,
        REQUIRED: ["service", "port"],
    },
    "envoyHttpAls": {
        "service": str,
        "port": int,
        "logName": str,
        "filterStateObjectsToLog": [str],
        "additionalRequestHeadersToLog": [str],
        "additionalResponseHeadersToLog": [str],
        "additionalResponseTrailersToLog": [str],
        REQUIRED: ["service", "port"],
    },
    REQUIRED: ["name"],
}

SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("install.istio.io/v1alpha1", "IstioOperator"): _resource(
        {"meshConfig": {"extensionProviders": [_EXTENSION_PROVIDER]}}
    ),
    ("security.istio.io/v1", "AuthorizationPolicy"): _resource(
        {
            "selector": _LABELS,
            "action": ("ALLOW", "DENY", "AUDIT", "CUSTOM"),
            "provider": {"name": str, REQUIRED: ["name"]},
            "rules": [{"to": [{"operation": {"paths": [str], "methods": [str]}}]}],
        }
    ),
    ("security.istio.io/v1", "PeerAuthentication"): _resource(
        {
            "selector": _LABELS,
            "mtls": {"mode": ("UNSET", "DISABLE", "PERMISSIVE", "STRICT"), REQUIRED: ["mode"]},
        }
    ),
    ("telemetry.istio.io/v1", "Telemetry"): _resource(
        {
            "selector": _LABELS,
            "accessLogging": [
                {
                    "providers": [{"name": str, REQUIRED: ["name"]}],
                    "disabled": bool,
                    "filter": {"expression": str},
                }
            ],
        }
    ),
    ("networking.istio.io/v1alpha3", "EnvoyFilter"): _resource(
        {
            "workloadSelector": {"labels": {"*": str}},
            "configPatches": [
                {
                    "applyTo": ("NETWORK_FILTER", "HTTP_FILTER", "LISTENER", "FILTER_CHAIN"),
                    "match": {
                        "context": ("SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY", "ANY"),
                        "listener": {"filterChain": {"filter": {"name": str}}},
                    },
                    "patch": {
                        "operation": ("MERGE", "ADD", "REMOVE", "INSERT_BEFORE", "INSERT_AFTER"),
                        "value": ANY,
                    },
                    REQUIRED: ["applyTo", "patch"],
                }
            ],
        }
    ),
    ("gateway.envoyproxy.io/v1alpha1", "SecurityPolicy"): _resource(
        {
            "targetRefs": [_TARGET_REF],
            "extAuth": {
                "grpc": {"backendRefs": [_BACKEND_REF], REQUIRED: ["backendRefs"]},
                "headersToExtAuth": [str],
                "bodyToExtAuth": {"maxRequestBytes": int, REQUIRED: ["maxRequestBytes"]},
                "timeout": str,
                "failOpen": bool,
                "recomputeRoute": bool,
            },
        }
    ),
    ("gateway.envoyproxy.io/v1alpha1", "ClientTrafficPolicy"): _resource(
        {
            "targetRefs": [_TARGET_REF],
            "headers": {
                "withUnderscoresAction": ("Allow", "RejectRequest", "DropHeader"),
                "requestID": ("PreserveOrGenerate", "Preserve", "Generate", "Disable"),
            },
        }
    ),
    ("gateway.envoyproxy.io/v1alpha1", "EnvoyProxy"): _resource(
        {
            "telemetry": {
                "accessLog": {
                    "disable": bool,
                    "settings": [
                        {
                            "matches": [str],
                            "sinks": [
                                {
                                    "type": ("ALS", "File", "OpenTelemetry"),
                                    "als": {
                                        "backendRefs": [_BACKEND_REF],
                                        "logName": str,
                                        "type": ("HTTP", "TCP"),
                                        "http": {
                                            "requestHeaders": [str],
                                            "responseHeaders": [str],
                                            "responseTrailers": [str],
                                        },
                                        REQUIRED: ["backendRefs", "type"],
                                    },
                                    REQUIRED: ["type"],
                                }
                            ],
                            REQUIRED: ["sinks"],
                        }
                    ],
                }
            }
        }
    ),
    ("gateway.networking.k8s.io/v1", "Gateway"): _resource(
        {
            "gatewayClassName": str,
            "infrastructure": {
                "parametersRef": {
                    "group": str,
                    "kind": str,
                    "name": str,
                    REQUIRED: ["group", "kind", "name"],
                }
            },
            "listeners": [
                {
                    "name": str,
                    "protocol": ("HTTP", "HTTPS", "TLS", "TCP", "UDP"),
                    "port": int,
                    "hostname": str,
                    "tls": {
                        "mode": ("Terminate", "Passthrough"),
                        "certificateRefs": [{"kind": str, "group": str, "name": str}],
                    },
                    "allowedRoutes": {"namespaces": {"from": ("All", "Same", "Selector")}},
                    REQUIRED: ["name", "protocol", "port"],
                }
            ],
            REQUIRED: ["gatewayClassName", "listeners"],
        }
    ),
    ("gateway.networking.k8s.io/v1", "GRPCRoute"): _resource(
        {
            "parentRefs": [{"name": str, "sectionName": str, "namespace": str}],
            "hostnames": [str],
            "rules": [
                {
                    "matches": [
                        {
                            "method": {
                                "type": ("Exact", "RegularExpression"),
                                "service": str,
                                "method": str,
                            }
                        }
                    ],
                    "backendRefs": [_BACKEND_REF],
                }
            ],
        }
    ),
}


def problems(obj: dict[str, Any]) -> list[str]:
    """What in `obj` the schema of its apiVersion and kind does not allow (all of it if no
    schema knows the kind)."""
    key = (obj.get("apiVersion", ""), obj.get("kind", ""))
    schema = SCHEMAS.get(key)
    if schema is None:
        return [f"no schema for {key[0]} {key[1]}"]
    return _check(obj, schema, key[1])


def _check(value: Any, schema: Any, path: str) -> list[str]:
    if schema is ANY:
        return []
    if isinstance(schema, tuple):
        return [] if value in schema else [f"{path}: {value!r} is not one of {schema}"]
    if isinstance(schema, list):
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {type(value).__name__}"]
        return [p for i, item in enumerate(value) for p in _check(item, schema[0], f"{path}[{i}]")]
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            return [f"{path}: expected a mapping, got {type(value).__name__}"]
        found = [
            f"{path}: {key} is required" for key in schema.get(REQUIRED, ()) if key not in value
        ]
        for key, item in value.items():
            sub = schema.get(key, schema.get("*"))
            if sub is None:
                found.append(f"{path}.{key}: not a field this schema knows")
            else:
                found.extend(_check(item, sub, f"{path}.{key}"))
        return found
    if schema is int and isinstance(value, bool):
        return [f"{path}: expected int, got bool"]
    if not isinstance(value, schema):
        return [f"{path}: expected {schema.__name__}, got {type(value).__name__}"]
    return []
