"""Issue 15's condition classes in process: RE2's syntax and case folding, one CEL semantics."""

from __future__ import annotations

import operator
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import re2
import yaml

from gateway.policy import AccessRequest, evaluate
from gateway.policy.model import Policy
from hardening.oracle import caller_of
from hardening.policy_attacks import ClassResult, Judge, refusal_violations
from hardening.world import Violation

NOW = datetime(2026, 6, 1, tzinfo=UTC)
GET = "contactcenterinsights.operations.get"
ALICE = caller_of({"email": "alice@acme.example", "email_verified": True})
_QUIET = re2.Options()
_QUIET.log_errors = False  # RE2 logs every pattern it refuses; the report says it all


def re2_compiles(pattern: str) -> bool:
    try:
        re2.compile(pattern, _QUIET)
    except re2.error:
        return False
    return True


def re2_search(pattern: str, text: str) -> bool:
    return re2.compile(pattern, _QUIET).search(text) is not None


def cel_string(text: str) -> str:
    """A CEL double-quoted string literal holding exactly `text`."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def condition_entries(
    rules: list[tuple[str, str, str, str]],
) -> dict[str, list[dict[str, Any]]]:
    """allow/deny entries where alice views each projects/PROJECT, and for each (project,
    where, title, expression) the condition sits on that binding or on a deny rule for
    everyone's get."""
    allow: list[dict[str, Any]] = []
    deny: list[dict[str, Any]] = []
    for project, where, title, expression in rules:
        binding: dict[str, Any] = {
            "role": "roles/contactcenterinsights.viewer",
            "members": ["user:alice@acme.example"],
        }
        condition = {"title": title, "expression": expression}
        if where == "binding":
            binding["condition"] = condition
        else:
            rule = {
                "deniedPrincipals": ["principalSet://goog/public:all"],
                "deniedPermissions": [GET],
                "denialCondition": condition,
            }
            deny.append({"resource": f"projects/{project}", "rules": [rule]})
        allow.append({"resource": f"projects/{project}", "bindings": [binding]})
    return {"allow": allow, "deny": deny}


def condition_policy(rules: list[tuple[str, str, str]]) -> str:
    """condition_entries as a YAML policy file, each condition titled after its project."""
    entries = condition_entries(
        [
            (project, where, f"generated for {project}", expression)
            for project, where, expression in rules
        ]
    )
    data: dict[str, Any] = {
        "allow": entries["allow"],
        **({"deny": entries["deny"]} if entries["deny"] else {}),
    }
    return str(yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=4096))


def allowed(policy: Policy, name: str) -> bool:
    return evaluate(policy, ALICE, AccessRequest(GET, name), NOW).allowed


def _matches_expression(rng: random.Random, pattern: str) -> str:
    call = f"resource.name.matches({cel_string(pattern)})"
    return rng.choice(
        [
            call,
            f'{call} && request.time < timestamp("2099-01-01T00:00:00Z")',
            f'resource.name.startsWith("projects/") && {call}',
            f'resource.name.endsWith("/never") || {call}',
        ]
    )


# -- class 1, in process: syntax RE2 refuses, and RE2's Unicode case folding ---------------------

# RE2 refuses all of these but `{,n}`, which it reads as literal text where Python's re reads a
# repetition; the brief counts accepting any of them (the run re-checks each against RE2).
REFUSED_SYNTAX = [
    r"\Z", r"\N{DIGIT ONE}", "(?#note)", "(?x)", "a{,3}", "[0-9]{,2}", "(?=x)", "(?!x)",
    "(?<=x)", "(?<!x)", r"(x)\1", "(?P<n>x)(?P=n)", "(?>x)", "x++", "x*+", "x?+", "(?u)",
    "(?a)", r"\G", r"\e", "x{2,1}", "x{1001}",
]  # fmt: skip
PREFIXES = ["", "^", "^projects/", "operations/", "[a-z]+-", "(?i)", "[0-9]*"]
SUFFIXES = ["", "$", "[0-9]*", ".*", "/", r"\z"]


