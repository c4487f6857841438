"""Issue 15's eight defect classes, generated from the run's seed: one result line per class."""

from __future__ import annotations

import random
import time
from typing import Any

from gateway.testing.idp import local_idp
from gateway.testing.loop import LoopThread
from hardening import call_attacks, condition_attacks, policy_attacks, regex_stall
from hardening.env import Keys, Workdir
from hardening.ledger import capturing_logs, judge_stderr
from hardening.policy_attacks import Judge
from hardening.process_world import ProcessWorld


def run_issue15(
    workdir: Workdir,
    loop: LoopThread,
    seed: int,
    *,
    policy_cases: int,
    call_cases: int,
    deadline_calls: int,
    regex_calls: int,
    stall_limit: int,
) -> dict[str, Any]:
    """Policy files and conditions in process (classes 1, 2, 3, 7), then calls through one
    `opsgate serve` process (classes 4, 5, 6, 8, and 1's stalls, last: they may wedge it)."""
    started = time.monotonic()
    judge = Judge(workdir.sub("policies"))
    regex = condition_attacks.attack_regex_syntax(judge, policy_cases, seed + 11)
    regex.merge(condition_attacks.attack_folding(judge, 2 * policy_cases, seed + 12))
    results = {
        1: regex,
        2: condition_attacks.attack_semantics(judge, policy_cases, seed + 21),
        3: policy_attacks.attack_near_miss(judge, policy_cases, seed + 31),
        7: policy_attacks.attack_boms(judge, policy_cases, seed + 71),
    }
    baits = regex_stall.baits(random.Random(seed + 13), max(4, min(12, regex_calls // 3)))
    keys = Keys()
    exit_code: int | None = None
    with capturing_logs() as logs, local_idp(jwks=keys.published()) as jwks:
        vouching = call_attacks.vouching_issuer(jwks.jwks_url)
        policy = call_attacks.process_policy(regex_stall.bait_policy(baits))
        world = ProcessWorld(workdir.sub("calls"), loop, keys, jwks, policy, vouching)
        try:
            results[4] = call_attacks.attack_aliasing(world, call_cases, seed + 41)
            results[5] = call_attacks.attack_unverified(
                world, call_cases, seed + 51, bool(vouching)
            )
            results[6] = call_attacks.attack_smuggling(world, call_cases, seed + 61)
            results[8] = call_attacks.attack_deadlines(world, deadline_calls, seed + 81)
            results[1].merge(
                regex_stall.attack_regex_stall(world, baits, regex_calls, stall_limit, seed + 14)
            )
        finally:
            exit_code = world.close()
            process_logs = judge_stderr(world.process.lines) if world.process is not None else None
    classes = [results[n].as_dict() for n in sorted(results)]
    unhandled = list(logs.unhandled) + (process_logs.unhandled if process_logs else [])
    return {
        "classes": classes,
        "violations": sum(c["violations"] for c in classes),
        "generator_errors": sum(len(c["generator_errors"]) for c in classes),
        "calls": world.calls,
        "gateway_restarts": world.restarts,
        "gateway_exit_code": exit_code,
        "unhandled_exceptions": unhandled[:10],
        "seconds": round(time.monotonic() - started, 1),
    }
