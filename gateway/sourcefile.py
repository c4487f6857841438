"""Reads YAML or JSON files into plain data that remembers the line of every mapping key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gateway.errors import ConfigError

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class LineMap(dict[str, Any]):
    """A mapping from a source file; `line_of(key)` gives the 1-based line where the key stands."""

    __slots__ = ("key_lines", "line")

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[str, int] = {}

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class _LineLoader(_BaseLoader):  # type: ignore[misc,valid-type]
    """Safe loader whose mappings are LineMaps and which refuses duplicate keys."""

    source = "<string>"

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> LineMap:
        self.flatten_mapping(node)
        mapping = LineMap(node.start_mark.line + 1)
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                raise ConfigError(self.source, str(key), "keys must be strings", line)
            if key in mapping:
                raise ConfigError(self.source, key, "appears twice in the same mapping", line)
            mapping[key] = self.construct_object(value_node, deep=deep)
            mapping.key_lines[key] = line
        return mapping


_LineLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    lambda loader, node: loader.construct_mapping(node, deep=True),
)


def load_text(text: str, source: str) -> Any:
    """Parse YAML (JSON is YAML) text; syntax errors become ConfigError with the line."""
    loader = _LineLoader(text)
    loader.source = source
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(source, None, f"not valid YAML: {exc.problem}", line) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(source, None, f"not valid YAML: {exc}") from exc
    except (ValueError, OverflowError, RecursionError) as exc:
        # PyYAML's constructors raise these for values that parse but cannot be built, such
        # as the date 2024-02-30 or an integer of 5,000 digits.
        raise ConfigError(source, None, f"holds a value that cannot be read: {exc}") from exc
    finally:
        loader.dispose()


def load_file(path: Path) -> Any:
    """Read and parse one file; a missing or unreadable file is a ConfigError naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), None, f"cannot be read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), None, "is not UTF-8 text") from exc
    return load_text(text, str(path))


def read_bytes(path: Path, key: str) -> bytes:
    """A file named in the config (a certificate, a key); unreadable is a ConfigError."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), key, f"cannot be read: {exc.strerror or exc}") from exc
