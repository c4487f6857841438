"""Writes benchmarks/REPORT.md from the results (results.json holds the same figures, raw)."""

from __future__ import annotations

from typing import Any

from benchmarks.stats import fmt

# What would meet a missed target, from the profiles (Profiles section) of this code base, as it
# stands after the hot-path work: what is left, and what it would take.
_CHAIN_WORK = (
    "The chain is one grpc.aio interceptor running door-neutral stages on one Call; in process "
    "the whole chain (Call, audit stage, authn on a remembered token, route, authz on a cached "
    "decision, sinks) costs about 10 µs a call, and a repeated caller's audit record renders "
    "in about 6 µs on the writer thread. In the server the same work costs several times "
    "that, and the thread table shows where: the event loop, not the writer. Measured in the "
    "library-mode server one change at a time (c=16, CPU per call): one pass-through "
    "interceptor plus the `x-request-id` trailer +6-10 µs; the Call and the audit stage with "
    "no checks and no sinks +14 µs; the checks +23 µs; the sinks (metrics, audit submit, "
    "writer thread) +40-50 µs before record shapes, about +30 µs after. Every µs of Python on "
    "the loop costs 2-5 µs in the server, because gRPC's poller thread and the audit writer "
    "take the GIL from the loop per completion and per batch (the same rendering on the loop "
    "instead of the writer cost +75 µs, on the writer +38 µs). What would meet it: (1) fewer "
    "Python bytecodes on the loop per call, above all the metrics and the outcome fan-out "
    "(handing the outcome to the writer thread once and recording metrics there, with a "
    "separate count of records the writer drops, is the next step); (2) rendering records "
    "outside the interpreter (a native renderer, or a log shipper given a compact tuple); "
    "(3) for the hop itself, gRPC Python's per-call price for extra metadata (the trailer to "
    "the caller, the identity header upstream), which only a C++ data plane avoids (Envoy with "
    "opsgate as its external authorizer, issue 17)."
)
REMEDIES = {
    "warm_cpu": _CHAIN_WORK,
    "throughput": (
        "On a saturated core throughput is the inverse of CPU per call: whatever lowers the "
        "warm CPU per call (see the first missed target) raises this ratio by the same factor."
    ),
    "added_latency": (
        "At c=1 the added latency is the chain's CPU time on the call's critical path: the same "
        "per-call work as the CPU target, minus the audit record, which is already built and "
        "written after the call on the writer thread. The same remedies apply."
    ),
    "cold_cpu": (
        "The JWS check is now the bare `cryptography` verification plus a few µs (Token "
        "verification table: no second decoding, keys prepared once). A call with a token "
        "never seen before still pays, on top of a warm call: the RSA check itself (~20 µs), "
        "decoding header and claims and building the Principal and its policy Caller, an "
        "uncached decision (~10 µs), inserts into the token and decision caches, rendering a "
        "trace that no other call shares, and in gRPC's C core HPACK-decoding an "
        "authorization header that never repeats (it cannot be indexed). The objects each new "
        "token leaves cached also make the garbage collector work (gc.freeze of the start-up "
        "heap halved that in process). Meeting +100 µs in Python would need the signature "
        "check and claim decoding in one native call per token; a C++ front end verifying "
        "JWTs (Envoy's jwt_authn) is what usually meets it."
    ),
    "library": (
        "Library mode has no proxy hop to hide the chain behind: 30% of a bare servicer's "
        "~240 µs leaves the whole chain about 70 µs in the server, and it costs about 95-100 "
        "µs (in process about 10 µs; see the first missed target for where the rest goes and "
        "for the measured cost of each part). The chain is already one interceptor and a "
        "repeated caller's record is rendered from its shape; what would meet it is fewer "
        "Python bytecodes on the event loop per call (metrics and the outcome fan-out moved to "
        "the writer thread) and rendering outside the interpreter."
    ),
    "decision_cached": (
        "A hit is one dict lookup on (caller, permission, resource, etag) answering a Verdict "
        "built at insert, with the Caller built once per verified token: see the cProfile "
        "below for what else a hit now does."
    ),
    "decision_uncached": "See the uncached-decision profile below for the slowest kind.",
    "decision_flat": "See the uncached-decision profile below: the walk should not grow.",
    "vs_cedar": "cedarpy already gets pre-parsed handles; the gap is opsgate's to widen.",
    "load": (
        "Plain YAML is read from PyYAML's C parser events and plain bindings take the quick "
        "path; see the load profile below for what a policy of this shape spends its time on."
    ),
    "envoy_cpu": (
        "The floor misses it before opsgate does anything: Envoy + the minimal gRPC "
        "authorizer (one generic handler returning 4 fixed bytes) already sums 0.64-0.70x the "
        "proxy at c=64 (two runs), because a grpc.aio unary call costs about 200-230 µs on the "
        "server side by itself (the bare grpc.aio row) and Envoy's Check adds its own. Above "
        "that floor the opsgate row costs 170-320 µs more per call: on Envoy's side 10-85 µs "
        "(the access-log entry it streams to opsgate, the larger Check with headers and body, "
        "the answer's header mutations); in the authorizer 165-230 µs (the Envoy section's "
        "profile table), almost all on the event loop: py-spy puts 50-80 µs in "
        "`EnvoyDoor.check` and the stages under it (audit 30-50, the answer 17-24) and about "
        "20 µs in the access-log stream, the rest in native code under the loop (parsing the "
        "CheckRequest's header map and body, serializing the answer), plus 25-35 µs on the "
        "audit writer thread. What would meet it: the HTTP protocol's floor is about 0.35x "
        "(a raw uvloop protocol answering 200 costs ~25 µs a call, against grpc.aio's "
        "~200), which leaves about 140-165 µs per call for opsgate's own work under 0.6x: a "
        "Check door on HTTP ext_authz with a raw protocol (no grpc.aio, no framework), "
        "keeping the batched gRPC access-log stream (its cost is per entry, not per RPC). "
        "Over gRPC only a non-Python authorizer can meet it, since grpc.aio's floor alone "
        "takes most of the budget."
    ),
    "envoy_throughput": (
        "On this 2-core machine every process of a row shares the cores, so throughput is "
        "about 2 cores over the row's whole CPU per call: Envoy + authorizer + the upstream "
        "(~300 µs) + h2load. For 1.5x the proxy's throughput, Envoy + the authorizer would "
        "have to cost about 280 µs a call in all, which only the HTTP floor (~200 µs) is "
        "under; the remedy is the CPU target's. `--workers 2` cannot add a core that is not "
        "idle here, and with the generated bootstrap every Check reaches one worker anyway "
        "(see the worker split above)."
    ),
    "envoy_latency": (
        "Behind Envoy a call makes two hops in turn (the Check, then the upstream), and a "
        "grpc.aio Check round trip costs 0.45-0.6 ms at c=1 even with a do-nothing "
        "authorizer (minimal gRPC ext_authz against the Envoy hop row); the HTTP floor adds "
        "0.2-0.3 ms, and opsgate's own work 0.2-0.35 ms more than the gRPC floor. Meeting "
        "it needs the Check round trip well under the proxy's own work: the HTTP Check door "
        "on a raw protocol, and less Python per Check (see the CPU target)."
    ),
    "authorizer_share": (
        "Even the do-nothing grpc.aio authorizer costs about 1.2x Envoy's own share of its "
        "row, so the target leaves opsgate's work a few tens of µs per Check over grpc.aio. "
        "The table above says where the excess is: the event loop. Named in the py-spy "
        "sample: the CheckRequest's header map (a protobuf map, walked twice per call through "
        "`ItemsView` and generator expressions: once for the Call's metadata, once more for "
        "the caller's header names the answer removes), building the answer (its header "
        "lists and the dynamic-metadata Struct), the access-log join "
        "(`CompletionJoin.complete`, `ending_of`), the audit stage, and the proxy's "
        "`ChainInterceptor` (an authorizer-only server still installs it, so every Check "
        "pays a grpc.aio interceptor). Reading the header map once into a tuple, building the "
        "answer's fixed parts once and serving Check without the interceptor would take out "
        "a good part; HTTP ext_authz on a raw protocol would take out the grpc.aio floor "
        "itself."
    ),
    "compiled_cpu_spread": (
        "The excess is the compiled chain's fixed cost, not the policy's size: allowed calls "
        "cost 1.5-2x jwt_authn + rbac already at 100 bindings and no more at 10,000, and "
        "refused calls (the whole chain, then Envoy's local reply, no upstream) cost about what "
        "jwt_authn + rbac's allowed call does (0.9-1.1x in the quieter of two runs). Found: "
        "(1) the compiled jwt_authn providers (gateway/envoy/compiled/tokens.py) have no "
        "`jwt_cache_config`, and Envoy 1.40 then caches nothing: its /stats count a "
        "`jwt_cache_miss` for every call (the jwt_authn + rbac row hits), so every call "
        "verifies RS256 and decodes the payload again; (2) the filters set a dozen x-opsgate-* "
        "headers (the name, the route, every claim, the groups list as JSON) that go upstream "
        "with every allowed call; (3) the token is larger (12 groups): jwt_authn alone costs "
        "~15 µs more with it than with the base row's one-group token (measured by hand). The "
        "probe's variants with the cache, without the internal headers upstream, and with both "
        "say what (1) and (2) cost: with both, the spread-100 chain measured 220 µs against "
        "313 as compiled and the base's 176 (1.25x) in the run this text was written from. "
        "The rest is seven filters jwt_authn + rbac does not run: grpc_field_extraction "
        "(buffers and parses the body), two header_mutation filters formatting dynamic "
        "metadata per call, three RBAC filters with CEL and regexes over the name, then the "
        "deny and allow matchers; the cut-back table bounds them, but on this shared machine "
        "its steps (±30 µs) are inside the run-to-run ranges. What would meet it: "
        "jwt_cache_config on every provider, the internal headers removed before the router "
        "(or not set: the policy filters could read the metadata), and fewer filters on the "
        "path (the token, scope and route checks in one RBAC filter)."
    ),
    "compiled_cpu_one_resource": (
        "See the spread policy's line: the same fixed chain cost, and the same remedies. The "
        "member lists at 10,000 bindings on one resource are 68 regexes of up to 1,000 "
        "alternatives each (text.CHUNK: 48 over the email, 20 over the groups list, in 5 "
        "entries, one per role's route set), and a refused call runs all of them; RE2's DFA "
        "keeps that cheap once warm (the refused rows measured 0.9-1.0x in one run, 1.3-1.4x "
        "in a noisier one). An exact-match map keyed on the caller's email (and a check per "
        "listed group) would make it flat by construction: the matcher tree keyed on verified "
        "claims the design notes describe."
    ),
    "compiled_load": (
        "Loading is single-threaded on Envoy's main thread: JSON parse and conversion of "
        "lds.json, then one RE2 compile per regex and one matcher object per predicate (the "
        "memory probe's LIVE column: without the allow filter 10,000 bindings load in ~1.3 s). "
        "The same remedies as for RSS shorten it."
    ),
    "compiled_rss": (
        "Measured by ablation (memory table in the compiled section): (1) RE2: ~5 KiB "
        "allocated per regex, and the spread config at 10,000 bindings holds 53,000 of them "
        "(emails 24k, group lists 14k, route ids 16k): ~270 MiB; (2) tcmalloc keeps the "
        "transient of parsing the 31 MiB lds.json (its heap is ~190 MiB above what is "
        "allocated, about 6x the file; a bootstrap `memory_allocator_manager` releasing free "
        "pages took only ~70 MiB of it back, by hand); (3) the deny filter repeats each "
        "project's deny rules once per route they deny (the `/*` rule on all 6 routes: 6,700 "
        "CEL predicates and 8,900 regexes, ~65 MiB allocated). Replacing the member and route "
        "regexes by exact/contains matches with the same decisions frees ~205 MiB allocated "
        "but doubles lds.json and with it the parse transient, so RSS does not fall. What "
        "would meet it: fewer predicates AND fewer bytes: route ids as an exact_match_map "
        "(one per resource, not one regex per entry), one member check per header per "
        "resource rather than per (resource, role set), deny rules keyed resource-first so "
        "each is written once, and lds.json as a binary .pb (Envoy picks the format by "
        "extension; untested here) to avoid the JSON transient. A hot reload holds the old "
        "and the new listener at once: its peak is about 1.7x the loaded RSS."
    ),
    "held_calls": (
        "Held calls should cost nothing per unary call unless something walks them per call; "
        "check the in-flight bookkeeping for work proportional to open calls."
    ),
}


