"""google.api.HttpRule path templates, compiled once into segment-wise matchers (no regexes)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.errors import OpsgateError

WILDCARD = "*"
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_LITERAL = re.compile(r"[A-Za-z0-9._~!$&'()+,;=@-]+")  # RFC 3986 pchar, minus ':' and '%'


class TemplateError(OpsgateError, ValueError):
    """A path template outside the supported grammar; the message says what and where."""

    reason = "PATH_TEMPLATE_INVALID"


@dataclass(frozen=True, slots=True)
class Capture:
    """A template variable: the request field it binds and the segments it spans."""

    field: str
    start: int
    end: int
    pattern: str  # the variable's own segments, e.g. projects/*/locations/*


@dataclass(frozen=True, slots=True)
class PathTemplate:
    """A compiled template such as `/v1/{name=projects/*/locations/*}/operations`.

    Supported: literal segments, `*` (exactly one segment, even an empty one: whether a name is
    well formed is the route stage's call, so such calls are answered and audited by the chain),
    variables `{field}` and `{field=segments}`, and a trailing verb `:cancel`. Not: `**`.
    A request path's verb is what follows the last ':' of its last segment; a template with a
    verb matches only paths with that verb, one without a verb only paths without one.
    """

    text: str
    segments: tuple[str, ...]  # literals, or WILDCARD for any single segment
    captures: tuple[Capture, ...]
    verb: str | None

    def match(self, path: str) -> dict[str, str] | None:
        """The captured fields (raw path text, not decoded) if `path` matches, else None."""
        if not path.startswith("/"):
            return None
        parts = path[1:].split("/")
        last, colon, verb = parts[-1].rpartition(":")
        if colon:
            parts[-1] = last
        if (verb if colon else None) != self.verb or len(parts) != len(self.segments):
            return None
        for want, got in zip(self.segments, parts, strict=True):
            if want != got and want != WILDCARD:
                return None
        return {c.field: "/".join(parts[c.start : c.end]) for c in self.captures}

    @property
    def shape(self) -> tuple[tuple[str, ...], str | None]:
        """What decides which paths match (variable names aside): equal shapes are ambiguous."""
        return self.segments, self.verb


def compile_template(text: str) -> PathTemplate:
    """Parse `text` once; raises TemplateError naming the problem."""
    if not isinstance(text, str) or not text.startswith("/"):
        raise TemplateError(f"'{text}' must start with '/'")
    body, verb = _split_verb(text[1:], text)
    segments: list[str] = []
    captures: list[Capture] = []
    for token in _tokens(body, text):
        if token.startswith("{"):
            field, _, pattern = token[1:-1].partition("=")
            if not _IDENT.fullmatch(field):
                raise TemplateError(f"'{text}': '{field}' is not a field path")
            if any(c.field == field for c in captures):
                raise TemplateError(f"'{text}': field '{field}' is bound twice")
            inner = (pattern or WILDCARD).split("/")
            start = len(segments)
            segments.extend(_segment(part, text, in_variable=True) for part in inner)
            captures.append(Capture(field, start, len(segments), "/".join(inner)))
        else:
            segments.append(_segment(token, text, in_variable=False))
    return PathTemplate(text, tuple(segments), tuple(captures), verb)


def _split_verb(body: str, text: str) -> tuple[str, str | None]:
    close = body.rfind("}")
    colon = body.rfind(":")
    if colon <= close:  # no ':' outside the last variable
        return body, None
    verb = body[colon + 1 :]
    if "/" in verb or not _LITERAL.fullmatch(verb):
        raise TemplateError(f"'{text}': '{verb}' is not a verb")
    return body[:colon], verb


def _tokens(body: str, text: str) -> list[str]:
    """Top-level segments, keeping each `{...}` variable (which may contain '/') whole."""
    tokens: list[str] = []
    depth_start: int | None = None
    start = 0
    for index, char in enumerate(body):
        if char == "{":
            if depth_start is not None:
                raise TemplateError(f"'{text}': variables cannot nest")
            depth_start = index
        elif char == "}":
            if depth_start is None:
                raise TemplateError(f"'{text}': '}}' without '{{'")
            depth_start = None
        elif char == "/" and depth_start is None:
            tokens.append(body[start:index])
            start = index + 1
    if depth_start is not None:
        raise TemplateError(f"'{text}': '{{' without '}}'")
    tokens.append(body[start:])
    for token in tokens:
        if token.startswith("{") != token.endswith("}") or token.count("{") > 1:
            raise TemplateError(f"'{text}': a variable must be a whole segment: '{token}'")
    return tokens


def _segment(part: str, text: str, *, in_variable: bool) -> str:
    if part == "**":
        raise TemplateError(f"'{text}': '**' is not supported; use one '*' per segment")
    if part == WILDCARD or _LITERAL.fullmatch(part):
        return part
    where = "in a variable" if in_variable else "as a segment"
    raise TemplateError(f"'{text}': '{part}' is not allowed {where}")
