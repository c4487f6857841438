"""IAM Conditions: CEL over request.time and resource.*, checked and compiled at policy load."""

from __future__ import annotations

import difflib
import functools
import logging
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from typing import Any, Final, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import cel

from gateway.policy.regexes import Search, compile_search

__all__ = [
    "MAX_EXPRESSION_LENGTH",
    "CompiledCondition",
    "ConditionContext",
    "ConditionError",
    "ConditionEvaluationError",
    "compile_condition",
]

_log = logging.getLogger(__name__)

MAX_EXPRESSION_LENGTH: Final = 1000
"""Longest expression accepted, in characters (IAM's own limit is about 1.5 KB per binding)."""

_MAX_NESTING: Final = 32  # brackets, calls and unary operators nested inside each other
_MAX_DEPTH: Final = 100  # depth of the syntax tree (e.g. a chain of 100 `&&`)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


class ConditionError(ValueError):
    """An expression that cannot be used; `problem` is a message for humans (no traceback)."""

    problem: str
    column: int | None  # 1-based column of the problem in the expression when known

    def __init__(self, problem: str, column: int | None = None) -> None:
        super().__init__(problem if column is None else f"{problem} (at column {column})")
        self.problem = problem
        self.column = column


@dataclass(frozen=True, slots=True)
class ConditionContext:
    """The attributes of one request that conditions can read."""

    resource_name: str
    request_time: datetime  # timezone-aware UTC
    resource_type: str = ""
    resource_service: str = ""


class ConditionEvaluationError(Exception):
    """The expression could not be evaluated for this request (e.g. a type error at run time)."""


class _Failure(Exception):
    """Raised inside compiled conditions; evaluate() turns it into ConditionEvaluationError."""


_Fn = Callable[[ConditionContext], object]
_BoolFn = Callable[[ConditionContext], bool]
_StrFn = Callable[[ConditionContext], str]


@dataclass(frozen=True, slots=True)
class CompiledCondition:
    """A condition checked and compiled at load; `evaluate` is cheap and thread-safe."""

    expression: str
    title: str
    uses_time: bool  # True if it reads request.time: decisions must not be cached past now
    _fn: _BoolFn = field(repr=False, compare=False, kw_only=True)

    def evaluate(self, context: ConditionContext) -> bool:
        """True if the condition holds; raises ConditionEvaluationError, never anything else."""
        try:
            return self._fn(context)
        except Exception as exc:
            name = self.title or self.expression
            detail = str(exc) if isinstance(exc, _Failure) else f"{type(exc).__name__}: {exc}"
            raise ConditionEvaluationError(
                f"condition {name!r} could not be evaluated: {detail}"
            ) from exc


def compile_condition(expression: str, title: str = "") -> CompiledCondition:
    """Parse, type-check and compile once; raises ConditionError for anything unusable."""
    return _compile(expression, title)


# --------------------------------------------------------------------------------------------
# The CEL library (common-expression-language, module `cel`) is a second, independent parser:
# an expression must satisfy both it and ours. It never evaluates anything: a library with its
# own regex engine and its own size() would decide differently from CEL (and from IAM).
# --------------------------------------------------------------------------------------------


_LIBRARY_ERROR = re.compile(r"ERROR: <input>:(\d+):(\d+): (.*)")


def _library_syntax_error(expression: str, exc: Exception) -> ConditionError:
    message = str(exc)
    found = _LIBRARY_ERROR.search(message)
    if found is None:
        return ConditionError(message.strip() or "syntax error")
    line, col = int(found.group(1)), int(found.group(2))
    lines = expression.split("\n")
    offset = sum(len(text) + 1 for text in lines[: line - 1]) + col - 1
    return ConditionError(found.group(3).strip(), offset + 1)


# --------------------------------------------------------------------------------------------
# Types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Type:
    name: str
    params: tuple[_Type, ...] = ()

    def __str__(self) -> str:
        if not self.params:
            return self.name
        return f"{self.name}({', '.join(str(p) for p in self.params)})"


BOOL: Final = _Type("bool")
INT: Final = _Type("int")
UINT: Final = _Type("uint")
DOUBLE: Final = _Type("double")
STRING: Final = _Type("string")
BYTES: Final = _Type("bytes")
NULL: Final = _Type("null_type")
TIMESTAMP: Final = _Type("timestamp")
DURATION: Final = _Type("duration")
DYN: Final = _Type("dyn")
REQUEST: Final = _Type("request")
RESOURCE: Final = _Type("resource")

_NUMERIC: Final = frozenset({INT, UINT, DOUBLE})
_ORDERED: Final = frozenset({INT, UINT, DOUBLE, STRING, BYTES, BOOL, TIMESTAMP, DURATION})
_PRIMITIVE: Final = _ORDERED | {NULL}


def _list(elem: _Type) -> _Type:
    return _Type("list", (elem,))


def _map(key: _Type, value: _Type) -> _Type:
    return _Type("map", (key, value))


def _same(a: _Type, b: _Type) -> bool:
    """Could values of these types be the same kind of value (dyn matches anything)?"""
    if a == DYN or b == DYN:
        return True
    return (
        a.name == b.name
        and len(a.params) == len(b.params)
        and all(_same(x, y) for x, y in zip(a.params, b.params, strict=True))
    )


def _join(types: list[_Type]) -> _Type:
    if not types:
        return DYN
    first = types[0]
    return first if all(t == first for t in types) else DYN


# The attributes a condition can read, with the ConditionContext field that holds each one.
_ATTRIBUTES: Final[dict[str, tuple[_Type, str]]] = {
    "request.time": (TIMESTAMP, "request_time"),
    "resource.name": (STRING, "resource_name"),
    "resource.type": (STRING, "resource_type"),
    "resource.service": (STRING, "resource_service"),
}
_ROOTS: Final = {"request": REQUEST, "resource": RESOURCE}
# Google Cloud IAM attributes and functions that this gateway does not provide.
_IAM_ONLY_ROOTS: Final = frozenset({"api", "destination", "origin", "levels"})


# --------------------------------------------------------------------------------------------
# Lexer
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "int", "uint", "double", "string", "bytes", "ident", "op", "eof"
    text: str
    value: object
    pos: int
    end: int


_SPACE: Final = re.compile(r"(?:[ \t\r\n\f]+|//[^\n]*)+")
_IDENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER: Final = re.compile(
    r"0[xX](?P<hex>[0-9a-fA-F]+)(?P<hexu>[uU])?"
    r"|(?P<float>[0-9]+\.[0-9]+(?:[eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+|\.[0-9]+(?:[eE][+-]?[0-9]+)?)"
    r"|(?P<dec>[0-9]+)(?P<decu>[uU])?"
)
_OPERATORS: Final = (
    "&&",
    "||",
    "==",
    "!=",
    "<=",
    ">=",
    "<",
    ">",
    "!",
    "+",
    "-",
    "*",
    "/",
    "%",
    "?",
    ":",
    ".",
    ",",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
)
_KEYWORDS: Final = frozenset({"true", "false", "null", "in"})
_RESERVED: Final = frozenset(
    {
        "as",
        "break",
        "const",
        "continue",
        "else",
        "for",
        "function",
        "if",
        "import",
        "let",
        "loop",
        "package",
        "namespace",
        "return",
        "var",
        "void",
        "while",
    }
)
_SIMPLE_ESCAPES: Final = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "`": "`",
    "?": "?",
}
_STRING_START: Final = re.compile(r"(?P<prefix>[rRbB]{0,2})(?P<quote>'''|\"\"\"|'|\")")


def _syntax(problem: str, pos: int) -> ConditionError:
    return ConditionError(f"Syntax error: {problem}", pos + 1)


