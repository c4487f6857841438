"""The end-to-end rows, side by side in one run, each front end its own process.

1. direct: `opsgate upstream` (the reference upstream, seeded), nothing in front;
2. nginx: `grpc_pass` to that upstream;
3. forwarder: the minimal raw-bytes Python forwarder (benchmarks/forwarder.py), naive and fast;
4. opsgate, warm caches: the full pipeline (JWKS-file issuer, routing, authz on a realistic
   policy, audit to a file with fsync interval), one token for every call;
5. opsgate, cold caches: every call a new RS256 token of a new principal;
6. opsgate's REST/JSON door, warm caches: the same pipeline and upstream, GetOperation as an
   HTTP/1.1 GET of its REST path, from a gateway of its own started with `rest: {listen: ...}`.

Rows 1-4 and 6 are driven by h2load (row 6 in HTTP/1.1 mode). h2load cannot vary headers per
request, so row 5 uses the Python generator, and so does a second run of row 4 ("opsgate warm
(py)"): rows 4 and 5 compare like with like. All rows share the one upstream process. Repeats
are interleaved (repeat, then concurrency, then every row, the row order rotated each repeat),
so slow drift of a shared machine spreads over all rows instead of landing on one.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from benchmarks import fixtures
from benchmarks.bench import Bench, Measurement, read_token_files, run_figures
from benchmarks.check import CheckResult
from benchmarks.env import nginx_version
from benchmarks.procs import Service, free_port, python_module
from benchmarks.stats import figure, quantiles


@dataclass
class Row:
    key: str
    title: str
    service: Service
    driver: str  # "h2load" or "python"
    token: str | None
    cold: bool = False
    rest: str | None = None  # the REST door's HOST:PORT: HTTP/1.1 GETs there, not gRPC calls
    check: CheckResult = field(default_factory=CheckResult)
    runs: dict[int, list[Measurement]] = field(default_factory=dict)

    @property
    def address(self) -> str:
        """Where the row's calls go."""
        return self.rest or self.service.address


def _start_rows(bench: Bench) -> list[Row]:
    upstream = bench.upstream
    assert upstream is not None
    rows: list[Row] = []
    up_port = int(upstream.address.rpartition(":")[2])
    if bench.mode.h2load_rows and bench.tools.get("h2load"):
        rows.append(Row("direct", "direct to upstream", upstream, "h2load", None))
        nginx = bench.tools.get("nginx")
        if nginx:
            port = free_port()
            version = nginx_version(nginx) or "1.0"
            conf = fixtures.write_nginx_conf(bench.dir, port, up_port, version)
            try:
                service = bench.start(
                    "nginx", [nginx, "-c", str(conf)], f"127.0.0.1:{port}", health=False
                )
                rows.append(Row("nginx", f"nginx {version} grpc_pass", service, "h2load", None))
            except Exception as exc:
                bench.note(f"nginx row skipped: nginx did not start: {exc}")
        else:
            bench.note("nginx row skipped: nginx not available")
        for variant in ("naive", "fast"):
            address = f"127.0.0.1:{free_port()}"
            argv = python_module(
                "benchmarks.forwarder",
                "--listen",
                address,
                "--upstream",
                upstream.address,
                "--variant",
                variant,
            )
            service = bench.start(f"forwarder-{variant}", argv, address, health=False)
            title = f"Python forwarder ({variant})"
            rows.append(Row(f"forwarder-{variant}", title, service, "h2load", None))
    elif bench.mode.h2load_rows:
        bench.note(
            "h2load rows (direct, nginx, forwarders, opsgate warm via h2load) skipped: no h2load"
        )
    gateway = bench.start_gateway("opsgate")
    if bench.mode.h2load_rows and bench.tools.get("h2load"):
        rows.append(
            Row("opsgate-warm", "opsgate, warm caches", gateway, "h2load", bench.warm_token)
        )
        rows.append(_rest_row(bench))
    rows.append(
        Row("opsgate-warm-py", "opsgate, warm caches (py)", gateway, "python", bench.warm_token)
    )
    rows.append(
        Row("opsgate-cold-py", "opsgate, cold caches (py)", gateway, "python", None, cold=True)
    )
    return rows


def _rest_row(bench: Bench) -> Row:
    """A gateway of its own with the REST door on, so the gRPC rows' gateway stays as it was."""
    address = f"127.0.0.1:{free_port()}"
    gateway = bench.start_gateway("opsgate-rest", rest_listen=address)
    title = "opsgate REST door (HTTP/1.1), warm caches"
    return Row("opsgate-rest", title, gateway, "h2load", bench.warm_token, rest=address)


