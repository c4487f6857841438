"""Runs every benchmark phase in one process tree and writes REPORT.md, results.json and plots.

Phases run in a fixed order, each bounded by the mode's budget: a phase that would start too
late is skipped and the report says so, and a phase that fails is reported as failed while the
others still run. Every child process is stopped on the way out, by its own PID.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import (
    compiledrows,
    endtoend,
    envoyrows,
    plots,
    profiling,
    report,
    scenarios,
    targets,
    wire,
)
from benchmarks.bench import Bench
from benchmarks.env import ensure_tools, machine, versions
from benchmarks.modes import MODES, Mode
from benchmarks.procs import REPO, python_module

PHASES = ("micro", "rows", "envoy", "compiled", "library", "scale", "long_calls", "memory")
# Run in the full mode, and in the others only when asked for by name (--only envoy).
ON_REQUEST = ("envoy", "compiled")
HERE = Path(__file__).resolve().parent


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="opsgate benchmarks: end-to-end rows, micro-benchmarks, scale, memory.",
    )
    speed = parser.add_mutually_exclusive_group()
    speed.add_argument("--quick", action="store_true", help="under 3 minutes")
    speed.add_argument("--smoke", action="store_true", help="CI: one tiny row, one micro, <30 s")
    parser.add_argument(
        "--only", action="append", choices=PHASES, help="run only these phases (repeatable)"
    )
    parser.add_argument("--out", type=Path, default=HERE, help="where REPORT.md etc. go")
    parser.add_argument("--no-install", action="store_true", help="never apt-get missing tools")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    return parser


def _command(args: argparse.Namespace) -> str:
    words = ["python -m benchmarks"]
    if args.quick:
        words.append("--quick")
    if args.smoke:
        words.append("--smoke")
    return " ".join(words)


def _micro(bench: Bench) -> dict[str, Any]:
    mode = bench.mode
    directory = bench.dir / "micro"
    directory.mkdir(exist_ok=True)
    out = directory / "micro.json"
    argv = python_module(
        "benchmarks.micro",
        "--sizes",
        ",".join(str(s) for s in mode.micro_sizes),
        "--repeats",
        str(mode.repeats if mode.name != "smoke" else 1),
        "--target-s",
        str(mode.micro_target_s),
        "--tokens",
        str(mode.micro_tokens),
        "--workdir",
        str(directory),
        "--out",
        str(out),
    )
    if mode.micro_tokens == 0:
        argv.append("--skip-tokens")
    if mode.name == "smoke":
        argv += ["--engines", ""]
    from benchmarks.procs import child_env

    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=child_env(),
        timeout=max(60.0, bench.left()),
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"micro-benchmarks failed: {done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def _rows(bench: Bench) -> dict[str, Any]:
    return endtoend.run_rows(bench)


# Rough seconds each phase needs in each mode: a phase is skipped if fewer are left.
NEEDS: dict[str, dict[str, float]] = {
    "micro": {"smoke": 3, "quick": 15, "full": 60},
    "rows": {"smoke": 5, "quick": 40, "full": 300},
    "envoy": {"smoke": 5, "quick": 40, "full": 330},
    "compiled": {"smoke": 5, "quick": 60, "full": 650},
    "library": {"smoke": 0, "quick": 8, "full": 40},
    "scale": {"smoke": 0, "quick": 8, "full": 40},
    "long_calls": {"smoke": 0, "quick": 8, "full": 40},
    "memory": {"smoke": 0, "quick": 8, "full": 120},
}

RUNNERS: dict[str, Callable[[Bench], dict[str, Any]]] = {
    "micro": _micro,
    "rows": _rows,
    "envoy": envoyrows.run_envoy,
    "compiled": compiledrows.run_compiled,
    "library": scenarios.run_library,
    "scale": scenarios.run_scale,
    "long_calls": scenarios.run_long_calls,
    "memory": scenarios.run_memory,
}


def _method(bench: Bench) -> list[str]:
    mode = bench.mode
    conns = ", ".join(
        f"c={c}: {min(c, 16)} connection(s) x {max(1, c // min(c, 16))} stream(s)"
        for c in mode.concurrencies
    )
    return [
        "All processes on 127.0.0.1; every front end is its own process; all rows share one "
        "`opsgate upstream` (the seeded reference upstream). The call: unary "
        "GetOperation of a finished seeded operation.",
        f"h2load rows: `h2load -D {mode.h2load_seconds:g}` per measurement ({conns}), a "
        "gRPC POST (`content-type: application/grpc`, `te: trailers`, a body of the 5-byte "
        "frame header + serialized GetOperationRequest, `authorization: Bearer <RS256 JWT>` "
        "for opsgate), latencies from `--log-file`; one "
        f"{mode.warmup_seconds:g} s warm-up per row before the first repeat.",
        "REST door row: a second `opsgate serve` with `rest: {listen: ...}` in its config (same "
        "issuer, policy and audit settings), driven by `h2load --h1` with "
        f"`GET {wire.REST_GET_PATH}` and `authorization: Bearer <RS256 JWT>` (the warm token), "
        "one connection per request in flight (HTTP/1.1 does not multiplex, and h2load's "
        "pipelining is not what clients do); every answer must be HTTP 200, and the check "
        "compares the JSON with the upstream's Operation.",
        "Python-generator rows (py): `python -m benchmarks.loadgen` (grpc.aio, uvloop, bytes "
        "in and out) makes a fixed number of calls per measurement "
        f"({', '.join(f'c={c}: {n:,}' for c, n in mode.pygen_calls.items())}, after "
        f"{mode.pygen_warmup} warm-up calls) and checks every answer's grpc-status and payload. "
        "h2load cannot vary headers per request, so the cold row needs it, and the warm row is "
        "run with it too so that warm and cold compare like with like.",
        "Cold caches: every call carries a new RS256 token (pre-signed by a process pool) of a "
        "new principal, so both the token cache and the decision cache miss on every call.",
        "opsgate: `python -m gateway serve` (= `opsgate serve`) with a JWKS-file issuer, the "
        f"built-in contactcenterinsights profile, a {mode.e2e_policy_bindings:,}-binding "
        "policy from benchmarks/policygen.py (the benchmark's callers are granted through a "
        "nested group), and audit records to a file with `fsync: interval` (1 s).",
        "nginx: one worker, `listen ... http2` (h2c), `grpc_pass` to an upstream block with "
        "`keepalive 128`, `access_log off`, `keepalive_requests` unbounded.",
        "Python forwarder: benchmarks/forwarder.py, grpc.aio + uvloop generic handler relaying "
        "bytes (naive: handler and multicallable built per call; fast: built once).",
        "CPU per call: utime+stime from /proc/PID/stat of the front-end process and all its "
        "descendants, read before and after the measured window, divided by the calls made. "
        "Repeats are interleaved: repeat → concurrency → row, the row order rotated each repeat.",
    ]


def _run_phase(bench: Bench, results: dict[str, Any], phase: str) -> None:
    needs = NEEDS[phase][bench.mode.name]
    if bench.left() < needs:
        why = f"time budget: {bench.left():.0f} s left, the phase needs about {needs:.0f} s"
        results["skipped"].append({"phase": phase, "why": why})
        bench.note(f"{phase} skipped: {why}")
        return
    print(f"[{bench.elapsed():5.0f}s] {phase} ...", file=sys.stderr)
    started = time.monotonic()
    try:
        if phase != "micro" and bench.upstream is None:
            bench.start_upstream()
        results[phase] = RUNNERS[phase](bench)
    except Exception as exc:
        results["errors"].append({"phase": phase, "error": f"{type(exc).__name__}: {exc}"})
        print(traceback.format_exc(), file=sys.stderr)
    took = time.monotonic() - started
    print(f"[{bench.elapsed():5.0f}s] {phase} took {took:.0f}s", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    mode: Mode = MODES["smoke" if args.smoke else "quick" if args.quick else "full"]
    started_at = datetime.datetime.now(datetime.UTC)
    wall = time.monotonic()
    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    install = not args.no_install and mode.name != "smoke"
    tools, tool_notes = ensure_tools(install)
    work = Path(tempfile.mkdtemp(prefix="opsgate-bench-"))
    bench = Bench(mode, work, tools)
    bench.notes.extend(tool_notes)
    results: dict[str, Any] = {"errors": [], "skipped": []}
    wanted = [p for p in PHASES if not args.only or p in args.only]
    if not mode.extras:
        for phase in ("library", "scale", "long_calls", "memory"):
            if phase in wanted:
                wanted.remove(phase)
                results["skipped"].append({"phase": phase, "why": f"not run in --{mode.name}"})
    if mode.name != "full":
        for phase in ON_REQUEST:
            if phase in wanted and phase not in (args.only or ()):
                wanted.remove(phase)
                why = f"not run in --{mode.name} unless asked for (--only {phase})"
                results["skipped"].append({"phase": phase, "why": why})
    command = _command(args)
    try:
        for phase in wanted:
            if phase == "memory":
                continue  # last: it uses whatever time is left
            _run_phase(bench, results, phase)
        results["targets"] = targets.evaluate(results, command)
        missed = {t["key"] for t in results["targets"] if t["passed"] is False}
        wants_profile = missed & report.E2E_TARGETS
        if wants_profile and bench.row_services and mode.profile_seconds > 0:
            print(f"[{bench.elapsed():5.0f}s] profiles ...", file=sys.stderr)
            try:
                results["profiles"] = profiling.profile(
                    bench, bench.row_services, mode.profile_seconds, "cold_cpu" in missed
                )
            except Exception as exc:
                results["errors"].append({"phase": "profiles", "error": f"{exc}"})
                print(traceback.format_exc(), file=sys.stderr)
        for service in bench.row_services.values():
            if service is not bench.upstream:
                bench.stop(service)
        if "memory" in wanted:
            _run_phase(bench, results, "memory")
    finally:
        bench.stop_all()
    results["targets"] = targets.evaluate(results, command)
    results["meta"] = {
        "command": _command(args) + (f" --only {' --only '.join(args.only)}" if args.only else ""),
        "mode": mode.name,
        "date": started_at.strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": time.monotonic() - wall,
        "budget_s": mode.budget_s,
        "repeats": mode.repeats,
        "concurrencies": list(mode.concurrencies),
        "method": _method(bench),
    }
    results["environment"] = {"machine": machine(), "versions": versions(tools), "tools": tools}
    results["notes"] = bench.notes
    plot_files, plot_notes = plots.make(results, out_dir)
    results["plots"] = plot_files
    results["notes"].extend(plot_notes)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (out_dir / "REPORT.md").write_text(report.render(results))
    if args.keep:
        print(f"work directory kept: {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"wrote {out_dir / 'REPORT.md'} and results.json in {time.monotonic() - wall:.0f} s",
        file=sys.stderr,
    )
    return 1 if results["errors"] else 0


def main(argv: list[str] | None = None) -> int:
    return run(_parser().parse_args(argv))
