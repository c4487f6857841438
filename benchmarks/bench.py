"""The state of one harness run: its mode, work directory, identity, children and results.

Every phase (end-to-end rows, library mode, scale, memory, long calls) goes through this to
start servers, drive load with h2load or the Python generator, and note what it skipped.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import h2load, wire
from benchmarks.check import CheckResult, check, check_rest, fetch
from benchmarks.fixtures import Identity, write_gateway_config, write_policy
from benchmarks.modes import Mode
from benchmarks.procs import REPO, Service, child_env, free_port, python_module
from benchmarks.stats import figure, percentile
from gateway.testing.ports import wait_listening
from gateway.testing.processes import gateway_argv, upstream_argv

LOADGEN = "benchmarks.loadgen"


@dataclass
class Measurement:
    """One measured run of one row at one concurrency."""

    rps: float
    p50_us: float
    p99_us: float
    cpu_us: float  # front-end process tree CPU per call
    upstream_cpu_us: float | None  # the upstream's, for context
    calls: int
    failures: int  # not grpc-status 0 / not HTTP 200 / payload differs
    latencies_us: list[int] = field(repr=False)
    cpu_util: float = 0.0  # front-end CPU seconds per wall second
    sys_us: float = 0.0  # of cpu_us, the part spent in the kernel
    # An external authorizer's process tree (Envoy's ext_authz rows), counted apart from the
    # front end's: Envoy's own CPU and the authorizer's, per call.
    authorizer_cpu_us: float | None = None
    authorizer_util: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "rps": self.rps,
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "cpu_us": self.cpu_us,
            "upstream_cpu_us": self.upstream_cpu_us,
            "calls": self.calls,
            "failures": self.failures,
            "cpu_util": self.cpu_util,
            "sys_us": self.sys_us,
            "authorizer_cpu_us": self.authorizer_cpu_us,
        }


def run_figures(runs: Sequence[Measurement]) -> dict[str, Any]:
    """The figures every row reports per concurrency: medians with min-max over its repeats."""
    return {
        "rps": figure([r.rps for r in runs]),
        "p50_us": figure([r.p50_us for r in runs]),
        "p99_us": figure([r.p99_us for r in runs]),
        "cpu_us": figure([r.cpu_us for r in runs]),
        "upstream_cpu_us": figure(
            [r.upstream_cpu_us for r in runs if r.upstream_cpu_us is not None]
        ),
        "cpu_util": figure([r.cpu_util for r in runs]),
        "calls": [r.calls for r in runs],
        "failures": sum(r.failures for r in runs),
        "runs": [r.summary() for r in runs],
    }


class Bench:
    """One run of the harness."""

    def __init__(self, mode: Mode, directory: Path, tools: dict[str, str | None]) -> None:
        self.mode = mode
        self.dir = directory
        self.tools = tools
        self.started = time.monotonic()
        self.notes: list[str] = []
        self.services: list[Service] = []
        self.identity = Identity.create(directory)
        self.request = wire.get_request()
        self.request_file = directory / "get-request.bin"
        self.request_file.write_bytes(self.request)
        self.body_file = wire.write_body(directory / "get-body.bin", self.request)
        self.warm_token = self.identity.token()
        self.warm_token_file = directory / "warm.token"
        self.warm_token_file.write_text(self.warm_token)
        self.expected = b""
        self.expected_file = directory / "expected.bin"
        self.upstream: Service | None = None
        self.row_services: dict[str, Service] = {}  # kept running for the profiles
        self.policy = write_policy(directory, mode.e2e_policy_bindings)

    # --- time ---------------------------------------------------------------------------------

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> float:
        return self.mode.budget_s - self.elapsed()

    def note(self, text: str) -> None:
        self.notes.append(text)

    # --- servers ------------------------------------------------------------------------------

    def start(
        self, name: str, argv: list[str], address: str, *, health: bool, timeout_s: float = 90
    ) -> Service:
        log = self.dir / f"{name}.log"
        service = Service(argv, name=name, address=address, log_path=log, cwd=REPO)
        self.services.append(service)
        service.wait_ready(timeout_s, health=health)
        return service

    def stop(self, service: Service) -> None:
        service.stop()
        if service in self.services:
            self.services.remove(service)

    def stop_all(self) -> None:
        for service in reversed(self.services):
            try:
                service.stop()
            except Exception as exc:  # keep stopping the others
                self.note(f"stopping {service.name} failed: {exc}")
        self.services.clear()

    def start_upstream(self) -> Service:
        address = f"127.0.0.1:{free_port()}"
        self.upstream = self.start("upstream", upstream_argv(address), address, health=True)
        self.expected = fetch(address, self.request, None)
        self.expected_file.write_bytes(self.expected)
        return self.upstream

    def gateway_config(
        self,
        name: str,
        *,
        listen: str,
        profile_file: Path | None = None,
        metrics_listen: str | None = None,
        rest_listen: str | None = None,
        library: bool = False,
        envoy_only: bool = False,
        envoy_http_listen: str | None = None,
    ) -> Path:
        """With `library`, no upstream; with `envoy_only`, no upstream and an `envoy:` section
        (opsgate as Envoy's external authorizer only)."""
        assert self.upstream is not None or library or envoy_only
        return write_gateway_config(
            self.dir,
            name,
            listen=listen,
            upstream=None if library or envoy_only else self.upstream.address,  # type: ignore[union-attr]
            identity=self.identity,
            policy=self.policy,
            profile_file=profile_file,
            metrics_listen=metrics_listen,
            rest_listen=rest_listen,
            envoy=envoy_only,
            envoy_http_listen=envoy_http_listen,
        )

    def start_gateway(
        self,
        name: str,
        *,
        workers: int | None = None,
        profile_file: Path | None = None,
        metrics_listen: str | None = None,
        rest_listen: str | None = None,
        prefix: list[str] | None = None,
        envoy_only: bool = False,
        envoy_http_listen: str | None = None,
    ) -> Service:
        """`opsgate serve` (as `python -m gateway serve`) on a fixed free port.

        With `rest_listen` its REST/JSON door listens there too, and is waited for; with
        `envoy_only` it is Envoy's external authorizer only (no upstream).
        """
        address = f"127.0.0.1:{free_port()}"
        config = self.gateway_config(
            name,
            listen=address,
            profile_file=profile_file,
            metrics_listen=metrics_listen,
            rest_listen=rest_listen,
            envoy_only=envoy_only,
            envoy_http_listen=envoy_http_listen,
        )
        args = [] if workers is None else ["--workers", str(workers)]
        argv = gateway_argv(config, *args, python=prefix or [sys.executable])
        service = self.start(name, argv, address, health=True)
        if rest_listen is not None and not wait_listening(rest_listen, 30):
            raise service.fail(f"the REST door is not listening on {rest_listen} after 30s")
        return service

    # --- load ---------------------------------------------------------------------------------

    def check(self, address: str, token: str | None) -> CheckResult:
        return check(address, self.request, self.expected, token, self.mode.check_calls)

    def check_rest(self, address: str, token: str | None) -> CheckResult:
        """The same check at a REST door: GetOperation as an HTTP/1.1 GET."""
        return check_rest(address, wire.REST_GET_PATH, self.expected, token, self.mode.check_calls)

    def h2load(
        self,
        address: str,
        concurrency: int,
        seconds: float,
        token: str | None,
        front: int,
        *,
        upstream: int | None = None,
        body: Path | None = None,
        method: str = wire.GET_OPERATION,
        rest: bool = False,
        authorizer: int | None = None,
    ) -> Measurement:
        """gRPC calls of `method`, or with `rest` the REST door's GetOperation (HTTP/1.1 GET);
        with `authorizer`, that process tree's CPU is measured too, apart from the front's."""
        pids = [p for p in (front, upstream, authorizer) if p is not None]
        result = h2load.run(
            f"http://{address}{wire.REST_GET_PATH if rest else method}",
            None if rest else body or self.body_file,
            concurrency=concurrency,
            seconds=seconds,
            token=token,
            log_path=self.dir / "h2load.log",
            cpu_pids=pids,
            h1=rest,
        )
        calls = max(result.succeeded, 1)
        latencies = result.latencies_us
        return Measurement(
            rps=result.rps,
            p50_us=percentile(latencies, 0.5),
            p99_us=percentile(latencies, 0.99),
            cpu_us=result.cpu_s[front] / calls * 1e6,
            upstream_cpu_us=(result.cpu_s[upstream] / calls * 1e6) if upstream else None,
            calls=result.succeeded,
            failures=result.failed + result.errored + result.non_200,
            latencies_us=latencies,
            cpu_util=result.cpu_s[front] / result.seconds if result.seconds else 0.0,
            sys_us=result.sys_s[front] / calls * 1e6,
            authorizer_cpu_us=(result.cpu_s[authorizer] / calls * 1e6) if authorizer else None,
            authorizer_util=(
                result.cpu_s[authorizer] / result.seconds if authorizer and result.seconds else 0.0
            ),
        )

    def pygen(
        self,
        address: str,
        *,
        calls: int,
        concurrency: int,
        front: int | None,
        upstream: int | None = None,
        token_file: Path | None = None,
        tokens: list[Path] | None = None,
        warmup: int = 0,
        rss_pid: int = 0,
        latencies: bool = True,
        expect: bool = True,
        timeout_s: float = 900,
        max_seconds: float = 0,
        authorizer: int | None = None,
        expected_file: Path | None = None,
    ) -> tuple[Measurement, dict[str, Any]]:
        """Run the Python generator as its own process; (measurement, its raw answer)."""
        out = self.dir / "loadgen.json"
        pids = [p for p in (front, upstream, authorizer) if p]
        argv = python_module(
            LOADGEN,
            "run",
            "--target",
            address,
            "--method",
            wire.GET_OPERATION,
            "--body",
            str(self.request_file),
            "--calls",
            str(calls),
            "--warmup",
            str(warmup),
            "--concurrency",
            str(concurrency),
            "--connections",
            str(h2load.connections_for(concurrency)[0]),
            "--cpu-pids",
            ",".join(str(p) for p in pids),
            "--out",
            str(out),
        )
        if expect:
            argv += ["--expect", str(expected_file or self.expected_file)]
        if token_file is not None:
            argv += ["--token-file", str(token_file)]
        if tokens:
            argv += ["--tokens", ",".join(str(t) for t in tokens)]
        if rss_pid:
            argv += ["--rss-pid", str(rss_pid)]
        if not latencies:
            argv.append("--no-latencies")
        if max_seconds:
            argv += ["--max-seconds", f"{max_seconds:.1f}"]
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd=REPO,
            env=child_env(),
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"loadgen failed ({done.returncode}): {done.stderr[-3000:]}")
        raw: dict[str, Any] = json.loads(out.read_text())
        n = max(raw["calls"], 1)
        cpu = {int(pid): used for pid, used in raw["cpu_s"].items()}
        ok = raw["codes"].get("OK", 0)
        lat = raw["latencies_us"]
        measurement = Measurement(
            rps=raw["rps"],
            p50_us=percentile(lat, 0.5) if lat else float("nan"),
            p99_us=percentile(lat, 0.99) if lat else float("nan"),
            cpu_us=cpu[front] / n * 1e6 if front else float("nan"),
            upstream_cpu_us=cpu[upstream] / n * 1e6 if upstream else None,
            calls=raw["calls"],
            failures=(raw["calls"] - ok) + raw["mismatched_payloads"],
            latencies_us=lat,
            cpu_util=cpu[front] / raw["seconds"] if front and raw["seconds"] else 0.0,
            sys_us=float(raw["sys_s"][str(front)]) / n * 1e6 if front else 0.0,
            authorizer_cpu_us=cpu[authorizer] / n * 1e6 if authorizer else None,
            authorizer_util=cpu[authorizer] / raw["seconds"]
            if authorizer and raw["seconds"]
            else 0.0,
        )
        return measurement, raw

    def write_lines(self, name: str, lines: list[str]) -> Path:
        path = self.dir / name
        path.write_text("\n".join(lines) + "\n")
        return path


def read_token_files(paths: list[Path]) -> list[str]:
    tokens: list[str] = []
    for path in paths:
        tokens.extend(line for line in path.read_text().splitlines() if line)
    return tokens


def library_config(bench: Bench, name: str) -> Path:
    return bench.gateway_config(name, listen="127.0.0.1:0", library=True)


def policy_for(bench: Bench, bindings: int) -> Path:
    return write_policy(bench.dir, bindings)
