"""In-process micro-benchmarks, run as their own process: `python -m benchmarks.micro`.

- token verification through gateway.authn (an Authenticator built by build_authn with a
  jwks_file issuer): RS256, ES256 and EdDSA uncached (every call a new token, a fresh cache
  each repeat), a cache hit, and the bare signature check for reference;
- policy decisions at several policy sizes: uncached (gateway.policy.evaluator.evaluate) for
  four kinds of decision, and cached (gateway.authorizer.Authorizer.decide, a cache hit);
- policy load time (read + validate + index) of the same policies as YAML and as JSON;
- the same RBAC decisions through cedarpy and casbin on an equivalent policy (engines.py).

Every figure is the median of interleaved repeats, with min and max.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import gc
import io
import json
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks import engines, policygen
from benchmarks.fixtures import (
    AUDIENCE,
    ISSUER,
    Identity,
    bench_policy,
    claims_for,
    write_gateway_config,
    write_policy,
)
from benchmarks.stats import figure

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
Metadata = tuple[tuple[str, str], ...]
LOAD_TARGET_S = 3.0  # the issue's target for 100,000 bindings; a slower load is profiled
ALGORITHMS = ("RS256", "ES256", "EdDSA")


def per_call_us(fn: Callable[[], object], target_s: float) -> float:
    """µs per call of `fn`, timed over about `target_s` (at least one call)."""
    started = time.perf_counter()
    fn()
    once = time.perf_counter() - started
    if once >= target_s:
        return once * 1e6
    number = max(1, min(1_000_000, int(target_s / max(once, 1e-7))))
    # A second estimate on a few calls: the first call may have paid one-time costs.
    probe = max(1, min(number, 100))
    started = time.perf_counter()
    for _ in range(probe):
        fn()
    each = (time.perf_counter() - started) / probe
    number = max(1, min(1_000_000, int(target_s / max(each, 1e-7))))
    started = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - started) / number * 1e6


def top20(profile: cProfile.Profile, sort: str = "tottime") -> str:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.strip_dirs().sort_stats(sort).print_stats(20)
    lines = out.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return "\n".join(line for line in lines[start:] if line.strip())


# --- tokens -----------------------------------------------------------------------------------


async def _verify_all(authenticator: Any, metadata: Sequence[Metadata]) -> float:
    verify = authenticator.verify
    started = time.perf_counter()
    for md in metadata:
        await verify(md)
    return (time.perf_counter() - started) / len(metadata) * 1e6


def _signature_check(algorithm: str, key: Any, token: str) -> Callable[[], object]:
    """The bare signature verification of `token` (cryptography), without any JWT handling."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    signing_input, _, encoded = token.rpartition(".")
    signature = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    data = signing_input.encode()
    if algorithm == "RS256":
        return lambda: key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    if algorithm == "ES256":
        der = encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
        return lambda: key.verify(der, data, ec.ECDSA(hashes.SHA256()))
    return lambda: key.verify(signature, data)


async def _tokens(directory: Path, count: int, repeats: int, target_s: float) -> dict[str, Any]:
    from gateway.authn.factory import build_authn
    from gateway.authn.keys import parse_jwks
    from gateway.config import load_settings

    identity = Identity.create(directory)
    config = write_gateway_config(
        directory,
        "micro-library",
        listen="127.0.0.1:0",
        upstream=None,
        identity=identity,
        policy=write_policy(directory, 100),
    )
    settings = load_settings(config, require_upstream=False)
    now = int(time.time())
    signed: dict[str, list[str]] = {}
    for algorithm in ALGORITHMS:
        signer = identity.signer(algorithm)
        signed[algorithm] = [
            signer.sign(
                claims_for(f"u{i}@bench.example", ["bench-team@acme.example"], f"m{i}", now)
            )
            for i in range(count * repeats)
        ]
    uncached: dict[str, list[float]] = {a: [] for a in ALGORITHMS}
    cached: list[float] = []
    bare: dict[str, list[float]] = {a: [] for a in ALGORITHMS}
    keys = parse_jwks(json.loads(identity.jwks_file.read_text()), str(identity.jwks_file))
    for rep in range(repeats):
        for algorithm in ALGORITHMS:
            authn = build_authn(settings.authentication)
            await authn.prefetch()
            tokens = signed[algorithm][rep * count : (rep + 1) * count]
            metadata = [(("authorization", f"Bearer {t}"),) for t in tokens]
            uncached[algorithm].append(await _verify_all(authn.authenticator, metadata))
            # The signature check alone, with the same parsed public key, for reference.
            key = keys[identity.keys[algorithm].kid].key
            bare[algorithm].append(
                per_call_us(_signature_check(algorithm, key, tokens[0]), target_s / 2)
            )
        authn = build_authn(settings.authentication)
        await authn.prefetch()
        hit = (("authorization", f"Bearer {signed['ES256'][0]}"),)
        await authn.authenticator.verify(hit)
        cached.append(await _verify_all(authn.authenticator, [hit] * 20_000))
    return {
        "tokens_per_repeat": count,
        "uncached_us": {a: figure(v) for a, v in uncached.items()},
        "signature_only_us": {a: figure(v) for a, v in bare.items()},
        "cached_us": figure(cached),
    }


