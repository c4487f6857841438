"""Issue 15's policy-file classes (near-miss member syntax, BOMs), judged by loader and --strict."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError
from gateway.policy.loader import PolicyError, load_policy
from gateway.policy.model import Policy
from gateway.policytools.check import check_file
from gateway.profile import load_profile
from hardening.env import Workdir
from hardening.world import Violation

BOM = "\ufeff"


@dataclass
class ClassResult:
    """One class of issue 15: what was generated, how much of it, and what went wrong."""

    number: int
    title: str
    generated: str
    cases: int = 0
    calls: int = 0
    families: Counter[str] = field(default_factory=Counter)
    violations: list[Violation] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    generator_errors: list[str] = field(default_factory=list)  # controls the gateway refused
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def merge(self, other: ClassResult) -> ClassResult:
        """The same class, generated in two places (in process and against a process)."""
        self.generated = f"{self.generated}; {other.generated}"
        self.cases += other.cases
        self.calls += other.calls
        self.families.update(other.families)
        self.violations += other.violations
        self.figures.update(other.figures)
        self.generator_errors += other.generator_errors
        self.notes += other.notes
        self.seconds += other.seconds
        return self

    def as_dict(self) -> dict[str, Any]:
        seen: set[str] = set()
        examples = []
        for v in self.violations:
            if v.detail[:60] not in seen:
                seen.add(v.detail[:60])
                examples.append(v.as_dict())
        return {
            "class": self.number,
            "title": self.title,
            "generated": self.generated,
            "cases": self.cases,
            "calls": self.calls,
            "families": dict(self.families.most_common()),
            "violations": len(self.violations),
            "violation_kinds": dict(Counter(v.kind for v in self.violations)),
            "violation_examples": examples[:8],
            "figures": self.figures,
            "generator_errors": self.generator_errors[:8],
            "notes": self.notes,
            "seconds": round(self.seconds, 2),
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the gateway's loader and `opsgate policy check --strict` made of one file."""

    loaded: bool
    strict: bool  # --strict passed: no error and no warning
    problem: str = ""
    line: int | None = None
    policy: Policy | None = None
    crash: str = ""  # anything but a PolicyError out of either

    @property
    def accepted(self) -> bool:
        return self.loaded or self.strict


class Judge:
    """Writes generated policy files and asks the gateway's own tools about each."""

    def __init__(self, workdir: Workdir) -> None:
        self.workdir = workdir
        self.profile = load_profile()
        self.files = 0

    def write(self, data: str | bytes, suffix: str = ".yaml") -> Path:
        self.files += 1
        path = self.workdir.path / f"case-{self.files}{suffix}"
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_bytes(data.encode("utf-8"))
        return path

    def verdict(self, path: Path) -> Verdict:
        policy, problem, line, crash = None, "", None, ""
        try:
            policy = load_policy(path, known_permissions=self.profile.permissions)
        except PolicyError as exc:
            problem, line = str(exc.problems[0]), exc.problems[0].line
        except ConfigError as exc:
            problem, line = str(exc), exc.line
        except Exception as exc:  # the loader must only ever refuse with a PolicyError
            crash = f"load_policy raised {type(exc).__name__}: {exc}"
        try:
            report = check_file(path, self.profile)
            strict = not (report.errors or report.warnings or report.unreadable)
        except Exception as exc:
            strict, crash = False, crash or f"policy check raised {type(exc).__name__}: {exc}"
        return Verdict(policy is not None, strict, problem, line, policy, crash)

    def judge(self, data: str | bytes, suffix: str = ".yaml") -> tuple[Path, Verdict]:
        path = self.write(data, suffix)
        return path, self.verdict(path)


def refusal_violations(door: str, family: str, path: Path, verdict: Verdict) -> list[Violation]:
    """A file that had to be refused: a violation if the loader or --strict took it, or crashed."""
    if verdict.crash:
        return [Violation("crash", door, f"{family}: {path.name}: {verdict.crash}")]
    took = [w for w, ok in (("loaded", verdict.loaded), ("passed --strict", verdict.strict)) if ok]
    if took:
        return [Violation("accepted", door, f"{family}: {path.name} {' and '.join(took)}")]
    return []


