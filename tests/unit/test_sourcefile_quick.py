"""The quick YAML reader gives exactly what PyYAML's compose-and-construct path gives, or defers;
the JSON reader gives what the YAML reader gives for JSON."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import sourcefile
from gateway.errors import ConfigError
from gateway.sourcefile import (
    LineMap,
    _read_fully,
    _read_quickly,
    _Unusual,
    load_json_or_yaml_text,
    load_text,
)

SOURCE = "f.yaml"

# Each is read by load_text and by the full reader alone; results and errors must be the same.
TEXTS = {
    "plain": "a: 1\nb:\n  - x\n  - {c: d, e: [f, 'g']}\n",
    "scalars": "n: null\nt: ~\ne:\nb: yes\nf: 1.5e3\ni: 0x1f\nd: 2024-02-29\nts: 2024-01-01T00:00:00Z\n",
    "quoted look-alikes": "a: '1'\nb: \"true\"\nc: '~'\nd: ''\ne: \"2024-01-01\"\n",
    "strings with special starts": "a: !\nb: '&x'\nc: '*x'\nd: -x\ne: .x\nf: <x\ng: =x\n",
    "empty": "",
    "comments only": "# nothing\n",
    "empty document": "---\n...\n",
    "explicit document": "--- \na: 1\n...\n",
    "directive": "%YAML 1.1\n---\na: 1\n",
    "tag directive": "%TAG !e! tag:example.com,2000:\n---\na: !e!x 1\n",
    "scalar top": "just text\n",
    "list top": "- a\n- b\n",
    "recursive list top": "&a [*a]\n",
    "duplicate key": "a: 1\nb: 2\na: 3\n",
    "nested duplicate key": "a:\n  b: 1\n  b: 2\n",
    "duplicate key before a syntax error": "a: 1\na: 2\nb: [\n",
    "duplicate key before a bad date": "a: 1\na: 2\nb: 2024-02-30\n",
    "bad date": "a: 2024-02-30\n",
    "huge integer": "a: " + "9" * 5000 + "\n",
    "syntax error": "a:\n  - b: [c\n",
    "tab indentation": "a:\n\tb: 1\n",
    "anchor and alias": "a: &x {b: 1}\nc: *x\n",
    "undefined alias": "a: *nope\n",
    "recursive mapping": "a: &x\n  b: *x\n",
    "merge key": "base: &b {x: 1}\nderived:\n  <<: *b\n  y: 2\n",
    "merge of a scalar": "a:\n  <<: 1\n",
    "value key": "a:\n  =: 1\n",
    "explicit tags": "a: !!str 1\nb: !!int '3'\nc: !!binary aGk=\n",
    "unknown tag": "a: !custom x\n",
    "non-specific tag": "a: ! 12\nb: ! {c: 1}\n",
    "set and omap": "a: !!set {x, y}\nb: !!omap [{k: v}]\n",
    "integer key": "1: a\n",
    "null key": "~: a\n",
    "bool key": "true: a\n",
    "empty key": "'': a\n",
    "complex key": "? [a]\n: b\n",
    "mapping key": "? {a: 1}\n: b\n",
    "yaml tag value": "a: =\n",
    "two documents": "a: 1\n---\nb: 2\n",
    "json text": '{"a": [1, 2, {"b": null}], "c": "d"}\n',
    "flow mapping top": "{a: 1, b: [x, y]}\n",
    "deep nesting": "a:\n" + "".join("  " * i + "- \n" for i in range(1, 40)),
    "very deep flow": "a: " + "[" * 2000 + "]" * 2000 + "\n",
    "very deep mappings": "a: " + "{b: " * 400 + "c" + "}" * 400 + "\n",
    "billion laughs": "a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\nd: [*c, *c]\n",
    "empty values": "a:\nb: []\nc: {}\nd: ''\n",
    "multi-line strings": "a: |\n  one\n  two\nb: >\n  folded\n  text\nc: 'multi\n  line'\n",
    "unicode": "naïve: ünïcödé\n'\u00e9': \u2603\n",
    # libyaml drops a byte-order mark after `---` or doubled at the start; PyYAML's own reader
    # keeps it: only one as the very first character is read, and the same way by both.
    "bom at start": "\ufeffa: 1\n",
    "doubled bom": "\ufeff\ufeffa: 1\n",
    "bom after document start": "---\n\ufeffa: 1\n",
    "bom in a key": "a\ufeffb: 1\n",
    "bom in a quoted value": "a: 'x\ufeffy'\n",
    "bom in a flow mapping": "{a: 1, \ufeffb: 2}\n",
}


def outcome(read: Any, text: str) -> Any:
    """What reading gave: the data with every line it carries, or the error it raised."""
    try:
        return ("data", shape(read(text, SOURCE), ()))
    except ConfigError as exc:
        # Where the recursion limit strikes (and so its message) depends on the caller's depth.
        message = str(exc).replace(" while calling a Python object", "")
        return ("error", message, exc.line, exc.key)


def shape(value: Any, within: tuple[int, ...]) -> Any:
    if id(value) in within:
        return ("cycle", within.index(id(value)))
    if isinstance(value, LineMap):
        inner = (*within, id(value))
        items = [(k, value.key_lines[k], shape(v, inner)) for k, v in value.items()]
        return ("map", value.line, items)
    if isinstance(value, list):
        return ("list", [shape(item, (*within, id(value))) for item in value])
    if isinstance(value, (set, dict)):
        return (type(value).__name__, repr(value))
    return (type(value).__name__, value)


@pytest.mark.parametrize("text", TEXTS.values(), ids=TEXTS.keys())
def test_every_text_reads_as_the_full_reader_reads_it(text: str) -> None:
    assert outcome(load_text, text) == outcome(_read_fully, text)


@pytest.mark.parametrize(
    "name",
    ["plain", "scalars", "empty", "comments only", "json text", "deep nesting", "bom at start"],
)
def test_plain_files_take_the_quick_way(name: str) -> None:
    _read_quickly(TEXTS[name])  # does not raise _Unusual


@pytest.mark.parametrize(
    "name",
    [
        "duplicate key",
        "anchor and alias",
        "merge key",
        "explicit tags",
        "integer key",
        "two documents",
        "bad date",
        "syntax error",
        "list top",
        "very deep mappings",
        "doubled bom",
        "bom after document start",
        "bom in a quoted value",
    ],
)
def test_everything_else_is_left_to_the_full_reader(name: str) -> None:
    with pytest.raises(_Unusual):
        _read_quickly(TEXTS[name])


def test_lines_and_aliases_come_out_as_before() -> None:
    data = load_text(TEXTS["anchor and alias"], SOURCE)
    assert data["a"] is data["c"]  # an alias is the same object, as PyYAML builds it
    data = load_text("top:\n  - k: v\n\n    other: 2\n", SOURCE)
    assert (data.line, data.line_of("top")) == (1, 1)
    assert (data["top"][0].line, data["top"][0].line_of("other")) == (2, 4)
    assert data["top"][0]["other"] == 2 and data.line_of("missing") == 1
    assert load_text("d: 2024-02-29\n", SOURCE)["d"] == datetime.date(2024, 2, 29)


# Pieces that change how YAML reads, spliced into generated documents at random places.
SPLICES = [
    "&a ", "*a", "!!str ", "!x ", "<<: ", "=", "? ", "- ", ": ", "{", "}", "[", "]", ",",
    "'", '"', "#", "\n", "  ", "\t", "---\n", "...\n", "~", "1", "yes", "2024-02-30", "a: 1\n",
    "\ufeff",
]  # fmt: skip
KEYS = st.sampled_from(["a", "b", "c", "1", "yes", "null", "<<", "=", "x y", ""])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**6),
    st.sampled_from(["s", "1", "true", "~", "2024-01-01", "a: b", "- x", "*a", "&a", "!t"]),
)
DATA = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.dictionaries(KEYS, DATA, min_size=1, max_size=4),
    flow=st.sampled_from([None, True, False]),
    splices=st.lists(st.tuples(st.integers(0, 10**4), st.sampled_from(SPLICES)), max_size=3),
)
def test_generated_documents_read_as_the_full_reader_reads_them(
    data: dict[str, Any], flow: bool | None, splices: list[tuple[int, str]]
) -> None:
    text = yaml.safe_dump(data, default_flow_style=flow, sort_keys=False)
    for position, piece in splices:
        at = position % (len(text) + 1)
        text = text[:at] + piece + text[at:]
    assert outcome(load_text, text) == outcome(_read_fully, text)


# JSON that YAML reads the same way: the JSON reader must give the same data, keys and lines.
JSON_TEXTS = {
    "object": '{"a": [1, 2, {"b": null}], "c": "d", "e": true, "f": -7}\n',
    "nested over lines": '{\n  "allow": [\n    {\n      "resource": "projects/p",\n'
    '      "bindings": [{"role": "roles/viewer", "members": ["user:a@x.example"]}]\n'
    '    }\n  ],\n  "groups": {}\n}\n',
    "escapes": '{"a\\u00e9": "\\n\\t\\"", "b": "\\u263a"}',
    "after whitespace": '\n\n  {"a": 1}',
    "empty": "{}",
    "duplicate key": '{\n  "a": 1,\n  "a": 2\n}\n',
    "nested duplicate key": '{"a": {\n"b": 1,\n"b": 2}}',
    "stray bom": '{"a": "x\ufeffy"}',
    "stray bom on line 2": '{\n  "\ufeffa": 1}',
}


@pytest.mark.parametrize("text", JSON_TEXTS.values(), ids=JSON_TEXTS.keys())
@pytest.mark.parametrize("source", ["f.json", "f.yaml"])
def test_json_reads_as_yaml_reads_it(text: str, source: str) -> None:
    def read(text: str, _source: str) -> Any:
        return load_json_or_yaml_text(text, source)

    def as_yaml(text: str, _source: str) -> Any:
        return load_text(text, source)

    assert outcome(read, text) == outcome(as_yaml, text)


def test_json_takes_its_own_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sourcefile, "load_text", None)  # the YAML reader is not asked
    assert load_json_or_yaml_text('{"a": 1}', "f.yaml") == {"a": 1}


def test_invalid_json_is_an_error_in_a_json_file_and_yaml_elsewhere() -> None:
    with pytest.raises(ConfigError) as raised:
        load_json_or_yaml_text('{\n  "a": 1,\n}\n', "p.json")
    assert str(raised.value).startswith("p.json:2: not valid JSON: Illegal trailing comma")
    flow = load_json_or_yaml_text("{a: 1, b: [x]}\n", "p.yaml")  # a YAML flow mapping
    assert flow == {"a": 1, "b": ["x"]}
    assert isinstance(flow, LineMap)