def _tokenize(src: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while True:
        space = _SPACE.match(src, pos)
        if space:
            pos = space.end()
        if pos >= len(src):
            tokens.append(_Token("eof", "", None, pos, pos))
            return tokens
        start = _STRING_START.match(src, pos)
        if (
            start
            and set(start["prefix"].lower()) <= {"r", "b"}
            and len(set(start["prefix"].lower())) == len(start["prefix"])
        ):
            tokens.append(_lex_string(src, pos, start["prefix"].lower(), start["quote"]))
        elif ident := _IDENT.match(src, pos):
            tokens.append(_Token("ident", ident.group(), ident.group(), pos, ident.end()))
        elif (number := _NUMBER.match(src, pos)) and (src[pos].isdigit() or number["float"]):
            tokens.append(_lex_number(number, pos))
        else:
            for op in _OPERATORS:
                if src.startswith(op, pos):
                    tokens.append(_Token("op", op, None, pos, pos + len(op)))
                    break
            else:
                char = src[pos]
                hint = {
                    "=": " (did you mean '=='?)",
                    "&": " (did you mean '&&'?)",
                    "|": " (did you mean '||'?)",
                }.get(char, "")
                raise _syntax(f"unexpected character {char!r}{hint}", pos)
        pos = tokens[-1].end


def _lex_number(number: re.Match[str], pos: int) -> _Token:
    end = number.end()
    text = number.group()
    if number["float"]:
        return _Token("double", text, float(text), pos, end)
    if number["hex"]:
        unsigned, value = bool(number["hexu"]), int(number["hex"], 16)
    else:
        unsigned, value = bool(number["decu"]), int(number["dec"])
    if unsigned:
        if value >= 2**64:
            raise _syntax(f"unsigned integer literal {text} is out of range", pos)
        return _Token("uint", text, value, pos, end)
    if value > 2**63:  # 2**63 itself is allowed only after a unary minus; the parser checks
        raise _syntax(f"integer literal {text} is out of range", pos)
    return _Token("int", text, value, pos, end)


def _lex_string(src: str, pos: int, prefix: str, quote: str) -> _Token:
    raw, is_bytes = "r" in prefix, "b" in prefix
    i = pos + len(prefix) + len(quote)
    chars: list[str] = []
    data = bytearray()

    def emit(text: str) -> None:
        if is_bytes:
            data.extend(text.encode("utf-8"))
        else:
            chars.append(text)

    while True:
        if i >= len(src):
            raise _syntax("unterminated string literal", pos)
        if src.startswith(quote, i):
            end = i + len(quote)
            break
        char = src[i]
        if char == "\n" and len(quote) == 1:
            raise _syntax("unterminated string literal (use triple quotes for newlines)", pos)
        if char != "\\" or raw:
            emit(char)
            i += 1
            continue
        esc = src[i + 1 : i + 2]
        if esc in _SIMPLE_ESCAPES:
            emit(_SIMPLE_ESCAPES[esc])
            i += 2
            continue
        width = {"x": 2, "X": 2, "u": 4, "U": 8}.get(esc)
        if width is not None:
            digits = src[i + 2 : i + 2 + width]
            if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise _syntax(f"invalid escape sequence '\\{esc}{digits}'", i)
            code = int(digits, 16)
            if esc in "uU" and is_bytes:
                raise _syntax(f"'\\{esc}' escapes are not allowed in bytes literals", i)
            if esc in "uU" and (code > 0x10FFFF or 0xD800 <= code <= 0xDFFF):
                raise _syntax(f"invalid code point in '\\{esc}{digits}'", i)
            if is_bytes:
                data.append(code)
            else:
                chars.append(chr(code))
            i += 2 + width
            continue
        octal = src[i + 1 : i + 4]
        if len(octal) == 3 and octal[0] in "0123" and all(c in "01234567" for c in octal):
            if is_bytes:
                data.append(int(octal, 8))
            else:
                chars.append(chr(int(octal, 8)))
            i += 4
            continue
        raise _syntax(f"invalid escape sequence '\\{esc}'", i)
    if is_bytes:
        return _Token("bytes", src[pos:end], bytes(data), pos, end)
    return _Token("string", src[pos:end], "".join(chars), pos, end)


# --------------------------------------------------------------------------------------------
# Syntax tree and parser (the whole CEL expression grammar, minus message construction and
# optional syntax)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Node:
    pos: int
    end: int


@dataclass(frozen=True, slots=True)
class _Lit(_Node):
    type: _Type
    value: object


@dataclass(frozen=True, slots=True)
class _Ident(_Node):
    name: str


@dataclass(frozen=True, slots=True)
class _Select(_Node):
    operand: _Node
    field: str
    name_pos: int


@dataclass(frozen=True, slots=True)
class _Call(_Node):
    target: _Node | None
    name: str
    args: tuple[_Node, ...]
    name_pos: int


@dataclass(frozen=True, slots=True)
class _Index(_Node):
    operand: _Node
    index: _Node


@dataclass(frozen=True, slots=True)
class _ListLit(_Node):
    items: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _MapLit(_Node):
    entries: tuple[tuple[_Node, _Node], ...]


@dataclass(frozen=True, slots=True)
class _Unary(_Node):
    op: str
    operand: _Node


@dataclass(frozen=True, slots=True)
class _Binary(_Node):
    op: str
    left: _Node
    right: _Node
    op_pos: int


@dataclass(frozen=True, slots=True)
class _Cond(_Node):
    cond: _Node
    then: _Node
    orelse: _Node


_LITERAL_TYPES: Final = {
    "int": INT,
    "uint": UINT,
    "double": DOUBLE,
    "string": STRING,
    "bytes": BYTES,
}


class _Parser:
    def __init__(self, src: str) -> None:
        self.tokens = _tokenize(src)
        self.i = 0
        self.nesting = 0

    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def at(self, text: str) -> bool:
        tok = self.tok
        return (tok.kind == "op" or (tok.kind == "ident" and text == "in")) and tok.text == text

    def peek(self, ahead: int) -> _Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def advance(self) -> _Token:
        tok = self.tok
        self.i += 1
        return tok

    def expect(self, text: str) -> _Token:
        if not self.at(text):
            raise _syntax(f"expected '{text}' but found {self.describe()}", self.tok.pos)
        return self.advance()

    def describe(self) -> str:
        tok = self.tok
        return "end of expression" if tok.kind == "eof" else f"'{tok.text}'"

    def nest(self, pos: int) -> None:
        self.nesting += 1
        if self.nesting > _MAX_NESTING:
            raise ConditionError(f"expression is nested too deeply (limit {_MAX_NESTING})", pos + 1)

    def parse(self) -> _Node:
        node = self.expr()
        if self.tok.kind != "eof":
            raise _syntax(f"unexpected {self.describe()} after a complete expression", self.tok.pos)
        return node

    def expr(self) -> _Node:
        cond = self.or_()
        if not self.at("?"):
            return cond
        self.advance()
        then = self.or_()
        self.expect(":")
        orelse = self.expr()
        return _Cond(cond.pos, orelse.end, cond, then, orelse)

    def or_(self) -> _Node:
        return self.binary_level(self.and_, ("||",))

    def and_(self) -> _Node:
        return self.binary_level(self.relation, ("&&",))

    def relation(self) -> _Node:
        return self.binary_level(self.addition, ("<", "<=", ">", ">=", "==", "!=", "in"))

    def addition(self) -> _Node:
        return self.binary_level(self.multiplication, ("+", "-"))

    def multiplication(self) -> _Node:
        return self.binary_level(self.unary, ("*", "/", "%"))

    def binary_level(self, operand: Callable[[], _Node], ops: tuple[str, ...]) -> _Node:
        node = operand()
        while any(self.at(op) for op in ops):
            op = self.advance()
            right = operand()
            node = _Binary(node.pos, right.end, op.text, node, right, op.pos)
        return node

    def unary(self, repeating: str = "") -> _Node:
        # A '-' right before a number is part of the literal (CEL's grammar has signed literals).
        literal, after = self.peek(1), self.peek(2)
        if (
            self.at("-")
            and literal.kind in ("int", "double")
            and not (after.kind == "op" and after.text in (".", "["))
        ):
            sign = self.advance()
            self.advance()
            value = -cast("int | float", literal.value)
            if literal.kind == "int" and value < -(2**63):
                raise _syntax(f"integer literal -{literal.text} is out of range", sign.pos)
            return _Lit(sign.pos, literal.end, _LITERAL_TYPES[literal.kind], value)
        if not (self.at("!") or self.at("-")):
            return self.member()
        # Otherwise CEL repeats one unary operator (`!!x`, `--x`) but does not mix them (`!-x`).
        if repeating and not self.at(repeating):
            raise _syntax(
                f"'{self.tok.text}' cannot follow '{repeating}'; add parentheses", self.tok.pos
            )
        op = self.advance()
        self.nest(op.pos)
        operand = self.unary(op.text)
        self.nesting -= 1
        return _Unary(op.pos, operand.end, op.text, operand)

    def member(self) -> _Node:
        node = self.primary()
        while True:
            if self.at("."):
                self.advance()
                name = self.tok
                if name.kind != "ident" or name.text in _KEYWORDS:
                    raise _syntax(
                        f"expected a field or method name after '.' but found {self.describe()}",
                        name.pos,
                    )
                self.advance()
                if self.at("("):
                    args, end = self.arguments()
                    node = _Call(node.pos, end, node, name.text, args, name.pos)
                else:
                    node = _Select(node.pos, name.end, node, name.text, name.pos)
            elif self.at("["):
                self.nest(self.advance().pos)
                index = self.expr()
                end = self.expect("]").end
                self.nesting -= 1
                node = _Index(node.pos, end, node, index)
            else:
                return node

    def arguments(self) -> tuple[tuple[_Node, ...], int]:
        self.nest(self.expect("(").pos)
        args: list[_Node] = []
        if not self.at(")"):
            args.append(self.expr())
            while self.at(","):
                self.advance()
                args.append(self.expr())
        end = self.expect(")").end
        self.nesting -= 1
        return tuple(args), end

    def primary(self) -> _Node:
        tok = self.tok
        if tok.kind in _LITERAL_TYPES:
            self.advance()
            if tok.kind == "int" and cast(int, tok.value) >= 2**63:
                raise _syntax(f"integer literal {tok.text} is out of range", tok.pos)
            return _Lit(tok.pos, tok.end, _LITERAL_TYPES[tok.kind], tok.value)
        if tok.kind == "ident":
            self.advance()
            if tok.text in ("true", "false"):
                return _Lit(tok.pos, tok.end, BOOL, tok.text == "true")
            if tok.text == "null":
                return _Lit(tok.pos, tok.end, NULL, None)
            if tok.text in _RESERVED or tok.text == "in":
                raise _syntax(f"'{tok.text}' is a reserved word", tok.pos)
            if self.at("("):
                args, end = self.arguments()
                return _Call(tok.pos, end, None, tok.text, args, tok.pos)
            if self.at("{"):
                raise ConditionError(
                    "message construction ('Name{...}') is not supported", tok.pos + 1
                )
            return _Ident(tok.pos, tok.end, tok.text)
        if self.at("("):
            self.nest(self.advance().pos)
            node = self.expr()
            self.expect(")")
            self.nesting -= 1
            return node
        if self.at("["):
            self.nest(self.advance().pos)
            items: list[_Node] = []
            while not self.at("]"):
                items.append(self.expr())
                if not self.at(","):
                    break
                self.advance()
            end = self.expect("]").end
            self.nesting -= 1
            return _ListLit(tok.pos, end, tuple(items))
        if self.at("{"):
            self.nest(self.advance().pos)
            entries: list[tuple[_Node, _Node]] = []
            while not self.at("}"):
                key = self.expr()
                self.expect(":")
                entries.append((key, self.expr()))
                if not self.at(","):
                    break
                self.advance()
            end = self.expect("}").end
            self.nesting -= 1
            return _MapLit(tok.pos, end, tuple(entries))
        if self.at("."):
            raise ConditionError("names with a leading '.' are not supported", tok.pos + 1)
        raise _syntax(f"expected a value but found {self.describe()}", tok.pos)


# --------------------------------------------------------------------------------------------
# Time values. Timestamps and durations are integers of nanoseconds (exact, like CEL); every
# time-valued expression the native compiler handles has the linear form k*request.time + c.
# --------------------------------------------------------------------------------------------

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_NS: Final = 1_000_000_000
_MIN_TS: Final = (date(1, 1, 1).toordinal() - _EPOCH_ORDINAL) * 86_400 * _NS
_MAX_TS: Final = (date(9999, 12, 31).toordinal() - _EPOCH_ORDINAL + 1) * 86_400 * _NS - 1
_MAX_DUR: Final = 315_576_000_000 * _NS + 999_999_999  # cel-go's limit: 10,000 years
_MIN_US: Final = _MIN_TS // 1000
_MAX_US: Final = _MAX_TS // 1000

_RFC3339: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)
_DURATION_PART: Final = re.compile(r"([0-9]*)(?:\.([0-9]*))?(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS: Final = {
    "ns": 1,
    "us": 1000,
    "µs": 1000,
    "μs": 1000,
    "ms": 1_000_000,
    "s": _NS,
    "m": 60 * _NS,
    "h": 3600 * _NS,
}
_TZ_OFFSET: Final = re.compile(r"([+-])([0-9]{2}):([0-9]{2})")


