"""Faults against real processes: a `python -m gateway serve` subprocess under load while its
upstream, key endpoint, policy file and audit file fail, one after the other.

The upstream is `python -m gateway upstream` (killed and restarted), then a controllable
in-process upstream on the same port (every status code, slowness). The JWKS endpoint is a real
local HTTP server. The audit file fails by RLIMIT_FSIZE set on the gateway process with
prlimit(2) and lifted again. Every call is judged against the example policy's table and the
oracle; every answered call must have exactly one audit record once the gateway has drained.
"""

from __future__ import annotations

import itertools
import random
import resource
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from gateway.policy.loader import load_policy_text
from gateway.reference_upstream.seed import DONE_OPERATION
from gateway.testing.idp import LocalIdp, local_idp
from gateway.testing.loop import LoopThread
from gateway.testing.ports import free_port, wait_port_free
from gateway.testing.processes import ServerProcess, gateway_process, upstream_process
from gateway.testing.upstream import ControlledUpstream, start_controlled_upstream
from hardening.doors import Answer, GrpcDoor, RestSession
from hardening.env import (
    EXAMPLE_POLICY,
    Keys,
    Workdir,
    gateway_config,
    mint,
    replace_file,
    wait_until,
)
from hardening.ledger import AuditCheck, LogReport, judge_stderr, reconcile
from hardening.oracle import Expectation, Oracle, method_path, table_cases, who_claims
from hardening.world import Violation

NORMAL = "normal"
ALICE: dict[str, Any] = {"email": "alice@acme.example"}
BOB: dict[str, Any] = {"email": "bob@acme.example"}


@dataclass(frozen=True, slots=True)
class Case:
    """One call of the load mix: who, what, and the table's answer for it."""

    who: dict[str, Any]
    claims: dict[str, Any]
    short: str
    name: str
    table_code: str
    expected: Expectation


@dataclass
class Shot:
    case: Case
    phase_start: str
    phase_end: str
    seconds: float
    answer: Answer
    fresh_token: bool
    ended: float = 0.0  # time.monotonic() when the answer came
    door: str = "grpc"


@dataclass
class FaultResult:
    """One fault: what was done, what the calls got, and whether the gateway came through."""

    name: str
    description: str
    calls: int = 0
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    recovered: bool = False
    recovery_s: float | None = None
    alive: bool = True
    unhandled: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    known: Counter[str] = field(default_factory=Counter)  # known bugs seen meanwhile

    @property
    def survived(self) -> bool:
        return self.recovered and self.alive and not self.violations and not self.unhandled

    def as_dict(self) -> dict[str, Any]:
        return {
            "fault": self.name,
            "description": self.description,
            "calls": self.calls,
            "outcomes": {phase: dict(c.most_common()) for phase, c in self.outcomes.items()},
            "violations": dict(Counter(v.kind for v in self.violations)),
            "violation_examples": [v.as_dict() for v in self.violations[:8]],
            "recovered": self.recovered,
            "recovery_s": None if self.recovery_s is None else round(self.recovery_s, 2),
            "alive": self.alive,
            "unhandled_exceptions": self.unhandled[:5],
            "survived": self.survived,
            "known_bugs_seen": dict(self.known),
            "notes": self.notes,
            "seconds": round(self.seconds, 2),
        }


def load_mix(oracle: Oracle) -> list[Case]:
    """The table's routed cases (allowed, denied, upstream NOT_FOUND) as a load mix."""
    mix = []
    for _, who, short, name, expected in table_cases():
        if expected not in ("OK", "PERMISSION_DENIED", "NOT_FOUND"):
            continue
        claims = who_claims(who)
        verdict = oracle.decide(claims, method_path(short), name)
        mix.append(Case(who.claims(), claims, short, name, expected, verdict))
    return mix


