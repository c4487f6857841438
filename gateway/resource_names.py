"""Resource-name hygiene: what a name in a request must look like before any pattern sees it."""

from __future__ import annotations

MAX_NAME_BYTES = 1024


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a resource name, or None if its shape is acceptable.

    Refused: empty names, names over 1,024 bytes, empty, `.` or `..` segments, percent-encoding
    (a name is matched as written; an encoded `/` must not slip past a pattern), and control or
    whitespace characters, NUL included.
    """
    if not name:
        return "the name is empty"
    size = len(name) if name.isascii() else len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:
        return f"the name is longer than {MAX_NAME_BYTES} bytes"
    if "%" in name:
        return "the name contains percent-encoding"
    # Every whitespace or control character but the ASCII space is unprintable (str.isprintable).
    if " " in name or not name.isprintable():
        return "the name contains control or whitespace characters"
    if "." in name or "//" in name or name[0] == "/" or name[-1] == "/":
        for segment in name.split("/"):
            if segment in ("", ".", ".."):
                return "the name has an empty, '.' or '..' segment"
    return None


def printable(name: str, limit: int = 200) -> str:
    """A name made safe to echo in an error message: escaped and bounded."""
    shown = name.encode("unicode_escape").decode("ascii")
    return shown if len(shown) <= limit else shown[:limit] + "..."
