"""RE2 texts the compiled filters match on: identities without ASCII case, and the request's name
as Envoy's formatter writes it (a JSON list of one string), with opsgate's own name hygiene."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from functools import cache

from gateway.resource_names import MAX_NAME_BYTES

_RE2_META = frozenset("\\.+*?()|[]{}^$")
SEGMENT = r'(?:[^/"\\]|\\["\\])+'  # one name segment inside the JSON string, escapes included


def literal(text: str) -> str:
    """`text` matched exactly."""
    return "".join("\\" + c if c in _RE2_META else c for c in text)


def caseless(text: str) -> str:
    """`text` with ASCII letters in either case and every other character exactly as written:
    opsgate's canonical identities (canonical_identity) lower-case ASCII text only, and RE2's
    own (?i) would also fold letters such as the Kelvin sign into 'k'."""
    out = []
    for c in text:
        if c.isascii() and c.isalpha():
            out.append(f"[{c.lower()}{c.upper()}]")
        else:
            out.append(literal(c))
    return "".join(out)


def alternatives(parts: Iterable[str]) -> str:
    """One group matching any of `parts` (already regexes), sorted so the text is stable."""
    unique = sorted(set(parts))
    return unique[0] if len(unique) == 1 else "(?:" + "|".join(unique) + ")"


def json_string(text: str) -> str:
    """`text` as Envoy's formatter writes it inside a JSON string (names reach us hygienic:
    only a quote and a backslash are escaped)."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def name_text(name: str) -> str:
    """The name header's value for a request naming `name`."""
    return f'["{json_string(name)}"]'


def _spans(test: Callable[[str], bool], start: int = 0x80) -> list[tuple[int, int]]:
    """Runs of code points from `start` (surrogates aside) for which `test` holds, by this
    Python's own Unicode database: the one the gateway decides with."""
    spans: list[tuple[int, int]] = []
    for point in range(start, sys.maxunicode + 1):
        if 0xD800 <= point <= 0xDFFF or not test(chr(point)):
            continue
        if spans and spans[-1][1] == point - 1:
            spans[-1] = (spans[-1][0], point)
        else:
            spans.append((point, point))
    return spans


_UTF8_LIMITS = (0x7F, 0x7FF, 0xFFFF, 0x10FFFF)


def _utf8_sequences(lo: int, hi: int) -> list[list[tuple[int, int]]]:
    """Byte-range sequences matching exactly the UTF-8 encodings of lo..hi (the classic split:
    first by encoded length, then until every continuation byte spans a whole range)."""
    for limit in _UTF8_LIMITS[:-1]:
        if lo <= limit < hi:
            return _utf8_sequences(lo, limit) + _utf8_sequences(limit + 1, hi)
    if hi <= 0x7F:
        return [[(lo, hi)]]
    for i in range(1, 4):
        mask = (1 << (6 * i)) - 1
        if lo & ~mask != hi & ~mask:
            if lo & mask:
                return _utf8_sequences(lo, lo | mask) + _utf8_sequences((lo | mask) + 1, hi)
            if hi & mask != mask:
                return _utf8_sequences(lo, (hi & ~mask) - 1) + _utf8_sequences(hi & ~mask, hi)
    low, high = chr(lo).encode("utf-8"), chr(hi).encode("utf-8")
    return [list(zip(low, high, strict=True))]


def _byte_class(lo: int, hi: int) -> str:
    return f"\\x{lo:02x}" if lo == hi else f"[\\x{lo:02x}-\\x{hi:02x}]"


def utf8_class(spans: Iterable[tuple[int, int]]) -> str:
    """An alternation matching one UTF-8 encoded code point of `spans`. Envoy's matcher regexes
    work on bytes (RE2 in Latin-1 mode: `.` is one byte, and \\x{100} and above are refused),
    so a set of non-ASCII characters is written as the byte sequences that encode them."""
    parts = [
        "".join(_byte_class(lo, hi) for lo, hi in sequence)
        for span in spans
        for sequence in _utf8_sequences(*span)
    ]
    return "(?:" + "|".join(parts) + ")"


@cache
def _printable_non_ascii() -> str:
    return utf8_class(_spans(str.isprintable))


@cache
def whitespace_class() -> str:
    """What str.split() splits at, for CEL's matches() (RE2 over UTF-8 there)."""
    return "".join(
        f"\\x{{{lo:x}}}" if lo == hi else f"\\x{{{lo:x}}}-\\x{{{hi:x}}}"
        for lo, hi in _spans(str.isspace, 0)
    )


# One byte of a name inside the JSON string: a quote or backslash comes escaped.
_NAME_BYTE = r'(?:[^"\\]|\\["\\])'


@cache
def well_formed_name() -> str:
    """The name header of a name with no percent sign, space, unprintable character or bad
    UTF-8: every character printable ASCII or a printable character's UTF-8 bytes."""
    ascii_printable = r"[!#$&-\[\]-~]"  # 0x21-0x7E but '"', '%' and '\\'
    char = rf'(?:{ascii_printable}|\\["\\]|{_printable_non_ascii()})'
    return rf'\["{char}+"\]'


BAD_SEGMENTS = r'\["/.*|.*/"\]|.*//.*|.*(?:\["|/)\.\.?(?:/|"\]).*'
# More than MAX_NAME_BYTES bytes (RE2 repeats at most 1,000 times in one operator).
LONG_NAME = rf'\["{_NAME_BYTE}{{1000}}{_NAME_BYTE}{{{MAX_NAME_BYTES + 1 - 1000}}}{_NAME_BYTE}*"\]'


def pattern_regex(segments: Iterable[str]) -> str:
    """A route pattern (`*` is one segment) over the name header."""
    body = "/".join(SEGMENT if part == "*" else literal(json_string(part)) for part in segments)
    return rf'\["{body}"\]'


def resource_keys(resource: str) -> tuple[str, str]:
    """The prefix-tree keys under which a policy resource holds for a name: the resource
    itself, and everything below it."""
    inner = json_string(resource)
    return f'["{inner}"]', f'["{inner}/'