class Load:
    """Threads calling the gateway as fast as `pause_s` lets them, recording every shot."""

    def __init__(
        self,
        world: FaultWorld,
        *,
        threads: int = 4,
        timeout: float = 3.0,
        pause_s: float = 0.004,
        fresh_tokens: float = 0.0,
        mix: list[Case] | None = None,
    ) -> None:
        self.world = world
        self.threads = threads
        self.timeout = timeout
        self.pause_s = pause_s
        self.fresh_tokens = fresh_tokens
        self.mix = mix or world.mix
        self.shots: list[Shot] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []

    def __enter__(self) -> Load:
        for index in range(self.threads):
            worker = threading.Thread(target=self._run, args=(index,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(self.timeout + 10)

    def _run(self, index: int) -> None:
        rng = random.Random(index)
        order = itertools.cycle(rng.sample(self.mix, len(self.mix)))
        # Every other thread calls through the REST/JSON door, when the gateway has one.
        session = self.world.rest_session() if index % 2 == 1 else None
        door = "rest" if session is not None else "grpc"
        try:
            while not self._stop.is_set():
                case = next(order)
                fresh = rng.random() < self.fresh_tokens
                token = self.world.token(case.who, fresh=fresh)
                phase = self.world.phase
                started = time.monotonic()
                answer = self.world.call(
                    case.short, case.name, token, timeout=self.timeout, session=session
                )
                ended = time.monotonic()
                shot = Shot(
                    case, phase, self.world.phase, ended - started, answer, fresh, ended, door
                )
                with self._lock:
                    self.shots.append(shot)
                if self.pause_s:
                    time.sleep(self.pause_s)
        finally:
            if session is not None:
                session.close()


class FaultWorld:
    """A gateway process, its upstream, its JWKS endpoint, and what its clients saw."""

    def __init__(self, workdir: Workdir, loop: LoopThread, keys: Keys, jwks: LocalIdp) -> None:
        self.workdir = workdir
        self.loop = loop
        self.keys = keys
        self.jwks = jwks
        self.oracle = Oracle()
        self.mix = load_mix(self.oracle)
        self.upstream_port = free_port()
        self.upstream_address = f"127.0.0.1:{self.upstream_port}"
        self.upstream_proc: ServerProcess | None = upstream_process(
            f"127.0.0.1:{self.upstream_port}"
        )
        self.controlled: ControlledUpstream | None = None
        self.policy = workdir.policy_copy()
        self.audit_file = workdir.path / "audit.log"
        self.config = gateway_config(
            workdir,
            upstream=self.upstream_address,
            jwks_url=jwks.jwks_url,
            policy=self.policy,
            audit_file=self.audit_file,
            issuer={"jwks_ttl_s": 2, "jwks_min_refresh_interval_s": 1},
            authorization={"reload_interval_s": 0.2},
            audit={"on_failure": "fail_closed"},
            audit_file_settings={"fsync": "never"},
        )
        self.gateway = gateway_process(self.config)
        self.door = GrpcDoor(self.gateway.address)
        self.rest_address = self.gateway.rest_address
        self.phase = NORMAL
        self.answered: list[str] = []
        self.cut_short = 0  # reached the chain, but the client stopped waiting: one record each
        self.maybe = 0  # no answer at all (transport): a record or none
        self._lock = threading.Lock()
        self._tokens: dict[str, str] = {}
        self.signing_key = keys.primary

    # -- calls ------------------------------------------------------------------------------

    def token(self, who: dict[str, Any], fresh: bool = False) -> str:
        key = repr(sorted(who.items())) + self.signing_key.kid
        if fresh:
            return mint(self.signing_key, **who)
        with self._lock:
            if key not in self._tokens:
                self._tokens[key] = mint(self.signing_key, **who)
            return self._tokens[key]

    def forget_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    def rest_session(self) -> RestSession | None:
        return RestSession(self.rest_address) if self.rest_address else None

    def call(
        self,
        short: str,
        name: str,
        token: str,
        timeout: float = 3.0,
        session: RestSession | None = None,
    ) -> Answer:
        if session is not None:
            answer = session.operation(short, name, token, timeout=timeout)
        else:
            answer = self.door.operation(short, name, token, timeout=timeout)
        with self._lock:
            if answer.request_id is not None:
                self.answered.append(answer.request_id)
            elif answer.code in ("DEADLINE_EXCEEDED", "CANCELLED", "CUT_SHORT"):
                self.cut_short += 1  # the chain saw it, the client stopped waiting
            else:
                self.maybe += 1
        return answer

    def known_good(self) -> Answer:
        return self.call("get", DONE_OPERATION, self.token(ALICE), timeout=5)

    def serving(self) -> bool:
        """Health SERVING and a known-good call OK, on every door."""
        if not (self.door.healthy() and self.known_good().code == "OK"):
            return False
        session = self.rest_session()
        if session is None:
            return True
        try:
            answer = self.call("get", DONE_OPERATION, self.token(ALICE), 5, session)
        finally:
            session.close()
        return answer.code == "OK"

    # -- the upstream ---------------------------------------------------------------------

    def kill_upstream(self) -> None:
        if self.upstream_proc is not None:
            self.upstream_proc.kill()
            self.upstream_proc = None
        if self.controlled is not None:
            self.loop.run(self.controlled.stop())
            self.controlled = None
        wait_port_free(self.upstream_port)

    def start_reference_upstream(self) -> None:
        self.upstream_proc = upstream_process(self.upstream_address)

    def start_controlled_upstream(self) -> ControlledUpstream:
        self.controlled = self.loop.run(start_controlled_upstream(self.upstream_port))
        return self.controlled

    def close(self) -> tuple[int | None, LogReport]:
        code = self.gateway.stop(30)
        self.door.close()
        with suppress(Exception):
            self.kill_upstream()
        return code, judge_stderr(self.gateway.lines)


# -- judging


Rule = Callable[[Shot], bool]


def normal(shot: Shot) -> bool:
    return shot.answer.code == shot.case.table_code and shot.answer.answered


def judge_shots(
    result: FaultResult, shots: list[Shot], rules: Mapping[str, Rule], secret: str = ""
) -> None:
    """Security on every shot; the documented status on shots inside one phase."""
    for shot in shots:
        answer, case = shot.answer, shot.case
        result.calls += 1
        label = shot.phase_start if shot.phase_start == shot.phase_end else "transition"
        result.outcomes.setdefault(label, Counter())[answer.code] += 1
        if answer.code == "OK" and not case.expected.allowed:
            result.violations.append(
                Violation("wrongly_allowed", shot.door, f"{case.short} {case.name} for {case.who}")
            )
        if secret and secret in answer.message:
            # KB-5 (fixed): the forwarder must never relay grpc's own words about the upstream.
            result.known["KB-5"] += 1
            result.violations.append(
                Violation("leak", shot.door, f"the answer names the upstream: {answer.message!r}")
            )
        rule = rules.get(label)
        if rule is not None and not rule(shot):
            result.violations.append(
                Violation(
                    "status",
                    shot.door,
                    f"[{label}] {case.who.get('email')} {case.short} {case.name[-40:]}: "
                    f"{answer.code} {answer.reason} {answer.message[:80]!r} "
                    f"(table: {case.table_code})",
                )
            )


@contextmanager
def timed(result: FaultResult, world: FaultWorld) -> Iterator[None]:
    started = time.monotonic()
    lines_before = len(world.gateway.lines)
    try:
        yield
    finally:
        result.seconds = time.monotonic() - started
        result.alive = world.gateway.alive()
        report = judge_stderr(world.gateway.lines[lines_before:])
        result.unhandled = report.unhandled


def run_phases(
    world: FaultWorld, load: Load, phases: list[tuple[str, float, Callable[[], None] | None]]
) -> dict[str, float]:
    """Enter each phase (running its action first) and hold it; when each phase began."""
    began: dict[str, float] = {}
    with load:
        for phase, hold_s, action in phases:
            if action is not None:
                world.phase = f"entering {phase}"  # calls in flight meanwhile: transition
                action()
            world.phase = phase
            began[phase] = time.monotonic()
            time.sleep(hold_s)
    world.phase = NORMAL
    return began


# -- the faults


def fault_upstream_restart(world: FaultWorld, scale: float) -> FaultResult:
    result = FaultResult(
        "upstream-killed-and-restarted",
        "SIGKILL the `python -m gateway upstream` process mid-load, keep it down, start a new one "
        "on the same port; the gateway is not restarted.",
    )
    with timed(result, world):
        load = Load(world)
        fixed: list[float] = []

        def restart() -> None:
            world.start_reference_upstream()
            fixed.append(time.monotonic())

        run_phases(
            world,
            load,
            [
                ("before", 1.0 * scale, None),
                ("upstream-down", 1.5 * scale, world.kill_upstream),
                ("after", max(5.0, 4.0 * scale), restart),
            ],
        )
        secret = f":{world.upstream_port}"
        judge_shots(
            result,
            load.shots,
            {
                "before": normal,
                "upstream-down": lambda s: (
                    s.answer.code == "UNAVAILABLE"
                    if s.case.expected.allowed
                    else s.answer.code == "PERMISSION_DENIED"
                ),
            },
            secret,
        )
        _recovered_by_time(result, load.shots, "after")
        down = result.outcomes.get("upstream-down", Counter())
        result.notes.append(f"while down: {dict(down)}")
    return result


def _recovered_by_time(result: FaultResult, shots: list[Shot], phase: str) -> None:
    """Recovered: from some point on, every call of `phase` got its normal answer (and some
    were OK); recovery_s is how long after the phase began that point came."""
    after = sorted(
        (s for s in shots if s.phase_start == phase and s.phase_end == phase),
        key=lambda s: s.ended,
    )
    if not after:
        result.notes.append("no calls after the fault was removed")
        return
    bad = [i for i, s in enumerate(after) if not normal(s)]
    settled = after[bad[-1] + 1 :] if bad else after
    result.recovered = len(settled) >= 8 and any(s.answer.code == "OK" for s in settled)
    began = after[0].ended - after[0].seconds
    if bad and settled:
        result.recovery_s = after[bad[-1]].ended - began
    elif not bad:
        result.recovery_s = 0.0
    result.notes.append(
        f"after the fix: {len(after) - len(settled)} of {len(after)} calls before every "
        "answer was normal again"
    )


def fault_upstream_statuses(world: FaultWorld) -> FaultResult:
    result = FaultResult(
        "upstream-every-status",
        "An upstream (the reference servicer, in process, on the same port) fails GetOperation "
        "with each of the 16 non-OK codes, message and ErrorInfo details; each must reach the "
        "caller exactly as sent, and denied calls must still be denied without asking it.",
    )
    with timed(result, world):
        world.kill_upstream()
        upstream = world.start_controlled_upstream()
        swapped = time.monotonic()
        if not wait_until(lambda: world.known_good().code == "OK", 30, 0.1):
            result.violations.append(Violation("not_serving", "grpc", "new upstream unreachable"))
            return result
        result.notes.append(
            f"the gateway reached the new upstream {time.monotonic() - swapped:.2f} s after "
            "it started"
        )
        alice, bob = world.token(ALICE), world.token(BOB)
        for code in grpc.StatusCode:
            if code is grpc.StatusCode.OK:
                continue
            status = status_pb2.Status(
                code=code.value[0], message=f"upstream says {code.name} \u2713"
            )
            status.details.add().Pack(
                error_details_pb2.ErrorInfo(reason=f"UPSTREAM_{code.name}", domain="up.test")
            )
            upstream.store.inject_fault(DONE_OPERATION, status)
            sessions = [None] + ([rest] if (rest := world.rest_session()) else [])
            try:
                for session in sessions:
                    door = "grpc" if session is None else "rest"
                    before = len(upstream.call_log.snapshot())
                    answer = world.call("get", DONE_OPERATION, alice, session=session)
                    denied = world.call("cancel", DONE_OPERATION, bob, session=session)
                    asked = [c.method for c in upstream.call_log.snapshot()[before:]]
                    result.calls += 2
                    result.outcomes.setdefault(f"injected ({door})", Counter())[answer.code] += 1
                    relayed = (
                        answer.code == code.name
                        and answer.message == status.message
                        and answer.reason == f"UPSTREAM_{code.name}"
                        and answer.request_id is not None
                    )
                    if not relayed:
                        result.violations.append(
                            Violation(
                                "status",
                                door,
                                f"upstream {code.name}: caller got {answer.code} "
                                f"{answer.reason} {answer.message!r} "
                                f"(request id {answer.request_id})",
                            )
                        )
                    if denied.code != "PERMISSION_DENIED" or asked != ["GetOperation"]:
                        result.violations.append(
                            Violation("wrongly_allowed", door, f"denied: {denied.code}, {asked}")
                        )
            finally:
                upstream.store.clear_fault(DONE_OPERATION)
                for session in sessions:
                    if session is not None:
                        session.close()
        result.recovered = world.serving()
    return result


def fault_upstream_slow(world: FaultWorld, scale: float) -> FaultResult:
    result = FaultResult(
        "upstream-slow",
        "The upstream answers after 1.2 s: callers with a 0.6 s deadline get DEADLINE_EXCEEDED "
        "(and the upstream call is cancelled), callers with 3 s get their answer; denied calls "
        "are answered at once.",
    )
    with timed(result, world):
        upstream = world.controlled or world.start_controlled_upstream()
        short_deadline = Load(world, threads=3, timeout=0.6, pause_s=0.01)
        long_deadline = Load(world, threads=2, timeout=3.0, pause_s=0.01)

        def slow() -> None:
            upstream.delay.delay_s = 1.2

        def fast() -> None:
            upstream.delay.delay_s = 0.0

        with long_deadline:
            run_phases(
                world,
                short_deadline,
                [("slow", 3.0 * scale, slow), ("after", 2.0 * scale, fast)],
            )

        def beyond(s: Shot) -> bool:
            if not s.case.expected.allowed:
                return s.answer.code == "PERMISSION_DENIED" and s.seconds < 0.5
            return s.answer.code == "DEADLINE_EXCEEDED"

        judge_shots(result, short_deadline.shots, {"slow": beyond})
        judge_shots(result, long_deadline.shots, {"slow": normal, "after": normal})
        _recovered_by_time(result, short_deadline.shots, "after")
        time.sleep(0.3)
        cancelled = upstream.delay.cancelled
        expired = result.outcomes.get("slow", Counter()).get("DEADLINE_EXCEEDED", 0)
        result.notes.append(
            f"upstream calls cancelled with their caller: {cancelled} "
            f"(callers past their deadline: {expired})"
        )
        if cancelled == 0:
            result.violations.append(
                Violation("status", "grpc", "no upstream call was cancelled with its caller")
            )
    return result


def fault_jwks(world: FaultWorld, scale: float) -> list[FaultResult]:
    results = []
    modes = [
        ("jwks-down-503", "down", 0.0, "The JWKS endpoint answers 503"),
        ("jwks-garbage", "garbage", 0.0, "The JWKS endpoint answers bytes that are not JSON"),
        ("jwks-not-a-key-set", "not_jwks", 0.0, "The JWKS endpoint answers JSON that is no JWKS"),
        ("jwks-refused", "refused", 0.0, "The JWKS listener is closed (connection refused)"),
        ("jwks-slow", "up", 1.5, "The JWKS endpoint takes 1.5 s to answer"),
    ]
    for name, mode, delay, text in modes:
        result = FaultResult(
            name,
            f"{text} for longer than jwks_ttl_s (2 s), under load with fresh tokens; keys "
            "already known must keep working (stale grace), unknown kids are refused.",
        )
        with timed(result, world):
            load = Load(world, fresh_tokens=0.5, timeout=4.0, pause_s=0.01)

            def enter(mode: str = mode, delay: float = delay) -> None:
                world.jwks.delay_s = delay
                world.jwks.set_mode(mode)

            def leave() -> None:
                world.jwks.delay_s = 0.0
                world.jwks.set_mode("up")

            # Held past jwks_ttl_s (2 s), so the key set goes stale and is refetched meanwhile.
            run_phases(
                world,
                load,
                [(name, max(2.6, 3.0 * scale), enter), ("after", 1.5 * scale, leave)],
            )
            judge_shots(result, load.shots, {name: normal, "after": normal})
            _recovered_by_time(result, load.shots, "after")
            unknown = mint(world.keys.stranger, email="alice@acme.example")
            probe = world.call("get", DONE_OPERATION, unknown)
            result.calls += 1
            if probe.code != "UNAUTHENTICATED":
                result.violations.append(
                    Violation("wrongly_allowed", "grpc", f"unknown kid got {probe.code}")
                )
            slowest = max((s.seconds for s in load.shots if s.phase_start == name), default=0)
            result.notes.append(f"slowest call during the fault: {slowest:.2f} s")
        results.append(result)
    results.append(_jwks_rotation(world, scale))
    return results


def _jwks_rotation(world: FaultWorld, scale: float) -> FaultResult:
    result = FaultResult(
        "jwks-key-rotation",
        "Mid-load the IdP publishes a new key, then withdraws the old one: tokens signed with "
        "the new key must be accepted within jwks_min_refresh_interval_s, and fresh tokens "
        "signed with the withdrawn key refused once the key set is refetched (ttl 2 s).",
    )
    keys = world.keys
    with timed(result, world):
        load = Load(world, fresh_tokens=0.3, pause_s=0.01)
        with load:
            world.phase = "rotating-in"
            world.jwks.publish(keys.published(keys.primary, keys.ec, keys.rotated))
            started = time.monotonic()
            accepted_after = _first_ok(world, keys.rotated, timeout=5.0 * scale + 3)
            result.notes.append(
                f"new key accepted after {accepted_after - started:.2f} s"
                if accepted_after
                else "the new key was never accepted"
            )
            world.phase = "rotating-out"
            world.jwks.publish(keys.published(keys.rotated, keys.ec))
            withdrawn = time.monotonic()
            refused_after = _first_refusal(world, keys.primary, timeout=6.0 * scale + 3)
            result.notes.append(
                f"withdrawn key refused for fresh tokens after {refused_after - withdrawn:.2f} s"
                if refused_after
                else "the withdrawn key was never refused"
            )
            world.phase = "restored"
            world.jwks.publish(keys.published())
            time.sleep(2.5)  # let the restored key set be fetched (ttl 2 s)
        world.phase = NORMAL
        judge_shots(result, load.shots, {"rotating-in": normal})
        if not accepted_after:
            result.violations.append(Violation("status", "grpc", "new key never accepted"))
        if not refused_after:
            result.violations.append(
                Violation("wrongly_allowed", "grpc", "a withdrawn key kept authenticating")
            )
        result.recovered = wait_until(world.serving, 5)
    return result


def _first_ok(world: FaultWorld, key: Any, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = world.call("get", DONE_OPERATION, mint(key, **ALICE))
        if answer.code == "OK":
            return time.monotonic()
        time.sleep(0.1)
    return None


def _first_refusal(world: FaultWorld, key: Any, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = world.call("get", DONE_OPERATION, mint(key, **ALICE))
        if answer.code == "UNAUTHENTICATED":
            return time.monotonic()
        time.sleep(0.1)
    return None


INVALID_POLICIES: list[tuple[str, str | bytes | None]] = [
    ("broken-yaml", "allow:\n  - resource: projects/acme-prod\n    bindings: [\n"),
    (
        "unknown-role",
        "allow:\n  - resource: projects/acme-prod\n    bindings:\n"
        "      - role: roles/contactcenterinsights.admn\n        members: [allUsers]\n",
    ),
    (
        "grants-mallory-but-unknown-key",
        "allow:\n  - resource: projects/acme-prod\n    bindings:\n"
        "      - role: roles/owner\n        members: [user:mallory@contractor.example]\n"
        "    extra_key: 1\n",
    ),
    ("empty", ""),
    ("not-utf8", b"\xff\xfe\x00garbage\x00"),
    ("json-array", "[1, 2, 3]\n"),
    (
        "bad-condition",
        "allow:\n  - resource: projects/acme-prod\n    bindings:\n"
        "      - role: roles/owner\n        members: [allUsers]\n"
        "        condition: {title: t, expression: 'request.time <'}\n",
    ),
    ("nested-deep", "allow: " + "[" * 3000 + "]" * 3000 + "\n"),
    # KB-2's triggers (values YAML parses but cannot construct), fixed in da90600.
    ("impossible-date", "description: 2024-02-30\n" + EXAMPLE_POLICY.read_text()),
    ("huge-integer", "etag: " + "9" * 5000 + "\n" + EXAMPLE_POLICY.read_text()),
    ("deleted", None),
]
DENY_ALL = "{}\n"


def fault_policy(world: FaultWorld, scale: float) -> FaultResult:
    result = FaultResult(
        "policy-replaced-by-invalid",
        "Mid-load the policy file is replaced (rename into place) by each of "
        f"{len(INVALID_POLICIES)} invalid versions in turn (broken YAML, unknown role, an extra "
        "key in a version that would grant more, empty, not UTF-8, a JSON array, a bad "
        "condition, 3000-deep nesting, an impossible date, a 5000-digit integer, the file "
        "deleted): the last good policy must stay in "
        "force throughout; then a valid deny-all version must take effect and the original "
        "come back, without a restart.",
    )
    original = world.policy.read_text()
    with timed(result, world):
        for label, text in INVALID_POLICIES:
            if text is not None:
                try:
                    load_policy_text(
                        text.decode("utf-8") if isinstance(text, bytes) else text, label
                    )
                except Exception:
                    pass
                else:
                    result.notes.append(f"{label} is valid after all: not used")
                    continue
        load = Load(world, pause_s=0.01)
        phases: list[tuple[str, float, Callable[[], None] | None]] = []
        for label, text in INVALID_POLICIES:
            phases.append((f"invalid:{label}", 0.5 * scale, _writer(world.policy, text)))
        phases.append(("restored", 0.6 * scale, _writer(world.policy, original)))
        run_phases(world, load, phases)
        rules = {phase: normal for phase, _, _ in phases}
        judge_shots(result, load.shots, rules)
        # A valid change still takes effect: the reloader survived all of the above.
        replace_file(world.policy, DENY_ALL)
        denied = wait_until(lambda: world.known_good().code == "PERMISSION_DENIED", 5)
        replace_file(world.policy, original)
        back = wait_until(lambda: world.known_good().code == "OK", 5)
        result.notes.append(
            f"valid deny-all version took effect: {denied}; original restored: {back}"
        )
        result.recovered = denied and back
        rejected = sum(
            1 for line in world.gateway.lines if "policy reload" in line and "rejected" in line
        )
        result.notes.append(f"reload rejections logged so far: {rejected}")
    return result


def _writer(path: Path, text: str | bytes | None) -> Callable[[], None]:
    def write() -> None:
        if text is None:
            path.unlink(missing_ok=True)
        else:
            replace_file(path, text)

    return write


def fault_audit(world: FaultWorld, scale: float) -> FaultResult:
    result = FaultResult(
        "audit-file-cannot-grow",
        "Mid-load the gateway process gets RLIMIT_FSIZE at (about) the audit file's size, via "
        "prlimit(2), so every audit write fails with EFBIG, part-way through a record; after "
        "2 s the limit is lifted. fail_closed: new calls get UNAVAILABLE (AUDIT_UNAVAILABLE) "
        "while the sink fails, and no record is lost once it recovers.",
    )
    pid = world.gateway.pid
    with timed(result, world):
        try:
            soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
        except (OSError, AttributeError) as exc:
            result.notes.append(f"prlimit unavailable ({exc}): fault not injected")
            result.recovered = world.serving()
            return result
        load = Load(world, pause_s=0.01)

        def fail() -> None:
            size = world.audit_file.stat().st_size
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (size + 37, hard))

        def heal() -> None:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))

        try:
            run_phases(
                world,
                load,
                [("before", 0.8 * scale, None), ("audit-failing", 2.0 * scale, fail),
                 ("after", 2.5 * scale, heal)],
            )  # fmt: skip
        finally:
            heal()

        def during(s: Shot) -> bool:
            return normal(s) or (
                s.answer.code == "UNAVAILABLE" and s.answer.reason == "AUDIT_UNAVAILABLE"
            )

        judge_shots(result, load.shots, {"before": normal, "audit-failing": during})
        _recovered_by_time(result, load.shots, "after")
        refused = result.outcomes.get("audit-failing", Counter()).get("UNAVAILABLE", 0)
        result.notes.append(f"calls refused while the audit file could not grow: {refused}")
        if refused == 0:
            result.violations.append(
                Violation("status", "grpc", "no call was refused while the audit sink failed")
            )
    return result


def fault_jwks_down_at_start(workdir: Workdir, keys: Keys, scale: float) -> FaultResult:
    """A fresh gateway whose key endpoint is down from the start, then comes up."""
    result = FaultResult(
        "jwks-down-at-start",
        "A new gateway process starts while its JWKS endpoint refuses connections: it must "
        "start, report not-ready but alive, answer every call UNAVAILABLE "
        "(AUTHENTICATION_BACKEND_UNAVAILABLE), and serve normally once the endpoint is up, "
        "without a restart.",
    )
    started = time.monotonic()
    with local_idp(jwks=keys.published()) as jwks:
        jwks.set_mode("refused")
        upstream = upstream_process()
        audit_file = workdir.path / "audit.log"
        config = gateway_config(
            workdir,
            upstream=upstream.address,
            jwks_url=jwks.jwks_url,
            policy=workdir.policy_copy(),
            audit_file=audit_file,
        )
        gateway = gateway_process(config)
        door = GrpcDoor(gateway.address)
        answered: list[str] = []
        try:
            alive = door.healthy("opsgate.liveness")
            ready = door.healthy("")
            token = mint(keys.primary, **ALICE)
            denied_token = mint(keys.primary, **BOB)
            down = [door.operation("get", DONE_OPERATION, token) for _ in range(5)]
            down += [door.operation("cancel", DONE_OPERATION, denied_token) for _ in range(5)]
            answered += [a.request_id for a in down if a.request_id]
            result.calls += len(down)
            result.outcomes["jwks-down"] = Counter(a.code for a in down)
            for answer in down:
                if (answer.code, answer.reason) != (
                    "UNAVAILABLE",
                    "AUTHENTICATION_BACKEND_UNAVAILABLE",
                ):
                    result.violations.append(
                        Violation("status", "grpc", f"without keys: {answer.code} {answer.reason}")
                    )
            if not alive or ready:
                result.violations.append(
                    Violation("status", "grpc", f"health: alive={alive} ready={ready}")
                )
            jwks.set_mode("up")
            came_up = time.monotonic()
            became_ready = wait_until(lambda: door.healthy(""), 15 * scale + 5, 0.1)
            result.recovery_s = time.monotonic() - came_up
            after = [door.operation("get", DONE_OPERATION, token) for _ in range(5)]
            after += [door.operation("cancel", DONE_OPERATION, denied_token) for _ in range(5)]
            answered += [a.request_id for a in after if a.request_id]
            result.calls += len(after)
            result.outcomes["after"] = Counter(a.code for a in after)
            result.recovered = (
                became_ready and [a.code for a in after] == ["OK"] * 5 + ["PERMISSION_DENIED"] * 5
            )
        finally:
            door.close()
            code = gateway.stop(30)
            upstream.stop(30)
        result.alive = code == 0
        result.unhandled = judge_stderr(gateway.lines).unhandled
        check = reconcile(audit_file, answered)
        if not check.ok:
            result.violations.append(Violation("audit", "grpc", str(check.as_dict())))
        result.notes.append(f"audit: {check.records} records for {check.answered} answered calls")
    result.seconds = time.monotonic() - started
    return result


@dataclass
class FaultRun:
    results: list[FaultResult]
    audit: AuditCheck
    logs: LogReport
    exit_code: int | None
    table_violations: list[Violation]
    notes: list[str]
    serving: bool
    doors: list[str]


def run_faults(workdir: Workdir, loop: LoopThread, scale: float) -> FaultRun:
    """Every fault, one after the other, against one gateway process (plus one fresh one)."""
    keys = Keys()
    results: list[FaultResult] = []
    notes: list[str] = []
    serving = False
    table: list[Violation] = []
    doors = ["grpc"]
    with local_idp(jwks=keys.published()) as jwks:
        world = FaultWorld(workdir.sub("faults"), loop, keys, jwks)
        try:
            if world.rest_address:
                doors.append("rest")
            if not wait_until(world.serving, 15):
                raise RuntimeError("the gateway process never served a known-good call")
            results.append(fault_upstream_restart(world, scale))
            results.append(fault_upstream_statuses(world))
            results.append(fault_upstream_slow(world, scale))
            results.extend(fault_jwks(world, scale))
            results.append(fault_policy(world, scale))
            results.append(fault_audit(world, scale))
            table = replay_denied(world)
            serving = world.serving()
            notes.append(f"still serving after every fault: {serving}")
            if not serving:
                table.append(Violation("not_serving", "grpc", "known-good call failed at the end"))
        finally:
            exit_code, logs = world.close()
        check = reconcile(
            world.audit_file,
            world.answered,
            world.cut_short + world.maybe,
            exact=world.maybe == 0,
        )
    results.append(fault_jwks_down_at_start(workdir.sub("jwks-down-at-start"), keys, scale))
    return FaultRun(results, check, logs, exit_code, table, notes, serving, doors)


def replay_denied(world: FaultWorld) -> list[Violation]:
    """After every fault, the table's denied cases are still denied (and the rest as before),
    on every door."""
    found = []
    world.forget_tokens()
    session = world.rest_session()
    try:
        for current in [None] + ([session] if session else []):
            door = "grpc" if current is None else "rest"
            for case in world.mix:
                token = world.token(case.who)
                answer = world.call(case.short, case.name, token, session=current)
                if answer.code != case.table_code:
                    kind = "wrongly_allowed" if answer.code == "OK" else "table"
                    detail = f"{case.who} {case.short} {case.name}: {answer.code}"
                    found.append(Violation(kind, door, detail))
    finally:
        if session is not None:
            session.close()
    return found