# --- decisions and loads ----------------------------------------------------------------------

DECISION_CASES = (
    (
        "allow via nested group",
        "someone",
        "contactcenterinsights.authorizedOperations.get",
        engines.DEEP,
    ),
    (
        "default deny (walks all 5 levels)",
        "someone",
        "contactcenterinsights.authorizedOperations.cancel",
        engines.DEEP,
    ),
    (
        "deny rule (contractors)",
        "contractor",
        "contactcenterinsights.operations.cancel",
        engines.DEEP,
    ),
    (
        "allow via time condition",
        "temp",
        "contactcenterinsights.operations.cancel",
        "projects/p0/locations/l1/operations/op1",
    ),
    (
        "allow via regex condition",
        "matcher",
        "contactcenterinsights.operations.cancel",
        "projects/p0/locations/l1/operations/op1",
    ),
)


def _callers() -> dict[str, Any]:
    from gateway.authn.principal import Principal
    from gateway.policy import Caller

    def verified(user: str, **extra: Any) -> Principal:
        email = f"{user}@acme.example"
        return Principal(
            member=f"user:{email}",
            issuer=ISSUER,
            subject=user,
            email=email,
            email_verified=True,
            **extra,
        )

    principals = {
        "someone": verified(
            "someone",
            hosted_domain="acme.example",
            groups=frozenset(engines.SOMEONES_GROUPS),
        ),
        "contractor": verified("c", groups=frozenset({"contractors@acme.example"})),
        "temp": verified("temp"),
        "matcher": verified("matcher"),
    }
    callers = {
        name: Caller(
            member=p.member,
            email=p.email,
            email_verified=p.email_verified,
            hosted_domain=p.hosted_domain,
            groups=p.groups,
        )
        for name, p in principals.items()
    }
    return {"principals": principals, "callers": callers}