# -- class 3: members and other validated strings, one character off ----------------------------

# Every string the loader validates, as written in BASE, and where it stands.
SLOTS = {
    "resource": "projects/near-miss",
    "deny.resource": "projects/near-miss/locations/us-central1",
    "role": "roles/contactcenterinsights.viewer",
    "member.user": "user:kim@near.example",
    "member.group": "group:team@near.example",
    "member.domain": "domain:near.example",
    "member.serviceAccount": "serviceAccount:ci@near-prod.iam.gserviceaccount.com",
    "member.subject": "principal://goog/subject/kim@near.example",
    "member.groupSet": "principalSet://goog/group/team@near.example",
    "deny.principal": "principalSet://goog/public:all",
    "deny.exception": "user:lead@near.example",
    "deny.permission": "contactcenterinsights.googleapis.com/operations.cancel",
    "role.name": "projects/near-miss/roles/nearLead",
    "role.permission": "contactcenterinsights.operations.get",
    "group.key": "team@near.example",
    "group.member": "user:dev@near.example",
}
# {slot} marks a list item or value; {slot:key} a mapping key. Passes --strict as it stands.
BASE = """\
allow:
  - resource: {resource}
    bindings:
      - role: {role}
        members:
          - {member.user}
          - {member.group}
          - {member.domain}
          - {member.serviceAccount}
      - role: projects/near-miss/roles/nearLead
        members:
          - {member.subject}
          - {member.groupSet}
deny:
  - resource: {deny.resource}
    rules:
      - deniedPrincipals:
          - {deny.principal}
        exceptionPrincipals:
          - {deny.exception}
        deniedPermissions:
          - {deny.permission}
roles:
  - name: {role.name}
    title: Near lead
    includedPermissions:
      - {role.permission}
      - contactcenterinsights.operations.cancel
groups:
  {group.key:key}:
    - {group.member}
"""
# Files with one top-level key (and flow style) are where libyaml drops a second BOM and reads
# the rest as if it were not there; with more keys it fails on the next one.
ONE_KEY = """\
allow:
  - resource: projects/near-miss
    bindings:
      - role: roles/contactcenterinsights.viewer
        members:
          - user:kim@near.example
          - group:team@near.example
"""
FLOW = (
    "{allow: [{resource: projects/near-miss, bindings: [{role: roles/contactcenterinsights.viewer,"
    " members: ['user:kim@near.example']}]}]}\n"
)
# Characters no validated string may hold at either end (or inside, after the kind's colon).
STRAYS = [
    "\n", "\r", "\r\n", "\n\n", " ", "\t", "\x0b", "\x0c", "\x85", "\u00a0", "\u2028", "\u3000",
]  # fmt: skip


def _render(values: dict[str, str], spelled: dict[str, str]) -> str:
    text = BASE
    for slot, value in values.items():
        shown = spelled.get(slot, value)
        text = text.replace("{" + slot + ":key}", shown).replace("{" + slot + "}", shown)
    return text


BREAKS = "\r\n\x0b\x0c\x85\u2028\u2029"  # line breaks to YAML, or not allowed raw
KEPT_SPACES = "\u00a0\u3000"  # plain scalars keep these at their ends (YAML trims only " \t")


def _spellings(value: str, key: bool) -> list[tuple[str, str]]:
    """The ways YAML can hold exactly `value`: (name, text); a block scalar is its indicator,
    NUL, then its one line of content."""
    ways = [("double-quoted", json.dumps(value))]
    broken = any(c in BREAKS for c in value)
    if not broken and "'" not in value:
        ways.append(("single-quoted", f"'{value}'"))
    inner = value.strip(KEPT_SPACES)
    if not broken and inner != value and inner[:1] not in " \t" and inner[-1:] not in " \t":
        ways.append(("plain", value))
    body = value.rstrip("\n")
    blockable = body and body == body.strip(" \t") and not any(c in BREAKS for c in body)
    if not key and blockable and value == body + "\n":
        ways += [("block |", "|\0" + body), ("folded >", ">\0" + body)]
    elif not key and blockable and value == body + "\n\n":
        ways.append(("block |+", "|+\0" + body))
    return ways


