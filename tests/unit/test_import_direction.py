"""Imports run one way: doors → pipeline → stages → engines → values and errors, read from the code.

A ratchet: a new upward import fails, and so does a KNOWN_UPWARD entry the code no longer has.
The policy core's own rule (its deciding half imports no grpc, does no I/O, reads no clock, touches
no gc) is tests/unit/policy/test_purity.py's; it is not repeated here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import gateway

PACKAGE = Path(gateway.__file__).parent

VALUES, ENGINES, STAGES, DOORS = 0, 1, 2, 3
LAYER_NAMES = {VALUES: "values", ENGINES: "engines", STAGES: "stages", DOORS: "doors"}

# Each module's layer is that of the longest prefix naming it (a package names its submodules).
LAYERS: dict[str, int] = {
    # Values and errors: what every layer may share; they import nothing of the gateway's above.
    "gateway": VALUES,  # the package itself (its version), not its subpackages
    "gateway.errors": VALUES,
    "gateway.call": VALUES,
    "gateway.outcome": VALUES,
    "gateway.headers": VALUES,
    "gateway.pathtemplate": VALUES,
    "gateway.resource_names": VALUES,
    "gateway.routing": VALUES,
    "gateway.sourcefile": VALUES,
    "gateway.configschema": VALUES,
    "gateway.tracecontext": VALUES,
    "gateway.runtime": VALUES,
    "gateway.backoff": VALUES,  # when to ask a failing endpoint again (authn and audit sinks)
    "gateway.data": VALUES,  # packaged policies and profiles
    # Engines: they decide, verify, record, limit, connect; they know no stage and no door.
    "gateway.policy": ENGINES,
    "gateway.authn": ENGINES,
    "gateway.audit": ENGINES,
    "gateway.ratelimit": ENGINES,
    "gateway.profile": ENGINES,
    "gateway.config": ENGINES,
    "gateway.rest.settings": ENGINES,  # the `rest` section of Settings, read by config.py
    "gateway.rest.anytypes": ENGINES,  # the types it names, loaded to check them at config load
    "gateway.envoy.settings": ENGINES,  # the `envoy` section of Settings, read by config.py
    "gateway.authorizer": ENGINES,
    "gateway.policy_reload": ENGINES,
    "gateway.upstream": ENGINES,
    "gateway.observability": ENGINES,
    # Stages and the pipeline that puts them in order.
    "gateway.stages": STAGES,
    "gateway.pipeline": STAGES,
    # Doors and entry points.
    "gateway.interceptors": DOORS,  # the gRPC door: the proxy's and library mode's interceptor
    "gateway.rest": DOORS,
    "gateway.envoy": DOORS,  # Envoy's external authorizer and access-log receiver
    "gateway.library": DOORS,
    "gateway.server": DOORS,
    "gateway.workers": DOORS,
    "gateway.cli": DOORS,
    "gateway.__main__": DOORS,
    "gateway.demo": DOORS,
    "gateway.policytools": DOORS,
    "gateway.reference_upstream": DOORS,
    "gateway.testing": DOORS,
}

# The transports belong to the doors, and to the engines that speak them (the upstream channel and
# forwarder; health, probe and metrics; the audit sink that writes to Cloud Logging over gRPC).
# Anywhere else, importing one is an upward import too.
TRANSPORTS = {"grpc", "grpc_health", "grpc_status", "aiohttp"}
TRANSPORT_ENGINES = ("gateway.upstream", "gateway.observability", "gateway.audit.cloud_logging")

# Upward imports that stand today, each to be removed; never to be added to.
KNOWN_UPWARD: set[tuple[str, str]] = {
    # type only: the per-call value holds what the authn, route and authz stages found.
    ("gateway.call", "gateway.authn.principal"),
    ("gateway.call", "gateway.authorizer"),
    ("gateway.call", "gateway.profile"),
}


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _imports(module: str, path: Path) -> Iterator[str]:
    """Every module `module` imports, wherever the import stands (module level, function, if)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against this module's package
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:  # `from gateway.policy import cel` imports a module
                submodule = f"{source}.{alias.name}"
                yield submodule if submodule in MODULES else source


def layer_of(module: str) -> int | None:
    if module == "gateway":
        return LAYERS["gateway"]
    names = [name for name in LAYERS if name != "gateway"]
    matches = [name for name in names if module == name or module.startswith(name + ".")]
    return LAYERS[max(matches, key=len)] if matches else None


def _upward_imports() -> set[tuple[str, str]]:
    found = set()
    for module, path in MODULES.items():
        own = layer_of(module)
        assert own is not None
        for imported in _imports(module, path):
            root = imported.split(".")[0]
            if root == "gateway":
                theirs = layer_of(imported)
                if theirs is not None and theirs > own:
                    found.add((module, imported))
            elif root in TRANSPORTS and own != DOORS and not module.startswith(TRANSPORT_ENGINES):
                found.add((module, root))
    return found


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(module for module in MODULES if layer_of(module) is None)
    assert not unplaced, f"place these modules in LAYERS: {unplaced}"


def test_every_layer_prefix_names_a_module() -> None:
    stale = sorted(name for name in LAYERS if name not in MODULES)
    assert not stale, f"LAYERS names modules that no longer exist: {stale}"


def test_no_new_upward_import() -> None:
    new = sorted(_upward_imports() - KNOWN_UPWARD)
    described = [
        f"{low} ({LAYER_NAMES[layer_of(low) or 0]}) imports {high}"
        + (f" ({LAYER_NAMES[layer_of(high) or 0]})" if high.startswith("gateway") else "")
        for low, high in new
    ]
    assert not new, "imports must run doors → pipeline → stages → engines → values:\n" + "\n".join(
        described
    )


def test_known_upward_imports_still_exist() -> None:
    # The list only shrinks: an entry fixed in the code must leave the list with it.
    gone = sorted(KNOWN_UPWARD - _upward_imports())
    assert not gone, f"remove these from KNOWN_UPWARD, the code no longer has them: {gone}"


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("gateway.call", VALUES),
        ("gateway.policy.cel.parser", ENGINES),
        ("gateway.rest.settings", ENGINES),
        ("gateway.rest.door", DOORS),
        ("gateway.interceptors.chain", DOORS),
        ("gateway.stages.audit", STAGES),
    ],
)
def test_longest_prefix_decides(module: str, expected: int) -> None:
    assert layer_of(module) == expected
