"""The soak: a steady rate through a gateway process with a realistic, ever-growing mix.

Many distinct principals (new ones keep arriving) with fresh and reused tokens, many distinct
resources (seeded and never-seen operation names), allowed and denied, Get/List/Cancel. The
gateway's caches are set small (token_cache_size, decision_cache_size) so that memory must
level off while distinct tokens and resources keep growing. Every call is judged by the
oracle; audit records must equal calls; RSS is sampled from /proc.
"""

from __future__ import annotations

import random
import re
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from gateway.reference_upstream.seed import (
    ACME_PROD_EU,
    ACME_PROD_US,
    ACME_STAGING_US,
    GLOBEX_US,
    SUPPORT_TIER1_VIEW,
    SUPPORT_TIER2_VIEW,
)
from gateway.testing.idp import local_idp
from gateway.testing.ports import free_port
from gateway.testing.processes import gateway_process, rss_bytes, upstream_process
from gateway.testing.tokens import claims
from hardening.doors import GrpcDoor, RestSession
from hardening.env import AUDIENCE, ISSUER, Keys, Workdir, gateway_config, mint, wait_until
from hardening.fuzz import RESOURCES, callers
from hardening.ledger import judge_stderr, reconcile
from hardening.oracle import Oracle, method_path

TOKEN_CACHE = 256
DECISION_CACHE = 512
DOMAINS = ("acme.example", "contractor.example", "globex.example", "elsewhere.example")
GROUPS = ((), (), (), ("engineering@acme.example",), ("support@acme.example",))
PARENTS = (ACME_PROD_US, ACME_PROD_EU, ACME_STAGING_US, GLOBEX_US)
VIEWS = (SUPPORT_TIER1_VIEW, SUPPORT_TIER2_VIEW)


