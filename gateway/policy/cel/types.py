"""The static types of CEL values the checker assigns, and how they combine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class CelType:
    name: str
    params: tuple[CelType, ...] = ()

    def __str__(self) -> str:
        if not self.params:
            return self.name
        return f"{self.name}({', '.join(str(p) for p in self.params)})"


BOOL: Final = CelType("bool")
INT: Final = CelType("int")
UINT: Final = CelType("uint")
DOUBLE: Final = CelType("double")
STRING: Final = CelType("string")
BYTES: Final = CelType("bytes")
NULL: Final = CelType("null_type")
TIMESTAMP: Final = CelType("timestamp")
DURATION: Final = CelType("duration")
DYN: Final = CelType("dyn")
REQUEST: Final = CelType("request")
RESOURCE: Final = CelType("resource")

NUMERIC: Final = frozenset({INT, UINT, DOUBLE})
ORDERED: Final = frozenset({INT, UINT, DOUBLE, STRING, BYTES, BOOL, TIMESTAMP, DURATION})
PRIMITIVE: Final = ORDERED | {NULL}


def list_type(elem: CelType) -> CelType:
    return CelType("list", (elem,))


def map_type(key: CelType, value: CelType) -> CelType:
    return CelType("map", (key, value))


def same_kind(a: CelType, b: CelType) -> bool:
    """Could values of these types be the same kind of value (dyn matches anything)?"""
    if a == DYN or b == DYN:
        return True
    return (
        a.name == b.name
        and len(a.params) == len(b.params)
        and all(same_kind(x, y) for x, y in zip(a.params, b.params, strict=True))
    )


def join_types(types: list[CelType]) -> CelType:
    if not types:
        return DYN
    first = types[0]
    return first if all(t == first for t in types) else DYN
