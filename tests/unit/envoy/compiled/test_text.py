"""The compiled tier's RE2 texts decide as opsgate does. Each regex is compiled by RE2 itself the
way Envoy's xDS matchers compile it (Latin-1 mode: the pattern's UTF-8 bytes are its characters,
`.` is one byte) and run on the header's bytes as Envoy's formatter writes them, as a WHOLE-value
match: name hygiene against name_problem, route patterns against Route.matches, resource prefix
keys against resource_chain, and identities against canonical_identity."""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from typing import Any

import pytest
import re2
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gateway.authn.claims import PrincipalRules, principal_from
from gateway.envoy.compiled.identity import Identities, Provider
from gateway.envoy.compiled.text import (
    BAD_SEGMENTS,
    LONG_NAME,
    caseless,
    literal,
    name_text,
    pattern_regex,
    resource_keys,
    utf8_class,
    well_formed_name,
)
from gateway.policy.evaluator import resource_chain
from gateway.policy.loader import normalize_resource
from gateway.policy.members import caller_keys, canonical_identity, is_email
from gateway.profile import Route, load_profile
from gateway.resource_names import MAX_NAME_BYTES, name_problem

# --- RE2 as Envoy runs it, and the header as Envoy's formatter writes it ----------------------

_LATIN1 = re2.Options()
_LATIN1.encoding = re2.Options.Encoding.LATIN1


@cache
def envoy_regex(pattern: str) -> Any:
    """`pattern` compiled as Envoy's google_re2 matcher compiles it: its UTF-8 bytes, Latin-1."""
    return re2.compile(pattern.encode("utf-8"), _LATIN1)


def full(pattern: str, value: bytes) -> bool:
    """Envoy's safe_regex match: the whole value."""
    return envoy_regex(pattern).fullmatch(value) is not None


_SHORT_ESCAPES = {0x08: b"\\b", 0x0C: b"\\f", 0x0A: b"\\n", 0x0D: b"\\r", 0x09: b"\\t"}


def json_string_bytes(raw: bytes) -> bytes:
    """The inside of a JSON string as Envoy's formatter writes it: `"`, `\\` and control
    characters below 0x20 escaped, every other byte (UTF-8 or not) as it is."""
    out = bytearray()
    for byte in raw:
        if byte in (0x22, 0x5C):
            out += b"\\" + bytes([byte])
        elif byte < 0x20:
            out += _SHORT_ESCAPES.get(byte, b"\\u%04x" % byte)
        else:
            out.append(byte)
    return bytes(out)


def utf8(text: str) -> bytes:
    """A str's bytes on the wire; a lone surrogate as the (invalid) bytes that would carry it."""
    return text.encode("utf-8", "surrogatepass")


def json_list(values: Iterable[bytes]) -> bytes:
    """The formatter's compact JSON list of strings."""
    return b"[" + b",".join(b'"' + json_string_bytes(v) + b'"' for v in values) + b"]"


def name_header(name: str | bytes) -> bytes:
    """x-opsgate-name for a request whose `name` field holds `name`."""
    return json_list([name if isinstance(name, bytes) else utf8(name)])


def envoy_says_hygienic(header: bytes) -> bool:
    """The route filter's three hygiene checks all pass."""
    return (
        full(well_formed_name(), header)
        and not full(BAD_SEGMENTS, header)
        and not full(LONG_NAME, header)
    )


# --- hostile names --------------------------------------------------------------------------

KELVIN = "\u212a"  # folds to 'k' under Unicode case folding
DOTTED_I = "\u0130"  # lower-cases to 'i' + COMBINING DOT ABOVE
DOTLESS_I = "\u0131"
LONG_S = "\u017f"  # folds to 's'