def _decisions_and_loads(
    sizes: list[int], repeats: int, target_s: float, engine_names: list[str], directory: Path
) -> dict[str, Any]:
    from gateway.authorizer import Authorizer, PolicyHolder
    from gateway.policy import AccessRequest, evaluate, load_policy_text
    from gateway.runtime import collector_paused

    people = _callers()
    principals, callers = people["principals"], people["callers"]
    # One-time costs (importing the CEL library, reading roles.yaml) are paid before timing.
    load_policy_text(policygen.to_json(policygen.generate(10)), "warm-up.json")
    texts: dict[int, dict[str, str]] = {}
    policies: dict[int, Any] = {}
    rbac: dict[int, dict[str, Any]] = {}
    for size in sizes:
        data = engines.with_case_grants(bench_policy(size))
        texts[size] = {"yaml": policygen.to_yaml(data), "json": policygen.to_json(data)}
        policies[size] = load_policy_text(texts[size]["json"], f"bench-{size}.json")
        rbac[size] = engines.rbac_only(data)
    loads: dict[int, dict[str, list[float]]] = {s: {"yaml": [], "json": []} for s in sizes}
    uncached: dict[int, dict[str, list[float]]] = {
        s: {c[0]: [] for c in DECISION_CASES} for s in sizes
    }
    cached: dict[int, dict[str, list[float]]] = {s: {} for s in sizes}
    effects: dict[int, dict[str, str]] = {s: {} for s in sizes}
    for _rep in range(repeats):
        for size in sizes:
            for form in ("yaml", "json"):
                text = texts[size][form]
                gc.collect()
                started = time.perf_counter()
                with collector_paused():  # as the gateway and the CLI load a policy
                    load_policy_text(text, f"bench-{size}.{form}")
                loads[size][form].append(time.perf_counter() - started)
        for size in sizes:
            policy = policies[size]
            authorizer = Authorizer(PolicyHolder(policy), 100_000)
            for name, who, permission, resource in DECISION_CASES:
                caller = callers[who]
                request = AccessRequest(permission, resource)
                decision = evaluate(policy, caller, request, NOW)
                effects[size][name] = decision.effect.value
                uncached[size][name].append(
                    per_call_us(partial(evaluate, policy, caller, request, NOW), target_s)
                )
                principal = principals[who]
                verdict = authorizer.decide(principal, permission, resource)
                if verdict.decision.time_dependent:
                    continue  # never cached, by design
                cached[size].setdefault(name, []).append(
                    per_call_us(
                        partial(authorizer.decide, principal, permission, resource),
                        target_s,
                    )
                )
    engine_results = _engines(sizes, repeats, target_s, engine_names, rbac, directory)
    largest = policies[sizes[-1]]
    profiles: dict[str, Any] = _profiles(largest, principals, callers)
    floor = _cache_hit_floor(largest, callers["someone"], target_s, repeats)
    if sizes[-1] >= 100_000 and statistics.median(loads[sizes[-1]]["yaml"]) >= LOAD_TARGET_S:
        profiles["load_yaml_parse_s"] = _parse_only(texts[sizes[-1]]["yaml"])
        profile = cProfile.Profile()
        profile.enable()
        with collector_paused():
            load_policy_text(texts[sizes[-1]]["yaml"], f"bench-{sizes[-1]}.yaml")
        profile.disable()
        profiles["load_yaml"] = top20(profile, "cumulative")
    return {
        "sizes": sizes,
        "bindings_loaded": {str(s): len(policies[s].bindings) for s in sizes},
        "loads_s": {
            str(s): {
                "yaml": figure(loads[s]["yaml"]),
                "json": figure(loads[s]["json"]),
                "yaml_mb": len(texts[s]["yaml"]) / 1e6,
                "json_mb": len(texts[s]["json"]) / 1e6,
            }
            for s in sizes
        },
        "uncached_us": {
            str(s): {name: figure(v) for name, v in uncached[s].items()} for s in sizes
        },
        "cached_us": {str(s): {name: figure(v) for name, v in cached[s].items()} for s in sizes},
        "effects": {str(s): effects[s] for s in sizes},
        "engines": engine_results,
        "profiles": profiles,
        "cache_hit_floor_us": floor,
    }


def _cache_hit_floor(policy: Any, caller: Any, target_s: float, repeats: int) -> dict[str, Any]:
    """For reference: one dict.get on (caller, permission, resource, etag) with the Caller
    reused, plus the Verdict, which is what a cache hit needs at least."""
    from gateway.authorizer import Verdict
    from gateway.policy import AccessRequest, evaluate

    _name, _who, permission, resource = DECISION_CASES[0]
    decision = evaluate(policy, caller, AccessRequest(permission, resource), NOW)
    cache = {(caller, permission, resource, policy.etag): decision}

    def hit() -> Verdict:
        found = cache.get((caller, permission, resource, policy.etag))
        return Verdict(found, True)  # type: ignore[arg-type]

    return figure([per_call_us(hit, target_s) for _ in range(repeats)])


def _parse_only(text: str) -> float:
    """Seconds to parse the text into line-numbered data, as the loader does (collector paused)."""
    from gateway.policy.loader import parse_policy_text
    from gateway.runtime import collector_paused

    gc.collect()
    with collector_paused():
        started = time.perf_counter()
        parse_policy_text(text, "bench.yaml")
        return time.perf_counter() - started