def _parse_timestamp(text: str) -> int | str:
    """Nanoseconds since the epoch, or the reason the text is not an RFC 3339 timestamp."""
    found = _RFC3339.fullmatch(text)
    if found is None:
        return "expected RFC 3339 like '2026-12-31T00:00:00Z'"
    year, month, day, hour, minute, second = (int(found.group(i)) for i in range(1, 7))
    try:
        ordinal = date(year, month, day).toordinal()
    except ValueError as exc:
        return str(exc)
    if hour > 23 or minute > 59 or second > 59:
        return "time of day out of range"
    offset = 0
    if found.group(9):
        off_h, off_m = int(found.group(10)), int(found.group(11))
        if off_h > 23 or off_m > 59:
            return "time zone offset out of range"
        offset = (off_h * 3600 + off_m * 60) * (1 if found.group(9) == "+" else -1)
    fraction = (found.group(7) or "").ljust(9, "0")
    seconds = (ordinal - _EPOCH_ORDINAL) * 86_400 + hour * 3600 + minute * 60 + second - offset
    ns = seconds * _NS + int(fraction or "0")
    if not _MIN_TS <= ns <= _MAX_TS:
        return "outside the range 0001-01-01 to 9999-12-31"
    return ns


def _parse_duration(text: str) -> int | str:
    """Nanoseconds, or the reason the text is not a duration like '3600s' or '1h30m'."""
    body, sign = text, 1
    if body[:1] in "+-" and body:
        sign, body = (-1 if body[0] == "-" else 1), body[1:]
    if body == "0":
        return 0
    total, pos = 0, 0
    while pos < len(body):
        part = _DURATION_PART.match(body, pos)
        if part is None or not (part.group(1) or part.group(2)):
            return "expected a number with a unit (h, m, s, ms, us, ns) like '3600s' or '1h30m'"
        unit = _DURATION_UNITS[part.group(3)]
        fraction = part.group(2) or ""
        total += int(part.group(1) or "0") * unit
        if fraction:
            total += int(fraction) * unit // 10 ** len(fraction)
        pos = part.end()
    if pos == 0:
        return "empty duration"
    total *= sign
    if abs(total) > _MAX_DUR:
        return "out of range (more than 10,000 years)"
    return total


