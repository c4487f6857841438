"""Reads YAML or JSON files into plain data that remembers the line of every mapping key."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from json import scanner
from json.decoder import JSONDecodeError
from pathlib import Path
from typing import Any

import yaml
from yaml.events import (
    DocumentEndEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import ScalarNode

from gateway.errors import ConfigError

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
BYTE_ORDER_MARK = "\ufeff"
# Line breaks as YAML counts them (and so as its error marks number lines).
_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
_STR_TAG = "tag:yaml.org,2002:str"
# Deeper nesting is left to the full reader, whose recursion limit decides what it makes of it.
_QUICK_DEPTH = 64


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


class _Unusual(Exception):
    """The text is not what the quick reader takes; the full reader must judge it."""


class _QuickReader:
    """Builds the LineMaps straight from the parser's events, without a node tree, for what
    config and policy files hold: one document whose top is a mapping, of mappings with string
    keys, lists and untagged scalars (resolved and built by the loader's own resolver and
    constructors). Anything else raises _Unusual: anchors, aliases, explicit tags, merge or
    other non-string keys, a repeated key, another document, a scalar PyYAML cannot build, a
    syntax error. The full reader then gives PyYAML's own result or error for the text.
    """

    def __init__(self, loader: _LineLoader) -> None:
        self._loader = loader
        self._resolvers = loader.yaml_implicit_resolvers
        if loader.yaml_path_resolvers or None in self._resolvers:
            raise _Unusual  # resolution that depends on more than the scalar itself

    def read(self) -> LineMap | None:
        next_event = self._loader.get_event
        next_event()  # StreamStart
        if isinstance(next_event(), StreamEndEvent):
            return None  # no document at all
        root = self._start(next_event())
        if not isinstance(root, LineMap):
            raise _Unusual
        self._fill(root, next_event)
        if not isinstance(next_event(), DocumentEndEvent):
            raise _Unusual
        if not isinstance(next_event(), StreamEndEvent):
            raise _Unusual  # a second document
        return root

    def _fill(self, root: LineMap, next_event: Any) -> None:
        """Reads events into `root` until it ends; a mapping takes a key, then its value."""
        resolvers = self._resolvers
        enclosing: list[Any] = []
        container: Any = root
        key: str | None = None
        while True:
            event = next_event()
            kind = type(event)
            if kind is ScalarEvent:
                value = event.value
                # The common case inline: untagged, no anchor, and no implicit type could apply.
                if (
                    event.tag is None
                    and event.anchor is None
                    and (not event.implicit[0] or value[:1] not in resolvers)
                ):
                    is_string = True
                else:
                    value, is_string = self._scalar(event)
            elif kind is MappingEndEvent or kind is SequenceEndEvent:
                if not enclosing:
                    return
                container = enclosing.pop()
                continue
            else:
                value, is_string = self._start(event), False
            if key is not None:
                container[key] = value
                key = None
            elif type(container) is list:
                container.append(value)
            elif is_string and value not in container:
                key = value
                container.key_lines[key] = event.start_mark.line + 1
            else:
                raise _Unusual  # a key that is not a string, or is repeated
            if kind is not ScalarEvent:
                enclosing.append(container)
                if len(enclosing) > _QUICK_DEPTH:
                    raise _Unusual
                container = value

    def _start(self, event: Any) -> LineMap | list[Any]:
        """The empty container a MappingStart or SequenceStart event opens."""
        kind = type(event)
        if kind is not MappingStartEvent and kind is not SequenceStartEvent:
            raise _Unusual  # an alias, or a scalar where a document's top stands
        if event.anchor is not None or event.tag not in (None, "!"):
            raise _Unusual
        return LineMap(event.start_mark.line + 1) if kind is MappingStartEvent else []

    def _scalar(self, event: Any) -> tuple[Any, bool]:
        """A scalar's value, and whether it is a string, as compose and construct make it."""
        if event.anchor is not None or event.tag not in (None, "!"):
            raise _Unusual
        value, implicit = event.value, event.implicit
        if not implicit[0] or value[:1] not in self._resolvers:
            return value, True  # quoted, or no implicit type starts this way: a string
        tag = self._loader.resolve(ScalarNode, value, implicit)
        if tag == _STR_TAG:
            return value, True
        node = ScalarNode(tag, value, event.start_mark, event.end_mark, event.style)
        return self._loader.construct_object(node, deep=True), False


def _read_quickly(text: str) -> Any:
    """The quick reader's result; _Unusual when the text needs the full reader."""
    if text.find(BYTE_ORDER_MARK, 1) != -1:
        raise _Unusual  # the full reader refuses it, with the line
    loader = _LineLoader(text)
    try:
        return _QuickReader(loader).read()
    except (yaml.YAMLError, ValueError, OverflowError) as exc:
        raise _Unusual from exc
    finally:
        loader.dispose()


def load_text(text: str, source: str) -> Any:
    """Parse YAML (JSON is YAML) text; syntax errors become ConfigError with the line."""
    try:
        return _read_quickly(text)
    except _Unusual:
        return _read_fully(text, source)


def _read_fully(text: str, source: str) -> Any:
    """PyYAML's compose and construct, with LineMaps: every YAML feature, and every error."""
    refuse_stray_byte_order_mark(text, source)
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


