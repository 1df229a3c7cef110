"""
Each thing said once in the log: Twisted's own lines for a listening port are left out.

Twisted logs every port it opens and closes in its own words (C{Site starting on 8025},
C{SMTPFactory (TLS) (ImplicitTLSWatchFactory) starting on 1465}, C{(TCP Port 1587
Closed)}), right beside mailsink's C{[smtp] listening on ...} line that says more. Those
lines come from C{twisted.python.log.msg} inside C{tcp.Port}, with no switch to turn them
off (C{noisy = False} on a factory only silences its C{Starting factory} lines).

twistd adds its log observer after the plugin's C{makeService} has run, so an observer
added here sees every event first: for a port line it empties the event's format, and text
observers (twistd's log file, standard output, syslog) then write nothing for it.
"""

from __future__ import annotations

import re

from twisted.logger import ILogObserver, LogEvent, LogPublisher, globalLogPublisher
from zope.interface import provider

_PORT_LINE = re.compile(r".+ starting on \d+|\((?:\w+ )?Port \S+ Closed\)")
"""Twisted's legacy port lines (C{tcp.Port.startListening} and C{_logConnectionLostMsg})."""


@provider(ILogObserver)
def blank_port_lines(event: LogEvent) -> None:
    """Give Twisted's port lines an empty format, which text observers skip."""
    if (event.get("log_namespace") == "log_legacy"
            and _PORT_LINE.fullmatch(str(event.get("log_text", "")))):
        event["log_format"] = ""


def leave_out_port_lines(publisher: LogPublisher = globalLogPublisher) -> None:
    """Put L{blank_port_lines} in front of the observers added from now on (once)."""
    publisher.removeObserver(blank_port_lines)
    publisher.addObserver(blank_port_lines)
