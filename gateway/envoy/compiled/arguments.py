"""The command line of `opsgate envoy-compile` (argparse only: the CLI builds it at start)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="opsgate's YAML config file")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("."),
        help="directory for bootstrap.yaml, lds.json, cds.json",
    )
    parser.add_argument("--listen", default="0.0.0.0:10000", help="Envoy's gRPC listener")
    parser.add_argument("--upstream", help="HOST:PORT allowed calls go to (default: upstream)")
    parser.add_argument("--admin", default="127.0.0.1:9901", help="Envoy's admin address")
    parser.add_argument(
        "--audit",
        help="HOST:PORT of an `opsgate serve` with envoy: set, which writes each call's record",
    )
    parser.add_argument(
        "--check", action="store_true", help="only say whether the policy compiles; write nothing"
    )
    parser.add_argument(
        "--watch", action="store_true", help="recompile whenever the policy file changes"
    )
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between checks")
