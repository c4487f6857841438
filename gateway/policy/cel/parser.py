"""The CEL syntax tree and its parser: the whole expression grammar, minus message construction
and optional syntax."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, cast

from gateway.policy.cel.errors import ConditionError
from gateway.policy.cel.lexer import KEYWORDS, RESERVED, Token, syntax_error, tokenize
from gateway.policy.cel.types import BOOL, BYTES, DOUBLE, INT, NULL, STRING, UINT, CelType

_MAX_NESTING: Final = 32  # brackets, calls and unary operators nested inside each other


@dataclass(frozen=True, slots=True)
class Node:
    pos: int
    end: int


@dataclass(frozen=True, slots=True)
class Lit(Node):
    type: CelType
    value: object


@dataclass(frozen=True, slots=True)
class Ident(Node):
    name: str


@dataclass(frozen=True, slots=True)
class Select(Node):
    operand: Node
    field: str
    name_pos: int


@dataclass(frozen=True, slots=True)
class Call(Node):
    target: Node | None
    name: str
    args: tuple[Node, ...]
    name_pos: int


@dataclass(frozen=True, slots=True)
class Index(Node):
    operand: Node
    index: Node


@dataclass(frozen=True, slots=True)
class ListLit(Node):
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class MapLit(Node):
    entries: tuple[tuple[Node, Node], ...]


@dataclass(frozen=True, slots=True)
class Unary(Node):
    op: str
    operand: Node


@dataclass(frozen=True, slots=True)
class Binary(Node):
    op: str
    left: Node
    right: Node
    op_pos: int


@dataclass(frozen=True, slots=True)
class Cond(Node):
    cond: Node
    then: Node
    orelse: Node


_LITERAL_TYPES: Final = {
    "int": INT,
    "uint": UINT,
    "double": DOUBLE,
    "string": STRING,
    "bytes": BYTES,
}


class Parser:
    def __init__(self, src: str) -> None:
        self.tokens = tokenize(src)
        self.i = 0
        self.nesting = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def at(self, text: str) -> bool:
        tok = self.tok
        return (tok.kind == "op" or (tok.kind == "ident" and text == "in")) and tok.text == text

    def peek(self, ahead: int) -> Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def advance(self) -> Token:
        tok = self.tok
        self.i += 1
        return tok

    def expect(self, text: str) -> Token:
        if not self.at(text):
            raise syntax_error(f"expected '{text}' but found {self.describe()}", self.tok.pos)
        return self.advance()

    def describe(self) -> str:
        tok = self.tok
        return "end of expression" if tok.kind == "eof" else f"'{tok.text}'"

    def nest(self, pos: int) -> None:
        self.nesting += 1
        if self.nesting > _MAX_NESTING:
            raise ConditionError(f"expression is nested too deeply (limit {_MAX_NESTING})", pos + 1)

    def parse(self) -> Node:
        node = self.expr()
        if self.tok.kind != "eof":
            raise syntax_error(
                f"unexpected {self.describe()} after a complete expression", self.tok.pos
            )
        return node

    def expr(self) -> Node:
        cond = self.or_()
        if not self.at("?"):
            return cond
        self.advance()
        then = self.or_()
        self.expect(":")
        orelse = self.expr()
        return Cond(cond.pos, orelse.end, cond, then, orelse)

    def or_(self) -> Node:
        return self.binary_level(self.and_, ("||",))

    def and_(self) -> Node:
        return self.binary_level(self.relation, ("&&",))

    def relation(self) -> Node:
        return self.binary_level(self.addition, ("<", "<=", ">", ">=", "==", "!=", "in"))

    def addition(self) -> Node:
        return self.binary_level(self.multiplication, ("+", "-"))

    def multiplication(self) -> Node:
        return self.binary_level(self.unary, ("*", "/", "%"))

    def binary_level(self, operand: Callable[[], Node], ops: tuple[str, ...]) -> Node:
        node = operand()
        while any(self.at(op) for op in ops):
            op = self.advance()
            right = operand()
            node = Binary(node.pos, right.end, op.text, node, right, op.pos)
        return node

    def unary(self, repeating: str = "") -> Node:
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
                raise syntax_error(f"integer literal -{literal.text} is out of range", sign.pos)
            return Lit(sign.pos, literal.end, _LITERAL_TYPES[literal.kind], value)
        if not (self.at("!") or self.at("-")):
            return self.member()
        # Otherwise CEL repeats one unary operator (`!!x`, `--x`) but does not mix them (`!-x`).
        if repeating and not self.at(repeating):
            raise syntax_error(
                f"'{self.tok.text}' cannot follow '{repeating}'; add parentheses", self.tok.pos
            )
        op = self.advance()
        self.nest(op.pos)
        operand = self.unary(op.text)
        self.nesting -= 1
        return Unary(op.pos, operand.end, op.text, operand)

    def member(self) -> Node:
        node = self.primary()
        while True:
            if self.at("."):
                self.advance()
                name = self.tok
                if name.kind != "ident" or name.text in KEYWORDS:
                    raise syntax_error(
                        f"expected a field or method name after '.' but found {self.describe()}",
                        name.pos,
                    )
                self.advance()
                if self.at("("):
                    args, end = self.arguments()
                    node = Call(node.pos, end, node, name.text, args, name.pos)
                else:
                    node = Select(node.pos, name.end, node, name.text, name.pos)
            elif self.at("["):
                self.nest(self.advance().pos)
                index = self.expr()
                end = self.expect("]").end
                self.nesting -= 1
                node = Index(node.pos, end, node, index)
            else:
                return node

    def arguments(self) -> tuple[tuple[Node, ...], int]:
        self.nest(self.expect("(").pos)
        args: list[Node] = []
        if not self.at(")"):
            args.append(self.expr())
            while self.at(","):
                self.advance()
                args.append(self.expr())
        end = self.expect(")").end
        self.nesting -= 1
        return tuple(args), end

    def primary(self) -> Node:
        tok = self.tok
        if tok.kind in _LITERAL_TYPES:
            self.advance()
            if tok.kind == "int" and cast(int, tok.value) >= 2**63:
                raise syntax_error(f"integer literal {tok.text} is out of range", tok.pos)
            return Lit(tok.pos, tok.end, _LITERAL_TYPES[tok.kind], tok.value)
        if tok.kind == "ident":
            self.advance()
            if tok.text in ("true", "false"):
                return Lit(tok.pos, tok.end, BOOL, tok.text == "true")
            if tok.text == "null":
                return Lit(tok.pos, tok.end, NULL, None)
            if tok.text in RESERVED or tok.text == "in":
                raise syntax_error(f"'{tok.text}' is a reserved word", tok.pos)
            if self.at("("):
                args, end = self.arguments()
                return Call(tok.pos, end, None, tok.text, args, tok.pos)
            if self.at("{"):
                raise ConditionError(
                    "message construction ('Name{...}') is not supported", tok.pos + 1
                )
            return Ident(tok.pos, tok.end, tok.text)
        if self.at("("):
            self.nest(self.advance().pos)
            node = self.expr()
            self.expect(")")
            self.nesting -= 1
            return node
        if self.at("["):
            self.nest(self.advance().pos)
            items: list[Node] = []
            while not self.at("]"):
                items.append(self.expr())
                if not self.at(","):
                    break
                self.advance()
            end = self.expect("]").end
            self.nesting -= 1
            return ListLit(tok.pos, end, tuple(items))
        if self.at("{"):
            self.nest(self.advance().pos)
            entries: list[tuple[Node, Node]] = []
            while not self.at("}"):
                key = self.expr()
                self.expect(":")
                entries.append((key, self.expr()))
                if not self.at(","):
                    break
                self.advance()
            end = self.expect("}").end
            self.nesting -= 1
            return MapLit(tok.pos, end, tuple(entries))
        if self.at("."):
            raise ConditionError("names with a leading '.' are not supported", tok.pos + 1)
        raise syntax_error(f"expected a value but found {self.describe()}", tok.pos)
