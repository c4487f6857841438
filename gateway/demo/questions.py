"""What the demo asks its audit trail: an auditor's questions as `opsgate audit query` commands,
printed so they can be run again, and run here through the same code."""

from __future__ import annotations

import argparse
import io
import shlex
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TextIO

from gateway.audit import commands
from gateway.demo.steps import CANCEL_US

DEMO_AUDIT_FILE = Path("opsgate-demo-audit.log")


@dataclass(frozen=True, slots=True)
class Question:
    asked: str
    arguments: tuple[str, ...]  # after `opsgate audit query FILE`
    note: str = ""


def questions(started: datetime, finished: datetime) -> tuple[Question, ...]:
    """The questions, for a trail written between `started` and `finished` (UTC)."""
    since = started.replace(microsecond=0)
    until = finished.replace(microsecond=0) + timedelta(seconds=1)
    window = ("--since", _rfc3339(since), "--until", _rfc3339(until))
    return (
        Question(
            f"Who cancelled operation {CANCEL_US.rsplit('/', 1)[-1]}?",
            ("--method", "CancelOperation", "--resource", CANCEL_US),
        ),
        Question(
            "What did alice@acme.example touch during this run?",
            ("--principal", "alice@acme.example", *window),
            note="for yesterday, midnight to midnight UTC: --since yesterday --until today",
        ),
        Question("Which calls were denied, and why?", ("--denied",)),
    )


def ask(trail: Path, started: datetime, finished: datetime, out: TextIO) -> None:
    """Print each question, its command and what the command prints."""
    name = shown(trail)
    print(f"\nThe trail stays in {name}; the questions it answers:", file=out)
    for question in questions(started, finished):
        argv = ("audit", "query", name, *question.arguments)
        print(f"\n{question.asked}", file=out)
        if question.note:
            print(f"  ({question.note})", file=out)
        print(f"$ {shlex.join(('opsgate', *argv))}", file=out)
        for line in _run(trail, question.arguments).splitlines():
            print(f"  {line}", file=out)


def _run(trail: Path, arguments: tuple[str, ...]) -> str:
    parser = argparse.ArgumentParser(prog="opsgate audit query")
    commands.add_arguments(parser, tail=False)
    args = parser.parse_args([str(trail), *arguments])
    args.command = "query"
    answer = io.StringIO()
    commands.run(args, out=answer)
    return answer.getvalue()


def shown(trail: Path) -> str:
    """The trail's name as the reader would type it: relative to where they are, if inside."""
    try:
        return str(trail.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(trail)


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