def _ms(fig: dict[str, Any] | None) -> str:
    if not fig or fig.get("median") is None:
        return "—"
    scaled = {k: (v / 1000 if isinstance(v, int | float) else v) for k, v in fig.items()}
    scaled["values"] = fig.get("values", [])
    return fmt(scaled, 2)


def _result(passed: bool | None) -> str:
    return {True: "**pass**", False: "**MISS**", None: "reported"}[passed]


def render(results: dict[str, Any]) -> str:
    meta = results["meta"]
    out: list[str] = []
    add = out.append
    add("# opsgate benchmarks\n")
    add(
        f"Generated by `{meta['command']}` on {meta['date']} in {meta['seconds']:.0f} s "
        f"(mode `{meta['mode']}`; the budget for this mode is {meta['budget_s']:.0f} s). "
        f"Every figure is the **median of {meta['repeats']} interleaved repeats**, with the "
        "min\u2013max range in brackets. **CPU per call** is the user+system CPU time of the "
        "front-end process (its whole process tree) over the measured window divided by the "
        "calls made in it: on a shared, noisy machine it is the figure that holds still; "
        "throughput and latency move with the neighbours.\n"
    )
    _targets(add, results)
    _rows(add, results)
    _envoy(add, results)
    _compiled(add, results)
    _library(add, results)
    _scale(add, results)
    _memory(add, results)
    _long_calls(add, results)
    _micro(add, results)
    _profiles(add, results)
    _environment(add, results)
    _notes(add, results)
    return "\n".join(out).rstrip() + "\n"


