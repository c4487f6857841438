"""Where the compiled config's CPU and memory go, found by ablation (py-spy and perf do not see
inside Envoy here): the same lds.json with parts removed or changed, each in its own Envoy.

- CPU (a missed CPU target): the smallest spread config, its HTTP filters taken off from the
  policy end one at a time (each variant still answers the allowed caller OK), measured at
  c=64 interleaved with the jwt_authn + rbac row; the differences between neighbours are what
  each filter costs per call. Variants that keep every filter but change how a part is said
  (see CPU_VARIANTS) say what a different compilation would save.
- memory and load time (a missed RSS or load target): the largest spread config loaded with
  its regexes replaced by exact matches, its CEL predicates by a header match, its deny or
  allow filter left out (not equivalent configs: only to attribute RSS, tcmalloc's allocated
  bytes and load time to the parts).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.bench import Bench
from benchmarks.compiledrows import code_of, composition
from benchmarks.envoyrows import EnvoyRow, Started
from benchmarks.procs import peak_rss_bytes, rss_bytes
from benchmarks.stats import figure
from gateway.envoy.bootstrap import GRPC_LISTENER
from gateway.envoy.compiled.resources import (
    CLUSTERS_FILE,
    LISTENERS_FILE,
    CompiledLayout,
    bootstrap,
)
from gateway.testing.envoy import EnvoyProcess

Json = dict[str, Any]
Transform = Callable[[Json], Json]
_HEADER_INPUT = "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput"
# The compiled chain before the router, in order (compiler.compile_policy).
CHAIN = (
    "envoy.filters.http.jwt_authn",
    "envoy.filters.http.grpc_field_extraction",
    "opsgate.claims_to_headers",
    "opsgate.checks",
    "opsgate.route_to_header",
    "opsgate.policy",
)


def manager(doc: Json) -> Json:
    found: Json = doc["resources"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return found


def _keep_first(count: int) -> Transform:
    def transform(doc: Json) -> Json:
        http = manager(doc)["http_filters"]
        manager(doc)["http_filters"] = [f for f in http if f["name"] in CHAIN[:count]] + [
            f for f in http if f["name"] not in CHAIN
        ]
        return doc

    return transform


def _without(*names: str) -> Transform:
    def transform(doc: Json) -> Json:
        http = manager(doc)["http_filters"]
        manager(doc)["http_filters"] = [f for f in http if f["name"] not in names]
        return doc

    return transform


def _mapped(change: Callable[[Json], Json]) -> Transform:
    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            node = change(node)
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value) for value in node]
        return node

    def transform(doc: Json) -> Json:
        found: Json = walk(doc)
        return found

    return transform


def _regex_as_exact(node: Json) -> Json:
    if "safe_regex" in node and isinstance(node["safe_regex"], dict):
        return {"exact": node["safe_regex"]["regex"]}
    return node


# True for every request (every `:path` holds a '/'), matched without a regex: for the probes'
# callers every CEL predicate of the compiled config is true (a valid token with the scope,
# conditions that hold until 2099), so this keeps every decision and drops CEL's cost.
_ALWAYS = {
    "single_predicate": {
        "input": {
            "name": ":path",
            "typed_config": {"@type": _HEADER_INPUT, "header_name": ":path"},
        },
        "value_match": {"contains": "/"},
    }
}


def _cel_as_header(node: Json) -> Json:
    predicate = node.get("single_predicate")
    if isinstance(predicate, dict) and "custom_match" in predicate:
        return copy.deepcopy(_ALWAYS)
    return node


def _alternatives(expression: str) -> list[str]:
    """The texts of text.alternatives' regex (caseless or literal parts), unescaped."""
    inner = expression[3:-1] if expression.startswith("(?:") else expression
    parts = re.split(r"(?<!\\)\|", inner)
    return [re.sub(r"\\(.)", r"\1", re.sub(r"\[([a-z])[A-Z]\]", r"\1", p)) for p in parts]


def _exact(name: str, value: str, *, ignore_case: bool = False, contains: bool = False) -> Json:
    match: Json = {"contains" if contains else "exact": value}
    if ignore_case:
        match["ignore_case"] = True
    return {
        "single_predicate": {
            "input": {"name": name, "typed_config": {"@type": _HEADER_INPUT, "header_name": name}},
            "value_match": match,
        }
    }


