"""Runs everything in order and gathers one result: attacks, issue 15's classes, known bugs,
faults, soak, atheris.

Short mode is sized for CI (well under two minutes on two cores); full mode runs more cases,
longer faults and a five-minute soak (about ten minutes in all).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.testing.loop import LoopThread
from gateway.testing.processes import child_env
from hardening import fuzz
from hardening.bugs import run_known_bugs
from hardening.env import REPO, Workdir
from hardening.faults import run_faults
from hardening.issue15 import run_issue15
from hardening.ledger import capturing_logs, reconcile, token_leaks
from hardening.oracle import Oracle, self_check, table_cases
from hardening.soak import run_soak
from hardening.world import Violation, replay_table, running_world, still_serving


@dataclass(frozen=True)
class Plan:
    """How much of everything to run."""

    mode: str
    bodies: int
    names: int
    metadata: int
    tokens: int
    h2: int
    big_body: int
    fault_scale: float
    soak_seconds: float
    soak_rate: float
    atheris_seconds: int
    # Issue 15's classes: policy files (and names) per in-process class, calls per call class,
    # concurrent short-deadline calls, adversarial-name calls, and stalls before giving up.
    issue15_policy_cases: int = 60
    issue15_call_cases: int = 24
    issue15_deadline_calls: int = 80
    issue15_regex_calls: int = 16
    issue15_stall_limit: int = 2

    @staticmethod
    def short() -> Plan:
        return Plan("short", 120, 120, 60, 160, 40, 70_000, 0.5, 20, 150, 0)

    @staticmethod
    def full() -> Plan:
        return Plan(
            "full", 1500, 1500, 500, 2500, 400, 5 * 1024 * 1024, 1.5, 300, 200, 60,
            issue15_policy_cases=600,
            issue15_call_cases=200,
            issue15_deadline_calls=400,
            issue15_regex_calls=80,
            issue15_stall_limit=6,
        )  # fmt: skip


@dataclass
class Parts:
    """Which parts to run (tests run some alone)."""

    attacks: bool = True
    issue15: bool = True
    known_bugs: bool = True
    faults: bool = True
    soak: bool = True
    atheris: bool = True


def run_suite(plan: Plan, seed: int, parts: Parts | None = None) -> dict[str, Any]:
    parts = parts or Parts()
    started = time.monotonic()
    results: dict[str, Any] = {
        "mode": plan.mode,
        "seed": seed,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": f"python -m hardening{' --short' if plan.mode == 'short' else ''} --seed {seed}",
        "plan": plan.__dict__,
    }
    oracle_problems = self_check(Oracle())
    results["oracle"] = {
        "table_cases": len(table_cases()),
        "disagreements": oracle_problems,
    }
    loop = LoopThread()
    try:
        with tempfile.TemporaryDirectory(prefix="opsgate-hardening-") as scratch:
            workdir = Workdir(Path(scratch))
            if parts.attacks:
                results["attacks"] = _attacks(plan, seed, workdir.sub("attacks"), loop)
            if parts.issue15:
                results["issue15"] = run_issue15(
                    workdir.sub("issue15"),
                    loop,
                    seed,
                    policy_cases=plan.issue15_policy_cases,
                    call_cases=plan.issue15_call_cases,
                    deadline_calls=plan.issue15_deadline_calls,
                    regex_calls=plan.issue15_regex_calls,
                    stall_limit=plan.issue15_stall_limit,
                )
            if parts.known_bugs:
                step = time.monotonic()
                results["known_bugs"] = run_known_bugs(workdir.sub("bugs"), loop)
                results["known_bugs_seconds"] = round(time.monotonic() - step, 1)
            if parts.faults:
                results["faults"] = _faults(plan, workdir.sub("faults"), loop)
            if parts.soak:
                soak = run_soak(workdir.sub("soak"), plan.soak_seconds, plan.soak_rate, seed)
                results["soak"] = soak.as_dict()
            if parts.atheris:
                results["atheris"] = _atheris(plan, workdir.sub("atheris"))
    finally:
        loop.close()
    results["seconds"] = round(time.monotonic() - started, 1)
    results["totals"] = totals(results)
    results["passed"] = passed(results)
    return results


def _attacks(plan: Plan, seed: int, workdir: Workdir, loop: LoopThread) -> dict[str, Any]:
    started = time.monotonic()
    attacks: list[dict[str, Any]] = []
    checks: list[Violation] = []
    tables: dict[str, int] = {}
    with capturing_logs() as logs, running_world(workdir, loop) as world:
        for index, (door_name, _) in enumerate(sorted(world.doors.items())):
            door_seed = seed + 1000 * index
            runs = [
                fuzz.attack_bodies(world, door_name, plan.bodies, door_seed + 1, plan.big_body),
                fuzz.attack_names(world, door_name, plan.names, door_seed + 2),
                fuzz.attack_metadata(world, door_name, plan.metadata, door_seed + 3),
                fuzz.attack_tokens(world, door_name, plan.tokens, door_seed + 4),
            ]
            if door_name == "grpc":
                runs.append(fuzz.attack_h2(world, plan.h2, door_seed + 5))
            attacks += [run.as_dict() for run in runs]
            checks += [v for run in runs for v in run.violations]
        # Every run ends the same way: still serving, and the table's denials still denied.
        serving = still_serving(world)
        for door_name in sorted(world.doors):
            cases, found = replay_table(world, door_name)
            tables[door_name] = cases
            serving += found
        world.flush_audit()
        audit = reconcile(world.audit_file, world.answered, world.unanswered)
        leaks = token_leaks(logs, world.sent_tokens)
        doors = sorted(world.doors)
        rest_note = world.rest_note
        calls = world.calls
    return {
        "doors": doors,
        "rest_door": rest_note,
        "runs": attacks,
        "end_checks": [v.as_dict() for v in serving],
        "still_serving": not [v for v in serving if v.kind == "not_serving"],
        "table_replayed": tables,
        "calls": calls,
        "audit": audit.as_dict(),
        "unhandled_exceptions": logs.unhandled[:20],
        "unhandled_count": len(logs.unhandled),
        "token_leaks": leaks[:10],
        "tokens_presented": len(world.sent_tokens),
        "third_party_error_tracebacks": {
            "count": len(logs.noise),
            "kinds": dict(Counter(n.split(" | ")[-1][:100] for n in logs.noise).most_common(8)),
        },
        "error_log_lines": dict(logs.errors().most_common(12)),
        "violations_total": len(checks) + len(serving),
        "seconds": round(time.monotonic() - started, 1),
    }


def _faults(plan: Plan, workdir: Workdir, loop: LoopThread) -> dict[str, Any]:
    started = time.monotonic()
    run = run_faults(workdir, loop, plan.fault_scale)
    return {
        "results": [r.as_dict() for r in run.results],
        "audit": run.audit.as_dict(),
        "gateway_exit_code": run.exit_code,
        "unhandled_exceptions": run.logs.unhandled[:20],
        "error_log_lines": dict(run.logs.errors().most_common(12)),
        "table_after_faults": [v.as_dict() for v in run.table_violations],
        "still_serving": run.serving,
        "doors": run.doors,
        "unhandled_count": len(run.logs.unhandled)
        + sum(len(r.unhandled) for r in run.results if r.name == "jwks-down-at-start"),
        "notes": run.notes,
        "seconds": round(time.monotonic() - started, 1),
    }


def _atheris(plan: Plan, workdir: Workdir) -> dict[str, Any]:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return {"ran": False, "note": "atheris is not installed (optional: the hardening extra)"}
    corpus = workdir.path / "corpus"
    env = child_env()  # the child finds `hardening` in its cwd, REPO (python -m)
    base = [sys.executable, "-m", "hardening.atheris_target"]
    if plan.atheris_seconds <= 0:
        return {"ran": False, "note": "not in this mode (full mode runs it)"}
    subprocess.run(
        [*base, "--seed-corpus", str(corpus)], check=True, env=env, cwd=REPO, capture_output=True
    )
    started = time.monotonic()
    done = subprocess.run(
        [*base, f"-max_total_time={plan.atheris_seconds}", "-print_final_stats=1", str(corpus)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=plan.atheris_seconds + 120,
    )
    output = done.stderr + done.stdout
    runs = 0
    for line in output.splitlines():
        if line.startswith("Done ") and " runs " in line:
            runs = int(line.split()[1])
    crash = [line for line in output.splitlines() if "Uncaught Python exception" in line]
    return {
        "ran": True,
        "seconds": round(time.monotonic() - started, 1),
        "runs": runs,
        "exit_code": done.returncode,
        "crashed": done.returncode != 0,
        "crash": "\n".join(output.splitlines()[-25:]) if done.returncode else "",
        "note": "" if not crash else crash[0],
    }


def totals(results: dict[str, Any]) -> dict[str, Any]:
    """The headline figures, over whichever parts ran."""
    attacks = results.get("attacks") or {}
    faults = results.get("faults") or {}
    soak = results.get("soak") or {}
    atheris = results.get("atheris") or {}
    issue15 = results.get("issue15") or {}
    runs = attacks.get("runs", [])
    fault_results = faults.get("results", [])
    judged = runs + fault_results
    end_checks = attacks.get("end_checks", []) + faults.get("table_after_faults", [])
    wrongly = sum(r["violations"].get("wrongly_allowed", 0) for r in judged)
    wrongly += sum(1 for v in end_checks if v["kind"] == "wrongly_allowed")
    wrongly += soak.get("wrongly_allowed", 0)
    identity = sum(r["violations"].get("identity", 0) for r in judged)
    other = sum(
        n
        for r in judged
        for kind, n in r["violations"].items()
        if kind not in ("wrongly_allowed", "identity")
    )
    other += sum(1 for v in end_checks if v["kind"] != "wrongly_allowed")
    other += soak.get("errors", 0)
    audits = [a for a in (attacks.get("audit"), faults.get("audit"), soak.get("audit")) if a]
    unhandled = attacks.get("unhandled_count", 0) + faults.get("unhandled_count", 0)
    unhandled += len(issue15.get("unhandled_exceptions", []))
    unhandled += len(soak.get("unhandled_exceptions", []))
    fuzz_cases = sum(r["cases"] for r in runs)
    return {
        "cases_tried": fuzz_cases + len(fault_results),
        "fuzz_cases": fuzz_cases,
        "atheris_runs": atheris.get("runs", 0),
        "calls_made": attacks.get("calls", 0)
        + sum(f["calls"] for f in fault_results)
        + soak.get("calls", 0)
        + issue15.get("calls", 0),
        "faults_injected": len(fault_results),
        "faults_survived": sum(1 for f in fault_results if f["survived"]),
        "records_written": sum(a["records"] for a in audits),
        "records_lost": sum(a["lost"] for a in audits),
        "records_duplicated": sum(a["duplicated"] for a in audits),
        "records_unexplained": sum(a["unexplained"] for a in audits),
        "wrongly_allowed": wrongly,
        "identity_spoofed": identity,
        "tokens_in_logs": len(attacks.get("token_leaks", [])),
        "other_violations": other,
        "unhandled_exceptions": unhandled,
        "still_serving": attacks.get("still_serving", True)
        and faults.get("still_serving", True)
        and soak.get("still_serving", True),
        "soak_calls": soak.get("calls", 0),
        "soak_errors": soak.get("errors", 0),
        "soak_rss_bounded": soak.get("rss_bounded", True),
        "known_bugs_reproduced": [
            b["key"] for b in results.get("known_bugs", []) if b["reproduced"]
        ],
        "oracle_disagreements": len(results.get("oracle", {}).get("disagreements", [])),
        "atheris_crashed": atheris.get("crashed", False),
        "issue15_cases": sum(c["cases"] for c in issue15.get("classes", [])),
        "issue15_violations": issue15.get("violations", 0),
        "issue15_classes_violated": [
            c["class"] for c in issue15.get("classes", []) if c["violations"]
        ],
        "issue15_generator_errors": issue15.get("generator_errors", 0),
    }


def passed(results: dict[str, Any]) -> bool:
    t = results["totals"]
    return (
        t["records_lost"] == 0
        and t["records_duplicated"] == 0
        and t["records_unexplained"] == 0
        and t["wrongly_allowed"] == 0
        and t["identity_spoofed"] == 0
        and t["tokens_in_logs"] == 0
        and t["unhandled_exceptions"] == 0
        and t["still_serving"]
        and t["other_violations"] == 0
        and t["faults_survived"] == t["faults_injected"]
        and t["soak_rss_bounded"]
        and t["oracle_disagreements"] == 0
        and not t["atheris_crashed"]
        and t["issue15_violations"] == 0
        and t["issue15_generator_errors"] == 0
    )
