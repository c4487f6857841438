"""Plain-text helpers shared by the policy commands: aligned columns, counts, located lines."""

from __future__ import annotations

from collections.abc import Sequence


def plural(count: int, word: str, many: str | None = None) -> str:
    """'1 warning', '2 warnings', '0 errors'; `many` for irregular plurals."""
    return f"{count} {word if count == 1 else (many or word + 's')}"


def located(source: str, line: int | None) -> str:
    """FILE:LINE as compilers and editors write it; FILE alone when the line is unknown."""
    return source if line is None else f"{source}:{line}"


def columns(rows: Sequence[Sequence[str]], indent: str = "", gap: str = "  ") -> list[str]:
    """Rows with each column padded to its widest cell; the last column is never padded."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append((indent + gap.join([*cells, row[-1]])).rstrip())
    return lines


def shorten(text: str, limit: int = 60) -> str:
    """One line of at most `limit` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def finding_lines(
    source: str, line: int | None, severity: str, message: str, hint: str = ""
) -> list[str]:
    """`FILE:LINE: severity: message`, then the hint indented on a line of its own."""
    lines = [f"{located(source, line)}: {severity}: {message}"]
    if hint:
        lines.append(f"    hint: {hint}")
    return lines