def attack_regex_syntax(judge: Judge, cases: int, seed: int) -> ClassResult:
    """Syntax RE2 refuses, in a binding's or a deny rule's matches(): must not load, nor pass
    --strict; the same pattern with the construct replaced by `x` must do both."""
    started = time.monotonic()
    rng = random.Random(seed)
    result = ClassResult(
        1,
        "Condition regexes must be RE2",
        f"matches() patterns with syntax RE2 refuses ({len(REFUSED_SYNTAX)} constructs: \\Z, "
        "\\N{...}, (?#...), (?x), {,n}, lookarounds, backreferences, possessive and atomic "
        "groups, ...) in bindings and deny rules",
    )
    controls_refused = 0
    for index in range(cases):
        construct = (
            REFUSED_SYNTAX[index % len(REFUSED_SYNTAX)]
            if index < 2 * len(REFUSED_SYNTAX)
            else rng.choice(REFUSED_SYNTAX)
        )
        prefix, suffix = rng.choice(PREFIXES), rng.choice(SUFFIXES)
        where = rng.choice(["binding", "deny"])
        pattern = prefix + construct + suffix
        if re2_compiles(pattern) and "{," not in construct:
            result.notes.append(f"RE2 accepts {pattern!r}: not counted")
            continue
        result.cases += 1
        result.families[f"{construct} ({where})"] += 1
        expression = _matches_expression(rng, pattern)
        path, verdict = judge.judge(condition_policy([("rx", where, expression)]))
        result.violations += refusal_violations(
            "policy", f"{pattern!r} in a {where}", path, verdict
        )
        control = _matches_expression(rng, prefix + "x" + suffix)
        _, fine = judge.judge(condition_policy([("rx", where, control)]))
        if not (fine.loaded and fine.strict):
            controls_refused += 1
            result.generator_errors.append(f"control {control!r}: {fine.problem[-160:]}")
    result.figures["RE2-valid twins refused"] = controls_refused
    result.seconds = time.monotonic() - started
    return result


# Words with letters whose case orbit holds more than ASCII, and what a name may spell them with:
# letters in the same simple case-folding orbit (RE2's (?i) matches them) and look-alikes that
# are not (it must not); which is which is RE2's to say, the run asks it for every name.
FOLD_WORDS = ["kelvin", "kiosk", "mask", "desk", "sky", "kiss", "straße", "école", "élan",
              "ångström", "oslo", "μsec", "ohm", "kafka", "size"]  # fmt: skip
FOLDS = {
    "k": ["\u212a"],  # Kelvin sign
    "s": ["\u017f"],  # long s
    "å": ["Å", "\u212b"],  # Angstrom sign
    "é": ["É"],
    "ö": ["Ö"],
    "ß": ["\u1e9e"],  # capital sharp s
    "μ": ["\u039c", "\u00b5"],  # capital mu, micro sign
    "h": ["H"],
    "o": ["O"],
    "m": ["M"],
    "e": ["E"],
    "i": ["I"],
}
LOOKALIKES = {
    "k": ["\uff4b", "\u0138", "\u03ba"],  # fullwidth k, kra, kappa
    "s": ["\uff53", "\u0455"],  # fullwidth s, Cyrillic dze
    "i": ["\u0130", "\u0131", "\u0456"],  # dotted capital I, dotless i, Cyrillic i
    "e": ["\u0435", "\uff45"],  # Cyrillic e, fullwidth e
    "é": ["e", "E"],
    "ß": ["ss", "SS"],
    "o": ["\u03bf", "\u043e"],  # Greek omicron, Cyrillic o
}


def fold_name(rng: random.Random, word: str) -> tuple[str, str]:
    """An operation id spelling `word` with case variants and look-alikes, and the family."""
    out, used = [], []
    for char in word:
        roll = rng.random()
        table = FOLDS if roll < 0.45 else LOOKALIKES if roll < 0.65 else None
        if table and char in table:
            pick = rng.choice(table[char])
            out.append(pick)
            used.append(f"U+{ord(pick[0]):04X}" if not pick.isascii() else "ascii")
        else:
            out.append(char.upper() if rng.random() < 0.2 else char)
    stem = rng.choice(["", "op-", "x", "7"]) + "".join(out) + rng.choice(["", "-1", "z"])
    return stem, "+".join(sorted(set(used))) or "as written"


