"""RE2 for IAM conditions: what `matches()` accepts, compiled once at load, run in linear time."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

import re2

__all__ = ["MAX_PROGRAM_SIZE", "Search", "compile_search"]

Search = Callable[[str], bool]
"""True if the pattern matches anywhere in the text (CEL's matches() is a search)."""

MAX_PROGRAM_SIZE: Final = 1000
"""Largest RE2 program accepted. RE2 is linear in the name, but its cost per byte grows with the
program: counted repetitions such as `(?:.{30}){30}` compile to thousands of instructions and
cost milliseconds on a 1 KiB name. At this size one evaluation stays near a millisecond at worst
(python -m benchmarks --only micro), and every pattern a policy plausibly needs fits easily."""

# RE2 reads these as literal text or accepts them with a meaning a Python or PCRE author does
# not expect; refused with a hint instead (searched with escaped characters blanked out).
_MISREAD: Final = (
    (
        re.compile(r"\{,[0-9]*\}"),
        "'{,n}' is literal text in RE2, not a repetition; write '{0,n}'",
    ),
)
_MISREAD_ESCAPES: Final = (
    (
        re.compile(r"\\C"),
        "'\\C' matches single bytes and can split a character; use '.' instead",
    ),
)
# RE2's own messages are terse; these add what was probably meant, or what to write instead.
_HINTS: Final = tuple(
    (re.compile(marker), hint)
    for marker, hint in (
        (r"\(\?<[=!]", "lookbehind assertions are not RE2"),
        (r"\(\?[=!]", "lookahead assertions are not RE2"),
        (r"\(\?P=|\\[1-9]", "backreferences are not RE2"),
        (r"[*+?}]\+", "possessive quantifiers are not RE2"),
        (r"\(\?>", "atomic groups are not RE2"),
        (r"\(\?#", "comments are not RE2"),
        (r"\(\?[a-zA-Z]*x", "the verbose flag x is not RE2; RE2's flags are i, m, s and U"),
        (r"\\Z", "write \\z for the end of the text"),
        (r"\\N\{", "RE2 has no named characters; write the character or \\x{...}"),
    )
)


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # we report the problem ourselves; RE2 would print to stderr
    options.never_capture = True  # a yes/no answer needs no groups, and the DFA then suffices
    return options


_OPTIONS: Final = _options()
_UNANCHORED: Final = re2._Anchor.UNANCHORED


def compile_search(pattern: str) -> Search | str:
    """A linear-time search for `pattern` with RE2's meaning, or why RE2 cannot take it."""
    unescaped = re.sub(r"\\.", "__", pattern, flags=re.DOTALL)
    for check, problem in _MISREAD:
        if check.search(unescaped):
            return problem
    without_backslashes = pattern.replace("\\\\", "__")
    for check, problem in _MISREAD_ESCAPES:
        if check.search(without_backslashes):
            return problem
    try:
        compiled = re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        return _refusal(pattern, exc)
    # The public API has neither the program's size nor a plain yes/no search: its search()
    # decodes match offsets back to str positions (4 µs a call where the question itself costs
    # 0.7). Both come from the C++ RE2 object of google-re2 1.x, pinned in pyproject; a test
    # pins this search against the public one.
    program = compiled._regexp
    size = int(program.ProgramSize())
    if size > MAX_PROGRAM_SIZE:
        return (
            f"regular expression is too complex (RE2 program size {size}, limit "
            f"{MAX_PROGRAM_SIZE}); use fewer or smaller counted repetitions"
        )
    match = program.Match

    def search(text: str) -> bool:
        data = text.encode("utf-8")
        return bool(match(_UNANCHORED, data, 0, len(data))[0][0] >= 0)

    return search


def _refusal(pattern: str, exc: re2.error) -> str:
    detail = exc.args[0] if exc.args else "invalid pattern"
    if isinstance(detail, bytes):
        detail = detail.decode("utf-8", "replace")
    hint = next((h for marker, h in _HINTS if marker.search(pattern)), "")
    return f"invalid regular expression for RE2: {detail}" + (f" ({hint})" if hint else "")
