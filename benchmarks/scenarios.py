"""The benchmarks beyond the rows: library mode, --workers scale, memory, held long calls."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.request
from typing import Any

from benchmarks import wire
from benchmarks.bench import Bench, Measurement, library_config
from benchmarks.check import CheckResult
from benchmarks.fixtures import WAIT_PROFILE
from benchmarks.procs import (
    Service,
    descendants,
    free_port,
    peak_rss_bytes,
    python_module,
    rss_bytes,
)
from benchmarks.stats import figure, quantiles


def _drive(
    bench: Bench, service: Service, concurrency: int, seconds: float, calls: int
) -> Measurement:
    """h2load with the warm token when there is h2load; else the Python generator."""
    if bench.tools.get("h2load"):
        return bench.h2load(service.address, concurrency, seconds, bench.warm_token, service.pid)
    measurement, _ = bench.pygen(
        service.address,
        calls=calls,
        concurrency=concurrency,
        front=service.pid,
        token_file=bench.warm_token_file,
        warmup=100,
    )
    return measurement


def _driver_name(bench: Bench) -> str:
    return "h2load" if bench.tools.get("h2load") else "python generator (no h2load)"


# --- library mode -----------------------------------------------------------------------------


def run_library(bench: Bench) -> dict[str, Any]:
    """The reference servicer in one grpc.aio server, with and without OpsgateChain."""
    mode = bench.mode
    config = library_config(bench, "library")
    servers = {}
    for key, extra in (("without", []), ("with", ["--config", str(config)])):
        address = f"127.0.0.1:{free_port()}"
        argv = python_module("benchmarks.libserver", "--listen", address, *extra)
        servers[key] = bench.start(f"library-{key}", argv, address, health=True)
    checks = {key: bench.check(s.address, bench.warm_token) for key, s in servers.items()}
    c = mode.library_concurrency
    calls = mode.pygen_calls.get(c, 1500)
    for service in servers.values():  # warm-up
        _drive(bench, service, c, mode.warmup_seconds, max(100, calls // 5))
    runs: dict[str, list[Measurement]] = {key: [] for key in servers}
    for rep in range(mode.repeats):
        order = list(servers) if rep % 2 == 0 else list(reversed(servers))
        for key in order:
            runs[key].append(_drive(bench, servers[key], c, mode.library_seconds, calls))
    for service in servers.values():
        bench.stop(service)
    cpu = {key: figure([m.cpu_us for m in ms]) for key, ms in runs.items()}
    overhead = [w.cpu_us / o.cpu_us - 1 for w, o in zip(runs["with"], runs["without"], strict=True)]
    return {
        "driver": _driver_name(bench),
        "concurrency": c,
        "cpu_us": cpu,
        "rps": {key: figure([m.rps for m in ms]) for key, ms in runs.items()},
        "p50_us": {key: figure([m.p50_us for m in ms]) for key, ms in runs.items()},
        "overhead": figure(overhead),
        "overhead_of_medians": cpu["with"]["median"] / cpu["without"]["median"] - 1,
        "checks": {key: check.summary() for key, check in checks.items()},
        "check_passed": all(check.passed for check in checks.values())
        and all(m.failures == 0 for ms in runs.values() for m in ms),
    }


# --- scale ------------------------------------------------------------------------------------


def workers_flag_exists() -> bool:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    return "--workers" in done.stdout


def _wait_workers(bench: Bench, service: Service, workers: int) -> CheckResult:
    """Until the supervisor has its workers and fresh connections keep getting answers."""
    deadline = time.monotonic() + 60
    while len(descendants(service.pid)) < workers + (1 if workers > 1 else 0):
        if time.monotonic() > deadline:
            raise service.fail(f"fewer than {workers} workers after 60s")
        time.sleep(0.1)
    result = CheckResult()
    # Each check opens a new connection, which SO_REUSEPORT hands to one of the workers.
    for _ in range(10):
        result.merge(bench.check(service.address, bench.warm_token))
    return result


def run_scale(bench: Bench) -> dict[str, Any]:
    if not workers_flag_exists():
        return {"skipped": "needs serve --workers"}
    mode = bench.mode
    gateways = {n: bench.start_gateway(f"scale-w{n}", workers=n) for n in (1, 2)}
    checks = {n: _wait_workers(bench, g, n) for n, g in gateways.items()}
    c = mode.scale_concurrency
    calls = max(mode.pygen_calls.values())
    upstream = bench.upstream
    assert upstream is not None
    for gateway in gateways.values():
        _drive(bench, gateway, c, mode.warmup_seconds, calls // 5)
    runs: dict[int, list[Measurement]] = {1: [], 2: []}
    upstream_util: dict[int, list[float]] = {1: [], 2: []}
    for rep in range(mode.repeats):
        for n in (1, 2) if rep % 2 == 0 else (2, 1):
            gateway = gateways[n]
            if bench.tools.get("h2load"):
                m = bench.h2load(
                    gateway.address,
                    c,
                    mode.scale_seconds,
                    bench.warm_token,
                    gateway.pid,
                    upstream=upstream.pid,
                )
            else:
                m, _ = bench.pygen(
                    gateway.address,
                    calls=calls,
                    concurrency=c,
                    front=gateway.pid,
                    upstream=upstream.pid,
                    token_file=bench.warm_token_file,
                    warmup=100,
                )
            runs[n].append(m)
            if m.upstream_cpu_us is not None:
                upstream_util[n].append(m.upstream_cpu_us * m.rps / 1e6)
    for gateway in gateways.values():
        bench.stop(gateway)
    gains = [two.rps / one.rps for one, two in zip(runs[1], runs[2], strict=True)]
    return {
        "driver": _driver_name(bench),
        "concurrency": c,
        "rps": {str(n): figure([m.rps for m in ms]) for n, ms in runs.items()},
        "cpu_us": {str(n): figure([m.cpu_us for m in ms]) for n, ms in runs.items()},
        "p99_us": {str(n): figure([m.p99_us for m in ms]) for n, ms in runs.items()},
        "gateway_cores_busy": {str(n): figure([m.cpu_util for m in ms]) for n, ms in runs.items()},
        "upstream_cores_busy": {str(n): figure(v) for n, v in upstream_util.items()},
        "gain": figure(gains),
        "checks": {str(n): check.summary() for n, check in checks.items()},
        "check_passed": all(check.passed for check in checks.values())
        and all(m.failures == 0 for ms in runs.values() for m in ms),
    }


# --- memory -----------------------------------------------------------------------------------


def _metric(address: str, name: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def _default_token_cache_size() -> int:
    import dataclasses

    from gateway.authn.settings import AuthnSettings

    size: Any = next(
        f.default for f in dataclasses.fields(AuthnSettings) if f.name == "token_cache_size"
    )
    return int(size)


def run_memory(bench: Bench) -> dict[str, Any]:
    """RSS of a fresh gateway before and after N distinct valid tokens (ES256, pool-signed).

    The tokens name `memory_principals` callers the policy does not grant, in turn: each call is
    authenticated (a token-cache miss and a new entry), then refused at authz, so the upstream
    is not involved and the run goes as fast as the gateway can authenticate.
    """
    mode = bench.mode
    count = mode.memory_tokens
    signing_started = time.monotonic()
    files = bench.identity.sign_many(
        "memory",
        count,
        algorithm="ES256",
        email_pattern="m{i}@bench.example",
        groups=(),
        principals=mode.memory_principals,
    )
    signing_s = time.monotonic() - signing_started
    metrics = f"127.0.0.1:{free_port()}"
    gateway = bench.start_gateway("memory", metrics_listen=metrics)
    bench.pygen(
        gateway.address,
        calls=200,
        concurrency=4,
        front=gateway.pid,
        token_file=bench.warm_token_file,
    )
    start_rss = rss_bytes(gateway.pid)
    # Whatever the budget leaves, less a margin for the report: a run that cannot present
    # every token stops early and says how many it presented.
    allowed = max(10.0, bench.left() - 20.0)
    measurement, raw = bench.pygen(
        gateway.address,
        calls=count,
        concurrency=32,
        front=gateway.pid,
        tokens=files,
        rss_pid=gateway.pid,
        latencies=False,
        expect=False,
        timeout_s=allowed + 120.0,
        max_seconds=allowed,
    )
    end_rss = rss_bytes(gateway.pid)
    peak = peak_rss_bytes(gateway.pid)
    misses = _metric(metrics, "opsgate_token_cache_misses_total")
    bench.stop(gateway)
    for path in files:
        path.unlink(missing_ok=True)
    samples = raw["rss_samples"]
    half = min(samples, key=lambda s: abs(s[0] - count / 2)) if samples else (0, 0)
    second_half_growth = (end_rss - half[1]) / half[1] if half[1] else None
    return {
        "tokens": count,
        "stopped_early": raw.get("stopped_early", False),
        "principals": mode.memory_principals,
        "algorithm": "ES256",
        "signing_s": signing_s,
        "calls": raw["calls"],
        "codes": raw["codes"],
        "rps": measurement.rps,
        "seconds": raw["seconds"],
        "cpu_us": measurement.cpu_us,
        "token_cache_size": _default_token_cache_size(),
        "token_cache_misses": misses,
        "start_rss_bytes": start_rss,
        "end_rss_bytes": end_rss,
        "peak_rss_bytes": peak,
        "rss_samples": samples,
        "rss_at_half_bytes": half[1],
        "second_half_growth": second_half_growth,
    }


# --- long calls -------------------------------------------------------------------------------


def _hold(bench: Bench, address: str, count: int) -> subprocess.Popen[str]:
    body = bench.dir / "wait-request.bin"
    body.write_bytes(wire.wait_request())
    argv = python_module(
        "benchmarks.loadgen",
        "hold",
        "--target",
        address,
        "--method",
        wire.WAIT_OPERATION,
        "--body",
        str(body),
        "--token-file",
        str(bench.warm_token_file),
        "--count",
        str(count),
        "--connections",
        "4",
        "--out",
        str(bench.dir / "hold.json"),
    )
    from benchmarks.procs import REPO, child_env

    holder = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=child_env(),
    )
    assert holder.stdout is not None
    line = holder.stdout.readline()
    if "STARTED" not in line:
        holder.kill()
        raise RuntimeError(
            f"holder did not start: {line} {holder.stderr.read() if holder.stderr else ''}"
        )
    return holder


def _release(bench: Bench, holder: subprocess.Popen[str]) -> dict[str, Any]:
    import json

    assert holder.stdin is not None
    holder.stdin.close()
    try:
        holder.wait(60)
    except subprocess.TimeoutExpired:
        holder.kill()
        raise
    result: dict[str, Any] = json.loads((bench.dir / "hold.json").read_text())
    return result


def run_long_calls(bench: Bench) -> dict[str, Any]:
    """Unary p99 through the gateway without, then with, N WaitOperation calls held open."""
    mode = bench.mode
    profile = bench.dir / "wait-profile.yaml"
    profile.write_text(WAIT_PROFILE)
    metrics = f"127.0.0.1:{free_port()}"
    gateway = bench.start_gateway("longcalls", profile_file=profile, metrics_listen=metrics)
    upstream = bench.upstream
    assert upstream is not None
    c = mode.held_concurrency
    runs: dict[str, list[Measurement]] = {"without": [], "with": []}
    held: list[dict[str, Any]] = []
    in_flight_seen: list[float] = []

    def unary() -> Measurement:
        m, _ = bench.pygen(
            gateway.address,
            calls=mode.held_unary_calls,
            concurrency=c,
            front=gateway.pid,
            upstream=upstream.pid,
            token_file=bench.warm_token_file,
            warmup=mode.pygen_warmup,
        )
        return m

    def held_unary() -> Measurement:
        holder = _hold(bench, gateway.address, mode.held_calls)
        try:
            deadline = time.monotonic() + 60
            seen = 0.0
            while time.monotonic() < deadline:
                seen = _metric(metrics, "opsgate_in_flight_calls") or 0.0
                if seen >= mode.held_calls:
                    break
                time.sleep(0.1)
            in_flight_seen.append(seen)
            if seen < mode.held_calls:
                raise RuntimeError(f"only {seen:.0f} of {mode.held_calls} calls held open")
            return unary()
        finally:
            with contextlib.suppress(Exception):
                held.append(_release(bench, holder))

    for rep in range(mode.repeats):
        # Alternate which goes first, so drift of a shared machine does not favour one.
        if rep % 2 == 0:
            runs["without"].append(unary())
            runs["with"].append(held_unary())
        else:
            runs["with"].append(held_unary())
            runs["without"].append(unary())
    bench.stop(gateway)
    p99 = {key: figure([m.p99_us for m in ms]) for key, ms in runs.items()}
    increase = [w.p99_us / o.p99_us - 1 for w, o in zip(runs["with"], runs["without"], strict=True)]
    return {
        "held_calls": mode.held_calls,
        "unary_calls": mode.held_unary_calls,
        "concurrency": c,
        "driver": "python generator",
        "p50_us": {key: figure([m.p50_us for m in ms]) for key, ms in runs.items()},
        "p99_us": p99,
        "rps": {key: figure([m.rps for m in ms]) for key, ms in runs.items()},
        "cpu_us": {key: figure([m.cpu_us for m in ms]) for key, ms in runs.items()},
        "increase": figure(increase),
        "increase_of_medians": p99["with"]["median"] / p99["without"]["median"] - 1,
        "in_flight_seen": in_flight_seen,
        "held_results": held,
        "check_passed": all(m.failures == 0 for ms in runs.values() for m in ms)
        and all(h.get("still_open") == mode.held_calls for h in held),
        "cdf_us": {
            key: quantiles([lat for m in ms for lat in m.latencies_us]) for key, ms in runs.items()
        },
    }
