"""CEL tokens: the lexer, with string, bytes and number literals decoded as CEL does."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from gateway.policy.cel.errors import ConditionError


@dataclass(frozen=True, slots=True)
class Token:
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
KEYWORDS: Final = frozenset({"true", "false", "null", "in"})
RESERVED: Final = frozenset(
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


def syntax_error(problem: str, pos: int) -> ConditionError:
    return ConditionError(f"Syntax error: {problem}", pos + 1)


def tokenize(src: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while True:
        space = _SPACE.match(src, pos)
        if space:
            pos = space.end()
        if pos >= len(src):
            tokens.append(Token("eof", "", None, pos, pos))
            return tokens
        start = _STRING_START.match(src, pos)
        if (
            start
            and set(start["prefix"].lower()) <= {"r", "b"}
            and len(set(start["prefix"].lower())) == len(start["prefix"])
        ):
            tokens.append(_lex_string(src, pos, start["prefix"].lower(), start["quote"]))
        elif ident := _IDENT.match(src, pos):
            tokens.append(Token("ident", ident.group(), ident.group(), pos, ident.end()))
        elif (number := _NUMBER.match(src, pos)) and (src[pos].isdigit() or number["float"]):
            tokens.append(_lex_number(number, pos))
        else:
            for op in _OPERATORS:
                if src.startswith(op, pos):
                    tokens.append(Token("op", op, None, pos, pos + len(op)))
                    break
            else:
                char = src[pos]
                hint = {
                    "=": " (did you mean '=='?)",
                    "&": " (did you mean '&&'?)",
                    "|": " (did you mean '||'?)",
                }.get(char, "")
                raise syntax_error(f"unexpected character {char!r}{hint}", pos)
        pos = tokens[-1].end


def _lex_number(number: re.Match[str], pos: int) -> Token:
    end = number.end()
    text = number.group()
    if number["float"]:
        return Token("double", text, float(text), pos, end)
    if number["hex"]:
        unsigned, value = bool(number["hexu"]), int(number["hex"], 16)
    else:
        unsigned, value = bool(number["decu"]), int(number["dec"])
    if unsigned:
        if value >= 2**64:
            raise syntax_error(f"unsigned integer literal {text} is out of range", pos)
        return Token("uint", text, value, pos, end)
    if value > 2**63:  # 2**63 itself is allowed only after a unary minus; the parser checks
        raise syntax_error(f"integer literal {text} is out of range", pos)
    return Token("int", text, value, pos, end)


def _lex_string(src: str, pos: int, prefix: str, quote: str) -> Token:
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
            raise syntax_error("unterminated string literal", pos)
        if src.startswith(quote, i):
            end = i + len(quote)
            break
        char = src[i]
        if char == "\n" and len(quote) == 1:
            raise syntax_error("unterminated string literal (use triple quotes for newlines)", pos)
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
                raise syntax_error(f"invalid escape sequence '\\{esc}{digits}'", i)
            code = int(digits, 16)
            if esc in "uU" and is_bytes:
                raise syntax_error(f"'\\{esc}' escapes are not allowed in bytes literals", i)
            if esc in "uU" and (code > 0x10FFFF or 0xD800 <= code <= 0xDFFF):
                raise syntax_error(f"invalid code point in '\\{esc}{digits}'", i)
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
        raise syntax_error(f"invalid escape sequence '\\{esc}'", i)
    if is_bytes:
        return Token("bytes", src[pos:end], bytes(data), pos, end)
    return Token("string", src[pos:end], "".join(chars), pos, end)
