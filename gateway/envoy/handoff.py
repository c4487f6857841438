"""Across `serve --workers N`: an access-log entry reaches the worker whose Check let its call in.

Envoy's Check and its access-log stream are separate connections, which SO_REUSEPORT may hand
to different workers. A call id starts with its worker's request-id prefix, so the worker that
receives an entry for a call it did not decide passes it, as one datagram, to the deciding
worker's socket in a directory only this gateway's user can reach (made by the supervisor).
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("opsgate.envoy")

PREFIX_CHARS = 16  # a request id's per-process prefix (see gateway.call.new_request_id)
_KEY = re.compile(r"[0-9a-f]{32}(\.[0-9a-f]{1,64})?")  # a call id, and its MAC (JoinKeys)


class Handoff:
    """This worker's datagram socket, and the way to the other workers' ones."""

    def __init__(
        self, directory: Path, own_prefix: str, deliver: Callable[[str, bytes], object]
    ) -> None:
        self._directory = directory
        self._own_prefix = own_prefix
        self._deliver = deliver  # (join key, serialized HTTPAccessLogEntry)
        self._socket: socket.socket | None = None
        self.passed = 0  # entries handed to another worker
        self.undeliverable = 0  # no such worker (it stopped: its records are written)

    def _path(self, prefix: str) -> str:
        return str(self._directory / f"{prefix}.sock")

    def start(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind(self._path(self._own_prefix))
        self._socket = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._receive)

    def stop(self) -> None:
        sock, self._socket = self._socket, None
        if sock is None:
            return
        asyncio.get_running_loop().remove_reader(sock.fileno())
        sock.close()
        Path(self._path(self._own_prefix)).unlink(missing_ok=True)

    def owned(self, key: str) -> bool:
        """The call whose join key this is was decided by this worker."""
        return key.startswith(self._own_prefix)

    def pass_on(self, key: str, entry: bytes) -> bool:
        """Hand an entry to the worker that decided the call; False if it cannot be reached."""
        sock = self._socket
        if sock is None or not _KEY.fullmatch(key):
            self.undeliverable += 1
            return False
        try:
            sock.sendto(key.encode("ascii") + b"\n" + entry, self._path(key[:PREFIX_CHARS]))
        except (FileNotFoundError, ConnectionRefusedError):
            self.undeliverable += 1
            return False
        except BlockingIOError:
            # The other worker is not keeping up: its record is written when it falls due.
            log.warning("dropped the ending of request_id=%s: its worker is busy", key[:32])
            self.undeliverable += 1
            return False
        self.passed += 1
        return True

    def _receive(self) -> None:
        sock = self._socket
        while sock is not None:
            try:
                data = sock.recv(1 << 20)
            except (BlockingIOError, InterruptedError):
                return
            key, _, entry = data.partition(b"\n")
            self._deliver(key.decode("ascii", "replace"), entry)
