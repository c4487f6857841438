"""deploy/envoy and the Istio and Envoy Gateway overlays: opsgate as Envoy's authorizer.

The overlays are rendered by the real `kubectl kustomize` (renders.py; they use `$patch: delete`,
which kustomize_lite refuses, so they are skipped on a machine without kubectl), Kubernetes' own kinds are validated strictly against the 1.30 schemas,
Istio's and Envoy Gateway's kinds against crd_schemas.py (the fields we use, from their API
sources), and every value that must agree with opsgate's config or another object does.
The standalone example's envoy.yaml must be exactly what `opsgate envoy-config` writes today,
and the real Envoy must accept it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway.config import Settings, load_settings
from gateway.envoy.settings import FRAME_HEADER_BYTES, LOGGED_RESPONSE_HEADERS
from gateway.policy.loader import load_policy
from gateway.profile import load_profile
from gateway.testing.envoy import envoy_available, validate
from tests.deploy import crd_schemas
from tests.deploy.kustomize_lite import find
from tests.deploy.renders import CONFIG_MAP, DEPLOY, render

KUBERNETES_VERSION = "1.30"
OVERLAYS = DEPLOY / "kubernetes" / "overlays"
ENVOY_EXAMPLE = DEPLOY / "envoy"
# The command deploy/envoy/README.md and opsgate.yaml give for envoy.yaml, run in deploy/envoy.
EXAMPLE_FLAGS = [
    "--listen",
    "0.0.0.0:8443",
    "--rest-listen",
    "0.0.0.0:8080",
    "--upstream",
    "unix:/run/operations/operations.sock",
]
UPSTREAM_LABELS = {"app.kubernetes.io/name": "insights-operations"}
NAMESPACE = "contact-center"

Obj = dict[str, Any]


def _is_core(obj: Obj) -> bool:
    group = obj["apiVersion"].rpartition("/")[0]
    return group in ("", "apps", "autoscaling", "policy", "networking.k8s.io")


def _config(objects: list[Obj]) -> Obj:
    config: Obj = yaml.safe_load(find(objects, "ConfigMap", CONFIG_MAP)["data"]["opsgate.yaml"])
    return config


def _grpc_port(objects: list[Obj]) -> int:
    service = find(objects, "Service", "opsgate")
    (port,) = [p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc"]
    return int(port)


def _loaded(objects: list[Obj], tmp_path: Path) -> Settings:
    """The overlay's opsgate.yaml and policy.yaml, loaded as `opsgate serve` loads them."""
    data = find(objects, "ConfigMap", CONFIG_MAP)["data"]
    for key, text in data.items():
        (tmp_path / key).write_text(text.replace("/etc/opsgate/", f"{tmp_path}/"))
    settings = load_settings(tmp_path / "opsgate.yaml")
    profile = load_profile(settings.authorization.profile, settings.authorization.profile_file)
    assert load_policy(settings.authorization.policy_file, known_permissions=profile.permissions)
    return settings


def _ingress_peers(policy: Obj, port: int | str) -> list[Obj]:
    return [
        peer
        for rule in policy["spec"]["ingress"]
        if any(p["port"] == port for p in rule["ports"])
        for peer in rule["from"]
    ]


# --- both overlays ------------------------------------------------------------------------------

overlays = pytest.mark.parametrize("name", ["istio", "envoy-gateway"])


@overlays
def test_kubernetes_kinds_validate_and_the_others_match_the_fields_we_use(name: str) -> None:
    for obj in render(name):
        where = f"{name}: {obj['kind']}/{obj['metadata']['name']}"
        if _is_core(obj):
            try:
                kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}")
        else:
            assert not crd_schemas.problems(obj), (where, crd_schemas.problems(obj))
        assert obj["metadata"].get("namespace") == NAMESPACE, where
        assert obj["kind"] != "Secret", where


@overlays
def test_opsgate_is_the_authorizer_only_and_mounts_no_secret_it_does_not_need(
    name: str, tmp_path: Path
) -> None:
    objects = render(name)
    settings = _loaded(objects, tmp_path)
    assert settings.upstream is None
    assert settings.envoy is not None
    pod = find(objects, "Deployment", "opsgate")["spec"]["template"]["spec"]
    assert not [v for v in pod["volumes"] if "secret" in v]
    (container,) = pod["containers"]
    mounted = {m["name"] for m in container["volumeMounts"]}
    assert mounted == {v["name"] for v in pod["volumes"]}