def load_json_or_yaml_text(text: str, source: str) -> Any:
    """JSON or YAML into LineMaps. JSON gets a reader of its own: on a 100,000-binding policy
    file the YAML reader (libyaml, plus Python to build LineMaps) takes about 2 s, this one about
    0.6 s. Text opening with '{' is read as JSON; if it is not valid JSON, a `.json` source is a
    ConfigError, and anything else goes to the YAML reader (a YAML flow mapping also opens so)."""
    if text.lstrip().startswith("{"):
        refuse_stray_byte_order_mark(text, source)  # the same rule as the YAML reader's
        try:
            return _JsonReader(text, source).read()
        except JSONDecodeError as exc:
            if source.endswith(".json"):
                raise ConfigError(source, None, f"not valid JSON: {exc.msg}", exc.lineno) from exc
            # A YAML flow mapping also opens with '{'; let the YAML reader judge it.
    return load_text(text, source)


def refuse_stray_byte_order_mark(text: str, source: str) -> None:
    """Only the first character may be a byte-order mark (U+FEFF).

    libyaml drops one after `---` and a doubled one at the start, which PyYAML's own reader
    (a plain `yaml.safe_load`) keeps as part of a key, so a review tool and the gateway would
    read different policies from the same file. Anywhere else, quoted strings included, an
    invisible U+FEFF can only make a name that never matches: it is refused wherever it is.
    """
    position = text.find(BYTE_ORDER_MARK, 1)
    if position == -1:
        return
    breaks = list(_LINE_BREAK.finditer(text, 0, position))
    column = position - (breaks[-1].end() if breaks else 0) + 1
    raise ConfigError(
        source,
        None,
        f"holds a byte-order mark (U+FEFF) at column {column}; "
        "only the very first character of a file may be one",
        len(breaks) + 1,
    )


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


# As json.decoder has them; not in its stubs, so restated.
_WHITESPACE = re.compile(r"[ \t\n\r]*", re.VERBOSE | re.MULTILINE | re.DOTALL)
_WHITESPACE_STR = " \t\n\r"
_scanstring: Callable[[str, int, bool], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]


class _JsonReader:
    """json's pure-Python scanner with an object parser that records the line of every key
    into LineMaps and refuses duplicate keys, as the YAML reader does."""

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self._position = 0
        self._line = 1

    def read(self) -> Any:
        decoder = json.JSONDecoder()
        parse_object: Callable[..., tuple[LineMap, int]] = self._parse_object
        decoder.parse_object = parse_object  # type: ignore[attr-defined]
        decoder.scan_once = scanner.py_make_scanner(decoder)  # type: ignore[attr-defined]
        return decoder.decode(self.text)

    def _line_at(self, position: int) -> int:
        # Positions only grow while parsing, so newlines are counted once, incrementally.
        if position >= self._position:
            self._line += self.text.count("\n", self._position, position)
            self._position = position
            return self._line
        return self.text.count("\n", 0, position) + 1

    def _parse_object(
        self,
        s_and_end: tuple[str, int],
        strict: bool,
        scan_once: Callable[[str, int], tuple[Any, int]],
        object_hook: Any,
        object_pairs_hook: Any,
        memo: dict[str, str] | None = None,
        _w: Callable[[str, int], Any] = _WHITESPACE.match,
        _ws: str = _WHITESPACE_STR,
    ) -> tuple[LineMap, int]:
        # Follows json.decoder.JSONObject, which offers no hook for positions.
        s, end = s_and_end
        if memo is None:
            memo = {}
        mapping = LineMap(self._line_at(end - 1))
        nextchar = s[end : end + 1]
        if nextchar != '"':
            if nextchar in _ws:
                end = _w(s, end).end()
                nextchar = s[end : end + 1]
            if nextchar == "}":
                return mapping, end + 1
            if nextchar != '"':
                raise JSONDecodeError("Expecting property name enclosed in double quotes", s, end)
        end += 1
        while True:
            line = self._line_at(end - 1)
            key, end = _scanstring(s, end, strict)
            key = memo.setdefault(key, key)
            if key in mapping:
                raise ConfigError(self.source, key, "appears twice in the same mapping", line)
            if s[end : end + 1] != ":":
                end = _w(s, end).end()
                if s[end : end + 1] != ":":
                    raise JSONDecodeError("Expecting ':' delimiter", s, end)
            end += 1
            try:
                if s[end] in _ws:
                    end += 1
                    if s[end] in _ws:
                        end = _w(s, end + 1).end()
            except IndexError:
                pass
            try:
                value, end = scan_once(s, end)
            except StopIteration as err:
                raise JSONDecodeError("Expecting value", s, err.value) from None
            mapping[key] = value
            mapping.key_lines[key] = line
            try:
                nextchar = s[end]
                if nextchar in _ws:
                    end = _w(s, end + 1).end()
                    nextchar = s[end]
            except IndexError:
                nextchar = ""
            end += 1
            if nextchar == "}":
                return mapping, end
            if nextchar != ",":
                raise JSONDecodeError("Expecting ',' delimiter", s, end - 1)
            comma = end - 1
            end = _w(s, end).end()
            nextchar = s[end : end + 1]
            end += 1
            if nextchar != '"':
                raise JSONDecodeError("Illegal trailing comma before end of object", s, comma)
