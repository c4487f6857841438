"""deploy/: the Kubernetes manifests are valid, and agree with the image, the CLI and the config.

Every kustomization (the base and each overlay) is rendered by `kubectl kustomize` (by
tests/deploy/kustomize_lite.py, the offline fallback, on a machine without kubectl: renders.py),
validated against the Kubernetes 1.30 OpenAPI schemas bundled in `kubernetes-validate` (strict:
unknown fields are errors; no network), and cross-checked: ports, probes, mounts, grace periods,
users and selectors must match what the gateway's config and CLI actually do.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import PurePosixPath
from typing import Any

import kubernetes_validate
import pytest

from gateway.cli import _parser
from gateway.config import Settings
from tests.deploy import dockerfile
from tests.deploy.kustomize_lite import find
from tests.deploy.renders import (
    ALL_KUSTOMIZATIONS,
    CONFIG_MAP,
    DEPLOY,
    KUSTOMIZATIONS,
    ROOT,
    gateway_config,
    render,
)

KUBERNETES_VERSION = "1.30"
DOCKERFILE = DEPLOY / "Dockerfile"
ALL_INTERFACES = {"0.0.0.0", "[::]", "::"}

Obj = dict[str, Any]

# The gateway in front of an upstream (base, example-upstream): their schemas, objects and
# NetworkPolicies. Every kustomization (Envoy's and Istio's authorizer overlays too): the pod.
renders = pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
every_render = pytest.mark.parametrize("name", sorted(ALL_KUSTOMIZATIONS))


def _deployment(objects: list[Obj]) -> Obj:
    return find(objects, "Deployment", "opsgate")


def _pod(objects: list[Obj]) -> Obj:
    pod: Obj = _deployment(objects)["spec"]["template"]
    return pod


def _container(objects: list[Obj]) -> Obj:
    (container,) = [c for c in _pod(objects)["spec"]["containers"] if c["name"] == "opsgate"]
    return container


def _port(host_port: str) -> int:
    return int(host_port.rpartition(":")[2])


def _container_port(container: Obj, name: str) -> int:
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == name]
    return int(port)


def _matches(selector: Obj, labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors are checked here"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _config_paths(node: Any, key: str = "") -> list[tuple[str, str]]:
    """(key, path) for every file the config names: `*_file` keys and audit.file.path."""
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for child, value in node.items():
            path = f"{key}.{child}" if key else child
            if isinstance(value, str) and (child.endswith("_file") or path == "audit.file.path"):
                found.append((path, value))
            else:
                found.extend(_config_paths(value, path))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            found.extend(_config_paths(item, f"{key}[{index}]"))
    return found


def _mount_for(objects: list[Obj], path: str) -> tuple[Obj, Obj]:
    """The (volumeMount, volume) that provides `path` in the gateway's container."""
    container = _container(objects)
    candidates = [
        m
        for m in container["volumeMounts"]
        if PurePosixPath(path).is_relative_to(PurePosixPath(m["mountPath"]))
    ]
    assert candidates, f"{path} is on no volume (the root filesystem is read-only and empty)"
    mount = max(candidates, key=lambda m: len(m["mountPath"]))
    (volume,) = [v for v in _pod(objects)["spec"]["volumes"] if v["name"] == mount["name"]]
    return mount, volume


def _cli(argv: list[str]) -> Any:
    """Parse `opsgate ARGS` with the real CLI parser (argparse exits on an unknown command)."""
    assert argv[0] == "opsgate", argv
    return _parser().parse_args(argv[1:])


# --- schemas -----------------------------------------------------------------------------------


@renders
def test_every_object_validates_against_the_kubernetes_schemas(name: str) -> None:
    """Strict validation offline: a misspelt or misplaced field fails here, not at kubectl apply."""
    objects = render(name)
    assert objects
    for obj in objects:
        where = f"{name}: {obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(part) for part in exc.path)
            pytest.fail(f"{where}: {path}: {exc.message}")


