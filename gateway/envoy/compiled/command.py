"""`opsgate envoy-compile`: the policy compiled into Envoy's filters, written where a running
Envoy picks it up; with --watch, recompiled whenever the policy file changes. A policy that
does not compile is reported with where, and the config already in force stays in force."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass

from gateway import __version__
from gateway.config import Settings, load_settings
from gateway.envoy.bootstrap import to_yaml
from gateway.envoy.compiled.authn_plan import plan_authn
from gateway.envoy.compiled.compiler import Compiled, compile_policy
from gateway.envoy.compiled.problems import Refused
from gateway.envoy.compiled.resources import (
    CompiledLayout,
    bootstrap,
    write_atomically,
    write_resources,
)
from gateway.envoy.descriptors import descriptor_bin
from gateway.errors import ConfigError
from gateway.policy.loader import load_policy
from gateway.policy_reload import file_stamp
from gateway.profile import ServiceProfile, load_profile

BOOTSTRAP_FILE = "bootstrap.yaml"
log = logging.getLogger("opsgate.envoy.compile")


@dataclass
class Compiler:
    """Compiles one config's policy; `settings` and `profile` are read once."""

    settings: Settings
    profile: ServiceProfile
    layout: CompiledLayout

    def compile(self) -> Compiled:
        """The policy file as it is now, compiled; raises Refused or ConfigError."""
        authz = self.settings.authorization
        policy = load_policy(authz.policy_file, self.profile.permissions)
        return compile_policy(
            policy,
            self.profile,
            plan_authn(self.settings),
            descriptor_bin=descriptor_bin(self.profile),
        )

    def write(self, compiled: Compiled) -> str:
        return write_resources(compiled, self.layout, self.settings, self.profile.service)


def compiler_from_args(args: argparse.Namespace) -> Compiler:
    settings = load_settings(args.config, upstream=args.upstream, require_upstream=False)
    authz = settings.authorization
    layout = CompiledLayout(
        directory=args.out,
        listen=args.listen,
        upstream=args.upstream,
        admin=args.admin,
        audit=args.audit,
    )
    return Compiler(settings, load_profile(authz.profile, authz.profile_file), layout)


def run(args: argparse.Namespace) -> int:
    compiler = compiler_from_args(args)
    compiled = _compiled(compiler)
    if compiled is None:
        return 1
    if args.check:
        print(f"opsgate: the policy compiles ({_summary(compiled)}); nothing written (--check)")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    header = (
        f"Envoy bootstrap written by `opsgate envoy-compile` (opsgate {__version__}) from "
        f"{args.config}.",
        f"The policy, compiled, is in {args.out}/lds.json and cds.json: Envoy reloads them",
        "whenever they are replaced (`opsgate envoy-compile --watch` does so on each change).",
    )
    write_atomically(args.out / BOOTSTRAP_FILE, to_yaml(bootstrap(compiler.layout), header))
    _write(compiler, compiled)
    if not args.watch:
        return 0
    return watch(compiler, args.interval)


def _compiled(compiler: Compiler) -> Compiled | None:
    """The policy compiled, or None after saying why it does not compile."""
    try:
        return compiler.compile()
    except (Refused, ConfigError) as exc:
        print(f"opsgate: the policy does not compile; nothing written:\n{exc}", file=sys.stderr)
        return None


def _summary(compiled: Compiled) -> str:
    return ", ".join(f"{value} {key}" for key, value in compiled.counts.items())


def _write(compiler: Compiler, compiled: Compiled) -> None:
    version = compiler.write(compiled)
    where = compiler.layout.directory
    print(f"opsgate: compiled policy {version} ({_summary(compiled)}) written to {where}")


def _recompile(compiler: Compiler) -> bool:
    """Compile and write; on a refusal, say why and leave what is written alone."""
    compiled = _compiled(compiler)
    if compiled is not None:
        _write(compiler, compiled)
    return compiled is not None


def watch(compiler: Compiler, interval_s: float) -> int:
    """Recompile on every change of the policy file, until interrupted."""
    path = compiler.settings.authorization.policy_file
    stamp = file_stamp(path)
    while True:
        time.sleep(interval_s)
        now = file_stamp(path)
        if now != stamp:
            stamp = now
            _recompile(compiler)
