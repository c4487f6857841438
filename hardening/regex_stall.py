"""Issue 15 class 1 through a gateway process: backtracking-bait patterns, adversarial names."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from hardening.condition_attacks import cel_string, condition_entries, re2_search
from hardening.doors import Answer
from hardening.oracle import MAX_NAME_BYTES
from hardening.policy_attacks import ClassResult
from hardening.process_world import ALICE, ProcessWorld
from hardening.world import Violation

T = TypeVar("T")
BOUND_S = 0.5  # far above a normal call (milliseconds), far below a backtracking stall
CALL_TIMEOUT_S = 1.0  # how long a call is waited for before it counts as stuck
RECOVERY_S = 1.5  # how long a stuck gateway may take to serve again before it is killed
LETTERS = "bdfghkmqvwyz"  # none of them in the names' fixed part (projects/rxN/locations/...)
VIEWER = "roles/contactcenterinsights.viewer"
GET = "contactcenterinsights.operations.get"
STRANGER = {"email": "mallory@nowhere.example"}  # no grant anywhere


@dataclass(frozen=True, slots=True)
class Bait:
    """A pattern backtracking engines take exponential (or high-polynomial) time on for a run
    of `letter` ended by `evil_tail`; a run ended by `benign_tail` matches it."""

    family: str
    pattern: str
    letter: str
    evil_tail: str
    benign_tail: str
    project: str
    where: str  # binding | deny

    def payload(self, n: int, evil: bool) -> str:
        return self.letter * n + (self.evil_tail if evil else self.benign_tail)


def baits(rng: random.Random, count: int) -> list[Bait]:
    made = []
    for index in range(count):
        c, d = rng.sample(LETTERS, 2)
        k = rng.randint(10, 14)
        families = {  # family: (pattern, evil tail, benign tail)
            "(C+)+$": (f"({c}+)+$", "!", ""),
            "(C|CC)*D": (f"({c}|{c}{c})*{d}", "", d),
            "(.*C){k}D": (f"(.*{c}){{{k}}}{d}", "", d),
            "(C*)*D": (f"({c}*)*{d}", "", d),
            "(CC?)+D": (f"({c}{c}?)+{d}", "", d),
            "(C+C+)+D": (f"({c}+{c}+)+{d}", "", d),
            "([a-z]+)*7": ("([a-z]+)*7", "!", "7"),
        }
        family = rng.choice(sorted(families))
        pattern, evil, benign = families[family]
        pattern = rng.choice(["", "", "operations/", "/"]) + pattern
        where = rng.choice(["binding", "deny"])
        made.append(Bait(family, pattern, c, evil, benign, f"rx{index}", where))
    return made


def bait_policy(found: list[Bait]) -> dict[str, list[dict[str, Any]]]:
    """allow/deny entries for process_policy: alice views each rxN, under the pattern (a
    binding) or unless it matches (a deny rule for everyone)."""
    return condition_entries(
        [
            (
                bait.project,
                bait.where,
                f"{bait.family} ({bait.project})",
                f"resource.name.matches({cel_string(bait.pattern)})",
            )
            for bait in found
        ]
    )


def _tag(serial: int) -> str:
    """`serial` in letters the names' fixed part has anyway (no digit: one baits on `7`)."""
    digits = "l"
    while True:
        serial, digit = divmod(serial, 6)
        digits += "acelnt"[digit]
        if not serial:
            return digits


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    started = time.monotonic()
    value = fn()
    return value, (time.monotonic() - started) * 1000