def _ns_to_datetime(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ns // 1000)


@functools.lru_cache(maxsize=256)
def _time_zone(name: str) -> tzinfo:
    """An IANA zone name or a fixed offset like '+05:30'; raises ValueError if unknown."""
    offset = _TZ_OFFSET.fullmatch(name)
    if offset:
        hours, minutes = int(offset.group(2)), int(offset.group(3))
        if hours > 23 or minutes > 59:
            raise ValueError(f"time zone offset {name!r} out of range")
        delta = timedelta(hours=hours, minutes=minutes)
        return timezone(-delta if offset.group(1) == "-" else delta)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r}") from None


def _zone_suggestion(name: str) -> str:
    import zoneinfo

    close = difflib.get_close_matches(name, sorted(zoneinfo.available_timezones()), n=1)
    return f" (did you mean {close[0]!r}?)" if close else " (use an IANA name like 'Europe/Paris')"


# Accessors of timestamps, with CEL's numbering (getMonth and getDayOfMonth count from 0,
# getDate from 1, getDayOfWeek is 0 for Sunday).
_TIME_ACCESSORS: Final[dict[str, Callable[[datetime], int]]] = {
    "getFullYear": lambda t: t.year,
    "getMonth": lambda t: t.month - 1,
    "getDate": lambda t: t.day,
    "getDayOfMonth": lambda t: t.day - 1,
    "getDayOfWeek": lambda t: t.isoweekday() % 7,
    "getDayOfYear": lambda t: t.timetuple().tm_yday - 1,
    "getHours": lambda t: t.hour,
    "getMinutes": lambda t: t.minute,
    "getSeconds": lambda t: t.second,
    "getMilliseconds": lambda t: t.microsecond // 1000,
}
_DURATION_ACCESSORS: Final = frozenset({"getHours", "getMinutes", "getSeconds", "getMilliseconds"})


@dataclass(frozen=True, slots=True)
class _Lin:
    """The value k * request.time + c (nanoseconds), valid only while lo <= request.time <= hi
    (outside, some intermediate value overflows CEL's range and evaluation is an error)."""

    k: int
    c: int
    lo: int = _MIN_TS
    hi: int = _MAX_TS


# --------------------------------------------------------------------------------------------
# Checker and compiler. Every node is type-checked; the IAM subset also gets a Python closure
# (or a constant, or a linear time form). Anything else is refused at load.
# --------------------------------------------------------------------------------------------

_NO_CONST: Final = object()


@dataclass(frozen=True, slots=True)
class _V:
    type: _Type
    node: _Node
    const: object = _NO_CONST
    fn: _Fn | None = None
    lin: _Lin | None = None
    attr: str | None = None  # the ConditionContext field when the node is a plain attribute
    outside: tuple[str, int] | None = None  # why it is outside the evaluated subset, and where

    @property
    def is_const(self) -> bool:
        return self.const is not _NO_CONST


_COMPARE: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_FLIP: Final = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
_COMPREHENSIONS: Final = frozenset({"all", "exists", "exists_one", "map", "filter"})
_STRING_PREDICATES: Final = ("contains", "startsWith", "endsWith", "matches")
_CONVERSIONS: Final[dict[str, tuple[frozenset[_Type], _Type]]] = {
    "string": (_PRIMITIVE - {NULL}, STRING),
    "int": (frozenset({INT, UINT, DOUBLE, STRING}), INT),
    "uint": (frozenset({INT, UINT, DOUBLE, STRING}), UINT),
    "double": (frozenset({INT, UINT, DOUBLE, STRING}), DOUBLE),
    "bytes": (frozenset({STRING, BYTES}), BYTES),
    "timestamp": (frozenset({STRING, TIMESTAMP}), TIMESTAMP),
    "duration": (frozenset({STRING, DURATION}), DURATION),
}
# CEL also has a global matches(s, re), but the library lacks it: the method form is accepted.
_GLOBAL_FUNCTIONS: Final = frozenset({*_CONVERSIONS, "dyn", "size", "has"})
_METHODS: Final = frozenset(
    {*_STRING_PREDICATES, *_TIME_ACCESSORS, *_COMPREHENSIONS, "size", "extract"}
)


def _const_fn(value: object) -> _Fn:
    return lambda _c: value


def _fn_of(v: _V) -> _Fn:
    if v.fn is not None:
        return v.fn
    assert v.is_const, "only fast values have a function"
    return _const_fn(v.const)