@renders
def test_the_kustomization_renders_the_whole_deployment_and_no_secret(name: str) -> None:
    """The pieces a platform team needs are there; Secrets are referenced, never committed."""
    kinds = {(o["kind"], o["metadata"]["name"]) for o in render(name)}
    assert {
        ("ServiceAccount", "opsgate"),
        ("Deployment", "opsgate"),
        ("Service", "opsgate"),
        ("HorizontalPodAutoscaler", "opsgate"),
        ("PodDisruptionBudget", "opsgate"),
        ("NetworkPolicy", "opsgate-ingress"),
        ("NetworkPolicy", "opsgate-upstream"),
        ("ConfigMap", CONFIG_MAP),
    } <= kinds
    assert not [k for k in kinds if k[0] == "Secret"]
    committed = [
        p for p in DEPLOY.rglob("*.yaml") if re.search(r"(?m)^kind:\s*Secret\b", p.read_text())
    ]
    assert not committed


def test_the_overlay_puts_everything_in_the_upstreams_namespace() -> None:
    """The upstream NetworkPolicy only works in the upstream's namespace: the overlay's."""
    objects = render("example-upstream")
    assert {o["metadata"].get("namespace") for o in objects} == {"contact-center"}
    assert (
        gateway_config(objects)["upstream"]["target"]
        == "insights-operations.contact-center.svc:443"
    )
    assert _container(objects)["image"] == "registry.acme.example/platform/opsgate:0.1.0"


# --- the image ----------------------------------------------------------------------------------


