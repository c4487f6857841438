"""JUnit XML for `opsgate policy test --junit-xml`: what Jenkins, GitLab and other CI read.

Shaped by Jenkins' junit-10.xsd, the schema CI parsers are most often checked against:
<testsuites> of <testsuite name tests failures errors ...>, each of <properties>, then
<testcase name classname time> holding at most a <failure> or <error> (message and type as
attributes, details as text) or a <skipped>. A testcase takes no other attributes there (not
`file` or `line`: a case's file:line is in its failure's text).
"""

from __future__ import annotations

import os
import re
import socket
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePath

from gateway.policytools.inputs import InputError

# Characters XML 1.0 cannot hold at all, even escaped (C0 controls other than tab, LF, CR, ...).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True, slots=True)
class Problem:
    """A <failure> (a check that did not hold) or an <error> (it could not be checked)."""

    kind: str  # "failure" | "error" | "skipped"
    message: str
    type: str
    details: str = ""


@dataclass(frozen=True, slots=True)
class TestCase:
    name: str
    classname: str
    seconds: float = 0.0
    problem: Problem | None = None


@dataclass(frozen=True, slots=True)
class TestSuite:
    name: str
    cases: Sequence[TestCase]
    properties: Sequence[tuple[str, str]] = ()
    file: str | None = None
    system_out: str = ""
    timestamp: datetime | None = None
    hostname: str = field(default_factory=socket.gethostname)

    def count(self, kind: str) -> int:
        return sum(1 for case in self.cases if case.problem and case.problem.kind == kind)

    @property
    def seconds(self) -> float:
        return sum(case.seconds for case in self.cases)


def classname(path: str) -> str:
    """A file as a dotted class name, the way pytest names a test module, so CI tools that split
    the name at its last dot show the directory as the package and the file as the class:
    policies/example.cases.yaml -> policies.example.cases."""
    parts = [p for p in PurePath(path).with_suffix("").parts if p not in ("/", ".", "..")]
    return ".".join(parts).strip(".") or path


def document(suites: Iterable[TestSuite], name: str) -> ET.Element:
    suites = list(suites)
    root = ET.Element("testsuites", name=_text(name))
    _counts(root, suites)
    for suite in suites:
        element = ET.SubElement(root, "testsuite", name=_text(suite.name))
        _counts(element, [suite])
        element.set("skipped", str(suite.count("skipped")))
        if suite.timestamp is not None:
            # xs:dateTime without a zone (Ant's form), in UTC.
            element.set("timestamp", suite.timestamp.strftime("%Y-%m-%dT%H:%M:%S"))
        element.set("hostname", _text(suite.hostname))
        if suite.file is not None:
            element.set("file", _text(suite.file))
        if suite.properties:
            properties = ET.SubElement(element, "properties")
            for key, value in suite.properties:
                ET.SubElement(properties, "property", name=_text(key), value=_text(value))
        for case in suite.cases:
            testcase = ET.SubElement(
                element,
                "testcase",
                name=_text(case.name),
                classname=_text(case.classname),
                time=_seconds(case.seconds),
            )
            if case.problem is not None:
                problem = ET.SubElement(
                    testcase,
                    case.problem.kind,
                    message=_text(case.problem.message),
                    type=_text(case.problem.type),
                )
                problem.text = _text(case.problem.details) or None
        if suite.system_out:
            ET.SubElement(element, "system-out").text = _text(suite.system_out)
    return root


def _counts(element: ET.Element, suites: Sequence[TestSuite]) -> None:
    element.set("tests", str(sum(len(s.cases) for s in suites)))
    element.set("failures", str(sum(s.count("failure") for s in suites)))
    element.set("errors", str(sum(s.count("error") for s in suites)))
    element.set("time", _seconds(sum(s.seconds for s in suites)))


def _seconds(value: float) -> str:
    # Plain decimal seconds (never 1e-06): the form Surefire writes and junit-10.xsd accepts.
    return f"{value:.6f}"


def _text(value: str) -> str:
    """`value` as XML 1.0 can carry it: a character it cannot hold becomes \\xNN."""
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", value)


def write(path: Path, root: ET.Element) -> None:
    """Write the report whole or not at all (a CI step never reads half a file): a temporary
    file beside `path`, then renamed over it."""
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    temporary = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        try:
            temporary.write_text(f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n', "utf-8")
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
    except OSError as exc:
        raise InputError(
            f"cannot write --junit-xml {path}: {(exc.strerror or str(exc)).lower()}",
            "give a path in a directory that exists and can be written",
        ) from exc
