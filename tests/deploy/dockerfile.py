"""Reads a Dockerfile into its instructions, enough to check deploy/Dockerfile against the rest."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    """One instruction: `FROM`, `RUN`, ...; `args` is the text after the keyword."""

    keyword: str
    args: str
    stage: int  # 0 for the first FROM's stage, 1 for the next, ...

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form ENTRYPOINT/CMD (or a HEALTHCHECK's CMD part)."""
        text = self.args
        if self.keyword == "HEALTHCHECK":
            text = text.partition(" CMD ")[2].strip()
        value = json.loads(text)
        if not (isinstance(value, list) and all(isinstance(item, str) for item in value)):
            raise ValueError(f"{self.keyword} is not in exec form: {self.args}")
        return value

    def flags(self) -> dict[str, str]:
        """`--name=value` options before the instruction's body (HEALTHCHECK, RUN --mount)."""
        found = {}
        for word in shlex.split(self.args):
            if not word.startswith("--"):
                break
            name, _, value = word[2:].partition("=")
            found[name] = value
        return found


def parse(path: Path) -> list[Instruction]:
    """Instructions in order, with continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = " ".join((pending + line).split())
        pending = ""
        keyword, _, args = text.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, args, stage))
    return instructions


def last(instructions: list[Instruction], keyword: str) -> Instruction:
    """The instruction that takes effect: the last one of its kind in the final stage."""
    final = max(i.stage for i in instructions)
    found = [i for i in instructions if i.keyword == keyword and i.stage == final]
    if not found:
        raise LookupError(f"no {keyword} in the final stage")
    return found[-1]
