"""Hot reload of the policy file: watched and reloaded on SIGHUP, validated fully, swapped whole."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from gateway.authorizer import PolicyHolder
from gateway.policy.model import Policy

log = logging.getLogger("opsgate.policy")

Loader = Callable[[Path], Policy]


def file_stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when the file does (a ConfigMap update swaps a symlink: stat follows it)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


class PolicyReloader:
    """Keeps a PolicyHolder in step with its file.

    A new version is loaded and validated off the event loop, then swapped in with one
    assignment, so every call is decided by exactly one version. An invalid file is rejected:
    the last good policy stays in force and a log line and the `rejected` counter say so.
    """

    def __init__(
        self, holder: PolicyHolder, path: Path, load: Loader, interval_s: float = 2.0
    ) -> None:
        self.holder = holder
        self.path = path
        self._load = load
        self._interval_s = interval_s
        self._stamp = file_stamp(path)
        self._lock = asyncio.Lock()
        self.reloads = 0
        self.rejected = 0

    async def watch(self) -> None:
        """Poll the file's stamp every interval; reload when it changes. Runs until cancelled."""
        while True:
            await asyncio.sleep(self._interval_s)
            stamp = file_stamp(self.path)
            if stamp != self._stamp:
                self._stamp = stamp
                await self.reload(reason="file changed")

    async def reload(self, reason: str = "SIGHUP") -> bool:
        """Load, validate and swap; True when a new version is in force."""
        async with self._lock:  # a SIGHUP during a watch-triggered reload waits its turn
            try:
                policy = await asyncio.to_thread(self._load, self.path)
            except Exception as exc:
                self.rejected += 1
                log.error(
                    "policy reload (%s) rejected; etag %s stays in force: %s",
                    reason,
                    self.holder.current.etag,
                    exc,
                )
                return False
            previous = self.holder.current.etag
            if policy.etag == previous:
                return False
            self.holder.current = policy
            self.reloads += 1
            log.info("policy reloaded (%s): etag %s -> %s", reason, previous, policy.etag)
            return True
