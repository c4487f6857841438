"""Native conditions against CEL's meaning and the CEL library, over generated expressions and names.

Each generated atom carries what CEL says it means (a Python model: RE2 itself for matches(),
code points for size(), IAM's rule for extract()) and whether the CEL library shares that
meaning for the name at hand. The native compiler must agree with the model everywhere; the
library must agree wherever it is known to follow CEL. Where it does not (its size() counts
bytes, its regexes are not RE2), the table at the end pins CEL's expected value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import re2
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.policy.cel import ConditionContext, ConditionError, compile_condition
from tests.support.cel_oracle import library_answer

NOW = datetime(2026, 5, 1, 12, 30, 15, 250_000, tzinfo=UTC)
# Look-alikes and classes where engines differ: long s, Kelvin sign, Arabic-Indic three,
# an accented capital, a newline (for `$`), a space.
NAME_ALPHABET = "ab/-.Ak\u017f\u212a\u0663\u00c9\u00e9\n "
names = st.text(alphabet=NAME_ALPHABET, max_size=10)

Model = Callable[[ConditionContext], bool]


@dataclass(frozen=True)
class Atom:
    """A generated sub-expression, what CEL says it is, and where the library agrees."""

    text: str
    model: Model
    library_agrees: Callable[[ConditionContext], bool] = lambda _c: True


def cel_string(text: str) -> str:
    escaped = "".join(
        "\\" + ch if ch in '"\\' else ch if " " <= ch <= "~" else f"\\U{ord(ch):08x}" for ch in text
    )
    return f'"{escaped}"'


def _re2_search(pattern: str, text: str) -> bool:
    return re2.search(pattern, text) is not None


# -- patterns: RE2 syntax in the shapes policies use, including the classes engines disagree on --

_PIECES = st.sampled_from(
    ["a", "b", "/", "-", "k", "s", "\u00e9", "\\.", ".", "[a-z]", "[^/]", "[ab/]", "\\d", "\\w"]
)
_QUANTIFIERS = st.sampled_from(["", "", "*", "+", "?", "{1,2}"])
_FLAGS = st.sampled_from(["", "", "(?i)", "(?s)", "(?m)"])


@st.composite
def patterns(draw: st.DrawFn) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        piece = draw(_PIECES)
        if draw(st.booleans()) and len(parts) >= 1:
            piece = f"(?:{parts.pop()}|{piece})"
        parts.append(piece + draw(_QUANTIFIERS))
    anchored = draw(st.sampled_from(["", "^", "$", "^$"]))
    body = "".join(parts)
    body = ("^" if "^" in anchored else "") + body + ("$" if "$" in anchored else "")
    return draw(_FLAGS) + body


def _unicode_sensitive(pattern: str) -> bool:
    return any(marker in pattern for marker in ("\\d", "\\w", "(?i)", "$", "."))


def matches_atom(pattern: str) -> Atom:
    return Atom(
        f"resource.name.matches({cel_string(pattern)})",
        lambda c: _re2_search(pattern, c.resource_name),
        # The library's regex engine differs from RE2 on Unicode classes, case folding and
        # newlines: compare only on plain ASCII names without them.
        lambda c: (
            (c.resource_name.isascii() and "\n" not in c.resource_name)
            or not _unicode_sensitive(pattern)
        ),
    )


def _extract_model(name: str, prefix: str, suffix: str) -> str:
    """IAM's extract(), written apart from the gateway's: after the first prefix, up to the
    next suffix (or the end when there is none); "" when either is missing."""
    _, found, rest = name.partition(prefix) if prefix else ("", True, name)
    if not found:
        return ""
    if not suffix:
        return rest
    value, closed, _ = rest.partition(suffix)
    return value if closed else ""


@st.composite
def atoms(draw: st.DrawFn) -> Atom:
    text = draw(st.text(alphabet="ab/-k\u00e9", max_size=3))
    kind = draw(st.integers(0, 8))
    if kind == 0:
        method = draw(st.sampled_from(["startsWith", "endsWith", "contains"]))
        python = {
            "startsWith": str.startswith,
            "endsWith": str.endswith,
            "contains": lambda s, t: t in s,
        }[method]
        return Atom(
            f"resource.name.{method}({cel_string(text)})",
            lambda c: bool(python(c.resource_name, text)),  # type: ignore[operator]
        )
    if kind == 1:
        op = draw(st.sampled_from(["==", "!=", "<", ">=", ">"]))
        compare = {
            "==": str.__eq__,
            "!=": str.__ne__,
            "<": str.__lt__,
            ">=": str.__ge__,
            ">": str.__gt__,
        }[op]
        return Atom(
            f"resource.name {op} {cel_string(text)}",
            lambda c: bool(compare(c.resource_name, text)),
        )
    if kind == 2:
        return matches_atom(draw(patterns()))
    if kind == 3:
        n = draw(st.integers(0, 6))
        return Atom(
            f"size(resource.name) >= {n}",
            lambda c: len(c.resource_name) >= n,  # CEL: code points
            lambda c: c.resource_name.isascii(),  # the library counts bytes
        )
    if kind == 4:
        prefix = draw(st.sampled_from(["", "a/", "/", "b"]))
        suffix = draw(st.sampled_from(["", "/", "-"]))
        return Atom(
            f"resource.name.extract({cel_string(prefix + '{v}' + suffix)}) == {cel_string(text)}",
            lambda c: _extract_model(c.resource_name, prefix, suffix) == text,
            lambda _c: False,  # IAM's function: not in the library
        )
    if kind == 5:
        items = draw(st.lists(st.text(alphabet="ab/", max_size=2), max_size=3))
        listed = ", ".join(cel_string(item) for item in items)
        return Atom(f"resource.name in [{listed}]", lambda c: c.resource_name in items)
    if kind == 6:
        hours = draw(st.integers(-48, 48))
        op = draw(st.sampled_from(["<", ">="]))
        bound = NOW + timedelta(hours=hours)
        literal = bound.strftime("%Y-%m-%dT%H:%M:%SZ")
        bound = bound.replace(microsecond=0)
        return Atom(
            f'request.time {op} timestamp("{literal}")',
            lambda c: c.request_time < bound if op == "<" else c.request_time >= bound,
        )
    if kind == 7:
        zone = draw(st.sampled_from(["UTC", "America/New_York", "Asia/Kolkata"]))
        hour = draw(st.integers(0, 23))
        return Atom(
            f'request.time.getHours("{zone}") == {hour}',
            lambda c: c.request_time.astimezone(ZoneInfo(zone)).hour == hour,
        )
    return Atom(
        f"(resource.name + {cel_string(text)}).endsWith({cel_string(text)})", lambda _c: True
    )


def _and(a: Atom, b: Atom) -> Atom:
    return Atom(
        f"({a.text} && {b.text})",
        lambda c: a.model(c) and b.model(c),
        lambda c: a.library_agrees(c) and b.library_agrees(c),
    )


def _or(a: Atom, b: Atom) -> Atom:
    return Atom(
        f"({a.text} || {b.text})",
        lambda c: a.model(c) or b.model(c),
        lambda c: a.library_agrees(c) and b.library_agrees(c),
    )


def _not(a: Atom) -> Atom:
    return Atom(f"!({a.text})", lambda c: not a.model(c), a.library_agrees)


def _choose(a: Atom, b: Atom, d: Atom) -> Atom:
    return Atom(
        f"({a.text} ? {b.text} : {d.text})",
        lambda c: b.model(c) if a.model(c) else d.model(c),
        lambda c: a.library_agrees(c) and b.library_agrees(c) and d.library_agrees(c),
    )


expressions = st.recursive(
    atoms(),
    lambda inner: st.one_of(
        st.builds(_and, inner, inner),
        st.builds(_or, inner, inner),
        st.builds(_not, inner),
        st.builds(_choose, inner, inner, inner),
    ),
    max_leaves=5,
)
contexts = st.builds(
    lambda name, hours: ConditionContext(name, NOW + timedelta(hours=hours)),
    names,
    st.integers(-60, 60),
)


@settings(max_examples=400, deadline=None)
@given(atom=expressions, context=contexts)
def test_native_library_and_cel_agree(atom: Atom, context: ConditionContext) -> None:
    native = compile_condition(atom.text).evaluate(context)
    assert native is atom.model(context), atom.text
    if atom.library_agrees(context):
        assert library_answer(atom.text, context) is native, atom.text


@settings(max_examples=300, deadline=None)
@given(pattern=patterns(), resource_names=st.lists(names, min_size=1, max_size=6))
def test_matches_is_re2_over_generated_patterns_and_names(
    pattern: str, resource_names: list[str]
) -> None:
    condition = compile_condition(f"resource.name.matches({cel_string(pattern)})")
    for name in resource_names:
        context = ConditionContext(name, NOW)
        assert condition.evaluate(context) is _re2_search(pattern, name), (pattern, name)


# CEL's expected values where the library answers otherwise (cel-spec: size() counts code
# points; matches() is RE2, whose \d \w \s \b are ASCII, whose (?i) folds Unicode, whose `$`
# is the end of the text; durations reach 10,000 years), and IAM's extract().
SPEC = [
    pytest.param('size("\u00e9") == 1', "", True, id="size-counts-code-points"),
    pytest.param("size(resource.name) == 2", "\u00e9\u212a", True, id="size-of-the-name"),
    pytest.param('resource.name.matches("^\\\\d$")', "\u0663", False, id="d-is-ascii"),
    pytest.param('resource.name.matches("^\\\\w+$")', "\u00e9", False, id="w-is-ascii"),
    pytest.param('resource.name.matches("^\\\\s$")', "\u00a0", False, id="s-is-ascii"),
    pytest.param('resource.name.matches("(?i)^kim$")', "\u212aim", True, id="fold-kelvin"),
    pytest.param('resource.name.matches("(?i)^s$")', "\u017f", True, id="fold-long-s"),
    pytest.param('resource.name.matches("(?i)^\u00e9$")', "\u00c9", True, id="fold-accented"),
    pytest.param('resource.name.matches("a$")', "a\n", False, id="dollar-is-end-of-text"),
    pytest.param('resource.name.matches("^a.b$")', "a\nb", False, id="dot-is-not-newline"),
    pytest.param('resource.name.matches("(?s)^a.b$")', "a\nb", True, id="dot-all"),
    pytest.param(
        'request.time - duration("3000000h") < request.time', "", True, id="duration-342-years"
    ),
    pytest.param(
        'resource.name.extract("projects/{p}/") == "acme"',
        "projects/acme/locations/l",
        True,
        id="extract-between",
    ),
    pytest.param(
        'resource.name.extract("/operations/{op}") == "o-1"',
        "projects/acme/operations/o-1",
        True,
        id="extract-to-the-end",
    ),
    pytest.param(
        'resource.name.extract("folders/{f}/") == ""',
        "projects/acme/operations/o-1",
        True,
        id="extract-no-match-is-empty",
    ),
    pytest.param(
        'resource.name.extract("projects/{p}/x") == ""',
        "projects/acme/locations/l",
        True,
        id="extract-no-suffix-is-empty",
    ),
]


@pytest.mark.parametrize(("expression", "name", "expected"), SPEC)
def test_cel_spec_values_where_the_library_differs(
    expression: str, name: str, expected: bool
) -> None:
    assert compile_condition(expression).evaluate(ConditionContext(name, NOW)) is expected


# -- linear time: patterns that make a backtracking engine run for minutes --------------------

REDOS = [
    pytest.param("^(a+)+$", "a" * 1000 + "!", id="nested-plus"),
    pytest.param("^(a|aa)*c$", "a" * 1000, id="alternation-star"),
    pytest.param("(.*a){12}", "a" * 11 + "b" * 1000, id="counted-dot-star"),
    pytest.param("^(\\w+\\s?)*$", "word " * 200 + "!", id="words"),
]


@pytest.mark.parametrize(("pattern", "name"), REDOS)
def test_catastrophic_patterns_answer_in_linear_time(pattern: str, name: str) -> None:
    # A backtracking engine takes longer than the suite's timeout on each of these.
    condition = compile_condition(f"resource.name.matches({cel_string(pattern)})")
    assert condition.evaluate(ConditionContext(name, NOW)) is _re2_search(pattern, name)


REFUSED_REGEXES = [
    pytest.param("a\\Z", "invalid escape sequence: \\Z", id="python-end-of-string"),
    pytest.param("\\N{DIGIT ONE}", "invalid escape sequence: \\N", id="named-character"),
    pytest.param("(?#note)a", "invalid perl operator: (?#", id="comment-group"),
    pytest.param("(?x) a b", "invalid perl operator: (?x", id="verbose-flag"),
    pytest.param("a{,3}", "'{,n}' is literal text in RE2", id="empty-lower-bound"),
    pytest.param("(?=a)", "lookahead", id="lookahead"),
    pytest.param("(?<!a)b", "lookbehind", id="lookbehind"),
    pytest.param("(a)\\1", "backreferences", id="backreference"),
    pytest.param("a*+", "possessive", id="possessive"),
    pytest.param("(?>a)", "atomic", id="atomic-group"),
    pytest.param("\\C", "single bytes", id="any-byte"),
    pytest.param("(?:.{30}){30}", "too complex", id="program-too-large"),
    pytest.param("a{1001}", "invalid repetition size", id="repetition-too-large"),
]


@pytest.mark.parametrize(("pattern", "fragment"), REFUSED_REGEXES)
def test_syntax_re2_refuses_is_refused_at_load(pattern: str, fragment: str) -> None:
    with pytest.raises(ConditionError) as caught:
        compile_condition(f"resource.name.matches({cel_string(pattern)})")
    assert fragment in caught.value.problem
    assert caught.value.column == len("resource.name.matches(") + 1


@pytest.mark.parametrize(
    "template",
    ["projects/", "{a}{b}", "x{}", "{a", "a}{b}", "{1x}"],
    ids=["no-variable", "two-variables", "empty-variable", "unclosed", "stray-brace", "bad-name"],
)
def test_malformed_extract_templates_are_refused(template: str) -> None:
    with pytest.raises(ConditionError, match="extract"):
        compile_condition(f"resource.name.extract({cel_string(template)}) == ''")
