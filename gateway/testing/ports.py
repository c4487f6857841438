"""Loopback TCP ports for tests, hardening and benchmarks: free ones, and waiting on them."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago (the kernel picks it)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports: every probe stays bound until all are picked."""
    with ExitStack() as held:
        ports = []
        for _ in range(count):
            probe = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            probe.bind((HOST, 0))
            ports.append(int(probe.getsockname()[1]))
        return ports


def free_port_run(count: int, attempts: int = 50, *, below_client_ports: bool = False) -> int:
    """The first of `count` consecutive free ports (for `serve --workers N`, whose worker K
    serves metrics on the configured port + K).

    With `below_client_ports`, below the range the kernel picks clients' ports from (as a
    deployment's 9090 is): a port a restarting worker leaves free for a moment is then never
    taken as the local port of one of the test's own connections.
    """
    low = _client_ports_start() if below_client_ports else 0
    for _ in range(attempts):
        first = random.randrange(10_000, low - count) if low > 10_000 + count else free_port()
        with ExitStack() as held:
            try:
                for port in range(first, first + count):
                    probe = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                    probe.bind((HOST, port))
            except OSError:
                continue
            return first
    raise OSError(f"no {count} consecutive free ports found in {attempts} attempts")


def _client_ports_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


@contextmanager
def taken_port(port: int = 0) -> Iterator[int]:
    """A free port (or `port`), held bound and listening (without SO_REUSEPORT) while the block
    runs: for tests of what a server does when the port it is given is in use."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((HOST, port))
        taken.listen()
        yield int(taken.getsockname()[1])


def accepts(address: str, timeout: float = 0.5) -> bool:
    """Whether `host:port` accepts a TCP connection right now."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def wait_listening(address: str, timeout: float = 30.0) -> bool:
    """Poll until `host:port` accepts connections or `timeout` seconds pass; whether it did."""
    deadline = time.monotonic() + timeout
    while not accepts(address):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def wait_port_free(port: int, timeout: float = 10.0) -> bool:
    """Poll until a server could bind 127.0.0.1:`port` again; whether it could in time."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # As servers bind: connections of a dead process in TIME_WAIT do not count.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((HOST, port))
                return True
            except OSError:
                if time.monotonic() >= deadline:
                    return False
        time.sleep(0.05)