def attack_folding(judge: Judge, names: int, seed: int) -> ClassResult:
    """`(?i)` patterns in deny rules and bindings, names spelled with long s, Kelvin sign,
    accented capitals: the policy's decision must be RE2's (the re2 module's) for each name."""
    started = time.monotonic()
    rng = random.Random(seed)
    result = ClassResult(
        1,
        "Condition regexes must be RE2",
        "(?i) patterns in deny rules and bindings, decided for names spelled with Unicode "
        "case variants and look-alikes (Kelvin sign, long s, accented capitals, ẞ, µ), "
        "against the re2 module",
    )
    rules = []
    for j in range(8):
        word = rng.choice(FOLD_WORDS)
        pattern = "(?i)" + rng.choice(["", "operations/", "/[a-z0-9-]*"]) + word
        rules.append((f"fold-{j}", rng.choice(["deny", "deny", "binding"]), pattern, word))
    text = condition_policy(
        [(p, w, f"resource.name.matches({cel_string(x)})") for p, w, x, _ in rules]
    )
    _, verdict = judge.judge(text)
    if verdict.policy is None:
        result.generator_errors.append(f"fold policy refused: {verdict.problem[-200:]}")
        return result
    unlike = 0
    for _ in range(names):
        project, where, pattern, word = rng.choice(rules)
        stem, family = fold_name(rng, word)
        name = f"projects/{project}/locations/us-central1/operations/{stem}"
        matched = re2_search(pattern, name)
        want = matched if where == "binding" else not matched
        result.cases += 1
        result.families[f"{where}: {family}"] += 1
        if allowed(verdict.policy, name) != want:
            unlike += 1
            result.violations.append(
                Violation(
                    "unlike_re2",
                    "policy",
                    f"{pattern!r} in a {where} on {stem!a}: RE2 "
                    f"{'matches' if matched else 'does not match'}, the policy "
                    f"{'allows' if not want else 'denies'}",
                )
            )
    result.figures["(?i) decisions unlike RE2"] = unlike
    result.seconds = time.monotonic() - started
    return result


# -- class 2: one semantics per expression -------------------------------------------------------

Clause = tuple[str, bool, str]  # (CEL text, its value for the generated names, family)


def outside_clause(rng: random.Random) -> Clause:
    """An expression outside the natively evaluated IAM subset, with its value."""
    a, b, c = rng.randint(0, 9), rng.randint(1, 9), rng.randint(0, 9)
    made: list[Callable[[], Clause]] = [
        lambda: (f"[{a}, {b}].all(x, x > {c})", a > c and b > c, "comprehension all"),
        lambda: (f"[{a}, {b}].exists(x, x == {c})", c in (a, b), "comprehension exists"),
        lambda: (f"[{a}, {b}].exists_one(x, x < {c})", (a < c) != (b < c), "exists_one"),
        lambda: (f"[{a}, {b}].map(x, x * 2).size() == 2", True, "comprehension map"),
        lambda: (f"[{a}, {b}].filter(x, x > {c}).size() >= 0", True, "comprehension filter"),
        lambda: (f'{{"k": {a}}}["k"] == {a}', True, "map literal"),
        lambda: (f'"k" in {{"k": {b}}}', True, "map literal in"),
        lambda: (f"dyn({a}) == {a}", True, "dyn()"),
        lambda: ('dyn(resource.name).startsWith("projects/")', True, "dyn() of an attribute"),
        lambda: (f"{a} + {b} == {a + b}", True, "int arithmetic"),
        lambda: (f"{a} * {b} > {c}", a * b > c, "int arithmetic"),
        lambda: (f"{a} % {b} == {a % b}", True, "int arithmetic"),
        lambda: (f"{a} - {b} < {c}", a - b < c, "int arithmetic"),
        lambda: (f'has({{"a": {a}}}.a)', True, "has()"),
    ]
    return rng.choice(made)()


