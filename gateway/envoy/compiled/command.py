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
    render_resources,
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
    source: str = "<config>"  # the config file, named in problems

    def compile(self) -> Compiled:
        """The policy file as it is now, compiled; raises Refused or ConfigError."""
        authz = self.settings.authorization
        policy = load_policy(authz.policy_file, self.profile.permissions)
        return compile_policy(
            policy,
            self.profile,
            plan_authn(self.settings, self.source),
            descriptor_bin=descriptor_bin(self.profile),
        )

    def render(self, compiled: Compiled) -> dict[str, str]:
        """The files to write; raises ConfigError (e.g. no upstream) before any is written."""
        return render_resources(compiled, self.layout, self.settings, self.profile.service)

    def write(self, compiled: Compiled) -> str:
        write_resources(self.layout.directory, self.render(compiled))
        return compiled.policy_etag


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
    profile = load_profile(authz.profile, authz.profile_file)
    return Compiler(settings, profile, layout, str(args.config))


def run(args: argparse.Namespace) -> int:
    compiler = compiler_from_args(args)
    policy_file = compiler.settings.authorization.policy_file
    stamp = file_stamp(policy_file)  # before reading it: an edit from now on is seen
    documents = _rendered(compiler, render=not args.check)
    if documents is None:
        return 1
    compiled, files = documents
    if args.check:
        print(f"opsgate: the policy compiles ({_summary(compiled)}); nothing written (--check)")
        return 0
    header = (
        f"Envoy bootstrap written by `opsgate envoy-compile` (opsgate {__version__}) from "
        f"{args.config}.",
        f"The policy, compiled, is in {args.out}/lds.json and cds.json: Envoy reloads them",
        "whenever they are replaced (`opsgate envoy-compile --watch` does so on each change).",
    )
    write_resources(args.out, {BOOTSTRAP_FILE: to_yaml(bootstrap(compiler.layout), header)})
    _write(compiler, compiled, files)
    if not args.watch:
        return 0
    return watch(compiler, args.interval, stamp)


def _rendered(compiler: Compiler, *, render: bool = True) -> tuple[Compiled, dict[str, str]] | None:
    """The policy compiled and its files (none unless `render`: --check needs no upstream),
    or None after saying why there are none."""
    try:
        compiled = compiler.compile()
        return compiled, compiler.render(compiled) if render else {}
    except (Refused, ConfigError) as exc:
        print(f"opsgate: the policy does not compile; nothing written:\n{exc}", file=sys.stderr)
        return None


def _summary(compiled: Compiled) -> str:
    return ", ".join(f"{value} {key}" for key, value in compiled.counts.items())


def _write(compiler: Compiler, compiled: Compiled, files: dict[str, str]) -> None:
    """Write the listener and clusters `compiled` was rendered into, and say so."""
    write_resources(compiler.layout.directory, files)
    where = compiler.layout.directory
    print(
        f"opsgate: compiled policy {compiled.policy_etag} ({_summary(compiled)}) written to {where}"
    )


def watch(compiler: Compiler, interval_s: float, stamp: tuple[int, int, int] | None) -> int:
    """Recompile on every change of the policy file after `stamp`, until interrupted; a
    version that does not compile is reported and the one in force stays."""
    path = compiler.settings.authorization.policy_file
    while True:
        time.sleep(interval_s)
        now = file_stamp(path)
        if now == stamp:
            continue
        stamp = now
        documents = _rendered(compiler)
        if documents is not None:
            _write(compiler, *documents)
