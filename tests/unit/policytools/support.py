"""Helpers for the policy tool tests: write fixture files, run `opsgate policy ...` in-process."""

from __future__ import annotations

import contextlib
import io
import re
import textwrap
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.cli import main

GET = "contactcenterinsights.operations.get"
LIST = "contactcenterinsights.operations.list"
CANCEL = "contactcenterinsights.operations.cancel"
OP = "projects/p/locations/l/operations/o"
WHEN = "2026-06-01T12:00:00Z"

# A custom profile that routes only GetOperation on plain operations.
GET_ONLY_PROFILE = """\
service: contactcenterinsights.googleapis.com
routes:
  GetOperation:
    - pattern: projects/*/locations/*/operations/*
      permission: contactcenterinsights.operations.get
"""


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def line_of(path: Path, needle: str, occurrence: int = 1) -> int:
    """1-based line of the n-th line of the file containing `needle`."""
    seen = 0
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            seen += 1
            if seen == occurrence:
                return number
    raise AssertionError(f"{needle!r} not in {path}")


def opsgate(*args: str | Path) -> Result:
    """`opsgate ARGS...` in this process, with what it printed and its exit status."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse usage errors
            code = exc.code if isinstance(exc.code, int) else 2
    return Result(code, out.getvalue(), err.getvalue())


# -- JUnit XML as CI tools read it ------------------------------------------------------------

# Jenkins' junit-10.xsd (jenkinsci/xunit-plugin), the schema JUnit reports are checked against:
# element -> (attributes allowed, attributes required, children allowed).
JUNIT_10 = {
    "testsuites": ({"name", "time", "tests", "failures", "errors"}, set(), {"testsuite"}),
    "testsuite": (
        {"name", "tests", "failures", "errors", "group", "time", "skipped", "timestamp",
         "hostname", "id", "package", "file", "log", "url"},
        {"name", "tests", "failures", "errors"},
        {"testsuite", "properties", "testcase", "system-out", "system-err"},
    ),
    "properties": (set(), set(), {"property"}),
    "property": ({"name", "value"}, {"name", "value"}, set()),
    "testcase": (
        {"name", "time", "classname", "group"},
        {"name"},
        {"skipped", "error", "failure", "rerunFailure", "rerunError", "flakyFailure",
         "flakyError", "system-out", "system-err"},
    ),
    "failure": ({"type", "message"}, set(), set()),
    "error": ({"type", "message"}, set(), set()),
    "skipped": ({"type", "message"}, set(), set()),
    "system-out": (set(), set(), set()),
    "system-err": (set(), set(), set()),
}  # fmt: skip
SUREFIRE_TIME = re.compile(r"(([0-9]{0,3},)*[0-9]{3}|[0-9]{0,3})*(\.[0-9]*)?")
ANT_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")  # xs:dateTime, no zone


def junit_report(path: Path) -> ET.Element:
    """The report at `path`, parsed, after checking it against junit-10.xsd's structure and the
    conventions Jenkins and GitLab read it by: counts that add up, at most one outcome per
    testcase, times in plain seconds, Ant's timestamps; returns the <testsuites> root."""
    text = path.read_text(encoding="utf-8")
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n')
    root = ET.fromstring(text)
    assert root.tag == "testsuites"
    for element in root.iter():
        allowed, required, children = JUNIT_10[element.tag]
        assert set(element.attrib) <= allowed, (element.tag, set(element.attrib) - allowed)
        assert required <= set(element.attrib), (element.tag, required - set(element.attrib))
        assert {child.tag for child in element} <= children, element.tag
        if "time" in element.attrib:
            assert SUREFIRE_TIME.fullmatch(element.get("time", "")), element.attrib
            assert float(element.get("time", "")) >= 0
        if element.tag == "testsuite":
            assert ANT_TIMESTAMP.fullmatch(element.get("timestamp", "")), element.attrib
            _counts_add_up(element, element.findall("testcase"))
        if element.tag == "testcase":
            outcomes = [c for c in element if c.tag in ("failure", "error", "skipped")]
            assert len(outcomes) <= 1, ET.tostring(element)
            assert element.get("classname"), "GitLab and Jenkins group by classname"
    _counts_add_up(root, root.findall("testsuite/testcase"))
    assert float(root.get("time", "")) == pytest.approx(
        sum(float(s.get("time", "")) for s in root.findall("testsuite")), abs=1e-5
    )
    return root


def _counts_add_up(element: ET.Element, cases: list[ET.Element]) -> None:
    def having(tag: str) -> int:
        return sum(1 for case in cases if case.find(tag) is not None)

    assert int(element.get("tests", "")) == len(cases)
    assert int(element.get("failures", "")) == having("failure")
    assert int(element.get("errors", "")) == having("error")
    if "skipped" in element.attrib:
        assert int(element.get("skipped", "")) == having("skipped")


# A small policy for the `policy test` tests: two viewer bindings, a conditional admin
# binding, a deny rule and a static group (4 bindings and deny rules to cover).
CASES_POLICY = """\
allow:
  - resource: projects/p
    bindings:
      - role: roles/contactcenterinsights.viewer
        members: [user:a@x.example, group:team@x.example]
      - role: roles/contactcenterinsights.admin
        members: [user:boss@x.example]
        condition:
          title: until 2030
          expression: request.time < timestamp("2030-01-01T00:00:00Z")
  - resource: projects/q
    bindings:
      - role: roles/contactcenterinsights.viewer
        members: [user:q@x.example]
deny:
  - resource: projects/p
    rules:
      - deniedPrincipals: [user:mallory@x.example]
        deniedPermissions: [contactcenterinsights.operations.cancel]
groups:
  team@x.example: [user:b@x.example]
"""
