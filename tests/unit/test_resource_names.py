"""name_problem and route matching agree with their plain definitions on any input."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.profile import load_profile
from gateway.resource_names import MAX_NAME_BYTES, name_problem

SEGMENT = st.one_of(
    st.sampled_from(["projects", "p1", "locations", "us", "operations", "op", ".", "..", ""]),
    st.text(min_size=0, max_size=6),
)
NAMES = st.one_of(
    st.lists(SEGMENT, min_size=1, max_size=8).map("/".join),
    st.text(max_size=40),
    st.integers(MAX_NAME_BYTES - 3, MAX_NAME_BYTES + 3).map(lambda n: "é" * (n // 2) + "x" * n),
)


def reference_problem(name: str) -> str | None:
    """The rules as the docstring states them, one character at a time."""
    if not name:
        return "the name is empty"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"the name is longer than {MAX_NAME_BYTES} bytes"
    if "%" in name:
        return "the name contains percent-encoding"
    if any(ch.isspace() or not ch.isprintable() for ch in name):
        return "the name contains control or whitespace characters"
    if any(segment in ("", ".", "..") for segment in name.split("/")):
        return "the name has an empty, '.' or '..' segment"
    return None


@settings(max_examples=1500, deadline=None)
@given(NAMES)
def test_name_problem_matches_the_plain_rules(name: str) -> None:
    assert name_problem(name) == reference_problem(name)


@settings(max_examples=800, deadline=None)
@given(st.lists(SEGMENT, min_size=1, max_size=8).map("/".join))
def test_routes_match_exactly_the_names_their_segments_describe(name: str) -> None:
    profile = load_profile()
    parts = name.split("/")
    for routes in profile.routes.values():
        for route in routes:
            expected = len(parts) == len(route.segments) and all(
                want == "*" or want == got for want, got in zip(route.segments, parts, strict=True)
            )
            if name_problem(name) is None:
                assert route.matches(name) == expected