def _check(bench: Bench, row: Row) -> CheckResult:
    token = row.token or bench.warm_token
    if row.rest is not None:
        return bench.check_rest(row.rest, token)
    return bench.check(row.service.address, token)


def _h2load(
    bench: Bench, row: Row, concurrency: int, seconds: float, upstream: int | None = None
) -> Measurement:
    return bench.h2load(
        row.address,
        concurrency,
        seconds,
        row.token,
        row.service.pid,
        upstream=upstream,
        rest=row.rest is not None,
    )


def _cold_tokens(bench: Bench) -> dict[tuple[int, int], list[str]]:
    """Every cold call's own RS256 token, of its own principal: per (repeat, concurrency)."""
    mode = bench.mode
    per_run = {c: mode.pygen_warmup + mode.pygen_calls[c] for c in mode.concurrencies}
    total = sum(per_run.values()) * mode.repeats
    files = bench.identity.sign_many(
        "cold", total, algorithm="RS256", email_pattern="cold{i}@bench.example"
    )
    tokens = read_token_files(files)
    slices: dict[tuple[int, int], list[str]] = {}
    start = 0
    for rep in range(mode.repeats):
        for c in mode.concurrencies:
            slices[(rep, c)] = tokens[start : start + per_run[c]]
            start += per_run[c]
    return slices


def _measure(
    bench: Bench, row: Row, concurrency: int, cold: list[str] | None, upstream: Service
) -> Measurement:
    front = row.service.pid
    up = upstream.pid if row.service is not upstream else None
    mode = bench.mode
    if row.driver == "h2load":
        return _h2load(bench, row, concurrency, mode.h2load_seconds, up)
    if row.cold:
        assert cold is not None
        tokens = [bench.write_lines("cold-run.tokens", cold)]
        measurement, _ = bench.pygen(
            row.service.address,
            calls=mode.pygen_calls[concurrency],
            concurrency=concurrency,
            front=front,
            upstream=up,
            tokens=tokens,
            warmup=mode.pygen_warmup,
        )
        return measurement
    measurement, _ = bench.pygen(
        row.service.address,
        calls=mode.pygen_calls[concurrency],
        concurrency=concurrency,
        front=front,
        upstream=up,
        token_file=bench.warm_token_file,
        warmup=mode.pygen_warmup,
    )
    return measurement


def run_rows(bench: Bench) -> dict[str, Any]:
    upstream = bench.upstream
    assert upstream is not None
    rows = _start_rows(bench)
    mode = bench.mode
    cold = _cold_tokens(bench) if any(r.cold for r in rows) else {}
    for row in rows:
        row.check.merge(_check(bench, row))
        if row.driver == "h2load":  # warm-up, not measured
            _h2load(bench, row, 16, mode.warmup_seconds)
    for rep in range(mode.repeats):
        for concurrency in mode.concurrencies:
            shift = rep % len(rows)
            for row in rows[shift:] + rows[:shift]:
                measurement = _measure(
                    bench, row, concurrency, cold.get((rep, concurrency)), upstream
                )
                row.runs.setdefault(concurrency, []).append(measurement)
                print(
                    f"  rep {rep + 1} c={concurrency:<3} {row.key:<18} "
                    f"{measurement.rps:8.0f} req/s  p50 {measurement.p50_us / 1000:6.2f} ms  "
                    f"cpu {measurement.cpu_us:6.0f} µs/call",
                    file=sys.stderr,
                )
    for row in rows:
        row.check.merge(_check(bench, row))
    bench.row_services = {row.key: row.service for row in rows}
    bench.row_services["opsgate"] = rows[-1].service
    return {row.key: _row_result(row) for row in rows}


def _row_result(row: Row) -> dict[str, Any]:
    per_c: dict[str, Any] = {}
    for concurrency, runs in row.runs.items():
        pooled = [lat for run in runs for lat in run.latencies_us]
        per_c[str(concurrency)] = {
            **run_figures(runs),
            "sys_us": figure([r.sys_us for r in runs]),
            "cdf_us": quantiles(pooled),
        }
    checked = row.check.summary()
    if row.driver == "python":
        checked += "; every measured call checked by the generator"
    return {
        "title": row.title,
        "driver": row.driver,
        "process": " ".join(row.service.argv[:4]) + (" ..." if len(row.service.argv) > 4 else ""),
        "check": checked,
        "check_passed": row.check.passed
        and all(m.failures == 0 for runs in row.runs.values() for m in runs),
        "concurrency": per_c,
    }