def _targets(add: Any, results: dict[str, Any]) -> None:
    add("## Targets\n")
    add("| target (from the issue) | measured | result | command |")
    add("|---|---|---|---|")
    for target in results.get("targets", []):
        measured = target["measured"]
        if target.get("note"):
            measured += f" — *{target['note']}*"
        add(
            f"| {target['target']} | {measured} | {_result(target['passed'])} | "
            f"`{target['command']}` |"
        )
    missed = [t for t in results.get("targets", []) if t["passed"] is False]
    if missed:
        add(
            "\n**Missed** — what would meet each (evidence in [Profiles](#profiles), and for "
            "Envoy's targets in its section's profiles):\n"
        )
        for target in missed:
            add(f"- *{target['target']}*: {REMEDIES.get(target['key'], 'see Profiles.')}")
    add("")


def _rows(add: Any, results: dict[str, Any]) -> None:
    add("## End-to-end rows\n")
    rows = results.get("rows") or {}
    if not rows:
        add("Not measured in this run (see Notes).\n")
        return
    concurrencies = sorted({int(c) for row in rows.values() for c in row["concurrency"]})
    head = " | ".join(f"c={c}" for c in concurrencies)
    line = "|---|" + "---|" * len(concurrencies)

    def table(title: str, metric: str, render_fig: Any) -> None:
        add(f"**{title}**\n")
        add(f"| row | {head} |")
        add(line)
        for row in rows.values():
            cells = [
                render_fig(row["concurrency"].get(str(c), {}).get(metric)) for c in concurrencies
            ]
            add(f"| {row['title']} | " + " | ".join(cells) + " |")
        add("")

    table("CPU per call, µs (front-end process tree)", "cpu_us", lambda f: fmt(f, 0))
    table("of which system (kernel) time, µs", "sys_us", lambda f: fmt(f, 0))
    table("Throughput, requests/s", "rps", lambda f: fmt(f, 0))
    table("p50 latency, ms", "p50_us", _ms)
    table("p99 latency, ms", "p99_us", _ms)
    table(
        "Upstream CPU per call, µs (the shared reference upstream, for context)",
        "upstream_cpu_us",
        lambda f: fmt(f, 0),
    )
    add(
        "**Checks** (grpc-status and payload compared with the upstream's own answer; at the "
        "REST door, HTTP status and the JSON of the same Operation)\n"
    )
    add("| row | driver | front-end process | check |")
    add("|---|---|---|---|")
    for row in rows.values():
        mark = "" if row["check_passed"] else " **FAILED**"
        add(f"| {row['title']} | {row['driver']} | `{row['process']}` | {row['check']}{mark} |")
    add("")
    add("How the rows were run:\n")
    for line_text in results["meta"]["method"]:
        add(f"- {line_text}")
    add("")


_ENVOY_ABOUT = (
    "Envoy {version} as the front end (`--concurrency {threads}`: one worker thread, as nginx "
    "runs one worker), started by gateway.testing.envoy, in front of the same seeded upstream; "
    "every row here was measured in this phase, interleaved, so their ratios compare like with "
    "like ({driver}, the rows phase's concurrencies and durations). **Front end** is the CPU "
    "per call of the process the calls go to (Envoy, or the server called directly), "
    "**authorizer** that of the external authorizer's process tree (for `--workers 2`, its "
    "supervisor and both workers), **sum** the two, per repeat. Every call carries the warm "
    "RS256 token. The ext_authz rows send the request body to the authorizer "
    "(`with_request_body`, 64 KiB, no partial bodies) as opsgate's authorizer needs it, and "
    "fail closed. The bare grpc.aio server and the minimal gRPC authorizer are one program "
    "(benchmarks/minimal.py: one generic handler, bytes in, a 4-byte serialized OK "
    "CheckResponse out); the minimal HTTP authorizer is a raw asyncio protocol on uvloop "
    "answering `200 OK` with no body (no HTTP framework: the leanest a Python HTTP authorizer "
    "gets). **`jwt_authn` + `rbac` cannot check the resource name in the request body**: it "
    "allows GetOperation of any operation to a caller whose verified `groups` claim holds the "
    "team group (its JWKS is the benchmark's local file, verified tokens cached), so it does "
    "less than opsgate's authorizer, which decides on the name against the IAM policy and "
    "writes an audit record per call."
)