def test_the_image_runs_opsgate_serve_with_the_mounted_config() -> None:
    """ENTRYPOINT + CMD is a real `opsgate serve --config PATH`, PATH being the ConfigMap's file."""
    instructions = dockerfile.parse(DOCKERFILE)
    entrypoint = dockerfile.last(instructions, "ENTRYPOINT").exec_form()
    command = dockerfile.last(instructions, "CMD").exec_form()
    assert entrypoint == ["opsgate"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["opsgate"] == "gateway.cli:main"
    args = _cli(entrypoint + command)
    assert args.command == "serve"
    assert str(args.config) == "/etc/opsgate/opsgate.yaml"
    for name in KUSTOMIZATIONS:
        objects = render(name)
        container = _container(objects)
        assert "command" not in container and "args" not in container, "the image's own CMD runs"
        mount, volume = _mount_for(objects, str(args.config))
        assert volume.get("configMap", {}).get("name") == CONFIG_MAP
        key = str(PurePosixPath(args.config).relative_to(mount["mountPath"]))
        assert key in find(objects, "ConfigMap", CONFIG_MAP)["data"]


def test_the_image_is_multi_stage_slim_and_runs_as_a_numeric_non_root_user() -> None:
    """Wheel built in a builder stage; the final stage installs it without compilers, as 10001."""
    instructions = dockerfile.parse(DOCKERFILE)
    froms = [i for i in instructions if i.keyword == "FROM"]
    assert len(froms) == 2
    default_image = re.search(r"ARG PYTHON_IMAGE=(\S+)", DOCKERFILE.read_text())
    assert default_image is not None
    assert default_image.group(1) == "python:3.11-slim"
    assert all(f.args.split()[0] == "${PYTHON_IMAGE}" for f in froms)
    final_runs = " ".join(i.args for i in instructions if i.keyword == "RUN" and i.stage == 1)
    assert "from=builder" in final_runs
    assert not re.search(r"apt-get|apk |gcc|build-essential", final_runs)
    assert "pip wheel" in " ".join(i.args for i in instructions if i.stage == 0)
    user = dockerfile.last(instructions, "USER").args.split(":")[0]
    assert user.isdigit()
    assert int(user) != 0
    for name in KUSTOMIZATIONS:
        pod = _pod(render(name))["spec"]
        assert pod["securityContext"]["runAsUser"] == int(user)


def test_the_image_exposes_the_ports_the_config_listens_on() -> None:
    """EXPOSE lists the gRPC `listen` port and the `metrics.listen` port of the base config."""
    config = gateway_config(render("base"))
    exposed = {
        int(p.split("/")[0])
        for i in dockerfile.parse(DOCKERFILE)
        if i.keyword == "EXPOSE"
        for p in i.args.split()
    }
    assert {_port(config["listen"]), _port(config["metrics"]["listen"])} == exposed


def test_the_healthcheck_is_a_real_cli_subcommand_on_the_listen_port() -> None:
    """HEALTHCHECK runs `opsgate health --address 127.0.0.1:PORT` (readiness, service "")."""
    healthcheck = dockerfile.last(dockerfile.parse(DOCKERFILE), "HEALTHCHECK")
    argv = healthcheck.exec_form()
    # Needs the `opsgate health` subcommand in gateway/cli.py: argparse exits (status 2) if the
    # CLI has no such command or flag.
    args = _cli(argv)
    assert args.command == "health"
    assert _port(args.address) == _port(gateway_config(render("base"))["listen"])
    assert args.service == ""
    assert {"interval", "timeout", "start-period", "retries"} <= set(healthcheck.flags())


def test_the_build_context_holds_what_the_builder_copies() -> None:
    """deploy/Dockerfile.dockerignore lets in exactly the files the builder stage COPYs."""
    text = (DEPLOY / "Dockerfile.dockerignore").read_text()
    ignore = [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = {
        source.rstrip("/")
        for i in dockerfile.parse(DOCKERFILE)
        if i.keyword == "COPY" and "--from" not in i.args
        for source in i.args.split()[:-1]
    }
    assert copied == allowed == {"pyproject.toml", "README.md", "gateway"}
    assert ignore[0] == "*", "an allow-list: everything else stays out of the context"


# --- the pod ------------------------------------------------------------------------------------


@every_render
def test_the_config_listens_where_the_pod_and_probes_connect(name: str) -> None:
    """listen/metrics.listen use all interfaces and the container's named ports; probes agree."""
    objects = render(name)
    config, container = gateway_config(objects), _container(objects)
    host, _, port = config["listen"].rpartition(":")
    assert host in ALL_INTERFACES, "probes and the Service connect to the pod IP"
    assert int(port) == _container_port(container, "grpc")
    metrics_host, _, metrics_port = config["metrics"]["listen"].rpartition(":")
    assert metrics_host in ALL_INTERFACES
    assert int(metrics_port) == _container_port(container, "metrics")
    annotations = _pod(objects)["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == metrics_port
    assert annotations["prometheus.io/scrape"] == "true"


@every_render
def test_probes_are_kubernetes_grpc_probes_on_the_health_port(name: str) -> None:
    """Kubernetes' own gRPC probes (no process started in the pod per probe), on the port of
    `health.listen`, which is plaintext whether or not `listen` has TLS; no exec probe at all.
    """
    # The health service names come from the gateway (gateway/observability/health.py).
    from gateway.observability.health import LIVENESS_SERVICE, READINESS_SERVICES

    objects = render(name)
    config, container = gateway_config(objects), _container(objects)
    health_host, _, health_port = config["health"]["listen"].rpartition(":")
    assert health_host in ALL_INTERFACES, "the kubelet's probes connect to the pod IP"
    assert int(health_port) == _container_port(container, "health")
    assert int(health_port) not in {_port(config["listen"]), _port(config["metrics"]["listen"])}
    expected = {"readinessProbe": READINESS_SERVICES[0], "livenessProbe": LIVENESS_SERVICE}
    for probe_name, service in expected.items():
        probe = container[probe_name]
        handlers = {"grpc", "exec", "httpGet", "tcpSocket"} & set(probe)
        assert handlers == {"grpc"}, f"{probe_name}: the native gRPC probe, not {handlers}"
        # A gRPC probe takes a port number only (no named port), so it must equal the config's.
        assert probe["grpc"]["port"] == int(health_port)
        assert probe["grpc"].get("service", "") == service
    readiness, liveness = container["readinessProbe"], container["livenessProbe"]
    assert liveness["periodSeconds"] > readiness["periodSeconds"]
    for pod_container in _pod(objects)["spec"].get("containers", []):
        for probe_name in ("readinessProbe", "livenessProbe", "startupProbe"):
            probe = pod_container.get(probe_name, {})
            assert "exec" not in probe, f"{pod_container['name']}.{probe_name} starts a process"


@every_render
def test_the_health_port_is_for_the_kubelet_only(name: str) -> None:
    """No Service exposes the health port and no NetworkPolicy opens it to any pod: the probes
    come from the node (which NetworkPolicy does not filter); callers use the gRPC port."""
    objects = render(name)
    health = {"health", _port(gateway_config(objects)["health"]["listen"])}
    labels = _pod(objects)["metadata"]["labels"]
    for service in (o for o in objects if o["kind"] == "Service"):
        assert not {p.get("targetPort", p["port"]) for p in service["spec"]["ports"]} & health
    policies = [
        o["spec"]
        for o in objects
        if o["kind"] == "NetworkPolicy" and _matches(o["spec"]["podSelector"], labels)
    ]
    assert policies, "the gateway's pods are isolated by a NetworkPolicy"
    for policy in policies:
        for rule in policy.get("ingress", []):
            assert rule.get("ports"), "a rule without ports opens every port, the health port too"
            assert not {p["port"] for p in rule["ports"]} & health


@every_render
def test_the_termination_grace_covers_prestop_and_the_drain(name: str) -> None:
    """terminationGracePeriodSeconds > preStop sleep + shutdown_grace_s, or calls are cut."""
    objects = render(name)
    pre_stop = _container(objects)["lifecycle"]["preStop"]
    if "sleep" in pre_stop:
        sleep_s = float(pre_stop["sleep"]["seconds"])
    else:
        command = pre_stop["exec"]["command"]
        assert command[0] == "sleep"
        sleep_s = float(command[1])
    assert sleep_s >= 1, "give endpoint removal time to reach clients before draining"
    default_grace = Settings.__dataclass_fields__["shutdown_grace_s"].default
    grace_s = float(gateway_config(objects).get("shutdown_grace_s", default_grace))
    assert _pod(objects)["spec"]["terminationGracePeriodSeconds"] > sleep_s + grace_s


@every_render
def test_the_config_map_is_a_directory_mount_so_policy_changes_arrive(name: str) -> None:
    """No subPath (its files never update) and no hash suffix (which would restart every pod)."""
    objects = render(name)
    container = _container(objects)
    config_volumes = {
        v["name"]
        for v in _pod(objects)["spec"]["volumes"]
        if v.get("configMap", {}).get("name") == CONFIG_MAP
    }
    mounts = [m for m in container["volumeMounts"] if m["name"] in config_volumes]
    assert mounts
    assert all("subPath" not in m and "subPathExpr" not in m for m in mounts)
    assert find(objects, "ConfigMap", CONFIG_MAP)["metadata"]["name"] == CONFIG_MAP
    config = gateway_config(objects)
    assert config["authorization"].get("reload_interval_s", 2.0) > 0, "hot reload is on"


@every_render
def test_every_file_the_config_names_is_mounted(name: str) -> None:
    """Policy, certificates, CA bundles and secrets: each path is a key of a mounted volume."""
    objects = render(name)
    config = gateway_config(objects)
    paths = _config_paths(config)
    assert ("authorization.policy_file", "/etc/opsgate/policy.yaml") in paths
    for key, path in paths:
        assert path.startswith("/"), f"{key}: use absolute paths inside the container"
        mount, volume = _mount_for(objects, path)
        relative = str(PurePosixPath(path).relative_to(mount["mountPath"]))
        assert "subPath" not in mount
        if key == "audit.file.path":
            assert not mount.get("readOnly"), f"{key}: the audit file needs a writable volume"
            assert {"emptyDir", "persistentVolumeClaim"} & set(volume), key
        elif "configMap" in volume:
            assert relative in find(objects, "ConfigMap", volume["configMap"]["name"])["data"], key
        elif "secret" in volume:
            items = volume["secret"].get("items")
            assert items is None or relative in {i["path"] for i in items}, key
            assert mount.get("readOnly") is True
        else:
            pytest.fail(f"{key}: {path} is on volume {volume['name']}, not a ConfigMap or Secret")


@every_render
def test_the_pod_is_locked_down(name: str) -> None:
    """Non-root, read-only root, no privilege escalation, no capabilities, seccomp, no API token."""
    objects = render(name)
    pod, container = _pod(objects)["spec"], _container(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "add" not in security["capabilities"]
    assert pod["automountServiceAccountToken"] is False
    account = find(objects, "ServiceAccount", pod["serviceAccountName"])
    assert account["automountServiceAccountToken"] is False
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) & set(resources["limits"])


@every_render
def test_pods_spread_over_nodes_and_scale_without_losing_capacity(name: str) -> None:
    """Spread by node; HPA owns replicas (min 3); the PDB lets drains proceed one pod at a time."""
    objects = render(name)
    deployment = _deployment(objects)
    pod = _pod(objects)
    labels = pod["metadata"]["labels"]
    spread = pod["spec"].get("topologySpreadConstraints", [])
    assert any(
        c["topologyKey"] == "kubernetes.io/hostname" and _matches(c["labelSelector"], labels)
        for c in spread
    ) or "podAntiAffinity" in pod["spec"].get("affinity", {})
    hpa = find(objects, "HorizontalPodAutoscaler", "opsgate")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "opsgate",
    }
    assert hpa["spec"]["minReplicas"] >= 3
    replicas = deployment["spec"].get("replicas")
    assert replicas is None or hpa["spec"]["minReplicas"] <= replicas <= hpa["spec"]["maxReplicas"]
    assert _matches(deployment["spec"]["selector"], labels)
    pdb = find(objects, "PodDisruptionBudget", "opsgate")["spec"]
    assert _matches(pdb["selector"], labels)
    if "maxUnavailable" in pdb:
        assert pdb["maxUnavailable"] == 1
    else:
        assert pdb["minAvailable"] < hpa["spec"]["minReplicas"], "a drain must be able to proceed"


@every_render
def test_the_services_target_the_named_container_ports(name: str) -> None:
    """Selectors match the pods, targetPorts are the container's port names, gRPC is declared."""
    objects = render(name)
    container, labels = _container(objects), _pod(objects)["metadata"]["labels"]
    names = {p["name"] for p in container["ports"]}
    services = [o for o in objects if o["kind"] == "Service"]
    assert services
    for service in services:
        assert all(labels.get(k) == v for k, v in service["spec"]["selector"].items())
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in names
            if port["targetPort"] == "grpc":
                assert port["appProtocol"] == "grpc"
    main = find(objects, "Service", "opsgate")
    assert {p["targetPort"] for p in main["spec"]["ports"]} == {"grpc", "metrics"}


@renders
def test_network_policies_admit_only_the_gateway_to_the_upstream(name: str) -> None:
    """The upstream's pods accept only opsgate's pods; opsgate's own policy names real ports."""
    objects = render(name)
    labels = _pod(objects)["metadata"]["labels"]
    port_names = {p["name"] for p in _container(objects)["ports"]}

    upstream = find(objects, "NetworkPolicy", "opsgate-upstream")["spec"]
    assert not _matches(upstream["podSelector"], labels), "it must select the upstream, not opsgate"
    assert upstream["podSelector"]["matchLabels"]
    assert upstream["policyTypes"] == ["Ingress"]
    gateway_rules = [
        rule
        for rule in upstream["ingress"]
        if any(
            "podSelector" in peer and _matches(peer["podSelector"], labels) for peer in rule["from"]
        )
    ]
    assert gateway_rules, "no rule admits the gateway's pods"
    assert all(rule.get("ports") for rule in upstream["ingress"]), "open only named ports"

    ingress = find(objects, "NetworkPolicy", "opsgate-ingress")["spec"]
    assert _matches(ingress["podSelector"], labels)
    assert "Ingress" in ingress["policyTypes"]
    ports = {p["port"] for rule in ingress["ingress"] for p in rule["ports"]}
    assert ports == {"grpc", "metrics"} <= port_names
