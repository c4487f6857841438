"""Across `serve --workers N`: an access-log entry reaches the worker whose check let its call in.

Envoy's checks and its access-log stream are separate connections, which SO_REUSEPORT may hand
to different workers. A call id starts with its worker's request-id prefix, so the worker that
receives an entry for a call it did not decide passes it on to the deciding worker, over a unix
stream socket in a directory only this gateway's user can reach (made by the supervisor).
Streams, not datagrams: a datagram socket's queue holds ten messages by default, and a busy
worker would lose endings; a stream buffers them, and the access-log stream waits while it does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("opsgate.envoy")

PREFIX_CHARS = 16  # a request id's per-process prefix (see gateway.call.new_request_id)
_KEY = re.compile(r"[0-9a-f]{32}(\.[0-9a-f]{1,64})?")  # a call id, and its MAC (JoinKeys)
_LENGTH = 4  # each message: its length (big-endian), the key, a newline, the entry
_MAX_MESSAGE = 1 << 22


class Handoff:
    """This worker's socket, and its connections to the other workers' sockets."""

    def __init__(
        self, directory: Path, own_prefix: str, deliver: Callable[[str, bytes], object]
    ) -> None:
        self._directory = directory
        self._own_prefix = own_prefix
        self._deliver = deliver  # (join key, serialized HTTPAccessLogEntry)
        self._server: asyncio.AbstractServer | None = None
        self._peers: dict[str, asyncio.StreamWriter] = {}
        self.passed = 0  # entries handed to another worker
        self.undeliverable = 0  # no such worker (it stopped: its records are written)

    def _path(self, prefix: str) -> str:
        return str(self._directory / f"{prefix}.sock")

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._receive, self._path(self._own_prefix))

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path(self._own_prefix))  # a unix server leaves its socket
        for writer in self._peers.values():
            writer.close()
        self._peers.clear()

    def owned(self, key: str) -> bool:
        """The call whose join key this is was decided by this worker."""
        return key.startswith(self._own_prefix)

    async def pass_on(self, key: str, entry: bytes) -> bool:
        """Hand an entry to the worker that decided the call; False if it cannot be reached."""
        if self._server is None or not _KEY.fullmatch(key):
            self.undeliverable += 1
            return False
        prefix = key[:PREFIX_CHARS]
        message = key.encode("ascii") + b"\n" + entry
        try:
            writer = self._peers.get(prefix)
            if writer is None or writer.is_closing():
                _, writer = await asyncio.open_unix_connection(self._path(prefix))
                self._peers[prefix] = writer
            writer.write(len(message).to_bytes(_LENGTH, "big") + message)
            await writer.drain()  # a busy worker slows this access-log stream, loses nothing
        except OSError:
            self._peers.pop(prefix, None)
            self.undeliverable += 1
            return False
        self.passed += 1
        return True

    async def _receive(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                size = int.from_bytes(await reader.readexactly(_LENGTH), "big")
                if size > _MAX_MESSAGE:
                    log.warning("closing a worker handoff connection: a %d-byte message", size)
                    break
                key, _, entry = (await reader.readexactly(size)).partition(b"\n")
                self._deliver(key.decode("ascii", "replace"), entry)
        writer.close()