def _envoy(add: Any, results: dict[str, Any]) -> None:
    add("## Envoy as the front end (issue 17)\n")
    envoy = results.get("envoy")
    if not envoy or "rows" not in envoy:
        add((envoy or {}).get("skipped") or _why(results, "envoy"))
        add("")
        return
    rows = envoy["rows"]
    add(
        _ENVOY_ABOUT.format(
            version=envoy.get("envoy_version") or "",
            threads=envoy.get("envoy_concurrency", 1),
            driver=envoy["driver"],
        )
        + "\n"
    )
    concurrencies = sorted({int(c) for row in rows.values() for c in row["concurrency"]})
    head = " | ".join(f"c={c}" for c in concurrencies)

    def table(title: str, metric: str, render_fig: Any, only_authorized: bool = False) -> None:
        add(f"**{title}**\n")
        add(f"| row | {head} |")
        add("|---|" + "---|" * len(concurrencies))
        for row in rows.values():
            if only_authorized and not row.get("authorizer"):
                continue
            cells = [
                render_fig(row["concurrency"].get(str(c), {}).get(metric)) for c in concurrencies
            ]
            add(f"| {row['title']} | " + " | ".join(cells) + " |")
        add("")

    table("Front-end CPU per call, µs (Envoy, or the server called directly)", "cpu_us", fmt)
    table("Authorizer CPU per call, µs", "authorizer_cpu_us", fmt, only_authorized=True)
    table("Summed CPU per call, µs (front end + authorizer)", "total_cpu_us", fmt)
    table("Throughput, requests/s", "rps", fmt)
    table("p50 latency, ms", "p50_us", _ms)
    table("p99 latency, ms", "p99_us", _ms)
    table("Upstream CPU per call, µs (for context)", "upstream_cpu_us", fmt)
    split = envoy.get("worker_cpu_s") or {}
    for key, seconds in split.items():
        shown = ", ".join(f"{s:.1f} s" for s in seconds)
        one = bool(seconds) and seconds[0] > 0.9 * sum(seconds)
        add(
            f"CPU of each worker of the `{key}` authorizer over the measured runs: {shown} "
            "(SO_REUSEPORT hands each of Envoy's connections to the authorizer to one worker)"
            + (_ONE_WORKER if one else ".")
            + "\n"
        )
    add("**Checks** (grpc-status and payload; through Envoy, the upstream's own answer)\n")
    add("| row | front-end process | authorizer | check |")
    add("|---|---|---|---|")
    for row in rows.values():
        mark = "" if row["check_passed"] else " **FAILED**"
        authorizer = f"`{row['authorizer']}`" if row.get("authorizer") else "—"
        add(f"| {row['title']} | `{row['process']}` | {authorizer} | {row['check']}{mark} |")
    add("")
    profiles = envoy.get("profiles") or {}
    if profiles:
        add(
            "**Profiles** (a missed target above): the authorizers behind Envoy at c=16, "
            "thread CPU exact from /proc, functions sampled by py-spy as in "
            "[Profiles](#profiles).\n"
        )
        for key, entry in profiles.items():
            _thread_table(add, key, entry.get("threads"))
        _above_floor(add, profiles)
        for key, entry in profiles.items():
            _sampled(add, key, entry.get("sampled") or {})


_ONE_WORKER = (
    ": **one worker did all the work**. The generated bootstrap's authorizer cluster is one "
    "HTTP/2 connection per Envoy worker thread (no `max_concurrent_streams`), so every Check "
    "of this Envoy reaches the same opsgate worker; a second worker only helps behind several "
    "Envoy threads or Envoys, or with the cluster's streams per connection capped."
)
_THREAD_KINDS = (
    ("event loop (main thread)", lambda name: name.startswith("main")),
    ("gRPC poller thread", lambda name: "_poll_wrapper" in name),
    ("gRPC C-core threads", lambda name: "event_engine" in name or "grpc" in name),
    ("audit writer", lambda name: "audit" in name),
)


def _by_kind(threads: dict[str, Any]) -> dict[str, float]:
    found = {kind: 0.0 for kind, _ in _THREAD_KINDS} | {"other": 0.0}
    for row in threads["threads"]:
        kind = next((k for k, match in _THREAD_KINDS if match(row["thread"])), "other")
        found[kind] += row["user_us"] + row["sys_us"]
    return found


def _above_floor(add: Any, profiles: dict[str, Any]) -> None:
    """opsgate's authorizer against the minimal gRPC one, thread kind by thread kind."""
    ours = (profiles.get("opsgate authorizer (behind Envoy)") or {}).get("threads")
    floor = (profiles.get("minimal gRPC authorizer (behind Envoy)") or {}).get("threads")
    if not (ours and floor):
        return
    mine, base = _by_kind(ours), _by_kind(floor)
    add("**Where opsgate's authorizer spends CPU above the grpc.aio floor** (µs per Check)\n")
    add("| thread | opsgate | minimal gRPC authorizer | above the floor |")
    add("|---|---|---|---|")
    for kind in mine:
        if mine[kind] or base[kind]:
            add(
                f"| {kind} | {mine[kind]:.0f} | {base[kind]:.0f} | {mine[kind] - base[kind]:+.0f} |"
            )
    total, floor_total = sum(mine.values()), sum(base.values())
    add(f"| **all** | {total:.0f} | {floor_total:.0f} | {total - floor_total:+.0f} |")
    add("")


def _library(add: Any, results: dict[str, Any]) -> None:
    add("## Library mode\n")
    library = results.get("library")
    if not library or "cpu_us" not in library:
        add(_why(results, "library"))
        return
    add(
        "The reference Operations servicer in one grpc.aio server (uvloop), with "
        "`gateway.library.OpsgateChain` (same config and policy as the gateway rows) and "
        f"without it; warm token, c={library['concurrency']}, {library['driver']}.\n"
    )
    add("| server | CPU per call, µs | requests/s | p50, ms |")
    add("|---|---|---|---|")
    for key in ("without", "with"):
        add(
            f"| {key} the chain | {fmt(library['cpu_us'][key])} | {fmt(library['rps'][key])} | "
            f"{_ms(library['p50_us'][key])} |"
        )
    per_repeat = {k: v * 100 if isinstance(v, float) else v for k, v in library["overhead"].items()}
    add(
        f"\nThe chain adds **{library['overhead_of_medians']:+.0%}** CPU per call (per repeat: "
        f"{fmt(per_repeat, 0, '%')}). Checks: {library['checks']}.\n"
    )


def _scale(add: Any, results: dict[str, Any]) -> None:
    add("## Scale: `opsgate serve --workers N`\n")
    scale = results.get("scale")
    if not scale or "gain" not in scale:
        add((scale or {}).get("skipped") or _why(results, "scale"))
        add("")
        return
    add(
        f"c={scale['concurrency']} over 16 connections (SO_REUSEPORT spreads connections, not "
        f"calls), warm token, {scale['driver']}; the reference upstream shares the same "
        f"{results['environment']['machine']['cores']} cores.\n"
    )
    add(
        "| workers | requests/s | CPU per call, µs (tree) | gateway cores busy "
        "| upstream cores busy | p99, ms |"
    )
    add("|---|---|---|---|---|---|")
    for n in ("1", "2"):
        add(
            f"| {n} | {fmt(scale['rps'][n])} | {fmt(scale['cpu_us'][n])} | "
            f"{fmt(scale['gateway_cores_busy'][n], 2)} | "
            f"{fmt(scale['upstream_cores_busy'][n], 2)} | "
            f"{_ms(scale['p99_us'][n])} |"
        )
    add(
        f"\n**Gain with 2 workers: {scale['gain']['median']:.2f}x** "
        f"({fmt(scale['gain'], 2, 'x')} per repeat). Checks: {scale['checks']}.\n"
    )