def _suggest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class _Compiler:
    def __init__(self, src: str) -> None:
        self.src = src
        self.uses_time = False

    def text(self, node: _Node) -> str:
        return " ".join(self.src[node.pos : node.end].split())

    def error(self, problem: str, node: _Node) -> ConditionError:
        return ConditionError(problem, self.column(node))

    @staticmethod
    def column(node: _Node) -> int:
        """Where to point for a problem with the node: at its name or operator if it has one."""
        if isinstance(node, _Call):
            return node.name_pos + 1
        if isinstance(node, _Binary):
            return node.op_pos + 1
        return node.pos + 1

    def describe(self, v: _V) -> str:
        text = self.text(v.node)
        if len(text) > 40:
            text = text[:37] + "..."
        return f"{v.type} ({text})"

    def outside(self, type_: _Type, node: _Node, reason: str, *parts: _V) -> _V:
        for part in parts:
            if part.outside is not None:
                return _V(type_, node, outside=part.outside)
        return _V(type_, node, outside=(reason, self.column(node)))

    # -- dispatch ----------------------------------------------------------------------------

    def check(self, node: _Node, scope: dict[str, _Type], depth: int = 0) -> _V:
        if depth > _MAX_DEPTH:
            raise self.error(f"expression is nested too deeply (limit {_MAX_DEPTH})", node)
        depth += 1
        if isinstance(node, _Lit):
            return _V(node.type, node, const=node.value)
        if isinstance(node, _Ident):
            return self.ident(node, scope)
        if isinstance(node, _Select):
            return self.select(node, node.operand, node.field, scope, depth)
        if isinstance(node, _Index):
            return self.index(node, scope, depth)
        if isinstance(node, _Call):
            return self.call(node, scope, depth)
        if isinstance(node, _ListLit):
            return self.list_literal(node, scope, depth)
        if isinstance(node, _MapLit):
            keys = [self.check(k, scope, depth) for k, _ in node.entries]
            values = [self.check(v, scope, depth) for _, v in node.entries]
            for key in keys:
                if key.type not in (STRING, INT, UINT, BOOL, DYN):
                    raise self.error(
                        f"map keys must be strings, integers or bools, not {self.describe(key)}",
                        key.node,
                    )
            return self.outside(
                _map(_join([k.type for k in keys]), _join([v.type for v in values])),
                node,
                "map literals",
                *keys,
                *values,
            )
        if isinstance(node, _Unary):
            return self.unary(node, scope, depth)
        if isinstance(node, _Binary):
            return self.binary(node, scope, depth)
        if isinstance(node, _Cond):
            return self.conditional(node, scope, depth)
        raise AssertionError(f"unknown node {node!r}")

    # -- names and attributes ----------------------------------------------------------------

    def ident(self, node: _Ident, scope: dict[str, _Type]) -> _V:
        if node.name in scope:
            return self.outside(scope[node.name], node, "comprehension variables")
        if node.name in _ROOTS:
            raise self.error(
                f"'{node.name}' is not a value by itself; use one of its "
                f"attributes, e.g. {self._attribute_list(node.name)}",
                node,
            )
        known = [*_ROOTS, *scope]
        hint = _suggest(node.name, known)
        if node.name in _IAM_ONLY_ROOTS:
            hint = f": a Google Cloud IAM attribute this gateway does not provide{hint}"
        if not hint:
            hint = f"; conditions can read {self._attribute_list()}"
        return self._raise(f"unknown identifier '{node.name}'{hint}", node)

    def _raise(self, problem: str, node: _Node) -> _V:
        raise self.error(problem, node)

    @staticmethod
    def _attribute_list(root: str = "") -> str:
        return ", ".join(a for a in _ATTRIBUTES if a.startswith(root))

    def attribute(self, node: _Node, root: str, name: str) -> _V:
        full = f"{root}.{name}"
        if full not in _ATTRIBUTES:
            fields: dict[str, str] = {}  # field -> attribute, those of this root first
            for known in sorted(_ATTRIBUTES, key=lambda a: not a.startswith(root + ".")):
                fields.setdefault(known.split(".", 1)[1], known)
            close = difflib.get_close_matches(name, list(fields), n=1, cutoff=0.6)
            hint = f" (did you mean '{fields[close[0]]}'?)" if close else ""
            if not hint:
                hint = f"; conditions can read {self._attribute_list()}"
            at = node.name_pos if isinstance(node, _Select) else node.pos
            raise ConditionError(f"unknown attribute '{full}'{hint}", at + 1)
        type_, attr = _ATTRIBUTES[full]
        if type_ == TIMESTAMP:
            self.uses_time = True
            return _V(type_, node, lin=_Lin(1, 0), attr=attr)
        return _V(type_, node, fn=operator.attrgetter(attr), attr=attr)

    def root_of(self, node: _Node, scope: dict[str, _Type]) -> str | None:
        if isinstance(node, _Ident) and node.name in _ROOTS and node.name not in scope:
            return node.name
        return None

    def select(
        self, node: _Node, operand: _Node, name: str, scope: dict[str, _Type], depth: int
    ) -> _V:
        root = self.root_of(operand, scope)
        if root is not None:
            return self.attribute(node, root, name)
        target = self.check(operand, scope, depth)
        if target.type == DYN:
            return self.outside(DYN, node, "fields of dynamic values", target)
        if target.type.name == "map":
            if not _same(target.type.params[0], STRING):
                raise self.error(f"cannot select field '{name}' of {self.describe(target)}", node)
            return self.outside(target.type.params[1], node, "map fields", target)
        at = node.name_pos if isinstance(node, _Select) else node.pos
        raise ConditionError(f"{self.describe(target)} has no field '{name}'", at + 1)

    def index(self, node: _Index, scope: dict[str, _Type], depth: int) -> _V:
        root = self.root_of(node.operand, scope)
        if root is not None:
            if isinstance(node.index, _Lit) and node.index.type == STRING:
                return self.attribute(node, root, cast(str, node.index.value))
            raise self.error(f"'{root}[...]' needs a string literal", node.index)
        target = self.check(node.operand, scope, depth)
        index = self.check(node.index, scope, depth)
        if target.type.name == "list" and _same(index.type, INT):
            return self.outside(target.type.params[0], node, "list indexing", target, index)
        if target.type.name == "map" and _same(index.type, target.type.params[0]):
            return self.outside(target.type.params[1], node, "map indexing", target, index)
        if target.type == DYN:
            return self.outside(DYN, node, "indexing", target, index)
        raise self.error(f"cannot index {self.describe(target)} with {self.describe(index)}", node)

    def list_literal(self, node: _ListLit, scope: dict[str, _Type], depth: int) -> _V:
        items = [self.check(item, scope, depth) for item in node.items]
        type_ = _list(_join([item.type for item in items]))
        constant = all(item.is_const and item.type in (STRING, INT, BOOL) for item in items)
        if constant and (type_.params[0] != DYN or not items):
            return _V(type_, node, const=tuple(item.const for item in items))
        return self.outside(type_, node, "list literals other than constant strings", *items)

    # -- calls -------------------------------------------------------------------------------

    def call(self, node: _Call, scope: dict[str, _Type], depth: int) -> _V:
        name, args = node.name, node.args
        if node.target is None:
            if name == "has":
                return self.has(node, scope, depth)
            if name not in _GLOBAL_FUNCTIONS:
                if name in _METHODS:
                    raise self.error(f"{name}() is a method; call it as value.{name}(...)", node)
                raise self.error(
                    f"unknown function '{name}'"
                    f"{_suggest(name, sorted(_GLOBAL_FUNCTIONS | _METHODS))}",
                    node,
                )
            if len(args) != 1:
                raise self.error(f"{name}() takes 1 argument, got {len(args)}", node)
            arg = self.check(args[0], scope, depth)
            if name == "size":
                return self.size(node, arg)
            if name == "dyn":
                return self.outside(DYN, node, "dyn()", arg)
            return self.conversion(node, name, arg)
        if name in _COMPREHENSIONS:
            return self.comprehension(node, scope, depth)
        if (
            isinstance(node.target, _Ident)
            and node.target.name not in scope
            and (node.target.name not in _ROOTS and name not in _METHODS)
        ):
            qualified = f"{node.target.name}.{name}"
            note = ""
            if node.target.name in _IAM_ONLY_ROOTS:
                note = ": a Google Cloud IAM function this gateway does not provide"
            raise self.error(f"unknown function '{qualified}'{note}", node)
        target = self.check(node.target, scope, depth)
        if name in _STRING_PREDICATES:
            return self.string_predicate(node, name, target, args, scope, depth)
        if name == "extract":
            return self.extract(node, target, args, scope, depth)
        if name in _TIME_ACCESSORS:
            return self.time_accessor(node, name, target, args, scope, depth)
        if name == "size":
            if args:
                raise self.error(f"size() takes no arguments here, got {len(args)}", node)
            return self.size(node, target)
        if name in _GLOBAL_FUNCTIONS:
            raise self.error(f"{name}() is not a method; call it as {name}(...)", node)
        raise self.error(f"unknown function '{name}'{_suggest(name, sorted(_METHODS))}", node)

    def has(self, node: _Call, scope: dict[str, _Type], depth: int) -> _V:
        if len(node.args) != 1 or not isinstance(node.args[0], _Select):
            raise self.error("has() takes one field selection, e.g. has(resource.name)", node)
        arg = node.args[0]
        if self.root_of(arg.operand, scope) is not None:
            self.select(arg, arg.operand, arg.field, scope, depth)  # reject unknown attributes
            return _V(BOOL, node, const=True)
        target = self.check(arg.operand, scope, depth)
        if target.type != DYN and target.type.name != "map":
            raise self.error(f"has() cannot test fields of {self.describe(target)}", node)
        return self.outside(BOOL, node, "has() on dynamic values", target)

    def size(self, node: _Node, arg: _V) -> _V:
        if arg.type not in (STRING, BYTES, DYN) and arg.type.name not in ("list", "map"):
            raise self.error(f"size() is not defined for {self.describe(arg)}", node)
        if arg.outside is None and (arg.type in (STRING, BYTES) or arg.type.name == "list"):
            if arg.is_const:
                return _V(INT, node, const=len(cast("str | bytes | tuple[object, ...]", arg.const)))
            if arg.fn is not None:
                get = cast(_StrFn, arg.fn)
                return _V(INT, node, fn=lambda c: len(get(c)))
        return self.outside(INT, node, "size()", arg)

    def conversion(self, node: _Call, name: str, arg: _V) -> _V:
        accepted, result = _CONVERSIONS[name]
        if arg.type != DYN and arg.type not in accepted:
            raise self.error(f"{name}() cannot convert {self.describe(arg)}", node)
        if arg.type == result:
            return arg
        if name in ("timestamp", "duration") and arg.is_const:
            text = cast(str, arg.const)
            parsed = _parse_timestamp(text) if name == "timestamp" else _parse_duration(text)
            if isinstance(parsed, str):
                raise self.error(f"invalid {name} {text!r}: {parsed}", arg.node)
            return _V(result, node, lin=_Lin(0, parsed))
        return self.outside(result, node, f"{name}() of non-literal values", arg)

    def string_predicate(
        self,
        node: _Call,
        name: str,
        target: _V,
        args: tuple[_Node, ...],
        scope: dict[str, _Type],
        depth: int,
    ) -> _V:
        if target.type not in (STRING, DYN):
            raise self.error(f"{name}() applies to strings, not to {self.describe(target)}", node)
        if len(args) != 1:
            raise self.error(f"{name}() takes 1 argument, got {len(args)}", node)
        arg = self.check(args[0], scope, depth)
        if arg.type not in (STRING, DYN):
            raise self.error(
                f"the argument of {name}() must be a string, not {self.describe(arg)}", arg.node
            )
        search: Search | None = None
        if name == "matches":
            if not arg.is_const:
                return self.outside(BOOL, node, "matches() with a pattern that is not a literal")
            compiled = compile_search(cast(str, arg.const))
            if isinstance(compiled, str):
                raise self.error(compiled, arg.node)
            search = compiled
        if target.outside is not None or arg.outside is not None or target.type == DYN:
            return self.outside(BOOL, node, f"{name}()", target, arg)
        get = cast(_StrFn, _fn_of(target))
        if search is not None:
            if target.is_const:
                return _V(BOOL, node, const=search(cast(str, target.const)))
            return _V(BOOL, node, fn=lambda c: search(get(c)))
        if arg.is_const:
            text = cast(str, arg.const)
            if target.is_const:
                return _V(BOOL, node, const=_STR_METHODS[name](cast(str, target.const), text))
            if name == "startsWith":
                return _V(BOOL, node, fn=lambda c: get(c).startswith(text))
            if name == "endsWith":
                return _V(BOOL, node, fn=lambda c: get(c).endswith(text))
            return _V(BOOL, node, fn=lambda c: text in get(c))
        method, get_arg = _STR_METHODS[name], cast(_StrFn, _fn_of(arg))
        return _V(BOOL, node, fn=lambda c: method(get(c), get_arg(c)))

    def extract(
        self,
        node: _Call,
        target: _V,
        args: tuple[_Node, ...],
        scope: dict[str, _Type],
        depth: int,
    ) -> _V:
        """IAM's `name.extract("prefix{var}suffix")`: the text between the first prefix and the
        next suffix (to the end when there is no suffix), or "" when the name has no such part."""
        if target.type not in (STRING, DYN):
            raise self.error(f"extract() applies to strings, not to {self.describe(target)}", node)
        if len(args) != 1:
            raise self.error(f"extract() takes 1 argument, got {len(args)}", node)
        arg = self.check(args[0], scope, depth)
        if not (arg.type == STRING and arg.is_const):
            raise self.error(
                'the template of extract() must be a string literal such as "projects/{name}/"',
                arg.node,
            )
        template = _EXTRACT_TEMPLATE.fullmatch(cast(str, arg.const))
        if template is None:
            raise self.error(
                "an extract() template holds exactly one {variable} between literal text, "
                'e.g. "projects/{project}/"; braces may not appear elsewhere',
                arg.node,
            )
        prefix, suffix = template["prefix"], template["suffix"]
        if target.outside is not None or target.type == DYN:
            return self.outside(STRING, node, "extract()", target)
        if target.is_const:
            return _V(STRING, node, const=_extract(cast(str, target.const), prefix, suffix))
        get = cast(_StrFn, _fn_of(target))
        return _V(STRING, node, fn=lambda c: _extract(get(c), prefix, suffix))

    def time_accessor(
        self,
        node: _Call,
        name: str,
        target: _V,
        args: tuple[_Node, ...],
        scope: dict[str, _Type],
        depth: int,
    ) -> _V:
        if target.type == DURATION and name in _DURATION_ACCESSORS:
            if args:
                raise self.error(f"{name}() of a duration takes no arguments", node)
            return self.outside(INT, node, f"{name}() of durations", target)
        if target.type not in (TIMESTAMP, DYN):
            raise self.error(
                f"{name}() applies to timestamps such as request.time, not to "
                f"{self.describe(target)}",
                node,
            )
        if len(args) > 1:
            raise self.error(
                f"{name}() takes an optional time zone, got {len(args)} arguments", node
            )
        zone: tzinfo = UTC
        if args:
            arg = self.check(args[0], scope, depth)
            if not (arg.type == STRING and arg.is_const):
                raise self.error(
                    f"the time zone of {name}() must be a string literal such as "
                    f"'America/New_York'",
                    arg.node,
                )
            zone_name = cast(str, arg.const)
            try:
                zone = _time_zone(zone_name)
            except ValueError as exc:
                suggestion = "" if _TZ_OFFSET.fullmatch(zone_name) else _zone_suggestion(zone_name)
                raise self.error(f"{exc}{suggestion}", arg.node) from None
        accessor = _TIME_ACCESSORS[name]
        lin = target.lin
        if lin is not None and lin.k == 0:
            return _V(INT, node, const=accessor(_ns_to_datetime(lin.c).astimezone(zone)))
        if lin is not None and lin.k == 1 and lin.c == 0 and target.attr is not None:
            return _V(INT, node, fn=_time_part(accessor, zone))
        return self.outside(INT, node, f"{name}() of computed timestamps", target)

    def comprehension(self, node: _Call, scope: dict[str, _Type], depth: int) -> _V:
        name, args = node.name, node.args
        arity = (2, 3) if name == "map" else (2,)
        if len(args) not in arity:
            raise self.error(
                f"{name}() takes {' or '.join(map(str, arity))} arguments, got {len(args)}", node
            )
        variable = args[0]
        if not isinstance(variable, _Ident):
            raise self.error(f"the first argument of {name}() must be a variable name", variable)
        if variable.name in _ROOTS:
            raise self.error(f"'{variable.name}' cannot be used as a variable name", variable)
        assert node.target is not None
        target = self.check(node.target, scope, depth)
        if target.type.name in ("list", "map"):
            element = target.type.params[0]
        elif target.type == DYN:
            element = DYN
        else:
            raise self.error(
                f"{name}() applies to lists and maps, not to {self.describe(target)}", node
            )
        inner = {**scope, variable.name: element}
        parts = [self.check(arg, inner, depth) for arg in args[1:]]
        predicates = parts[:-1] if name == "map" else parts
        for predicate in predicates:
            if predicate.type not in (BOOL, DYN):
                raise self.error(
                    f"the condition of {name}() must be a bool, not {self.describe(predicate)}",
                    predicate.node,
                )
        result = {"map": _list(parts[-1].type), "filter": _list(element)}.get(name, BOOL)
        return self.outside(result, node, f"{name}()", target)

    # -- operators ---------------------------------------------------------------------------

    def unary(self, node: _Unary, scope: dict[str, _Type], depth: int) -> _V:
        operand = self.check(node.operand, scope, depth)
        if node.op == "!":
            if operand.type not in (BOOL, DYN):
                raise self.error(f"'!' applies to bools, not to {self.describe(operand)}", node)
            if operand.is_const:
                return _V(BOOL, node, const=not operand.const)
            if operand.fn is not None:
                get = operand.fn
                return _V(BOOL, node, fn=lambda c: not get(c))
            return self.outside(BOOL, node, "'!'", operand)
        if operand.type not in (INT, DOUBLE, DYN):
            hint = ' (write duration("-1h") or subtract)' if operand.type == DURATION else ""
            raise self.error(
                f"'-' applies to int and double, not to {self.describe(operand)}{hint}", node
            )
        if operand.is_const and operand.type == DOUBLE:
            return _V(DOUBLE, node, const=-cast(float, operand.const))
        if operand.is_const and operand.type == INT:
            value = -cast(int, operand.const)
            if value >= 2**63:
                raise self.error("int overflow: the result is out of range", node)
            return _V(INT, node, const=value)
        return self.outside(operand.type, node, "arithmetic", operand)

    def binary(self, node: _Binary, scope: dict[str, _Type], depth: int) -> _V:
        left = self.check(node.left, scope, depth)
        right = self.check(node.right, scope, depth)
        op = node.op
        if op in ("&&", "||"):
            return self.logical(node, op, left, right)
        if op in _COMPARE:
            return self.compare(node, op, left, right)
        if op == "in":
            return self.membership(node, left, right)
        return self.arithmetic(node, op, left, right)

    def logical(self, node: _Binary, op: str, left: _V, right: _V) -> _V:
        for side in (left, right):
            if side.type not in (BOOL, DYN):
                raise self.error(
                    f"'{op}' needs bools on both sides, but this side is {self.describe(side)}",
                    side.node,
                )
        absorbing = op == "||"  # true for ||, false for &&: decides regardless of the other side
        for side, other in ((left, right), (right, left)):
            if side.is_const:
                # CEL's && and || are commutative even with errors: `x && false` is false.
                if side.const is absorbing:
                    return _V(BOOL, node, const=absorbing)
                return other
        if left.fn is None or right.fn is None:
            return self.outside(BOOL, node, f"'{op}'", left, right)
        return _V(BOOL, node, fn=_logical(op, left.fn, right.fn))

    def compare(self, node: _Binary, op: str, left: _V, right: _V) -> _V:
        lt, rt = left.type, right.type
        if lt == DYN or rt == DYN:
            return self.outside(BOOL, node, f"'{op}' on dynamic values", left, right)
        if lt in _NUMERIC and rt in _NUMERIC and lt != rt:
            raise self.error(
                f"'{op}' compares {self.describe(left)} with {self.describe(right)}: "
                f"CEL does not convert between int, uint and double (write 9, not "
                f"9.0 or 9u, for an int)",
                node,
            )
        if op in ("==", "!=") and NULL in (lt, rt):
            if lt != rt:
                raise self.error(
                    f"{self.describe(left if lt != NULL else right)} is never null", node
                )
            return _V(BOOL, node, const=op == "==")
        valid = _same(lt, rt) and (op in ("==", "!=") or lt in _ORDERED)
        if not valid:
            hint = ""
            if TIMESTAMP in (lt, rt) and STRING in (lt, rt):
                hint = ' (write timestamp("2026-01-01T00:00:00Z") for a point in time)'
            elif DURATION in (lt, rt) and STRING in (lt, rt):
                hint = ' (write duration("3600s") for a length of time)'
            elif op not in ("==", "!=") and lt == rt:
                hint = f" ({lt} values are not ordered)"
            raise self.error(
                f"'{op}' cannot compare {self.describe(left)} with {self.describe(right)}{hint}",
                node,
            )
        if left.lin is not None and right.lin is not None:
            return self.compare_time(node, op, left.lin, right.lin)
        if left.outside is not None or right.outside is not None or lt.name in ("list", "map"):
            return self.outside(BOOL, node, f"'{op}' on {lt}", left, right)
        if left.is_const and right.is_const:
            return _V(BOOL, node, const=_COMPARE[op](left.const, right.const))
        compare = _COMPARE[op]
        if right.is_const:
            get, value = _fn_of(left), right.const
            return _V(BOOL, node, fn=lambda c: compare(get(c), value))
        if left.is_const:
            get, value = _fn_of(right), left.const
            return _V(BOOL, node, fn=lambda c: compare(value, get(c)))
        get_left, get_right = _fn_of(left), _fn_of(right)
        return _V(BOOL, node, fn=lambda c: compare(get_left(c), get_right(c)))

    def compare_time(self, node: _Binary, op: str, left: _Lin, right: _Lin) -> _V:
        # left op right  <=>  (left.k - right.k) * t  op  right.c - left.c
        k, c = left.k - right.k, right.c - left.c
        lo, hi = max(left.lo, right.lo), min(left.hi, right.hi)
        if k == -1:
            k, c, op = 1, -c, _FLIP[op]
        if k == 0:
            result = _COMPARE[op](0, c)
            if lo <= _MIN_TS and hi >= _MAX_TS:
                return _V(BOOL, node, const=result)
            return _V(BOOL, node, fn=_checked_time(lo, hi, _const_fn(result)))
        if k != 1:
            return _V(BOOL, node, outside=("this arithmetic on request.time", self.column(node)))
        fn = _compare_request_time(op, c)
        if lo > _MIN_TS or hi < _MAX_TS:
            fn = _checked_time(lo, hi, fn)
        return _V(BOOL, node, fn=fn)

    def membership(self, node: _Binary, left: _V, right: _V) -> _V:
        rt = right.type
        if rt.name not in ("list", "map") and rt != DYN:
            raise self.error(
                f"'in' needs a list or map on the right, not {self.describe(right)}", node
            )
        if rt != DYN and not _same(left.type, rt.params[0]):
            raise self.error(
                f"'in' looks for {self.describe(left)} in {self.describe(right)}", node
            )
        if left.outside is None and right.is_const and left.type in (STRING, INT, BOOL):
            values = frozenset(cast("tuple[object, ...]", right.const))
            if left.is_const:
                return _V(BOOL, node, const=left.const in values)
            get = _fn_of(left)
            return _V(BOOL, node, fn=lambda c: get(c) in values)
        return self.outside(BOOL, node, "'in'", left, right)

    def arithmetic(self, node: _Binary, op: str, left: _V, right: _V) -> _V:
        lt, rt = left.type, right.type
        result: _Type | None = None
        numeric = lt in _NUMERIC and (op != "%" or lt != DOUBLE)
        if lt == DYN or rt == DYN:
            result = DYN
        elif lt == rt and (numeric or (op == "+" and lt in (STRING, BYTES))):
            result = lt
        elif op == "+" and lt.name == rt.name == "list":
            result = _list(_join([lt.params[0], rt.params[0]]))
        elif op == "+" and {lt, rt} == {TIMESTAMP, DURATION}:
            result = TIMESTAMP
        elif op in ("+", "-") and lt == rt == DURATION:
            result = DURATION
        elif op == "-" and lt == TIMESTAMP and rt in (TIMESTAMP, DURATION):
            result = DURATION if rt == TIMESTAMP else TIMESTAMP
        if result is None:
            hint = ""
            if lt in _NUMERIC and rt in _NUMERIC:
                hint = " (CEL does not convert between int, uint and double)"
            raise self.error(
                f"'{op}' cannot combine {self.describe(left)} and {self.describe(right)}{hint}",
                node,
            )
        if left.lin is not None and right.lin is not None:
            a, b = left.lin, right.lin
            sign = 1 if op == "+" else -1
            return self.linear(node, result, a.k + sign * b.k, a.c + sign * b.c, a, b)
        if result == STRING and left.outside is None and right.outside is None:
            if left.is_const and right.is_const:
                return _V(STRING, node, const=cast(str, left.const) + cast(str, right.const))
            get_left, get_right = cast(_StrFn, _fn_of(left)), cast(_StrFn, _fn_of(right))
            return _V(STRING, node, fn=lambda c: get_left(c) + get_right(c))
        return self.outside(result, node, "arithmetic", left, right)

    def linear(self, node: _Node, type_: _Type, k: int, c: int, a: _Lin, b: _Lin) -> _V:
        """The time value k*t + c, after checking it stays within CEL's range."""
        low, high = (_MIN_TS, _MAX_TS) if type_ == TIMESTAMP else (-_MAX_DUR, _MAX_DUR)
        lo, hi = max(a.lo, b.lo), min(a.hi, b.hi)
        if k == 0:
            if not low <= c <= high:
                raise self.error(f"{type_} overflow: the result is out of range", node)
        elif k == 1:
            lo, hi = max(lo, low - c), min(hi, high - c)
        elif k == -1:
            lo, hi = max(lo, c - high), min(hi, c - low)
        else:
            return _V(type_, node, outside=("this arithmetic on request.time", self.column(node)))
        return _V(type_, node, lin=_Lin(k, c, lo, hi))

    def conditional(self, node: _Cond, scope: dict[str, _Type], depth: int) -> _V:
        cond = self.check(node.cond, scope, depth)
        then = self.check(node.then, scope, depth)
        orelse = self.check(node.orelse, scope, depth)
        if cond.type not in (BOOL, DYN):
            raise self.error(
                f"the condition of '?:' must be a bool, not {self.describe(cond)}", cond.node
            )
        if not _same(then.type, orelse.type):
            raise self.error(
                f"the branches of '?:' have different types: "
                f"{self.describe(then)} and {self.describe(orelse)}",
                node,
            )
        type_ = then.type if then.type == orelse.type else DYN
        if cond.is_const and cond.outside is None:
            return then if cond.const else orelse
        fast = all(v.outside is None and v.lin is None for v in (cond, then, orelse))
        if fast and type_ in (BOOL, INT, STRING):
            test, get_then, get_else = _fn_of(cond), _fn_of(then), _fn_of(orelse)
            return _V(type_, node, fn=lambda c: get_then(c) if test(c) else get_else(c))
        return self.outside(type_, node, "'?:'", cond, then, orelse)