def _any(predicates: list[Json]) -> Json:
    return predicates[0] if len(predicates) == 1 else {"or_matcher": {"predicate": predicates}}


_GROUP_ELEMENT = re.compile(r'^\(\?s:\.\*\)\[\\\[,\]"\(\?:group:\)\?(.*)"\[,\\\]\]\(\?s:\.\*\)$')


def _without_regexes(node: Json) -> Json:
    """The same decisions without RE2 where the compiler's regex is a list of alternatives:
    route ids as exact matches; emails as exact matches ignoring ASCII case (what `caseless`
    spells out); a group as `contains` of its quoted element after '[' or ',' (a quote
    inside a JSON string is escaped, so '," or '[" starts an element and the closing quote
    ends it), ignoring ASCII case."""
    predicate = node.get("single_predicate")
    if not isinstance(predicate, dict) or "value_match" not in predicate:
        return node
    regex = predicate["value_match"].get("safe_regex", {}).get("regex")
    header = predicate["input"]["typed_config"].get("header_name", "")
    if not isinstance(regex, str):
        return node
    if header.endswith("-route") and "route:" in regex:
        return _any([_exact(header, v) for v in _alternatives(regex)])
    if header.endswith("-email") and "@" in regex and "(?s:" not in regex:
        return _any([_exact(header, v, ignore_case=True) for v in _alternatives(regex)])
    element = _GROUP_ELEMENT.match(regex)
    if header.endswith("-list-groups") and element:
        return _any(
            [
                _exact(header, f'{lead}"{prefix}{group}"', ignore_case=True, contains=True)
                for group in _alternatives(element.group(1))
                for lead in "[,"
                for prefix in ("", "group:")
            ]
        )
    return node


_MUTATION = "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"


# (name, transform): every filter, then the chain cut back from the policy end.
CPU_CUTS: tuple[tuple[str, Transform], ...] = (
    ("the whole compiled chain", lambda doc: doc),
    ("without opsgate.policy", _keep_first(5)),
    ("without opsgate.route_to_header either", _keep_first(4)),
    ("without opsgate.checks either", _keep_first(3)),
    ("without opsgate.claims_to_headers either", _keep_first(2)),
    ("jwt_authn alone (grpc_field_extraction out too)", _keep_first(1)),
)
CPU_VARIANTS: tuple[tuple[str, Transform], ...] = (
    (
        "the whole chain, member and route regexes as exact/contains matches",
        _mapped(_without_regexes),
    ),
)
MEMORY_VARIANTS: tuple[tuple[str, Transform], ...] = (
    ("as compiled", lambda doc: doc),
    (
        "member and route regexes as exact/contains matches (same decisions)",
        _mapped(_without_regexes),
    ),
    ("every regex as an exact string (attribution only)", _mapped(_regex_as_exact)),
    ("CEL predicates as a header match", _mapped(_cel_as_header)),
    ("without opsgate.policy", _without("opsgate.policy")),
)


def _variant_dir(bench: Bench, source: Path, label: str, index: int, transform: Transform) -> Path:
    directory = bench.dir / "compiled-probes" / f"{label}-{index}"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    shutil.copy(source / CLUSTERS_FILE, directory / CLUSTERS_FILE)
    doc = transform(json.loads((source / LISTENERS_FILE).read_text()))
    (directory / LISTENERS_FILE).write_text(json.dumps(doc, separators=(",", ":")))
    return directory


def _start(bench: Bench, started: Started | None, directory: Path, name: str) -> EnvoyProcess:
    layout = CompiledLayout(directory=directory, listen="127.0.0.1:0", admin="127.0.0.1:0")
    envoy = EnvoyProcess(bootstrap(layout), name=name, concurrency=1, workdir=directory)
    envoy.start(180)
    bench.services.append(envoy.process)
    if started is not None:
        started.envoys.append(envoy)
    return envoy