NATIVE = [
    ('resource.name.startsWith("projects/")', True),
    ('request.time < timestamp("2099-01-01T00:00:00Z")', True),
    ('resource.name.endsWith("/never")', False),
]
WIDE = ["a", "é", "ß", "日", "語", "😀", "\u212a", "-"]  # 1 to 4 bytes in UTF-8
COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
           "==": operator.eq, "!=": operator.ne}  # fmt: skip


def _mixed(rng: random.Random, outside: Clause) -> tuple[str, str]:
    native, _ = rng.choice(NATIVE)
    text = outside[0]
    return rng.choice(
        [
            (text, "alone"),
            (f"{native} && {text}", "&&"),
            (f"{text} || {native}", "||"),
            (f"!({text})", "!"),
            (f"({native}) && ({text}) && {native}", "&& &&"),
        ]
    )


def _size_case(rng: random.Random) -> tuple[str, list[str], Callable[[str], bool], str]:
    """A size() condition whose bound sits between a multi-byte name's code points and bytes."""
    stem = "".join(rng.choice(WIDE) for _ in range(rng.randint(2, 12)))
    first = f"projects/sz/locations/l/operations/{stem}"
    bound = rng.randint(len(first), len(first.encode()))
    op = rng.choice(sorted(COMPARE))
    size = rng.choice(["size(resource.name)", "resource.name.size()"])
    text, family = f"{size} {op} {bound}", "size() alone"
    extra = True
    if rng.random() < 0.3:
        text, family = f'{text} && resource.name.startsWith("projects/sz")', "size() && native"
    elif rng.random() < 0.4:
        clause, value, _ = outside_clause(rng)
        text, family, extra = f"{text} && {clause}", "size() && outside the subset", value
    names = [first] + [
        f"projects/sz/locations/l/operations/{stem[: rng.randint(1, len(stem))]}{rng.choice(WIDE)}"
        for _ in range(2)
    ]

    def truth(name: str) -> bool:  # CEL: size() of a string counts code points
        return COMPARE[op](len(name), bound) and extra

    return text, names, truth, family


def attack_semantics(judge: Judge, cases: int, seed: int) -> ClassResult:
    """Class 2: conditions outside the native subset must be refused at load; an accepted
    condition with size(resource.name) must count code points, as CEL does."""
    started = time.monotonic()
    rng = random.Random(seed)
    result = ClassResult(
        2,
        "One semantics per expression",
        "conditions outside the native IAM subset (comprehensions, map literals, dyn(), int "
        "arithmetic, has()) alone and mixed with native clauses; size(resource.name) bounds "
        "between a multi-byte name's code points and bytes",
    )
    decisions = wrong = 0
    for index in range(cases):
        result.cases += 1
        if index % 2 == 0:
            outside = outside_clause(rng)
            expression, shape = _mixed(rng, outside)
            where = rng.choice(["binding", "deny"])
            result.families[f"{outside[2]} ({shape}, {where})"] += 1
            path, verdict = judge.judge(condition_policy([("sem", where, expression)]))
            result.violations += refusal_violations("policy", expression, path, verdict)
            continue
        expression, names, truth, family = _size_case(rng)
        result.families[family] += 1
        path, verdict = judge.judge(condition_policy([("sz", "binding", expression)]))
        if verdict.policy is None:
            if family != "size() && outside the subset":
                result.generator_errors.append(f"{expression!r}: {verdict.problem[-160:]}")
            continue
        if family == "size() && outside the subset":
            result.violations += refusal_violations("policy", expression, path, verdict)
        for name in names:
            decisions += 1
            if allowed(verdict.policy, name) != truth(name):
                wrong += 1
                result.violations.append(
                    Violation(
                        "size_not_code_points",
                        "policy",
                        f"{expression!r} on a name of {len(name)} code points, "
                        f"{len(name.encode())} bytes: CEL says {truth(name)}",
                    )
                )
    result.figures["size() decisions checked"] = decisions
    result.figures["size() decisions unlike CEL"] = wrong
    result.seconds = time.monotonic() - started
    return result
