"""
The twistd plugin's two halves: L{Options} (the command line) and L{makeService}.

Importing this module never touches the global reactor; L{makeService} takes one.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from mailsink.config import DEFAULT_CONFIG_PATH, ConfigError, load_config
from mailsink.quiet_log import leave_out_port_lines
from mailsink.service import build_service
from mailsink.tls import CertificateError


class Options(usage.Options):
    """twistd mailsink [-c INI]"""

    synopsis = "[-c INI]"
    longdesc = (
        "mailsink accepts every message sent to it over SMTP (plain, STARTTLS, implicit "
        "TLS) and stores each one durably in a Maildir. Everything else is set in the INI "
        "file; every key can also come from the environment as MAILSINK_<SECTION>_<KEY>."
    )
    optParameters = [
        ["config", "c", DEFAULT_CONFIG_PATH, "The INI file to read."],
    ]


def makeService(options: Options, reactor: Any = None) -> IService:
    """Read the INI file and build the services; a bad setting exits with one line."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    leave_out_port_lines()
    try:
        return build_service(load_config(options["config"]), reactor)
    except (ConfigError, CertificateError) as error:
        raise SystemExit(f"mailsink: {error}") from None