def attack_regex_stall(
    world: ProcessWorld, found: list[Bait], calls: int, stall_limit: int, seed: int
) -> ClassResult:
    """Adversarial names (up to the 1,024-byte limit) against the baits, each call with a
    health check and a known-good call in flight: each must answer within BOUND_S, and the
    decision must be RE2's."""
    started = time.monotonic()
    rng = random.Random(seed)
    result = ClassResult(
        1,
        "Condition regexes must be RE2",
        f"{len(found)} catastrophic-backtracking patterns ((a+)+$, (a|aa)*c, (.*a){{12}}c, ...) "
        "in bindings and deny rules of a gateway process, called (by a granted and an "
        "ungranted caller) with adversarial names up to 1,024 bytes, a health check and a "
        "known-good call in flight",
    )
    slowest = slowest_other = 0.0
    stalls = skipped = longest = 0
    with ThreadPoolExecutor(1) as pool:
        for _ in range(calls):
            if stalls >= stall_limit:
                skipped += 1
                continue
            bait = rng.choice(found)
            # The location makes each name unique, so the upstream log tells calls apart.
            prefix = f"projects/{bait.project}/locations/{_tag(result.cases)}/operations/"
            room = MAX_NAME_BYTES - len(prefix) - 1  # each payload adds at most one character
            n = rng.choice([rng.randint(24, room), rng.randint(24, room), room, rng.randint(8, 24)])
            evil = rng.random() < 0.75
            name = prefix + bait.payload(n, evil)
            who = STRANGER if bait.where == "deny" and rng.random() < 0.3 else ALICE
            door = rng.choice(world.doors())
            token = world.token(who)
            result.cases += 1
            result.families[f"{bait.family} in a {bait.where}{'' if evil else ', matching'}"] += 1
            longest = max(longest, len(name.encode()))
            attack = pool.submit(
                timed, partial(world.call, door, name, token, timeout=CALL_TIMEOUT_S)
            )
            time.sleep(0.02)
            healthy, health_ms = timed(lambda: world.door("grpc").healthy(timeout=CALL_TIMEOUT_S))
            good, good_ms = timed(lambda: world.known_good(CALL_TIMEOUT_S))
            answer, ms = attack.result()
            result.calls += 3
            slowest = max(slowest, ms)
            slowest_other = max(slowest_other, health_ms, good_ms)
            what = f"{bait.pattern!r} in a {bait.where}, {len(name)}-byte name via {door}"
            stalled = _judge(result, what, answer, ms, healthy, health_ms, good, good_ms)
            if stalled:
                stalls += 1
                if not _recovers(world):
                    world.restart()
                continue
            matched = re2_search(bait.pattern, name)
            want = who is ALICE and (matched if bait.where == "binding" else not matched)
            got = bool(world.reached(name)) or answer.code == "OK"
            if got != want:
                result.violations.append(
                    Violation(
                        "unlike_re2",
                        door,
                        f"{what}: RE2 says {'allow' if want else 'deny'}, "
                        f"the gateway answered {answer.code}",
                    )
                )
    result.figures["slowest call during the regex attack (ms)"] = round(slowest, 1)
    result.figures["slowest health / known-good call in flight (ms)"] = round(slowest_other, 1)
    result.figures["stalls"] = stalls
    result.figures["gateway restarts"] = world.restarts
    result.figures["longest name (bytes)"] = longest
    if skipped:
        result.notes.append(f"stopped after {stalls} stalls: {skipped} calls not made")
    result.seconds = time.monotonic() - started
    return result


def _judge(
    result: ClassResult,
    what: str,
    answer: Answer,
    ms: float,
    healthy: bool,
    health_ms: float,
    good: Answer,
    good_ms: float,
) -> bool:
    """Record the stalls of one case; whether there was one."""
    bound = BOUND_S * 1000
    found = []
    if ms > bound or answer.code in ("DEADLINE_EXCEEDED", "TRANSPORT"):
        found.append(Violation("stall", answer.door, f"{what}: {answer.code} after {ms:.0f} ms"))
    if health_ms > bound or not healthy:
        found.append(
            Violation("health_stalled", "grpc", f"{what}: health check {health_ms:.0f} ms")
        )
    if good_ms > bound or good.code != "OK":
        found.append(
            Violation(
                "others_stalled", "grpc", f"{what}: known-good call {good.code} {good_ms:.0f} ms"
            )
        )
    result.violations += found
    return bool(found)


def _recovers(world: ProcessWorld) -> bool:
    deadline = time.monotonic() + RECOVERY_S
    while time.monotonic() < deadline:
        if world.door("grpc").healthy(timeout=0.3):
            return True
    return False