def _engines(
    sizes: list[int],
    repeats: int,
    target_s: float,
    names: list[str],
    rbac: dict[int, dict[str, Any]],
    directory: Path,
) -> dict[str, Any]:
    from gateway.policy import AccessRequest, Caller, evaluate, load_policy_text

    results: dict[str, Any] = {"notes": [], "sizes": {}}
    deciders: dict[int, dict[str, Any]] = {}
    for size in sizes:
        policy = load_policy_text(policygen.to_json(rbac[size]), f"rbac-{size}.json")
        per_engine: dict[str, Any] = {}

        def opsgate_for(case: engines.Case, policy: Any = policy) -> Callable[[], bool]:
            caller = Caller(
                member=case.member,
                email=case.member.partition(":")[2],
                email_verified=True,
                hosted_domain=case.hosted_domain,
                groups=frozenset(case.groups),
            )
            request = AccessRequest(case.permission, case.resource)
            return lambda: evaluate(policy, caller, request, NOW).allowed

        per_engine["opsgate"] = (opsgate_for, len(policy.bindings), 0.0)
        role_permissions = policy.role_permissions
        for name in names:
            started = time.perf_counter()
            try:
                if name == "cedarpy":
                    for_case, count = engines.cedar_decider(
                        rbac[size], role_permissions, engines.RBAC_CASES
                    )
                else:
                    for_case, count = engines.casbin_decider(
                        rbac[size], role_permissions, engines.RBAC_CASES, directory
                    )
            except ImportError as exc:
                note = f"{name} not installed ({exc}): skipped (pip install '.[bench]')"
                if note not in results["notes"]:
                    results["notes"].append(note)
                continue
            per_engine[name] = (for_case, count, time.perf_counter() - started)
        deciders[size] = per_engine
    timings: dict[tuple[int, str, str], list[float]] = {}
    answers: dict[tuple[int, str, str], bool] = {}
    for rep in range(repeats):
        for size in sizes:
            for engine, (for_case, _count, _setup) in deciders[size].items():
                for case in engines.RBAC_CASES:
                    key = (size, engine, case.name)
                    if rep > 0 and timings[key] and timings[key][0] > 2e6:
                        continue  # over 2 s a decision: once is enough
                    decide = for_case(case)
                    answers[key] = decide()
                    timings.setdefault(key, []).append(per_call_us(decide, target_s))
    for size in sizes:
        entry: dict[str, Any] = {}
        for engine, (_for_case, count, setup_s) in deciders[size].items():
            cases = {}
            for case in engines.RBAC_CASES:
                key = (size, engine, case.name)
                cases[case.name] = {
                    "us": figure(timings[key]),
                    "allowed": answers[key],
                    "agrees_with_opsgate": answers[key] == answers[(size, "opsgate", case.name)],
                }
            entry[engine] = {"rules": count, "setup_s": setup_s, "cases": cases}
        results["sizes"][str(size)] = entry
    return results


def _profiles(policy: Any, principals: dict[str, Any], callers: dict[str, Any]) -> dict[str, str]:
    """cProfile top-20 of the decision hot paths at the largest size (shown if a target misses)."""
    from gateway.authorizer import Authorizer, PolicyHolder
    from gateway.policy import AccessRequest, evaluate

    _name, who, permission, resource = DECISION_CASES[1]
    authorizer = Authorizer(PolicyHolder(policy), 100_000)
    authorizer.decide(principals[who], permission, resource)
    out = {}
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(100_000):
        authorizer.decide(principals[who], permission, resource)
    profile.disable()
    out["decision_cached"] = top20(profile)
    request = AccessRequest(permission, resource)
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(20_000):
        evaluate(policy, callers[who], request, NOW)
    profile.disable()
    out["decision_uncached"] = top20(profile)
    return out


def quick_look(sizes: list[int]) -> None:
    """What `python -m benchmarks.policygen` prints: one pass, no repeats."""
    with tempfile.TemporaryDirectory() as tmp:
        result = _decisions_and_loads(sizes, 1, 0.2, [], Path(tmp))
    for size in sizes:
        load = result["loads_s"][str(size)]
        print(
            f"{size:>7} bindings  load yaml {load['yaml']['median']:.2f} s, "
            f"json {load['json']['median']:.2f} s"
        )
        for name, fig in result["uncached_us"][str(size)].items():
            effect = result["effects"][str(size)][name]
            print(f"{size:>7} bindings  {name:<36} {effect:<5} {fig['median']:6.2f} µs/decision")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.micro")
    parser.add_argument("--sizes", default="100,10000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--target-s", type=float, default=0.1, help="time per measurement")
    parser.add_argument("--tokens", type=int, default=1000, help="tokens per algorithm per repeat")
    parser.add_argument("--engines", default="cedarpy,casbin")
    parser.add_argument("--skip-tokens", action="store_true")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(",") if s)
    engine_names = [e for e in args.engines.split(",") if e]
    started = time.perf_counter()
    result: dict[str, Any] = {"audience": AUDIENCE}
    if not args.skip_tokens:
        from gateway import runtime

        result["tokens"] = runtime.run(
            _tokens(args.workdir, args.tokens, args.repeats, args.target_s)
        )
    result["policy"] = _decisions_and_loads(
        sizes, args.repeats, args.target_s, engine_names, args.workdir
    )
    result["seconds"] = time.perf_counter() - started
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