_EXTRACT_TEMPLATE: Final = re.compile(
    r"(?P<prefix>[^{}]*)\{[A-Za-z_][A-Za-z0-9_]*\}(?P<suffix>[^{}]*)", re.ASCII
)


def _extract(name: str, prefix: str, suffix: str) -> str:
    start = name.find(prefix)
    if start < 0:
        return ""
    start += len(prefix)
    if not suffix:
        return name[start:]
    end = name.find(suffix, start)
    return name[start:end] if end >= 0 else ""


_STR_METHODS: Final[dict[str, Callable[[str, str], bool]]] = {
    "startsWith": str.startswith,
    "endsWith": str.endswith,
    "contains": lambda s, sub: sub in s,
}


def _logical(op: str, left: _Fn, right: _Fn) -> _Fn:
    # An error on one side is absorbed when the other side decides the result, as in CEL.
    if op == "&&":

        def both(c: ConditionContext) -> object:
            try:
                first = left(c)
            except Exception:
                if not right(c):
                    return False
                raise
            return first and right(c)

        return both

    def either(c: ConditionContext) -> object:
        try:
            first = left(c)
        except Exception:
            if right(c):
                return True
            raise
        return first or right(c)

    return either


def _time_part(accessor: Callable[[datetime], int], zone: tzinfo) -> _Fn:
    def part(c: ConditionContext) -> int:
        when = c.request_time
        if when.tzinfo is None:
            raise _Failure("request.time is not timezone-aware")
        return accessor(when.astimezone(zone))

    return part


