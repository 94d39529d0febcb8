"""systemd's notify protocol (``Type=notify``): one datagram per state to ``$NOTIFY_SOCKET``.

Without ``NOTIFY_SOCKET`` (not under systemd, tests, containers) every call is a
no-op. A path starting with ``@`` is an abstract socket. Failures are logged,
never raised: a broken notify socket must not stop payment processing
(systemd will restart us through the watchdog if it matters).
"""

from __future__ import annotations

import os
import socket

import structlog

log = structlog.get_logger(__name__)


class Notifier:
    """Sends ``READY=1``, ``WATCHDOG=1``, ``STOPPING=1`` and ``STATUS=...`` to systemd."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address if address is not None else os.environ.get("NOTIFY_SOCKET")

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def watchdog_interval(self) -> float | None:
        """Half of systemd's ``WATCHDOG_USEC`` in seconds, or None when no watchdog is set."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            return max(int(usec) / 2_000_000, 0.1)
        except ValueError:
            return None

    def notify(self, state: str) -> bool:
        """Send one state line; returns whether it was delivered."""
        if not self.address:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(target)
                sock.sendall(state.encode())
        except OSError as exc:
            log.warning("sd_notify_failed", state=state.split("=")[0], error=str(exc))
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")
