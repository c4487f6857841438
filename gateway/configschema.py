"""The config schema machinery: field docs and checks, and binding parsed YAML to dataclasses."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from gateway.errors import ConfigError
from gateway.sourcefile import LineMap

MiB = 1024 * 1024
KiB = 1024

# A file the gateway writes (it need not exist yet; its directory must).
OutputFile = typing.NewType("OutputFile", Path)


def check_host_port(value: str) -> str | None:
    host, sep, port = value.rpartition(":")
    # str.isdigit alone accepts other scripts' digits, which int() reads and gRPC does not.
    digits = port.isascii() and port.isdigit()
    if not sep or not host or not digits or not 0 <= int(port) <= 65535:
        return f"'{value}' is not HOST:PORT (for example 127.0.0.1:8080 or [::]:8443)"
    return None


def check_positive(value: float) -> str | None:
    return None if value > 0 else f"must be greater than 0, got {value}"


def check_not_negative(value: float) -> str | None:
    return None if value >= 0 else f"must be 0 or more, got {value}"


def check_not_empty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def check_exact_text(value: str) -> str | None:
    """For a value compared exactly with what callers send: no surrounding whitespace (a YAML
    block scalar keeps its line break) and nothing unprintable, which would never match."""
    if not value.strip():
        return "must not be empty"
    if value != value.strip() or not value.isprintable():
        shown = value.encode("unicode_escape").decode("ascii")
        return f"'{shown}' has surrounding whitespace or control characters and would never match"
    return None


def doc(text: str, check: Callable[[Any], str | None] | None = None) -> Any:
    return {"doc": text, "check": check}


class Binder:
    """Turns parsed YAML into the Settings dataclasses, naming the key and line of any problem."""

    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir

    def bind(self, cls: type[Any], data: Any, prefix: str) -> Any:
        line = data.line if isinstance(data, LineMap) else None
        if not isinstance(data, dict):
            raise self._error(prefix or None, "must be a mapping of keys to values", line)
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in data:
            if key not in fields:
                hint = difflib.get_close_matches(key, fields, n=1)
                suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
                raise self._error(join(prefix, key), f"unknown key{suggestion}", line_in(data, key))
        values: dict[str, Any] = {}
        for name, spec in fields.items():
            key_path = join(prefix, name)
            if name not in data:
                if (
                    spec.default is dataclasses.MISSING
                    and spec.default_factory is dataclasses.MISSING
                ):
                    raise self._error(key_path, "is required", line)
                continue
            value = self.convert(hints[name], data[name], key_path, line_in(data, name))
            check = spec.metadata.get("check")
            problem = check(value) if check is not None and value is not None else None
            if problem:
                raise self._error(key_path, problem, line_in(data, name))
            values[name] = value
        return cls(**values)

    def convert(self, kind: Any, value: Any, key: str, line: int | None) -> Any:
        origin = typing.get_origin(kind)
        if origin in (types.UnionType, typing.Union):
            options = [arg for arg in typing.get_args(kind) if arg is not type(None)]
            return None if value is None else self.convert(options[0], value, key, line)
        if origin is Literal:
            choices = typing.get_args(kind)
            if value not in choices:
                allowed = ", ".join(repr(c) for c in choices)
                raise self._error(key, f"must be one of {allowed}, got {value!r}", line)
            return value
        if dataclasses.is_dataclass(kind):
            return self.bind(kind, value, key)  # type: ignore[arg-type]
        if origin is tuple:
            if not isinstance(value, list):
                raise self._error(key, f"must be a list, got {value!r}", line)
            item_kind = typing.get_args(kind)[0]
            return tuple(
                self.convert(item_kind, item, f"{key}[{index}]", _item_line(item, line))
                for index, item in enumerate(value)
            )
        if kind is bool:
            if not isinstance(value, bool):
                raise self._error(key, f"must be true or false, got {value!r}", line)
            return value
        if kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise self._error(key, f"must be a whole number, got {value!r}", line)
            return value
        if kind is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self._error(key, f"must be a number, got {value!r}", line)
            return float(value)
        if kind is str:
            if not isinstance(value, str):
                raise self._error(key, f"must be a string, got {value!r}", line)
            return value
        if kind is OutputFile:
            if not isinstance(value, str) or not value:
                raise self._error(key, f"must be a file path, got {value!r}", line)
            path = (self.base_dir / value).resolve()
            if not path.parent.is_dir():
                raise self._error(key, f"directory '{path.parent}' does not exist", line)
            return OutputFile(path)
        if kind is Path:
            if not isinstance(value, str) or not value:
                raise self._error(key, f"must be a file path, got {value!r}", line)
            path = (self.base_dir / value).resolve()
            if not path.is_file():
                raise self._error(key, f"file '{path}' does not exist", line)
            return path
        raise TypeError(f"config field {key} has unsupported type {kind!r}")  # a bug, not input

    def _error(self, key: str | None, problem: str, line: int | None) -> ConfigError:
        return ConfigError(self.source, key, problem, line)


def _item_line(item: Any, fallback: int | None) -> int | None:
    return item.line if isinstance(item, LineMap) else fallback


def join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def line_in(data: dict[str, Any], key: str) -> int | None:
    return data.line_of(key) if isinstance(data, LineMap) else None


def documented_keys(cls: type[Any], prefix: str = "") -> list[tuple[str, str, str]]:
    """(key path, default, description) for every config key, as the README documents them."""
    rows: list[tuple[str, str, str]] = []
    hints = typing.get_type_hints(cls)
    for spec in dataclasses.fields(cls):
        key = join(prefix, spec.name)
        if spec.default is not dataclasses.MISSING:
            default = repr(spec.default)
        else:
            default = "required" if spec.default_factory is dataclasses.MISSING else "(section)"
        rows.append((key, default, spec.metadata.get("doc", "")))
        nested = _nested_dataclass(hints[spec.name])
        if nested is not None:
            suffix = "[]" if typing.get_origin(hints[spec.name]) is tuple else ""
            rows.extend(documented_keys(nested, key + suffix))
    return rows


def _nested_dataclass(kind: Any) -> type[Any] | None:
    """The dataclass a field holds, directly, optionally, or as tuple items; None if not one."""
    if dataclasses.is_dataclass(kind):
        return kind  # type: ignore[return-value]
    for arg in typing.get_args(kind):
        found = _nested_dataclass(arg)
        if found is not None:
            return found
    return None