def _checked_time(lo: int, hi: int, fn: _Fn) -> _Fn:
    """fn, but an error when request.time is where an intermediate value overflows."""
    lo_us, hi_us = -(-lo // 1000), hi // 1000  # request.time has whole microseconds
    if lo_us > hi_us or lo_us > _MAX_US or hi_us < _MIN_US:

        def always_fails(c: ConditionContext) -> object:
            raise _Failure("timestamp arithmetic overflows CEL's range")

        return always_fails
    low = _ns_to_datetime(lo_us * 1000) if lo_us > _MIN_US else None
    high = _ns_to_datetime(hi_us * 1000) if hi_us < _MAX_US else None

    def checked(c: ConditionContext) -> object:
        when = c.request_time
        if (low is not None and when < low) or (high is not None and when > high):
            raise _Failure("timestamp arithmetic overflows CEL's range")
        return fn(c)

    return checked


def _compare_request_time(op: str, c: int) -> _Fn:
    """`request.time op c` for c in nanoseconds; request.time has microseconds only."""
    micros, rest = divmod(c, 1000)
    if micros < _MIN_US or micros > _MAX_US:  # beyond any datetime: the answer is fixed
        above = micros > _MAX_US  # c is above every request time
        return _const_fn(_COMPARE[op](0, 1) if above else _COMPARE[op](1, 0))
    bound = _ns_to_datetime(micros * 1000)
    if rest:  # c lies strictly between bound and the next microsecond
        if op in ("<", "<="):
            return lambda ctx: ctx.request_time <= bound
        if op in (">", ">="):
            return lambda ctx: ctx.request_time > bound
        return _const_fn(op == "!=")
    compare = {
        "<": lambda ctx: ctx.request_time < bound,
        "<=": lambda ctx: ctx.request_time <= bound,
        ">": lambda ctx: ctx.request_time > bound,
        ">=": lambda ctx: ctx.request_time >= bound,
        "==": lambda ctx: ctx.request_time == bound,
        "!=": lambda ctx: ctx.request_time != bound,
    }
    return cast(_Fn, compare[op])


# --------------------------------------------------------------------------------------------
# Putting it together
# --------------------------------------------------------------------------------------------


def _compile(expression: str, title: str) -> CompiledCondition:
    if not isinstance(expression, str):
        raise ConditionError(
            f"a condition expression must be a string, not {type(expression).__name__}"
        )
    if not expression.strip():
        raise ConditionError("the condition expression is empty")
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise ConditionError(
            f"the condition expression is {len(expression)} characters long; "
            f"the limit is {MAX_EXPRESSION_LENGTH}"
        )
    try:
        cel.compile(expression)
    except Exception as exc:
        raise _library_syntax_error(expression, exc) from None
    try:
        tree = _Parser(expression).parse()
    except ConditionError as exc:
        if exc.problem.startswith("Syntax error: "):
            # CEL itself understood it, we do not.
            problem = exc.problem.removeprefix("Syntax error: ")
            raise ConditionError(f"unsupported syntax: {problem}", exc.column) from None
        raise
    compiler = _Compiler(expression)
    result = compiler.check(tree, {})
    if result.type not in (BOOL, DYN):
        raise ConditionError(
            f"a condition must evaluate to a bool, but this is "
            f"{compiler.describe(result)}; compare it with something, e.g. "
            f'resource.name.startsWith("projects/")',
            1,
        )
    if result.outside is not None:
        reason, column = result.outside
        raise ConditionError(
            f"{reason}: valid CEL, but outside the IAM condition subset this gateway "
            f"evaluates ({_SUBSET_HINT})",
            column,
        )
    fn = cast(_BoolFn, _fn_of(result))
    return CompiledCondition(expression, title, compiler.uses_time, _fn=fn)


_SUBSET_HINT: Final = (
    "comparisons, &&, ||, !, ?:, 'in' a list of literals, size(), + on strings, "
    "startsWith/endsWith/contains/matches/extract on strings, and timestamp(), duration() and "
    "the getX() accessors on request.time"
)