def _memory(add: Any, results: dict[str, Any]) -> None:
    add("## Memory: RSS after many distinct tokens\n")
    memory = results.get("memory")
    if not memory or "end_rss_bytes" not in memory:
        add(_why(results, "memory"))
        return
    mib = 2**20
    growth = memory.get("second_half_growth")
    add(
        f"A fresh gateway (token cache {memory['token_cache_size']:,} entries, the default) was "
        f"given **{memory['tokens']:,} distinct valid {memory['algorithm']} tokens** "
        f"({memory['calls']:,} calls, {memory['rps']:,.0f} calls/s, signed by a process pool in "
        f"{memory['signing_s']:.1f} s before the run). The tokens name {memory['principals']:,} "
        "callers the policy does not grant, in turn: every call is a token-cache miss and a new "
        "cache entry, then PERMISSION_DENIED at authz, so the upstream is not involved. "
        f"Answers: {memory['codes']}; token-cache misses counted by the gateway: "
        f"{memory['token_cache_misses']}.\n"
    )
    if memory.get("stopped_early"):
        add(
            f"**Stopped early: {memory['calls']:,} of {memory['tokens']:,} tokens presented** "
            "before the time budget ran out.\n"
        )
    add("| | RSS |")
    add("|---|---|")
    add(f"| start (after 200 warm calls) | {memory['start_rss_bytes'] / mib:.1f} MiB |")
    add(f"| after half the tokens | {memory['rss_at_half_bytes'] / mib:.1f} MiB |")
    add(f"| end | {memory['end_rss_bytes'] / mib:.1f} MiB |")
    add(f"| peak (VmHWM) | {memory['peak_rss_bytes'] / mib:.1f} MiB |")
    if growth is not None:
        verdict = "bounded" if growth < 0.05 else "still growing"
        add(f"\nGrowth over the second half of the run: {growth:+.1%} ({verdict}).\n")