HOSTILE_PIECES = [
    "projects", "p", "locations", "operations", "op1", "a.b", "...", "-", "*",
    "", ".", "..",
    '"', "\\", '\\"', '"]', '["', "[", "]", ",", "%", "%2F", " ", "\t", "\n", "\r", "\x00",
    "\x01", "\x1f", "\x7f", "\u0085", "\u00a0", "\u2028", "\u200b", "\ufeff", "\ue000",
    "\u0378", "é", "€", "😀", KELVIN, DOTTED_I, DOTLESS_I, "\ud800", "\udfff",
]  # fmt: skip
PIECE = st.one_of(st.sampled_from(HOSTILE_PIECES), st.text(max_size=5))
ANY_CHAR = st.one_of(st.characters(codec=None), st.characters(categories=["Cs"]))


def _sized(target: int, piece: str) -> str:
    """A name of `target` bytes (or one over, when `piece` does not divide it) made of
    `piece`s: names at the size limit, multi-byte and escaped characters included."""
    size = len(utf8(piece))
    return piece * (target // size) + "x" * (target % size)


NEAR_THE_LIMIT = st.builds(
    _sized,
    st.integers(MAX_NAME_BYTES - 4, MAX_NAME_BYTES + 4),
    st.sampled_from(["a", "a/b", "é", "€", "😀", '"', "\\", '\\"', "é/\\", "\n"]),
)
HOSTILE_NAMES = st.one_of(
    st.lists(PIECE, min_size=1, max_size=8).map("/".join),
    st.lists(PIECE, min_size=1, max_size=8).map("".join),
    st.text(ANY_CHAR, max_size=30),
    NEAR_THE_LIMIT,
)


# --- name hygiene ---------------------------------------------------------------------------

NAME_CASES = [
    ("plain", "projects/p/locations/l/operations/o", True),
    ("one-segment", "p", True),
    ("quote", 'projects/p/a"b', True),
    ("backslash", "projects/p/a\\b", True),
    ("escaped-quote-text", 'projects/p/a\\"b', True),
    ("bracket-quote", 'projects/p/"]', True),
    ("regex-meta", "projects/p.+*?()|[]{}^$/x", True),
    ("dots-inside", "projects/.../a.b", True),
    ("non-ascii", "projects/é€😀/x", True),
    ("kelvin", f"projects/{KELVIN}", True),
    ("dotted-i", f"projects/{DOTTED_I}", True),
    ("empty", "", False),
    ("percent", "projects/p%2Fq", False),
    ("lone-percent", "%", False),
    ("space", "projects/a b", False),
    ("tab", "projects/a\tb", False),
    ("newline", "projects/a\nb", False),
    ("carriage-return", "projects/a\rb", False),
    ("nul", "projects/a\x00b", False),
    ("unit-separator", "projects/a\x1fb", False),
    ("del", "projects/a\x7fb", False),
    ("c1-next-line", "projects/a\u0085b", False),
    ("no-break-space", "projects/a\u00a0b", False),
    ("line-separator", "projects/a\u2028b", False),
    ("zero-width-space", "projects/a\u200bb", False),
    ("byte-order-mark", "projects/\ufeff", False),
    ("private-use", "projects/\ue000", False),
    ("unassigned", "projects/\u0378", False),
    ("lone-surrogate", "projects/\ud800", False),
    ("leading-slash", "/projects/p", False),
    ("trailing-slash", "projects/p/", False),
    ("only-slash", "/", False),
    ("double-slash", "projects//p", False),
    ("dot-segment", "projects/./p", False),
    ("dotdot-segment", "projects/p/../q", False),
    ("dot-first", "./p", False),
    ("dotdot-last", "projects/..", False),
    ("only-dot", ".", False),
    ("1024-ascii", "a" * MAX_NAME_BYTES, True),
    ("1025-ascii", "a" * (MAX_NAME_BYTES + 1), False),
    ("1024-two-byte", "é" * (MAX_NAME_BYTES // 2), True),
    ("1026-two-byte", "é" * (MAX_NAME_BYTES // 2 + 1), False),
    ("1024-four-byte", "😀" * (MAX_NAME_BYTES // 4), True),
    ("1025-three-byte", "€" * 341 + "xx", False),
    # An escaped character is two bytes of the header and one of the name.
    ("1024-quotes", '"' * MAX_NAME_BYTES, True),
    ("1025-quotes", '"' * (MAX_NAME_BYTES + 1), False),
    ("1024-backslashes", "\\" * MAX_NAME_BYTES, True),
    ("1025-backslashes", "\\" * (MAX_NAME_BYTES + 1), False),
    ("far-too-long", "a/" * 5000 + "a", False),
]


@pytest.mark.parametrize(
    ("name", "ok"), [c[1:] for c in NAME_CASES], ids=[c[0] for c in NAME_CASES]
)
def test_name_hygiene_table(name: str, ok: bool) -> None:
    assert (name_problem(name) is None) == ok  # the table itself says what opsgate says
    assert envoy_says_hygienic(name_header(name)) == ok


@settings(max_examples=1000, deadline=None)
@given(HOSTILE_NAMES)
def test_name_hygiene_decides_as_name_problem(name: str) -> None:
    assert envoy_says_hygienic(name_header(name)) == (name_problem(name) is None)


INVALID_UTF8 = [
    ("lone-continuation", b"\x80"),
    ("overlong-slash", b"\xc0\xaf"),
    ("overlong-nul", b"\xc0\x80"),
    ("overlong-three-byte", b"\xe0\x80\xaf"),
    ("overlong-four-byte", b"\xf0\x80\x80\xaf"),
    ("surrogate-high", b"\xed\xa0\x80"),
    ("surrogate-low", b"\xed\xbf\xbf"),
    ("above-max", b"\xf4\x90\x80\x80"),
    ("f5-lead", b"\xf5\x80\x80\x80"),
    ("ff-byte", b"\xff"),
    ("truncated-two", b"\xc3"),
    ("truncated-three", b"\xe2\x82"),
    ("truncated-four", b"\xf0\x9f\x98"),
    ("lead-then-ascii", b"\xc3a"),
    ("latin1-e-acute", "é".encode("latin-1")),
]


@pytest.mark.parametrize("raw", [c[1] for c in INVALID_UTF8], ids=[c[0] for c in INVALID_UTF8])
@pytest.mark.parametrize("where", ["alone", "inside", "last"])
def test_a_name_that_is_not_utf8_is_refused(raw: bytes, where: str) -> None:
    name = {"alone": raw, "inside": b"projects/p" + raw + b"q", "last": b"projects/p/" + raw}[where]
    assert not full(well_formed_name(), name_header(name))


VALID_PIECES = st.text(st.characters(codec=None), max_size=4).map(utf8)
INVALID_PIECES = st.sampled_from([raw for _, raw in INVALID_UTF8])


@settings(max_examples=2000, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=24),
        st.lists(st.one_of(VALID_PIECES, INVALID_PIECES), min_size=1, max_size=6).map(b"".join),
    )
)
def test_any_bytes_are_well_formed_only_as_a_hygienic_utf8_name(raw: bytes) -> None:
    try:
        name = raw.decode("utf-8")  # Python refuses surrogates and overlong forms, as UTF-8 does
    except UnicodeDecodeError:
        assert not full(well_formed_name(), name_header(raw))
        return
    assert envoy_says_hygienic(name_header(raw)) == (name_problem(name) is None)


def test_name_text_is_the_formatter_header_for_hygienic_names() -> None:
    """name_text (the compiler's own spelling of a name's header) agrees with the formatter's
    for every character a hygienic name can hold."""
    for name in ('projects/a"b\\c', "projects/é€😀", "p"):
        assert utf8(name_text(name)) == name_header(name)


# --- utf8_class -----------------------------------------------------------------------------


def _no_surrogates(lo: int, hi: int) -> bool:
    return hi < 0xD800 or lo > 0xDFFF


# Spans as text.py's own _spans gives them: surrogates are never characters of a name.
SPANS = st.lists(
    st.tuples(st.integers(0x80, 0x10FFFF), st.integers(0, 0x2000))
    .map(lambda t: (t[0], min(t[0] + t[1], 0x10FFFF)))
    .filter(lambda span: _no_surrogates(*span)),
    min_size=1,
    max_size=3,
)


@settings(max_examples=300, deadline=None)
@given(SPANS, st.data())
def test_utf8_class_matches_exactly_the_encodings_of_its_spans(
    spans: list[tuple[int, int]], data: st.DataObject
) -> None:
    pattern = utf8_class(spans)
    inside = [p for lo, hi in spans for p in (lo, hi, (lo + hi) // 2)]
    probes = inside + [p for lo, hi in spans for p in (lo - 1, hi + 1)]
    probes += data.draw(st.lists(st.integers(0x80, 0x10FFFF), max_size=20))
    for point in probes:
        if not 0x80 <= point <= 0x10FFFF:
            continue
        wanted = any(lo <= point <= hi for lo, hi in spans)
        assert full(pattern, utf8(chr(point))) == wanted, hex(point)
    # Never part of a character, never an invalid sequence.
    for raw in (b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"a"):
        assert not full(pattern, raw)


# --- route patterns -------------------------------------------------------------------------

# Segments a hygienic name may hold, hostile to a regex or a JSON string all the same.
HYGIENIC_SEGMENTS = [
    "p", "a.b", "...", "-", "a+b", "(x)", "[y]", "x|y", "^$", "{1}", "?", '"', "\\", '\\"',
    '"]', '["', ",", "é", "€", "😀", KELVIN, DOTTED_I,
]  # fmt: skip
HYGIENIC_SEGMENT = st.one_of(
    st.sampled_from(HYGIENIC_SEGMENTS),
    st.text(st.characters(codec="utf-8", exclude_characters="/%*"), min_size=1, max_size=4).filter(
        lambda text: name_problem(text) is None and text not in (".", "..")
    ),
)
PATTERN_PART = st.one_of(
    st.just("*"),
    st.sampled_from(["projects", "locations", "operations"]),
    HYGIENIC_SEGMENT,
)


def is_pattern(pattern: str) -> bool:
    """What the profile loader takes as a route pattern (gateway.profile._is_pattern)."""
    if name_problem(pattern.replace("*", "x")) is not None:
        return False
    return all(part == "*" or "*" not in part for part in pattern.split("/"))


def make_route(pattern: str) -> Route:
    return Route(pattern, "svc.things.get", tuple(pattern.split("/")))


PROFILE_ROUTES = [route for routes in load_profile().routes.values() for route in routes]


@st.composite
def route_and_name(draw: st.DrawFn) -> tuple[Route, str]:
    """A route (the profile's or a generated one) and a name built to fit it or nearly so."""
    if draw(st.booleans()):
        route = draw(st.sampled_from(PROFILE_ROUTES))
    else:
        parts = draw(st.lists(PATTERN_PART, min_size=1, max_size=5))
        pattern = "/".join(parts)
        route = make_route(pattern)
    filler = st.one_of(HYGIENIC_SEGMENT, st.sampled_from(route.segments), PIECE)
    segments = [draw(filler) if part == "*" else part for part in route.segments]
    mutate = draw(st.sampled_from(["fit", "fit", "drop", "add", "change", "join", "slash"]))
    if mutate == "drop" and len(segments) > 1:
        segments.pop(draw(st.integers(0, len(segments) - 1)))
    elif mutate == "add":
        segments.insert(draw(st.integers(0, len(segments))), draw(HYGIENIC_SEGMENT))
    elif mutate == "change":
        at = draw(st.integers(0, len(segments) - 1))
        segments[at] = draw(st.sampled_from([segments[at].upper(), segments[at] + "x", "x"]))
    elif mutate == "join" and len(segments) > 1:
        segments[0:2] = [segments[0] + segments[1]]
    elif mutate == "slash":
        at = draw(st.integers(0, len(segments) - 1))
        segments[at] = segments[at] + "/" + draw(HYGIENIC_SEGMENT)
    return route, "/".join(segments)


ROUTE_CASES = [
    ("fits", "projects/*/locations/*/operations/*", "projects/p/locations/l/operations/o", True),
    ("star-is-one-segment", "projects/*", "projects/a/b", False),
    ("star-not-empty", "projects/*/x", "projects//x", False),
    ("too-short", "projects/*/locations/*", "projects/p/locations", False),
    ("literal-dot", "a.b/*", "axb/p", False),
    ("literal-plus", "a+b/*", "aab/p", False),
    ("literal-quote", 'a"b/*', 'a"b/p', True),
    ("literal-backslash", "a\\b/*", "a\\b/p", True),
    ("star-takes-a-quote", "projects/*", 'projects/"', True),
    ("star-takes-a-backslash", "projects/*", "projects/\\", True),
    ("star-takes-escape-like", "projects/*", 'projects/\\"', True),
    ("star-takes-non-ascii", "projects/*", "projects/é😀", True),
    ("case-counts", "projects/*", "Projects/p", False),
    ("kelvin-is-not-k", "k/*", f"{KELVIN}/p", False),
    ("non-ascii-literal", "é/*", "é/p", True),
]


@pytest.mark.parametrize(
    ("pattern", "name", "fits"), [c[1:] for c in ROUTE_CASES], ids=[c[0] for c in ROUTE_CASES]
)
def test_route_pattern_table(pattern: str, name: str, fits: bool) -> None:
    route = make_route(pattern)
    if name_problem(name) is None:
        assert route.matches(name) == fits
    assert full(pattern_regex(route.segments), name_header(name)) == fits


@settings(max_examples=1000, deadline=None)
@given(route_and_name())
def test_route_patterns_decide_as_route_matches(case: tuple[Route, str]) -> None:
    route, name = case
    # The loader refuses such a pattern; the hygiene checks refuse such a name.
    assume(is_pattern(route.pattern) and name_problem(name) is None)
    assert full(pattern_regex(route.segments), name_header(name)) == route.matches(name)


# --- resource prefix keys -------------------------------------------------------------------

ID_POOL = ["p", "p2", "q", 'p"', 'p"]', "p\\", '\\"', 'p\\"', "é", "é2", "-", "..."]
RESOURCE_SHAPES = [
    "projects/{}",
    "projects/{}/locations/{}",
    "projects/{}/locations/{}/operations/{}",
    "projects/{}/locations/{}/authorizedViewSets/{}",
    "projects/{}/locations/{}/authorizedViewSets/{}/authorizedViews/{}",
    "projects/{}/locations/{}/authorizedViewSets/{}/authorizedViews/{}/operations/{}",
]


@st.composite
def resource_and_name(draw: st.DrawFn) -> tuple[str, str]:
    """A policy resource and a routed name, made of a few shared ids so that one often is an
    ancestor of the other, or a near miss (an id that is a prefix of another, an escape)."""
    pool = draw(
        st.lists(st.one_of(st.sampled_from(ID_POOL), HYGIENIC_SEGMENT), min_size=1, max_size=3)
    )
    ids = st.sampled_from(pool)
    shape = draw(st.sampled_from(RESOURCE_SHAPES))
    resource = shape.format(*(draw(ids) for _ in range(shape.count("{}"))))
    route = draw(st.sampled_from(PROFILE_ROUTES))
    name = "/".join(draw(ids) if part == "*" else part for part in route.segments)
    return resource, name


def prefix_keys_match(resource: str, header: bytes) -> bool:
    """The prefix tree reaches `resource`'s branches: the header starts with one of its keys."""
    return any(header.startswith(key.encode("utf-8")) for key in resource_keys(resource))


RESOURCE_CASES = [
    ("itself", "projects/p", "projects/p", True),
    ("child", "projects/p", "projects/p/locations/l", True),
    ("grandchild", "projects/p", "projects/p/locations/l/operations/o", True),
    ("id-prefix", "projects/p", "projects/p2/locations/l", False),
    ("sibling", "projects/p/locations/l", "projects/p/locations/m/operations/o", False),
    ("descendant-resource", "projects/p/locations/l/operations/o", "projects/p/locations/l", False),
    ("quote-id", 'projects/p"', 'projects/p"/locations/l', True),
    ("quote-vs-plain", 'projects/p"', "projects/p/locations/l", False),
    ("backslash-id", "projects/p\\", "projects/p\\/locations/l", True),
    ("backslash-vs-escape", "projects/p\\", 'projects/p\\"/locations/l', False),
    ("quote-bracket-id", 'projects/p"]', 'projects/p"]/locations/l', True),
    ("plain-vs-quote-bracket", "projects/p", 'projects/p"]/locations/l', False),
    ("non-ascii", "projects/é", "projects/é/locations/l", True),
    ("case-counts", "projects/P", "projects/p/locations/l", False),
]


@pytest.mark.parametrize(
    ("resource", "name", "held"),
    [c[1:] for c in RESOURCE_CASES],
    ids=[c[0] for c in RESOURCE_CASES],
)
def test_resource_keys_table(resource: str, name: str, held: bool) -> None:
    assert normalize_resource(resource) == resource
    assert (resource in resource_chain(name)) == held
    assert prefix_keys_match(resource, name_header(name)) == held


@settings(max_examples=1000, deadline=None)
@given(resource_and_name())
def test_resource_keys_match_exactly_the_names_the_resource_holds_for(
    case: tuple[str, str],
) -> None:
    resource, name = case
    # The loader refuses such a resource; the route filter refuses such a name.
    assume(normalize_resource(resource) == resource and name_problem(name) is None)
    assume(any(route.matches(name) for route in PROFILE_ROUTES))
    assert prefix_keys_match(resource, name_header(name)) == (resource in resource_chain(name))


# --- identities -----------------------------------------------------------------------------

ASCII_TEXT = st.text(st.characters(max_codepoint=0x7F), min_size=1, max_size=12)
LOOKALIKES = {
    "k": [KELVIN],
    "i": [DOTTED_I, DOTLESS_I],
    "s": [LONG_S],
    "K": [KELVIN],
    "I": [DOTTED_I],
}


@st.composite
def identity_and_candidate(draw: st.DrawFn) -> tuple[str, str]:
    """An ASCII identity and a candidate: itself in some case, a look-alike, an edit, or any."""
    wanted = draw(
        st.one_of(ASCII_TEXT, st.sampled_from(["Kim@Example.com", "is@this.io", "a.b+c@d-e.org"]))
    )
    how = draw(st.sampled_from(["case", "lookalike", "edit", "any"]))
    if how == "case":
        flips = draw(st.lists(st.booleans(), min_size=len(wanted), max_size=len(wanted)))
        return wanted, "".join(c.swapcase() if f else c for c, f in zip(wanted, flips, strict=True))
    if how == "lookalike":
        return wanted, "".join(
            draw(st.sampled_from([c, *LOOKALIKES[c]])) if c in LOOKALIKES else c for c in wanted
        )
    if how == "edit":
        at = draw(st.integers(0, len(wanted)))
        return wanted, wanted[:at] + draw(st.text(ANY_CHAR, max_size=2)) + wanted[at + 1 :]
    return wanted, draw(st.text(ANY_CHAR, max_size=12))


IDENTITY_CASES = [
    ("same", "kim@example.com", "kim@example.com", True),
    ("upper", "kim@example.com", "KIM@EXAMPLE.COM", True),
    ("mixed", "Kim@Example.com", "kIM@eXAMPLE.cOM", True),
    ("kelvin", "kim@example.com", f"{KELVIN}im@example.com", False),
    ("dotted-i", "kim@example.com", f"k{DOTTED_I}m@example.com", False),
    ("dotless-i", "kim@example.com", f"k{DOTLESS_I}m@example.com", False),
    ("long-s", "s@example.com", f"{LONG_S}@example.com", False),
    ("dot-is-literal", "a.b@example.com", "axb@example.com", False),
    ("plus-is-literal", "a+b@example.com", "aab@example.com", False),
    ("prefix-only", "kim@example.com", "kim@example.com.evil", False),
    ("suffix-only", "kim@example.com", "xkim@example.com", False),
    ("trailing-newline", "kim@example.com", "kim@example.com\n", False),
]


@pytest.mark.parametrize(
    ("wanted", "candidate", "same"),
    [c[1:] for c in IDENTITY_CASES],
    ids=[c[0] for c in IDENTITY_CASES],
)
def test_caseless_table(wanted: str, candidate: str, same: bool) -> None:
    assert (canonical_identity(candidate) == canonical_identity(wanted)) == same
    assert full(caseless(wanted), utf8(candidate)) == same


@settings(max_examples=1000, deadline=None)
@given(identity_and_candidate())
def test_caseless_decides_as_canonical_identity(case: tuple[str, str]) -> None:
    wanted, candidate = case
    same = canonical_identity(candidate) == canonical_identity(wanted)
    assert full(caseless(wanted), utf8(candidate)) == same


@settings(max_examples=500, deadline=None)
@given(ASCII_TEXT)
def test_literal_matches_only_itself(text: str) -> None:
    assert full(literal(text), text.encode())
    assert not full(literal(text), text.encode() + b"x")
    if text.lower() != text.upper():
        assert not full(literal(text), text.swapcase().encode())


# --- the groups claim -----------------------------------------------------------------------

GROUPS_PROVIDER = Provider(index=0, issuer="https://idp.test", kind="email", groups_claim="groups")


def groups_regexes(wanted: Iterable[str]) -> list[str]:
    """The regexes the compiler puts on the provider's groups header for these group keys."""
    predicate = Identities((GROUPS_PROVIDER,)).anyone_of(
        {f"group:{canonical_identity(g)}" for g in wanted}, claimed=False
    )
    assert predicate is not None
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            single = node.get("single_predicate")
            header = single and single["input"]["typed_config"]["header_name"]
            if header == GROUPS_PROVIDER.groups_header:
                found.append(single["value_match"]["safe_regex"]["regex"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(predicate)
    assert found
    return found


GROUP_RULES = PrincipalRules(issuer="https://idp.test", groups_claim="groups")


def opsgate_member_of(wanted: list[str], values: list[str]) -> bool:
    """Whether opsgate's own path (the Principal its authentication builds from the claims,
    then the member keys the evaluator matches) puts the caller in one of the `wanted` groups."""
    claims = {"sub": "s", "email": "u@x.io", "email_verified": True, "groups": values}
    principal = principal_from(claims, GROUP_RULES, None)
    keys = caller_keys(principal.member, principal.email, True, None, principal.groups, True, {})
    return any(f"group:{canonical_identity(g)}" in keys.allow for g in wanted)


def groups_match(wanted: list[str], values: list[str]) -> bool:
    header = json_list(utf8(v) for v in values)
    return any(full(regex, header) for regex in groups_regexes(wanted))


GROUP_EMAILS = ["eng@example.com", "Ops@Example.com", "a.b+c@d-e.org", "kim@x.io", "s@x.io"]


def group_value_variants(email: str) -> list[str]:
    return [
        email, email.upper(), "group:" + email, "GROUP:" + email, "Group:" + email,
        "group:group:" + email, "group:GROUP:" + email, "GROUP:group:" + email,
        "Group:Group:" + email, "group:group:group:" + email, " " + email, email + " ", email + ",", '"' + email,
        email + '"', email + "\\", "\\" + email, '","' + email, email + '","',
        email.replace("k", KELVIN), email.replace("i", DOTTED_I), email.replace("s", LONG_S),
        email[:-1], email + "x", "x" + email, "",
    ]  # fmt: skip


GROUP_CASES = [
    ("member", ["eng@example.com"], ["eng@example.com"], True),
    ("upper-case-claim", ["eng@example.com"], ["ENG@EXAMPLE.COM"], True),
    ("upper-case-policy", ["Ops@Example.com"], ["ops@example.com"], True),
    ("group-prefix", ["eng@example.com"], ["group:eng@example.com"], True),
    # opsgate drops an exact "group:", folds ASCII case, then drops "group:" once more
    # (group_key): a second prefix in any case, after an exact first one, is dropped too.
    ("group-prefix-upper", ["eng@example.com"], ["GROUP:eng@example.com"], True),
    ("double-prefix", ["eng@example.com"], ["group:group:eng@example.com"], True),
    ("double-prefix-upper", ["eng@example.com"], ["group:GROUP:eng@example.com"], True),
    ("upper-then-exact", ["eng@example.com"], ["GROUP:group:eng@example.com"], False),
    ("triple-prefix", ["eng@example.com"], ["group:group:group:eng@example.com"], False),
    ("among-others", ["eng@example.com"], ["x@y.io", "eng@example.com", "z@y.io"], True),
    ("absent", ["eng@example.com"], ["x@y.io"], False),
    ("empty-list", ["eng@example.com"], [], False),
    ("inside-another-string", ["eng@example.com"], ['x","eng@example.com","y'], False),
    ("quoted-inside", ["eng@example.com"], ['"eng@example.com"'], False),
    ("trailing-backslash-neighbour", ["eng@example.com"], ["x\\", "eng@example.com"], True),
    ("escape-before", ["eng@example.com"], ["\\", 'eng@example.com"'], False),
    ("kelvin", ["kim@x.io"], [f"{KELVIN}im@x.io"], False),
    ("dotted-i", ["kim@x.io"], [f"k{DOTTED_I}m@x.io"], False),
    ("dot-is-literal", ["a.b+c@d-e.org"], ["aXb+c@d-e.org"], False),
    ("control-neighbour", ["eng@example.com"], ["\n", "eng@example.com"], True),
    ("one-of-two-wanted", ["eng@example.com", "kim@x.io"], ["KIM@x.io"], True),
]


@pytest.mark.parametrize(
    ("wanted", "values", "member"),
    [c[1:] for c in GROUP_CASES],
    ids=[c[0] for c in GROUP_CASES],
)
def test_groups_table(wanted: list[str], values: list[str], member: bool) -> None:
    assert opsgate_member_of(wanted, values) == member
    assert groups_match(wanted, values) == member


GROUP_VALUES = st.one_of(
    st.sampled_from(GROUP_EMAILS).flatmap(lambda e: st.sampled_from(group_value_variants(e))),
    st.text(ANY_CHAR, max_size=8),
    st.sampled_from(['"', "\\", ",", "]", "[", '","', '"]', "group:", "\x00"]),
)


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(st.sampled_from(GROUP_EMAILS), min_size=1, max_size=3, unique=True),
    st.lists(GROUP_VALUES, max_size=5),
)
def test_groups_regex_decides_as_opsgate(wanted: list[str], values: list[str]) -> None:
    assert all(is_email(g) for g in wanted)
    member = opsgate_member_of(wanted, values)
    assert groups_match(wanted, values) == member


def test_the_groups_json_is_what_json_would_read_back() -> None:
    """The list the regexes are tested on is valid JSON for the values it holds."""
    values = ['a"b', "c\\d", "e\nf", "\x00", "é😀", ""]
    assert json.loads(json_list(utf8(v) for v in values)) == values
