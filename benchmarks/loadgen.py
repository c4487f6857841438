"""A Python async gRPC load generator, run as its own process: `python -m benchmarks.loadgen`.

h2load sends one fixed set of headers, so it cannot give every call its own token. This does:
`run` makes unary calls (grpc.aio on uvloop, bytes in and out) with a token per call read from
token files, or one token for every call, and checks every answer (grpc-status and payload).
It samples the CPU of the processes under test itself, exactly around its measured calls, and
optionally their RSS as it goes. `hold` opens calls that never finish (WaitOperation on an
operation that never completes) and keeps them open until its stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from benchmarks.procs import CpuWindow, rss_bytes
from benchmarks.wire import same_operation
from gateway import runtime


def _tokens(args: argparse.Namespace) -> Iterator[str | None]:
    if args.token_file:
        token = Path(args.token_file).read_text().strip()
        return itertools.repeat(token)
    if args.tokens:

        def lines() -> Iterator[str | None]:
            for name in args.tokens.split(","):
                with open(name, encoding="ascii") as source:
                    for line in source:
                        yield line.rstrip("\n")

        return lines()
    return itertools.repeat(None)


def _channels(target: str, count: int) -> list[grpc.aio.Channel]:
    # A local subchannel pool per channel: each channel gets its own connection.
    options = [("grpc.use_local_subchannel_pool", 1)]
    return [grpc.aio.insecure_channel(target, options=options) for _ in range(count)]


class _Run:
    """Shared state of the call loops of one phase."""

    def __init__(
        self,
        calls: int,
        tokens: Iterator[str | None],
        expected: bytes | None,
        deadline: float = float("inf"),
    ) -> None:
        self.remaining = calls
        self.deadline = deadline  # time.monotonic() after which no new call starts
        self.tokens = tokens
        self.expected = expected
        self.codes: Counter[str] = Counter()
        self.mismatched = 0
        self.latencies_us: list[int] = []
        self.done = 0

    def take(self) -> tuple[tuple[tuple[str, str], ...], bool]:
        if self.remaining <= 0 or (self.done % 64 == 0 and time.monotonic() > self.deadline):
            return (), False
        self.remaining -= 1
        try:
            token = next(self.tokens)
        except StopIteration as exc:
            raise SystemExit("loadgen: ran out of tokens") from exc
        metadata = (("authorization", f"Bearer {token}"),) if token is not None else ()
        return metadata, True


async def _loop(
    method: Any, body: bytes, run: _Run, record: bool, on_progress: Any, timeout: float
) -> None:
    clock = time.perf_counter_ns
    while True:
        metadata, more = run.take()
        if not more:
            return
        started = clock()
        try:
            response = await method(body, metadata=metadata, timeout=timeout)
            code = "OK"
        except grpc.aio.AioRpcError as err:
            response, code = None, err.code().name
        if record:
            run.latencies_us.append((clock() - started) // 1000)
        run.codes[code] += 1
        if (
            code == "OK"
            and run.expected is not None
            and response != run.expected
            and not same_operation(response, run.expected)
        ):
            run.mismatched += 1
        run.done += 1
        if on_progress is not None:
            on_progress(run.done)


async def _phase(
    methods: list[Any],
    body: bytes,
    run: _Run,
    concurrency: int,
    record: bool,
    on_progress: Any = None,
    timeout: float = 30.0,
) -> float:
    started = time.perf_counter()
    await asyncio.gather(
        *(
            _loop(methods[i % len(methods)], body, run, record, on_progress, timeout)
            for i in range(concurrency)
        )
    )
    return time.perf_counter() - started


async def run_load(
    args: argparse.Namespace, body: bytes, expected: bytes | None, tokens: Iterator[str | None]
) -> dict[str, Any]:
    channels = _channels(args.target, args.connections)
    methods = [channel.unary_unary(args.method) for channel in channels]
    cpu_pids = [int(pid) for pid in args.cpu_pids.split(",") if pid] if args.cpu_pids else []
    try:
        if args.warmup:
            await _phase(methods, body, _Run(args.warmup, tokens, None), args.concurrency, False)
        samples: list[tuple[int, int]] = []
        progress = None
        if args.rss_pid:
            every = max(1, args.calls // args.rss_samples)
            samples.append((0, rss_bytes(args.rss_pid)))

            def progress(done: int) -> None:
                if done % every == 0:
                    samples.append((done, rss_bytes(args.rss_pid)))

        deadline = time.monotonic() + args.max_seconds if args.max_seconds else float("inf")
        run = _Run(args.calls, tokens, expected, deadline)
        window = CpuWindow(cpu_pids)
        window.start()
        elapsed = await _phase(
            methods, body, run, args.concurrency, not args.no_latencies, progress
        )
        cpu = window.stop()
    finally:
        for channel in channels:
            await channel.close()
    return {
        "calls": run.done,
        "stopped_early": run.remaining > 0,
        "seconds": elapsed,
        "rps": run.done / elapsed if elapsed > 0 else 0.0,
        "codes": dict(run.codes),
        "mismatched_payloads": run.mismatched,
        "cpu_s": {str(pid): used for pid, used in cpu.items()},
        "sys_s": {str(pid): used for pid, used in window.system.items()},
        "latencies_us": run.latencies_us,
        "rss_samples": samples,
    }


async def hold(args: argparse.Namespace, body: bytes, token: str) -> dict[str, Any]:
    """Open `count` calls that never finish; report on them when stdin closes."""
    metadata = (("authorization", f"Bearer {token}"),)
    channels = _channels(args.target, args.connections)
    methods = [channel.unary_unary(args.method) for channel in channels]
    calls = [methods[i % len(methods)](body, metadata=metadata) for i in range(args.count)]
    print("STARTED", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the harness closes our stdin
    finished = Counter(
        "OK" if call.done() and not call.cancelled() else "pending" for call in calls
    )
    codes: Counter[str] = Counter()
    for call in calls:
        if call.done():
            codes[(await call.code()).name] += 1
        call.cancel()
    for channel in channels:
        await channel.close()
    return {"held": args.count, "still_open": finished["pending"], "ended_early": dict(codes)}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="unary calls, measured")
    run.add_argument("--target", required=True)
    run.add_argument("--method", required=True)
    run.add_argument("--body", required=True, help="file with the serialized request")
    run.add_argument("--expect", help="file with the expected serialized response")
    run.add_argument("--token-file", help="one token for every call")
    run.add_argument("--tokens", help="comma-separated token files: a new token per call")
    run.add_argument("--calls", type=int, required=True)
    run.add_argument("--warmup", type=int, default=0)
    run.add_argument("--concurrency", type=int, default=1)
    run.add_argument("--connections", type=int, default=1)
    run.add_argument("--cpu-pids", default="", help="comma-separated PIDs (process trees)")
    run.add_argument("--rss-pid", type=int, default=0)
    run.add_argument("--rss-samples", type=int, default=20)
    run.add_argument("--no-latencies", action="store_true")
    run.add_argument("--max-seconds", type=float, default=0, help="stop starting calls after")
    run.add_argument("--out", required=True)
    held = commands.add_parser("hold", help="calls that never finish, until stdin closes")
    held.add_argument("--target", required=True)
    held.add_argument("--method", required=True)
    held.add_argument("--body", required=True)
    held.add_argument("--token-file", required=True)
    held.add_argument("--count", type=int, required=True)
    held.add_argument("--connections", type=int, default=4)
    held.add_argument("--out", required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    body = Path(args.body).read_bytes()
    if args.command == "run":
        expected = Path(args.expect).read_bytes() if args.expect else None
        result = runtime.run(run_load(args, body, expected, _tokens(args)))
    else:
        result = runtime.run(hold(args, body, Path(args.token_file).read_text().strip()))
    Path(args.out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