def cpu_probe(bench: Bench, source: Path, base: EnvoyRow, token: str, label: str) -> dict[str, Any]:
    """CPU per call of each cut and variant of the config in `source`, beside `base`."""

    envoys: list[EnvoyProcess] = []
    rows: list[tuple[str, EnvoyProcess | None]] = [("Envoy jwt_authn + rbac (the base)", None)]
    try:
        for index, (name, transform) in enumerate((*CPU_CUTS, *CPU_VARIANTS)):
            directory = _variant_dir(bench, source, f"cpu-{label}", index, transform)
            try:
                envoy = _start(bench, None, directory, f"probe-cpu-{index}")
            except Exception as exc:  # Envoy refused the variant: say so, measure the rest
                bench.note(f"compiled probe {name!r} left out: {type(exc).__name__}: {exc}")
                continue
            envoys.append(envoy)
            answer = code_of(envoy.address(GRPC_LISTENER), bench.request, token)
            if answer != "OK":  # a variant that changed the decision measures something else
                bench.note(f"compiled probe {name!r} left out: the allowed call answers {answer}")
                continue
            rows.append((name, envoy))
        runs: dict[str, list[float]] = {name: [] for name, _ in rows}
        for rep in range(bench.mode.repeats + 2):  # small differences: two more repeats
            shift = rep % len(rows)
            for name, probed in rows[shift:] + rows[:shift]:
                address = base.address if probed is None else probed.address(GRPC_LISTENER)
                front = base.front if probed is None else probed.pid
                m = bench.h2load(
                    address,
                    64,
                    bench.mode.h2load_seconds,
                    base.token if probed is None else token,
                    front,
                )
                runs[name].append(m.cpu_us)
                print(
                    f"  probe rep {rep + 1} {name:<62} cpu {m.cpu_us:6.0f} µs/call", file=sys.stderr
                )
        return {
            "config": label,
            "cuts": [name for name, _ in CPU_CUTS],
            "variants": [name for name, _ in CPU_VARIANTS],
            "cpu_us": {name: figure(values) for name, values in runs.items()},
        }
    finally:
        for envoy in envoys:
            bench.stop(envoy.process)


def memory_probe(bench: Bench, source: Path, label: str) -> dict[str, Any]:
    """Load time, RSS and tcmalloc's figures of each memory variant of `source`."""
    found: dict[str, Any] = {}
    for index, (name, transform) in enumerate(MEMORY_VARIANTS):
        directory = _variant_dir(bench, source, f"memory-{label}", index, transform)
        began = time.monotonic()
        envoy = _start(bench, None, directory, f"probe-memory-{index}")
        live = time.monotonic() - began
        try:
            memory = json.loads(envoy.admin_get("/memory", timeout=30))
            shape = composition(directory / LISTENERS_FILE)
            found[name] = {
                "lds_bytes": shape["lds_bytes"],
                "regexes": shape["regexes"],
                "cel": shape["cel"],
                "predicates": shape["predicates"],
                "live_s": live,
                "rss_bytes": rss_bytes(envoy.pid),
                "peak_rss_bytes": peak_rss_bytes(envoy.pid),
                "allocated_bytes": int(memory.get("allocated", 0)),
                "heap_bytes": int(memory.get("heap_size", 0)),
            }
        finally:
            bench.stop(envoy.process)
        print(f"  probe memory {name:<40} {found[name]}", file=sys.stderr)
    return {"config": label, "variants": found}


def run(
    bench: Bench,
    started: Started,
    configs: list[Any],
    rows: list[EnvoyRow],
    missed: list[str],
    tokens: dict[str, str],
) -> dict[str, Any]:
    """The probes the missed targets call for."""
    found: dict[str, Any] = {}
    spread = sorted((c for c in configs if c.shape == "spread"), key=lambda c: c.size)
    base = next((row for row in rows if row.key == "envoy-jwt-rbac"), None)
    if any(key.startswith("compiled_cpu") for key in missed) and spread and base is not None:
        smallest = spread[0]
        try:
            found["cpu"] = cpu_probe(
                bench, smallest.lds.parent, base, tokens["user_allowed"], smallest.key
            )
        except Exception as exc:
            found["cpu"] = {"error": f"{type(exc).__name__}: {exc}"}
    if {"compiled_rss", "compiled_load"} & set(missed) and spread:
        largest = spread[-1]
        try:
            found["memory"] = memory_probe(bench, largest.lds.parent, largest.key)
        except Exception as exc:
            found["memory"] = {"error": f"{type(exc).__name__}: {exc}"}
    return found