@overlays
def test_only_the_proxy_in_front_reaches_the_upstream_and_opsgate(name: str) -> None:
    objects = render(name)
    upstream = find(objects, "NetworkPolicy", "opsgate-upstream")["spec"]
    assert upstream["podSelector"]["matchLabels"] == UPSTREAM_LABELS
    peers = _ingress_peers({"spec": upstream}, 50051)
    assert peers
    opsgate_labels = find(objects, "Deployment", "opsgate")["spec"]["template"]["metadata"][
        "labels"
    ]
    # Not opsgate (it forwards nothing here), and never everyone.
    for peer in peers:
        assert peer.get("podSelector", {}).get("matchLabels") != {
            "app.kubernetes.io/name": opsgate_labels["app.kubernetes.io/name"]
        }
        assert peer.get("namespaceSelector") or peer.get("podSelector")
    callers = _ingress_peers(find(objects, "NetworkPolicy", "opsgate-ingress"), "grpc")
    assert callers
    if name == "istio":
        assert callers == [{"podSelector": {"matchLabels": UPSTREAM_LABELS}}]
    else:
        assert all(
            c["podSelector"]["matchLabels"]["gateway.envoyproxy.io/owning-gateway-name"]
            == "operations-edge"
            for c in callers
        )


# --- Istio --------------------------------------------------------------------------------------


def _providers() -> dict[str, Obj]:
    operator = yaml.safe_load((OVERLAYS / "istio" / "mesh-config.yaml").read_text())
    assert not crd_schemas.problems(operator), crd_schemas.problems(operator)
    return {p["name"]: p for p in operator["spec"]["meshConfig"]["extensionProviders"]}


def test_istio_asks_opsgate_about_every_call_and_fails_closed(tmp_path: Path) -> None:
    objects = render("istio")
    settings = _loaded(objects, tmp_path)
    assert settings.envoy is not None
    policy = find(objects, "AuthorizationPolicy", "opsgate-ext-authz")["spec"]
    assert policy["action"] == "CUSTOM"
    assert policy["selector"]["matchLabels"] == UPSTREAM_LABELS
    assert policy["rules"] == [{}], "one empty rule: every request"
    authz = _providers()[policy["provider"]["name"]]["envoyExtAuthzGrpc"]
    assert authz["service"] == f"opsgate.{NAMESPACE}.svc.cluster.local"
    assert authz["port"] == _grpc_port(objects)
    assert authz["failOpen"] is False
    assert authz["statusOnError"] == "503"
    assert authz["includeRequestBodyInCheck"] == {
        "maxRequestBytes": settings.envoy.max_body_bytes + FRAME_HEADER_BYTES,
        "allowPartialMessage": False,
        "packAsBytes": True,
    }


def test_istio_reports_every_ending_to_opsgate_and_admits_only_mesh_traffic(
    tmp_path: Path,
) -> None:
    objects = render("istio")
    settings = _loaded(objects, tmp_path)
    assert settings.envoy is not None
    telemetry = find(objects, "Telemetry", "opsgate-access-log")["spec"]
    assert telemetry["selector"]["matchLabels"] == UPSTREAM_LABELS
    ((provider,),) = [entry["providers"] for entry in telemetry["accessLogging"]]
    als = _providers()[provider["name"]]["envoyHttpAls"]
    assert als["service"] == f"opsgate.{NAMESPACE}.svc.cluster.local"
    assert als["port"] == _grpc_port(objects)
    assert als["logName"] == settings.envoy.log_name
    assert set(LOGGED_RESPONSE_HEADERS) <= set(als["additionalResponseHeadersToLog"])
    assert set(LOGGED_RESPONSE_HEADERS) <= set(als["additionalResponseTrailersToLog"])
    strict = find(objects, "PeerAuthentication", "insights-operations-strict")["spec"]
    assert strict == {"selector": {"matchLabels": UPSTREAM_LABELS}, "mtls": {"mode": "STRICT"}}
    headers = find(objects, "EnvoyFilter", "insights-operations-reject-underscore-headers")
    (patch,) = headers["spec"]["configPatches"]
    assert headers["spec"]["workloadSelector"]["labels"] == UPSTREAM_LABELS
    assert patch["match"]["context"] == "SIDECAR_INBOUND"
    options = patch["patch"]["value"]["typed_config"]["common_http_protocol_options"]
    assert options == {"headers_with_underscores_action": "REJECT_REQUEST"}