def _long_calls(add: Any, results: dict[str, Any]) -> None:
    add("## Long calls: held WaitOperation and unary latency\n")
    long_calls = results.get("long_calls")
    if not long_calls or "p99_us" not in long_calls:
        add(_why(results, "long_calls"))
        return
    held = long_calls["held_calls"]
    add(
        f"A gateway with a profile routing WaitOperation; {held:,} WaitOperation calls on an "
        "operation that never finishes held open through it (confirmed by the gateway's "
        f"`opsgate_in_flight_calls`: {long_calls['in_flight_seen']}), while "
        f"{long_calls['unary_calls']:,} unary GetOperation calls ran at "
        f"c={long_calls['concurrency']} (Python generator). Without, then with, each repeat.\n"
    )
    add("| | p50, ms | p99, ms | requests/s | CPU per call, µs |")
    add("|---|---|---|---|---|")
    for key in ("without", "with"):
        add(
            f"| {key} held calls | {_ms(long_calls['p50_us'][key])} | "
            f"{_ms(long_calls['p99_us'][key])} | {fmt(long_calls['rps'][key])} | "
            f"{fmt(long_calls['cpu_us'][key])} |"
        )
    still = [h.get("still_open") for h in long_calls["held_results"]]
    slowest = max(1, long_calls["unary_calls"] // 100)
    add(
        f"\np99 change: **{long_calls['increase_of_medians']:+.0%}**. Held calls still open "
        f"when released, per repeat: {still} of {held:,}. Each p99 is about the "
        f"{slowest}th-slowest of {long_calls['unary_calls']:,} calls, so a neighbour's burst on "
        "this shared machine moves it; the range across repeats shows how much.\n"
    )


def _micro(add: Any, results: dict[str, Any]) -> None:
    add("## Micro-benchmarks\n")
    micro = results.get("micro")
    if not micro:
        add(_why(results, "micro"))
        return
    tokens = micro.get("tokens")
    add("### Token verification (gateway.authn, in process)\n")
    if tokens:
        add(
            "`Authenticator.verify(metadata)` of an Authenticator from "
            "`gateway.authn.factory.build_authn` with a `jwks_file` issuer: uncached = every call "
            f"a new token ({tokens['tokens_per_repeat']:,} per repeat, a fresh cache each "
            "repeat); cached = the same token again. The bare signature check (cryptography, "
            "same public key) is shown for reference.\n"
        )
        add("| algorithm | uncached, µs | bare signature check, µs |")
        add("|---|---|---|")
        for algorithm, fig in tokens["uncached_us"].items():
            add(
                f"| {algorithm} | {fmt(fig, 1)} | "
                f"{fmt(tokens['signature_only_us'][algorithm], 1)} |"
            )
        add(f"| cache hit | {fmt(tokens['cached_us'], 2)} | |\n")
    else:
        add("Not measured in this mode.\n")
    policy = micro.get("policy") or {}
    if not policy:
        return
    sizes = policy["sizes"]
    add("### Policy decisions\n")
    add(
        "Realistic policies from `benchmarks/policygen.py` (bindings spread over project → "
        "location → view set → view → operation, nested groups, 5% conditional bindings, deny "
        "rules). Uncached: `gateway.policy.evaluator.evaluate`; cached: "
        "`gateway.authorizer.Authorizer.decide` answering from its cache (decisions that "
        "depend on the time are never cached, so that case has no cached figure).\n"
    )
    head = " | ".join(f"{s:,} bindings" for s in sizes)
    add(f"| decision | effect | {head} |")
    add("|---|---|" + "---|" * len(sizes))
    for case in policy["uncached_us"][str(sizes[0])]:
        effect = policy["effects"][str(sizes[0])][case]
        cells = " | ".join(fmt(policy["uncached_us"][str(s)][case], 2) for s in sizes)
        add(f"| {case}, uncached | {effect} | {cells} |")
    for case in policy["cached_us"][str(sizes[0])]:
        cells = " | ".join(fmt(policy["cached_us"][str(s)].get(case), 2) for s in sizes)
        add(f"| {case}, cached | | {cells} |")
    floor = policy.get("cache_hit_floor_us")
    if floor:
        add(
            "| *for reference: one `dict.get` with the Caller reused, plus the Verdict* | | "
            + " | ".join(fmt(floor, 2) if s == sizes[-1] else "" for s in sizes)
            + " |"
        )
    add("\nFigures in µs per decision.\n")
    add("### Policy load time (read + validate + index)\n")
    add("| bindings | YAML, s | JSON, s | YAML size | JSON size |")
    add("|---|---|---|---|---|")
    for size in sizes:
        load = policy["loads_s"][str(size)]
        add(
            f"| {size:,} | {fmt(load['yaml'], 3)} | {fmt(load['json'], 3)} | "
            f"{load['yaml_mb']:.1f} MB | {load['json_mb']:.1f} MB |"
        )
    add("")
    engines = policy.get("engines") or {}
    add("### Decision engines on an equivalent RBAC policy\n")
    add(
        "The same policies without conditional bindings and deny rules (what the other engines "
        "cannot say the same way), given to each engine in its own idiom and parsed once: "
        "opsgate's `evaluate`; cedarpy `is_authorized` with pre-parsed `PolicySet` and "
        "`Entities` handles (one permit per binding member, groups and the resource tree as "
        "entity parents); casbin `Enforcer.enforce` with a model of `g` (member → group), "
        "`g2` (resource → parent), `g3` (permission → role). All three must agree on every "
        "decision.\n"
    )
    for note in engines.get("notes", []):
        add(f"- {note}")
    add(
        "| bindings | engine | rules | setup, s | "
        + " | ".join(_case_names(engines))
        + " | agree |"
    )
    add("|---|---|---|---|" + "---|" * len(_case_names(engines)) + "---|")
    for size, entry in (engines.get("sizes") or {}).items():
        for engine, data in entry.items():
            cells = " | ".join(
                f"{fmt(case['us'], 1)} µs ({'allow' if case['allowed'] else 'deny'})"
                for case in data["cases"].values()
            )
            agree = all(case["agrees_with_opsgate"] for case in data["cases"].values())
            add(
                f"| {int(size):,} | {engine} | {data['rules']:,} | {data['setup_s']:.2f} | "
                f"{cells} | {'yes' if agree else '**NO**'} |"
            )
    add("")


def _case_names(engines: dict[str, Any]) -> list[str]:
    for entry in (engines.get("sizes") or {}).values():
        for data in entry.values():
            return list(data["cases"])
    return []


E2E_TARGETS = {"warm_cpu", "throughput", "added_latency", "library", "cold_cpu"}


def _profiles(add: Any, results: dict[str, Any]) -> None:
    add("## Profiles\n")
    missed = {t["key"] for t in results.get("targets", []) if t["passed"] is False}
    profiles = results.get("profiles") or {}
    shown = False
    if profiles and missed & E2E_TARGETS:
        shown = True
        add(
            "Taken after the measurements, on the same processes, at c=16: warm load, and for "
            "the gateway also cold load when that target was missed. Thread CPU is exact "
            "(/proc). Function times are py-spy samples (where each thread was whenever it was "
            "not idle) converted to µs per call: a frame's own time includes native code it "
            "called (the event loop and gRPC's C core show as `Runner.run` and "
            "`UnaryUnaryCall._invoke`), and with every core busy it includes waiting for a "
            "core, so read them as shares, not exact CPU.\n"
        )
        for key, entry in profiles.items():
            _thread_table(add, key, entry.get("threads"))
        for key, entry in profiles.items():
            _sampled(add, key, entry.get("sampled") or {})
    micro_profiles = ((results.get("micro") or {}).get("policy") or {}).get("profiles") or {}
    if "decision_cached" in missed and micro_profiles.get("decision_cached"):
        shown = True
        add("### Cached decision (`Authorizer.decide`, cProfile, 100,000 hits)\n")
        add(f"```\n{micro_profiles['decision_cached']}\n```\n")
    if missed & {"decision_uncached", "decision_flat"} and micro_profiles.get("decision_uncached"):
        shown = True
        add("### Uncached decision (`evaluate`, cProfile)\n")
        add(f"```\n{micro_profiles['decision_uncached']}\n```\n")
    if "load" in missed and micro_profiles.get("load_yaml"):
        shown = True
        add("### Loading the 100,000-binding policy from YAML (cProfile, by cumulative time)\n")
        parse_s = micro_profiles.get("load_yaml_parse_s")
        loads = ((results.get("micro") or {}).get("policy") or {}).get("loads_s", {})
        total = (loads.get("100000") or {}).get("yaml", {}).get("median")
        if parse_s and total:
            add(
                f"Parsing the YAML into line-numbered data alone takes {parse_s:.2f} s of the "
                f"{total:.2f} s; validating and indexing take the other {total - parse_s:.2f} s.\n"
            )
        add(f"```\n{micro_profiles['load_yaml']}\n```\n")
    if not shown:
        add("No target missed that a profile would explain; none shown.\n")


def _thread_table(add: Any, key: str, threads: dict[str, Any] | None) -> None:
    if not threads:
        return
    add(
        f"**{key}: CPU per call by thread** ({threads['rps']:,.0f} req/s, "
        f"{threads['cpu_us']:.0f} µs per call in all)\n"
    )
    add("| thread | user, µs/call | system, µs/call |")
    add("|---|---|---|")
    for row in threads["threads"]:
        add(f"| {row['thread']} | {row['user_us']:.0f} | {row['sys_us']:.0f} |")
    add("")


def _sampled(add: Any, key: str, data: dict[str, Any]) -> None:
    if "error" in data:
        add(f"{key}: no sampled profile ({data['error']}).\n")
        return
    if "text" in data:
        add(f"### {key} ({data['tool']})\n\n```\n{data['text']}\n```\n")
        return
    if "self_us" not in data:
        return
    add(f"### {key}: top 20 functions by own time ({data['tool']})\n")
    add("| function [thread] | µs per call |")
    add("|---|---|")
    for frame, value in data["self_us"]:
        add(f"| `{frame}` | {value:.1f} |")
    add("")
    if data.get("inclusive_gateway_us"):
        add(f"**{key}: top 20 gateway functions by inclusive time**\n")
        add("| function | µs per call |")
        add("|---|---|")
        for frame, value in data["inclusive_gateway_us"]:
            add(f"| `{frame}` | {value:.1f} |")
        add("")


def _environment(add: Any, results: dict[str, Any]) -> None:
    env = results["environment"]
    machine = env["machine"]
    add("## Environment\n")
    add(
        f"- Machine: {machine['cpu_model']}, {machine['cores']} cores "
        f"({machine['usable_cores']} usable), {machine['memory_gib']} GiB, Linux "
        f"{machine['kernel']}; load average at start "
        f"{', '.join(f'{v:.2f}' for v in machine['load_average_at_start'])} (1, 5, 15 min)"
    )
    versions = ", ".join(f"{k} {v or 'absent'}" for k, v in env["versions"].items())
    add(f"- Versions: {versions}")
    tools = ", ".join(f"{k}: {v or 'missing'}" for k, v in env["tools"].items())
    add(f"- Tools: {tools}")
    add("")


def _notes(add: Any, results: dict[str, Any]) -> None:
    add("## Notes, skipped parts and plots\n")
    for note in results.get("notes", []):
        add(f"- {note}")
    for error in results.get("errors", []):
        add(f"- **error** in {error['phase']}: {error['error']}")
    plots = results.get("plots") or []
    if plots:
        add("")
        for name in plots:
            add(f"![{name}]({name})")
    add("")


def _why(results: dict[str, Any], phase: str) -> str:
    for error in results.get("errors", []):
        if error["phase"] == phase:
            return f"Failed: {error['error']}\n"
    for skipped in results.get("skipped", []):
        if skipped["phase"] == phase:
            return f"Skipped: {skipped['why']}\n"
    return "Not measured in this mode.\n"


# --- issue 18: the policy compiled into Envoy ----------------------------------------------------

_COMPILED_ABOUT = (
    "The policy compiled into Envoy's own filters (`gateway.envoy.compiled`, as `opsgate "
    "envoy-compile` writes it: jwt_authn → grpc_field_extraction → claims into headers → RBAC "
    "token, scope, route → route into a header → RBAC deny rules → RBAC bindings), each policy "
    "in its own Envoy {version} (`--concurrency 1`, listener and clusters read from lds.json "
    "and cds.json, no access log), in front of the same seeded upstream as every other row. "
    "Policies from benchmarks/compiledpolicies.py: **spread** (bindings over many projects, "
    "their locations and a few operations, about 3 per resource, 3% conditional, two deny "
    "rules per project, 20 static groups) and the worst case of **every binding on one "
    "resource** (the location the calls name); every binding names 1-4 users and 0-2 groups "
    "from pools that grow with the policy. Four callers make the same GetOperation, each "
    "token listing {groups} groups: **user-bound** (their email is bound on the location; "
    "refused: bound only elsewhere in the project and in other projects) and **group-bound** "
    "(the last group their token lists is bound there; refused: bound only elsewhere); their "
    "members sort last in the compiler's sorted member regexes. Every row here was measured "
    "in this phase at c={at} with h2load, {repeats} interleaved repeats, the row order "
    "rotated; the baseline rows (opsgate's proxy, the Envoy hop, Envoy jwt_authn + rbac, "
    "Envoy + opsgate's authorizer) are the envoy phase's, started by its helpers. Envoy CPU "
    "per call is the Envoy process's; refused calls never reach the upstream, so they cost "
    "Envoy less than allowed ones."
)


def _kind_cells(
    rows: dict[str, Any], prefix: str, at: str, metric: str, base: float | None
) -> list[str]:
    from benchmarks.compiledpolicies import KINDS

    cells = []
    for kind in KINDS:
        row = rows.get(f"{prefix}-{kind}")
        fig = (row or {}).get("concurrency", {}).get(at, {}).get(metric)
        text = fmt(fig)
        if base and fig and fig.get("median") is not None and metric == "cpu_us":
            text += f" · **{fig['median'] / base:.2f}x**"
        cells.append(text)
    return cells


def _compiled(add: Any, results: dict[str, Any]) -> None:
    add("## The policy compiled into Envoy (issue 18)\n")
    compiled = results.get("compiled")
    if not compiled or "rows" not in compiled:
        add((compiled or {}).get("skipped") or _why(results, "compiled"))
        add("")
        return
    rows, configs = compiled["rows"], compiled["configs"]
    at = str(compiled["concurrency"])
    groups = next(iter(compiled["callers"].values()))["groups"]
    add(
        _COMPILED_ABOUT.format(
            version=compiled.get("envoy_version") or "",
            groups=groups,
            at=at,
            repeats=results["meta"]["repeats"],
        )
        + "\n"
    )
    base_row = rows.get("envoy-jwt-rbac")
    base_fig = (base_row or {}).get("concurrency", {}).get(at, {}).get("cpu_us")
    base = base_fig.get("median") if base_fig else None
    add(f"**Baseline rows, c={at}**\n")
    add("| row | front-end CPU/call, µs | authorizer, µs | sum, µs | requests/s | p50, ms |")
    add("|---|---|---|---|---|---|")
    for key in ("envoy-hop", "envoy-jwt-rbac", "opsgate-proxy", "envoy-opsgate"):
        row = rows.get(key)
        if not row:
            continue
        figs = row["concurrency"].get(at, {})
        add(
            f"| {row['title']} | {fmt(figs.get('cpu_us'))} | "
            f"{fmt(figs.get('authorizer_cpu_us'))} | {fmt(figs.get('total_cpu_us'))} | "
            f"{fmt(figs.get('rps'))} | {_ms(figs.get('p50_us'))} |"
        )
    add("")
    from benchmarks.compiledpolicies import KINDS

    titles = " | ".join(k.replace("_", " ") for k in KINDS)
    for metric, title in (
        ("cpu_us", "Envoy CPU per call, µs, and its ratio to Envoy jwt_authn + rbac's"),
        ("rps", "Throughput, requests/s"),
        ("p50_us", "p50 latency, µs"),
    ):
        add(f"**Compiled config: {title} (c={at})**\n")
        add(f"| policy | {titles} |")
        add("|---|" + "---|" * len(KINDS))
        for config in _ordered(configs):
            prefix = f"compiled-{config['shape']}-{config['size']}"
            cells = _kind_cells(rows, prefix, at, metric, base)
            add(f"| {_config_title(config)} | " + " | ".join(cells) + " |")
        add("")
    _compiled_configs(add, configs)
    add(
        "**Checks** (allowed: grpc-status and payload against the upstream's own answer; "
        "refused: PERMISSION_DENIED)\n"
    )
    add("| row | check |")
    add("|---|---|")
    for row in rows.values():
        mark = "" if row["check_passed"] else " **FAILED**"
        add(f"| {row['title']} | {row['check']}{mark} |")
    add("")
    _compiled_probes(add, compiled.get("probes") or {})


def _ordered(configs: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted(configs.values(), key=lambda c: (c["shape"] != "spread", c["size"]))


def _config_title(config: dict[str, Any]) -> str:
    shape = "spread" if config["shape"] == "spread" else "one resource"
    return f"{shape}, {config['size']:,}"


def _mib(value: float | None) -> str:
    return "—" if value is None else f"{value / 2**20:,.0f}"


def _compiled_configs(add: Any, configs: dict[str, Any]) -> None:
    add(
        "**The configs**: compile (Python, `Compiler.compile`), lds.json, what it holds, Envoy's "
        "load (its start to LIVE, and to the first call answered through the listener) and "
        "memory (RSS from /proc; tcmalloc's allocated bytes from the admin's /memory), a hot "
        "reload (one binding added, recompiled, lds.json renamed over the watched file: timed "
        "to `listener_manager.lds.update_success` in /stats and to the new listener warm; "
        "peak = VmHWM after it)\n"
    )
    add(
        "| policy | bindings | resources | allow entries | compile, s | lds.json, MiB | regexes "
        "| CEL | predicates | LIVE, s | serving, s | RSS loaded, MiB | RSS after calls, MiB "
        "| allocated, MiB | reload: update_success, s | reload: warm, s | RSS after reload, MiB "
        "| peak RSS, MiB |"
    )
    add("|---|" + "---|" * 17)
    for config in _ordered(configs):
        load, reload, shape = config["load"], config.get("reload") or {}, config["composition"]
        after = load.get("after_calls") or {}

        def seconds(value: float | None) -> str:
            return "—" if value is None else f"{value:.2f}"

        add(
            f"| {_config_title(config)} | {config['bindings']:,} | {config['resources']:,} | "
            f"{config['counts'].get('allow_entries', 0):,} | {config['compile_s']:.2f} | "
            f"{shape['lds_bytes'] / 2**20:.1f} | {shape['regexes']:,} | {shape['cel']:,} | "
            f"{shape['predicates']:,} | {load['live_s']:.2f} | {load['serving_s']:.2f} | "
            f"{_mib(load['rss_bytes'])} | {_mib(after.get('rss_bytes'))} | "
            f"{_mib(load.get('allocated_bytes'))} | {seconds(reload.get('update_success_s'))} | "
            f"{seconds(reload.get('warm_s'))} | {_mib(reload.get('rss_bytes'))} | "
            f"{_mib(reload.get('peak_rss_bytes', load.get('peak_rss_bytes')))} |"
        )
    add("")
    largest = max(configs.values(), key=lambda c: (c["shape"] == "spread", c["size"]))
    shape = largest["composition"]
    add(f"**What the largest config ({_config_title(largest)}) is made of, per HTTP filter**\n")
    add("| filter | bytes of lds.json | regexes | CEL predicates | predicates |")
    add("|---|---|---|---|---|")
    for name, entry in shape["filters"].items():
        add(
            f"| `{name}` | {entry['bytes']:,} | {entry['regexes']:,} | {entry['cel']:,} | "
            f"{entry['predicates']:,} |"
        )
    kinds = ", ".join(
        f"{kind}: {entry['count']:,} ({entry['bytes'] / 2**20:.1f} MiB of text)"
        for kind, entry in shape["regex_kinds"].items()
    )
    add(f"\nIts regexes by what they match: {kinds}.\n")


def _compiled_probes(add: Any, probes: dict[str, Any]) -> None:
    if not probes:
        return
    add(
        "**Probes** (targets missed above): Envoy's CPU and memory are not visible to py-spy, "
        "so they are attributed by ablation: the same lds.json with parts cut or changed, each "
        "in its own Envoy (benchmarks/compiledprobes.py).\n"
    )
    cpu = probes.get("cpu") or {}
    if "error" in cpu:
        add(f"CPU probe failed: {cpu['error']}\n")
    elif cpu:
        add(
            f"*CPU per call at c=64 of the {cpu['config']} config cut back filter by filter "
            "from the policy end* (allowed, user-bound caller; each cut still answers it OK; "
            "Δ is what the filter taken off in that line cost: a Δ inside the ranges beside it "
            "is noise)\n"
        )
        add("| config | Envoy CPU/call, µs | Δ vs the line above, µs |")
        add("|---|---|---|")
        previous = None
        for name, fig in cpu["cpu_us"].items():
            median = fig.get("median")
            delta = ""
            if name in cpu["cuts"] and previous is not None and median is not None:
                delta = f"{previous - median:+.0f}"
            if name in cpu["cuts"]:
                previous = median
            add(f"| {name} | {fmt(fig)} | {delta} |")
        add("")
    memory = probes.get("memory") or {}
    if "error" in memory:
        add(f"Memory probe failed: {memory['error']}\n")
    elif memory:
        variants = memory["variants"]
        whole = variants.get("as compiled") or {}
        add(
            f"*Memory and load time of the {memory['config']} config, parts changed or left "
            "out* (not all of these decide as the policy says: they attribute)\n"
        )
        add(
            "| config | lds.json, MiB | regexes | CEL | predicates | LIVE, s | RSS, MiB "
            "| allocated, MiB | tcmalloc heap, MiB | Δ allocated vs as compiled, MiB |"
        )
        add("|---|---|---|---|---|---|---|---|---|---|")
        for name, entry in variants.items():
            delta = (entry["allocated_bytes"] - whole.get("allocated_bytes", 0)) / 2**20
            add(
                f"| {name} | {entry['lds_bytes'] / 2**20:.1f} | {entry['regexes']:,} | "
                f"{entry['cel']:,} | {entry['predicates']:,} | {entry['live_s']:.2f} | "
                f"{_mib(entry['rss_bytes'])} | {_mib(entry['allocated_bytes'])} | "
                f"{_mib(entry['heap_bytes'])} | {delta:+,.0f} |"
            )
        exact = variants.get("every regex as an exact string (attribution only)")
        if whole and exact and whole.get("regexes"):
            per = (whole["allocated_bytes"] - exact["allocated_bytes"]) / whole["regexes"]
            add(f"\nRE2 alone: about {per / 1024:.1f} KiB allocated per regex of this config.\n")
        add("")
