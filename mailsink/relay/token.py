"""
C{[relay] token_command}: a program that prints a fresh OAuth2 access token, run for every
new relay connection (as msmtp's C{passwordeval} is).

It runs with no input, in a process group of its own, so that when the operation's
deadline (C{[relay] timeout}) passes everything it started (a C{curl | jq} pipeline) is
killed and the connection fails at once rather than waiting for the last pipe to close.
What it writes to standard error stays out of the failure sentence: it may hold a client
secret.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from mailsink.relay.deadline import Deadline
from mailsink.sentences import Diagnosis

SHELL = "/bin/sh"
_NEW_GROUP = "import os, sys; os.setsid(); os.execv(sys.argv[1], sys.argv[1:])"
"""Run by the interpreter: the shell becomes the leader of a new group, its id our pid."""
OUTPUT_LIMIT = 64 * 1024
"""Output kept from the command (access tokens are a few kB at most)."""


class _TokenCommand(ProcessProtocol):
    """The command's standard output; C{done} fires with the token or a Diagnosis."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.out: list[bytes] = []
        self.done: Deferred[bytes] = Deferred()
        self.group: int | None = None
        """The process group (the launcher's pid): Twisted forgets the pid once reaped."""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.group = getattr(self.transport, "pid", None)
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        if sum(map(len, self.out)) < OUTPUT_LIMIT:
            self.out.append(data)

    def errReceived(self, data: bytes) -> None:
        """Ignored: it may hold secrets, and the sentence says to run the command by hand."""

    def expire(self) -> None:
        """The deadline passed: kill the whole group and fail now."""
        self._kill_group()
        self._tell(Diagnosis(f"[relay] token_command did not finish in {self.timeout:g} s: "
                             f"check the command"))

    def processExited(self, reason: Failure) -> None:
        """The shell is done: whatever it left running in the background goes too."""
        self._kill_group()

    def processEnded(self, reason: Failure) -> None:
        status = getattr(reason.value, "exitCode", None)
        token = b"".join(self.out).strip()
        if status != 0 or not token:
            what = f"exit status {status}" if status != 0 else "it printed no token"
            self._tell(Diagnosis(f"[relay] token_command failed ({what}): run it by hand to "
                                 f"see why"))
        else:
            self._tell(token)

    def _tell(self, result: bytes | Diagnosis) -> None:
        if self.done.called:
            return
        if isinstance(result, Diagnosis):
            self.done.errback(result)
        else:
            self.done.callback(result)

    def _kill_group(self) -> None:
        if self.group is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.group, signal.SIGKILL)


def fetch_token(reactor: Any, command: str, deadline: Deadline) -> Deferred[bytes]:
    """
    Run C{command} with the shell; its standard output, stripped, is the token. It must
    be done by C{deadline}: the connection that needs the token comes after.
    """
    process = _TokenCommand(deadline.timeout)
    argv = [sys.executable, "-c", _NEW_GROUP, SHELL, "-c", command]
    reactor.spawnProcess(process, argv[0], argv, env=dict(os.environ))
    timer = reactor.callLater(deadline.left(reactor), process.expire)

    def stop_timer(result: object) -> object:
        if timer.active():
            timer.cancel()
        return result

    return process.done.addBoth(stop_timer)