def _place(text: str, slot: str, spelled: str) -> str:
    """Put a spelling in the slot; a block scalar's content goes on the following line(s)."""
    if "\0" not in spelled:
        return text.replace("{" + slot + ":key}", spelled).replace("{" + slot + "}", spelled)
    indicator, body = spelled.split("\0", 1)
    for line in text.splitlines(keepends=True):
        if "{" + slot + "}" in line:
            indent = len(line) - len(line.lstrip(" "))
            block = line.replace("{" + slot + "}", indicator)
            block += " " * (indent + 4) + body + "\n"
            if indicator == "|+":  # kept: each blank line is one more trailing newline
                block += "\n"
            return text.replace(line, block, 1)
    raise AssertionError(slot)


def near_miss(rng: random.Random, slot: str | None = None) -> tuple[str, str, str]:
    """(slot, family, malformed value): a stray character at an end, or inside a member; most
    often the trailing newline a YAML block scalar leaves, which a `$`-anchored check accepts."""
    slot = slot or rng.choice(sorted(SLOTS))
    value = SLOTS[slot]
    stray = "\n" if rng.random() < 0.4 else rng.choice(STRAYS)
    where = rng.choice(["end", "end", "start", "inside"])
    if where == "end":
        bad = value + stray
    elif where == "start":
        bad = stray + value
    else:
        cut = value.find(":") + 1 if ":" in value else rng.randrange(1, len(value))
        bad = value[:cut] + stray + value[cut:]
    return slot, f"{where} {stray!r}", bad


def attack_near_miss(judge: Judge, cases: int, seed: int) -> ClassResult:
    """Class 3: a malformed member (or resource, role, permission, group) must be a load error
    naming file:line; the same file with the string intact must load and pass --strict."""
    started = time.monotonic()
    rng = random.Random(seed)
    result = ClassResult(
        3,
        "Syntax checks are full matches",
        "policy files with one member, principal, resource, role, permission or group one "
        "whitespace or line-break character off (trailing newline from YAML block scalars, "
        "CR, NBSP, ...), in YAML and JSON",
    )
    clean = _render(SLOTS, {})
    path, control = judge.judge(clean)
    if not (control.loaded and control.strict):
        result.generator_errors.append(f"the base file does not pass --strict: {control.problem}")
    named = 0
    sweep = sorted(SLOTS)  # every slot once with a trailing newline, then random draws
    for index in range(cases):
        if index < len(sweep):
            slot, family, bad = sweep[index], "end '\\n'", SLOTS[sweep[index]] + "\n"
        else:
            slot, family, bad = near_miss(rng)
        if rng.random() < 0.2:
            data, suffix, spelling = _as_json(clean, slot, bad), ".json", "json"
        else:
            spelling, spelled = rng.choice(_spellings(bad, slot.endswith(".key")))
            text = _render({k: v for k, v in SLOTS.items() if k != slot}, {})
            data, suffix = _place(text, slot, spelled), ".yaml"
        result.cases += 1
        result.families[f"{slot} ({spelling})"] += 1
        path, verdict = judge.judge(data, suffix)
        found = refusal_violations("policy", f"{slot} {family} {spelling}", path, verdict)
        if not verdict.loaded and not verdict.crash:
            if verdict.line is None or f"{path}:{verdict.line}" not in verdict.problem:
                found.append(
                    Violation(
                        "no_line",
                        "policy",
                        f"{slot} {family}: refused without file:line: {verdict.problem[:160]}",
                    )
                )
            else:
                named += 1
        result.violations += found
    result.figures["refusals naming file:line"] = named
    result.seconds = time.monotonic() - started
    return result