@dataclass
class SoakResult:
    seconds: float = 0.0
    target_rate: float = 0.0
    calls: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # unexpected answers, by code
    wrongly_allowed: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    distinct_principals: int = 0
    distinct_tokens: int = 0
    distinct_resources: int = 0
    audit: dict[str, Any] = field(default_factory=dict)
    rss_kib: list[tuple[float, int]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    exit_code: int | None = None
    still_serving: bool = False
    doors: Counter[str] = field(default_factory=Counter)
    unhandled: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)

    def rss_summary(self) -> dict[str, Any]:
        samples = [kib for _, kib in self.rss_kib]
        if not samples:
            return {}
        warm = samples[max(1, len(samples) // 5)] if len(samples) > 2 else samples[0]
        mid = samples[len(samples) // 2]
        return {
            "first_kib": samples[0],
            "after_warmup_kib": warm,
            "midpoint_kib": mid,
            "end_kib": samples[-1],
            "max_kib": max(samples),
            "second_half_growth_kib": samples[-1] - mid,
            "samples": len(samples),
        }

    @property
    def bounded(self) -> bool:
        """Memory levels off: the second half grows by less than 16 MiB (and 15%)."""
        summary = self.rss_summary()
        if not summary:
            return False
        growth = summary["second_half_growth_kib"]
        return bool(growth < 16 * 1024 and growth < 0.15 * summary["midpoint_kib"])

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 1),
            "target_rate_per_s": self.target_rate,
            "achieved_rate_per_s": round(self.calls / self.seconds, 1) if self.seconds else 0,
            "calls": self.calls,
            "errors": sum(self.errors.values()),
            "errors_by_code": dict(self.errors),
            "wrongly_allowed": self.wrongly_allowed,
            "outcomes": dict(self.outcomes.most_common()),
            "distinct_principals": self.distinct_principals,
            "distinct_tokens": self.distinct_tokens,
            "distinct_resources": self.distinct_resources,
            "token_cache_size": TOKEN_CACHE,
            "decision_cache_size": DECISION_CACHE,
            "audit": self.audit,
            "rss": self.rss_summary(),
            "rss_bounded": self.bounded,
            "metrics": self.metrics,
            "latency_ms": self.latency_ms,
            "exit_code": self.exit_code,
            "still_serving": self.still_serving,
            "calls_by_door": dict(self.doors),
            "unhandled_exceptions": self.unhandled[:5],
            "examples": self.examples[:8],
        }


class _Mix:
    """Draws (claims-extra, method, name) with new principals and resources keep arriving."""

    def __init__(self, seed: int, keys: Keys) -> None:
        self.rng = random.Random(seed)
        self.keys = keys
        self.table = callers()
        self.principals: list[dict[str, Any]] = []
        self.tokens: dict[str, list[str]] = {}
        self.resources: set[str] = set()
        self.token_count = 0
        self._lock = threading.Lock()

    def who(self) -> dict[str, Any]:
        rng = self.rng
        if rng.random() < 0.3 or not self.principals:
            if rng.random() < 0.35:
                return dict(rng.choice(self.table))
            index = len(self.principals)
            who: dict[str, Any] = {"email": f"user{index}@{rng.choice(DOMAINS)}"}
            groups = rng.choice(GROUPS)
            if groups:
                who["groups"] = list(groups)
            self.principals.append(who)
            return who
        return rng.choice(self.principals[-2000:])

    def token(self, who: dict[str, Any]) -> str:
        key = repr(sorted(who.items()))
        known = self.tokens.setdefault(key, [])
        if known and self.rng.random() < 0.4:
            return self.rng.choice(known)
        signer = self.keys.ec if self.rng.random() < 0.5 else self.keys.primary
        token = mint(signer, **who)
        known.append(token)
        del known[:-3]
        self.token_count += 1
        return token

    def call(self) -> tuple[dict[str, Any], str, str, str]:
        with self._lock:
            rng = self.rng
            who = self.who()
            token = self.token(who)
            roll = rng.random()
            if roll < 0.25:
                short = "list"
                name = rng.choice(PARENTS + VIEWS)
            else:
                short = "get" if roll < 0.85 else "cancel"
                if rng.random() < 0.5:
                    name = rng.choice([r for r in RESOURCES if "/operations/" in r])
                else:
                    parent = rng.choice(PARENTS + VIEWS)
                    name = f"{parent}/operations/{rng.getrandbits(62)}"
            self.resources.add(name)
            return who, token, short, name


def run_soak(
    workdir: Workdir, seconds: float, rate: float, seed: int, threads: int = 6
) -> SoakResult:
    result = SoakResult(target_rate=rate)
    keys = Keys()
    oracle = Oracle()
    with local_idp(jwks=keys.published()) as jwks:
        upstream = upstream_process()
        audit_file = workdir.path / "audit.log"
        metrics_port = free_port()
        config = gateway_config(
            workdir,
            upstream=upstream.address,
            jwks_url=jwks.jwks_url,
            policy=workdir.policy_copy(),
            audit_file=audit_file,
            authentication={"token_cache_size": TOKEN_CACHE},
            authorization={"decision_cache_size": DECISION_CACHE},
            audit_file_settings={"max_bytes": 8 * 1024 * 1024, "backups": 1000},
            extra={
                "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
                "rate_limits": [{"name": "per-principal", "rate_per_s": 500, "burst": 500}],
            },
        )
        gateway = gateway_process(config)
        door = GrpcDoor(gateway.address)
        mix = _Mix(seed, keys)
        answered: list[str] = []
        cut_short = 0
        lock = threading.Lock()
        latencies: list[float] = []
        stop = threading.Event()
        try:
            wait_until(lambda: door.healthy(""), 10)
            started = time.monotonic()
            interval = threads / rate

            def worker(offset: int) -> None:
                nonlocal cut_short
                next_at = started + offset * interval / threads
                # A third of the threads call through the REST/JSON door, when there is one.
                session = (
                    RestSession(gateway.rest_address)
                    if gateway.rest_address and offset % 3 == 2
                    else None
                )
                door_name = "rest" if session else "grpc"
                while not stop.is_set():
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    next_at += interval
                    who, token, short, name = mix.call()
                    sent = time.monotonic()
                    if session is not None:
                        answer = session.operation(short, name, token, timeout=5.0)
                    else:
                        answer = door.operation(short, name, token, timeout=5.0)
                    took = time.monotonic() - sent
                    expected = oracle.decide(
                        claims(ISSUER, AUDIENCE, **who), method_path(short), name
                    )
                    with lock:
                        result.calls += 1
                        result.doors[door_name] += 1
                        latencies.append(took)
                        result.outcomes[answer.code] += 1
                        if answer.request_id:
                            answered.append(answer.request_id)
                        elif answer.code in ("DEADLINE_EXCEEDED", "CUT_SHORT"):
                            cut_short += 1
                        if answer.code == "OK" and not expected.allowed:
                            result.wrongly_allowed += 1
                            result.examples.append(f"wrongly allowed: {who} {short} {name}")
                        good = (
                            answer.code in ("OK", "NOT_FOUND")
                            if expected.allowed
                            else answer.code == "PERMISSION_DENIED"
                        )
                        if not good:
                            result.errors[answer.code] += 1
                            result.examples.append(
                                f"{who.get('email')} {short} {name[-30:]}: {answer.code} "
                                f"{answer.reason} (oracle: {expected.verdict})"
                            )
                if session is not None:
                    session.close()

            workers = [
                threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)
            ]
            for thread in workers:
                thread.start()
            while time.monotonic() - started < seconds:
                rss = rss_bytes(gateway.pid) // 1024 or None
                if rss is not None:
                    result.rss_kib.append((round(time.monotonic() - started, 1), rss))
                time.sleep(min(1.0, max(0.2, seconds / 40)))
            stop.set()
            for thread in workers:
                thread.join(10)
            result.seconds = time.monotonic() - started
            rss = rss_bytes(gateway.pid) // 1024 or None
            if rss is not None:
                result.rss_kib.append((round(result.seconds, 1), rss))
            result.metrics = _scrape(metrics_port)
            token = mint(keys.primary, email="alice@acme.example")
            good = door.operation("get", RESOURCES[0], token)
            if good.request_id:
                answered.append(good.request_id)
            result.still_serving = door.healthy("") and good.code == "OK"
        finally:
            door.close()
            result.exit_code = gateway.stop(30)
            upstream.stop(30)
        result.unhandled = judge_stderr(gateway.lines).unhandled
        check = reconcile(audit_file, answered, cut_short, exact=True)
        result.audit = check.as_dict()
        result.distinct_principals = len(mix.principals) + len(mix.table)
        result.distinct_tokens = mix.token_count
        result.distinct_resources = len(mix.resources)
        if latencies:
            ordered = sorted(latencies)
            result.latency_ms = {
                "p50": round(1000 * ordered[len(ordered) // 2], 2),
                "p99": round(1000 * ordered[int(len(ordered) * 0.99)], 2),
                "max": round(1000 * ordered[-1], 2),
            }
    return result


def _scrape(port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    wanted = (
        "opsgate_token_cache_hits_total",
        "opsgate_token_cache_misses_total",
        "opsgate_decision_cache_hits_total",
        "opsgate_decision_cache_misses_total",
        "opsgate_audit_records_written_total",
        "opsgate_audit_records_dropped_total",
    )
    found: dict[str, float] = {}
    for name in wanted:
        match = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
        if match:
            found[name] = float(match.group(1))
    return found
