"""
The C{mailsink-sendmail} console script (also C{mailsink sendmail}): reads the command
line (L{mailsink.sendmail.prepare}), finds the INI and the listener, and hands the message over
(L{mailsink.sendmail.deliver}), or speaks SMTP on standard input (L{mailsink.sendmail.stdio}).
Exit statuses are sendmail's (sysexits.h), so callers such as PHP and cron read them as
they would sendmail's.
"""

from __future__ import annotations

import datetime
import os
import pwd
import socket
import sys
from collections.abc import Mapping, Sequence

from mailsink.config import DEFAULT_CONFIG_PATH, ConfigError, load_config
from mailsink.sendmail.deliver import (
    EX_TEMPFAIL,
    EX_UNAVAILABLE,
    Outcome,
    Target,
    deliver,
    listener_target,
    override_target,
)
from mailsink.sendmail.prepare import (
    EX_USAGE,
    Identity,
    Options,
    UsageError,
    parse_arguments,
    prepare,
    read_message,
)
from mailsink.sendmail.stdio import converse

EX_CONFIG = 78
"""sysexits.h: the configuration cannot be used."""
USER_CONFIG = "~/.config/mailsink/mailsink.ini"

HELP = f"""\
usage: {{prog}} [FLAGS] [--] [RECIPIENT...]

Hands the message on standard input to mailsink, as /usr/sbin/sendmail hands it to a
mail server; for PHP's mail(), cron, git send-email and scripts.

  -t                 recipients from the To, Cc and Bcc headers too (Bcc is then removed)
  -i, -oi            a line holding only a dot does not end the message
  -f ADDR, -r ADDR   the envelope sender (default: your user name at the INI's hostname)
  -F NAME            the full name for the From header added to a message without one
  -bm                deliver the message on standard input (the default)
  -bs                speak SMTP on standard input and output (Symfony, Laravel)
  -c INI, --config INI
                     mailsink's INI file (see below)
  --smtp HOST:PORT   hand messages to this SMTP server instead of the INI's listener
  --help             show this and exit

Other -o and -O options, -B, -N, -R, -V, -U, -v, -e, -h, -L, -m, -n, -G and -p are
accepted and ignored; any other flag is an error (exit status {EX_USAGE}).

The INI is the one -c names, else $MAILSINK_CONFIG, else {DEFAULT_CONFIG_PATH}, else
{USER_CONFIG}. Messages go over SMTP to its [smtp] listener (or the first
other SMTP listener that needs no password), with STARTTLS or TLS when the listener
requires it, trusting the INI's certificate. A message that cannot be handed over is
written to the INI's Maildir directly, with a Received header that says so.

Exit status: 0 delivered (or written to the Maildir); {EX_USAGE} a wrong command line;
{EX_UNAVAILABLE} the listener refused the message; {EX_TEMPFAIL} neither delivered nor
kept (try again later); {EX_CONFIG} the INI cannot be read or found.
"""


def main(argv: Sequence[str] | None = None, prog: str = "mailsink-sendmail") -> int:
    """Run the command with C{argv} (default C{sys.argv[1:]}); returns the exit status."""
    try:
        options = parse_arguments(sys.argv[1:] if argv is None else argv)
        if options.help:
            print(HELP.format(prog=prog), end="")
            return 0
        if options.mode == "deliver" and not options.extract and not options.recipients:
            raise UsageError("no recipients: give them as arguments, or -t to take them "
                             "from the To, Cc and Bcc headers")
        path = config_path(options.config, os.environ)
        if path is None and options.smtp is None:
            return _fail(prog, f"no INI: neither {DEFAULT_CONFIG_PATH} nor {USER_CONFIG} "
                               "exists; give -c INI, set MAILSINK_CONFIG, or pass --smtp "
                               "HOST:PORT", EX_CONFIG)
        config = None if path is None else load_config(path)
        target: Target | str
        if options.smtp is not None:
            target = override_target(options.smtp, config)
        else:
            assert config is not None  # no INI and no --smtp returned above
            target = listener_target(config)
    except UsageError as e:
        return _fail(prog, str(e), EX_USAGE)
    except ValueError as e:  # --smtp's HOST:PORT
        return _fail(prog, f"--smtp: {e}", EX_USAGE)
    except ConfigError as e:
        return _fail(prog, str(e), EX_CONFIG)
    identity = calling_user(config.mailsink.hostname if config else socket.gethostname(),
                            os.environ)
    session = _Session(options, identity, target,
                       config.mailsink.maildir if config else None, prog)
    if options.mode == "smtp":
        converse(sys.stdin.buffer, session.write_reply, identity.hostname, session.reply)
        return 0
    raw = read_message(sys.stdin.buffer, options.dots_end)
    return session.deliver(None, None, raw).status


class _Session:
    """One run's settings, handing each message over and telling standard error."""

    def __init__(self, options: Options, identity: Identity, target: Target | str,
                 maildir: str | None, prog: str) -> None:
        self.options = options
        self.identity = identity
        self.target = target
        self.maildir = maildir
        self.prog = prog

    def deliver(self, sender: str | None, recipients: Sequence[str] | None,
                raw: bytes) -> Outcome:
        now = datetime.datetime.now().astimezone()
        message = prepare(raw, self.options, self.identity, now, recipients, sender)
        if not message.recipients:
            _fail(self.prog, "no recipients in the To, Cc and Bcc headers", EX_USAGE)
            return Outcome(EX_USAGE, "554 5.5.1 no recipients")
        outcome = deliver(message, self.identity, now, self.target, self.maildir)
        if outcome.note:
            _fail(self.prog, outcome.note, outcome.status)
        return outcome

    def reply(self, sender: str, recipients: tuple[str, ...], data: bytes) -> str:
        return self.deliver(sender, recipients, data).reply

    @staticmethod
    def write_reply(data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()


def config_path(given: str | None, environ: Mapping[str, str]) -> str | None:
    """C{-c}'s INI, else C{MAILSINK_CONFIG}'s, else the first of the defaults that exists."""
    if given:
        return given
    if environ.get("MAILSINK_CONFIG"):
        return environ["MAILSINK_CONFIG"]
    for candidate in (DEFAULT_CONFIG_PATH, os.path.expanduser(USER_CONFIG)):
        if os.path.exists(candidate):
            return candidate
    return None


def calling_user(hostname: str, environ: Mapping[str, str]) -> Identity:
    """
    The real user id's login name and full name (C{NAME}, else the password database's
    first GECOS field), as sendmail takes them for a generated From.
    """
    uid = os.getuid()
    try:
        entry = pwd.getpwuid(uid)
        user, gecos = entry.pw_name, entry.pw_gecos.split(",")[0]
    except KeyError:  # a container's uid without a passwd entry
        user, gecos = environ.get("LOGNAME") or environ.get("USER") or str(uid), ""
    return Identity(user=user, uid=uid, hostname=hostname,
                    gecos_name=environ.get("NAME") or gecos)


def _fail(prog: str, sentence: str, status: int) -> int:
    print(f"{prog}: {sentence}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