def _as_json(clean_yaml: str, slot: str, bad: str) -> str:
    """The base policy as a JSON file, with `bad` in place of the slot's value."""
    import yaml

    data = yaml.safe_load(clean_yaml)

    def swap(node: Any) -> Any:
        if isinstance(node, dict):
            return {(bad if k == SLOTS[slot] else k): swap(v) for k, v in node.items()}
        if isinstance(node, list):
            return [swap(v) for v in node]
        return bad if node == SLOTS[slot] else node

    if slot == "role.name":  # the binding names it too: change only the definition
        data["roles"][0]["name"] = bad
    else:
        data = swap(data)
    return json.dumps(data, indent=2)


# -- class 7: byte-order marks anywhere but once at the very start -------------------------------


def _bom_places(text: str) -> dict[str, Callable[[random.Random], str]]:
    lines = text.splitlines(keepends=True)

    def at_line_start(rng: random.Random) -> str:
        i = rng.randrange(len(lines))
        return "".join([*lines[:i], BOM + lines[i], *lines[i + 1 :]])

    def inside_token(rng: random.Random, keys: bool) -> str:
        i = rng.randrange(len(lines))
        line = lines[i]
        stripped = line.lstrip(" -")
        start = len(line) - len(stripped)
        colon = stripped.find(":")
        end = start + (colon if keys and colon > 0 else len(stripped.rstrip("\n")))
        at = rng.randrange(start, max(start + 1, end))
        return "".join([*lines[:i], line[:at] + BOM + line[at:], *lines[i + 1 :]])

    def random_offsets(rng: random.Random) -> str:
        out = text
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(1, len(out))
            out = out[:at] + BOM + out[at:]
        return out

    return {
        "doubled at the start": lambda rng: BOM * rng.randint(2, 3) + text,
        "after ---": lambda rng: "---\n" + BOM + text,
        "at the start and after ---": lambda rng: BOM + "---\n" + BOM + text,
        "after --- on its line": lambda rng: "---" + BOM + "\n" + text,
        "at a line's start": at_line_start,
        "inside a key": lambda rng: inside_token(rng, True),
        "inside a value": lambda rng: inside_token(rng, False),
        "in a comment": lambda rng: text + "# reviewed" + BOM + "\n",
        "at the end": lambda rng: text + BOM,
        "at random offsets": random_offsets,
        "once at the start (allowed)": lambda rng: BOM + text,
        "none (allowed)": lambda rng: text,
    }


def attack_boms(judge: Judge, cases: int, seed: int) -> ClassResult:
    """Class 7: a file with U+FEFF anywhere but once at its very start must be refused."""
    started = time.monotonic()
    rng = random.Random(seed)
    result = ClassResult(
        7,
        "One reading of a policy file",
        "policy files (YAML and JSON) with U+FEFF after `---`, doubled at the start, inside keys "
        "and values, at line starts, in comments, at random offsets; plus single-BOM controls",
    )
    full = _render(SLOTS, {})
    bases = {
        "full": full,
        "one key": ONE_KEY,
        "flow": FLOW,
        "json": _as_json(full, "resource", SLOTS["resource"]),
    }
    refused_valid = 0
    for _ in range(cases):
        base = rng.choice(["full", "one key", "one key", "flow", "json"])
        places = _bom_places(bases[base])
        if base in ("json", "flow"):
            places = {k: v for k, v in places.items() if "line's start" not in k}
        family = rng.choice(sorted(places))
        data = places[family](rng)
        allowed = data.count(BOM) == 0 or (data.count(BOM) == 1 and data.startswith(BOM))
        result.cases += 1
        result.families[f"{family} ({base})"] += 1
        path, verdict = judge.judge(data, ".json" if base == "json" else ".yaml")
        if allowed:
            if not (verdict.loaded and verdict.strict) and family.startswith("none"):
                result.generator_errors.append(f"{base}: {verdict.problem[-160:]}")
            elif not (verdict.loaded and verdict.strict):
                refused_valid += 1
                if len(result.notes) < 3:
                    result.notes.append(f"refused ({family}, {base}): {verdict.problem[-160:]}")
            continue
        result.violations += refusal_violations("policy", f"BOM {family}", path, verdict)
    result.figures["files with at most one leading BOM refused"] = refused_valid
    result.seconds = time.monotonic() - started
    return result