# --- Envoy Gateway ------------------------------------------------------------------------------


def test_envoy_gateway_checks_the_route_with_opsgate_and_logs_to_it(tmp_path: Path) -> None:
    objects = render("envoy-gateway")
    settings = _loaded(objects, tmp_path)
    assert settings.envoy is not None
    route = find(objects, "GRPCRoute", "insights-operations")["spec"]
    gateway = find(objects, "Gateway", "operations-edge")["spec"]
    assert {p["name"] for p in route["parentRefs"]} == {"operations-edge"}
    assert route["rules"][0]["matches"] == [
        {"method": {"type": "Exact", "service": "google.longrunning.Operations"}}
    ]
    policy = find(objects, "SecurityPolicy", "opsgate-ext-auth")["spec"]
    assert policy["targetRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "GRPCRoute",
            "name": "insights-operations",
        }
    ]
    ext = policy["extAuth"]
    assert ext["grpc"]["backendRefs"] == [{"name": "opsgate", "port": _grpc_port(objects)}]
    assert ext["bodyToExtAuth"] == {
        "maxRequestBytes": settings.envoy.max_body_bytes + FRAME_HEADER_BYTES
    }
    assert ext["failOpen"] is False
    proxy = gateway["infrastructure"]["parametersRef"]
    assert proxy["kind"] == "EnvoyProxy"
    envoy_proxy = find(objects, "EnvoyProxy", proxy["name"])["spec"]
    ((sink,),) = [s["sinks"] for s in envoy_proxy["telemetry"]["accessLog"]["settings"]]
    als = sink["als"]
    assert sink["type"] == "ALS" and als["type"] == "HTTP"
    assert als["backendRefs"] == [{"name": "opsgate", "port": _grpc_port(objects)}]
    assert als["logName"] == settings.envoy.log_name
    assert set(LOGGED_RESPONSE_HEADERS) <= set(als["http"]["responseHeaders"])
    assert set(LOGGED_RESPONSE_HEADERS) <= set(als["http"]["responseTrailers"])
    headers = find(objects, "ClientTrafficPolicy", "operations-edge")["spec"]
    assert headers["targetRefs"][0]["name"] == "operations-edge"
    assert headers["headers"] == {"withUnderscoresAction": "RejectRequest", "requestID": "Generate"}


def test_the_crd_schema_catches_a_misspelt_field() -> None:
    """The schema check above is real: a field Istio does not have fails it."""
    operator = yaml.safe_load((OVERLAYS / "istio" / "mesh-config.yaml").read_text())
    provider = operator["spec"]["meshConfig"]["extensionProviders"][0]["envoyExtAuthzGrpc"]
    provider["failureModeAllow"] = False  # Envoy's name, not Istio's (failOpen)
    provider["statusOnError"] = 503  # a string in Istio's API
    found = crd_schemas.problems(operator)
    assert any("failureModeAllow" in p for p in found)
    assert any("statusOnError: expected str" in p for p in found)
    assert crd_schemas.problems({"apiVersion": "x/v1", "kind": "Unknown"})


# --- the standalone example --------------------------------------------------------------------


def test_the_example_envoy_yaml_is_what_envoy_config_writes_today(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.cli import main

    monkeypatch.chdir(ENVOY_EXAMPLE)
    out = tmp_path / "envoy.yaml"
    assert (
        main(["envoy-config", "--config", "opsgate.yaml", *EXAMPLE_FLAGS, "--out", str(out)]) == 0
    )
    assert out.read_text() == (ENVOY_EXAMPLE / "envoy.yaml").read_text(), (
        "regenerate deploy/envoy/envoy.yaml with the command in deploy/envoy/README.md"
    )
    readme = (ENVOY_EXAMPLE / "README.md").read_text()
    command = " ".join(EXAMPLE_FLAGS)
    assert command in re.sub(r"\s*\\\n\s*", " ", readme)
    assert command in re.sub(r"\s*\\\n#\s*", " ", (ENVOY_EXAMPLE / "opsgate.yaml").read_text())
    settings = load_settings(ENVOY_EXAMPLE / "opsgate.yaml")
    assert settings.upstream is None and settings.envoy is not None
    assert settings.listen.startswith("127.0.0.1:"), "only Envoy beside it asks opsgate"


@pytest.mark.skipif(not envoy_available(), reason="no envoy binary")
def test_envoy_accepts_the_example() -> None:
    validate(ENVOY_EXAMPLE / "envoy.yaml")
