"""
The C{mailsink} console script: one argparse sub-command per task (C{passwd}, C{check},
C{send}, C{ls}, C{show}, C{lint}), each a function taking the parsed arguments and
returning an exit status; C{sendmail} is L{mailsink.sendmail.main}'s, with sendmail's own
flags and exit statuses. Errors are one line on standard error: status 2 for usage, 1 for
failures. Passwords are never printed, echoed or taken from the command line.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import re
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any, NoReturn

from mailsink import probe, send
from mailsink.auth.passwords import hash_bcrypt
from mailsink.checks import command as lint_command
from mailsink.config import DEFAULT_CONFIG_PATH, ConfigError, load_config
from mailsink.sendmail import main as sendmail_main
from mailsink.store import view as store_view


class UsageError(Exception):
    """Bad command-line usage: exit status 2."""


class CommandFailed(Exception):
    """The command could not do its work: exit status 1."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and an exception, not an exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    """The C{mailsink} parser; each sub-command sets C{run} to its function."""
    parser = _Parser(prog="mailsink", description="mailsink's command-line tools.")
    commands = parser.add_subparsers(title="commands", dest="command", required=True,
                                     parser_class=_Parser)
    passwd = commands.add_parser(
        "passwd", help="add or update a user's bcrypt entry in a password file",
        description="Add or update USER's bcrypt entry in FILE (created 0600 if missing). "
                    "The password is asked twice on a terminal, or else read from the "
                    "first line of standard input.")
    passwd.add_argument("file", metavar="FILE", help="the htpasswd-style password file")
    passwd.add_argument("user", metavar="USER", help="the user name")
    passwd.add_argument("-C", "--cost", type=int, default=12, choices=range(4, 32),
                        metavar="4..31", help="bcrypt cost (default 12)")
    passwd.set_defaults(run=run_passwd)
    add_probe_commands(commands)
    add_store_commands(commands)
    lint = commands.add_parser(
        "lint", help="check a message file the way real mail servers and clients will",
        description="Print the lint findings for a message file (.eml, CRLF or LF line "
                    "ends), one a line: severity, code, field, what to change. Exit status "
                    "1 when one is an error.")
    lint.add_argument("file", metavar="FILE", help="the message file, or - for standard input")
    lint.set_defaults(run=run_lint)
    commands.add_parser("sendmail", add_help=False, help="a sendmail-compatible command "
                        "(as mailsink-sendmail; see mailsink sendmail --help)")
    return parser


def add_store_commands(commands: argparse._SubParsersAction[_Parser]) -> None:
    """C{ls} and C{show}: the store from a terminal (see L{mailsink.store.view})."""
    ls = commands.add_parser(
        "ls", help="list the captured messages, newest first",
        description="List the messages in the Maildir, newest first: ID (as the web view "
                    "and the API give it), received time, N for unread, mailbox, sender and "
                    "subject. The Maildir comes from the INI (-c) or is given directly.")
    _add_store_location(ls, "maildir", metavar="MAILDIR", nargs="?")
    ls.add_argument("--mailbox", metavar="NAME", help="only this mailbox: a [mailbox:NAME], "
                    "a user's under isolation = user, or '' for the shared Maildir")
    ls.set_defaults(run=run_ls)
    show = commands.add_parser(
        "show", help="print one captured message as stored",
        description="Print message ID (as ls, the web view and the API give it) as stored.")
    show.add_argument("id", metavar="ID", help="the message ID")
    _add_store_location(show, "--maildir", metavar="DIR")
    show.set_defaults(run=run_show)


def _add_store_location(command: argparse.ArgumentParser, maildir: str, **how: Any) -> None:
    """-c INI, or the Maildir itself (C{maildir}: a positional or an option name)."""
    where = command.add_mutually_exclusive_group()
    where.add_argument("-c", "--config", metavar="INI", help=f"the INI file (default "
                       f"{DEFAULT_CONFIG_PATH} when no Maildir is given)")
    where.add_argument(maildir, help="the Maildir folder", **how)


def _add_tls_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--timeout", type=float, default=probe.DEFAULT_TIMEOUT,
                         metavar="SECONDS",
                         help=f"seconds each step may take (default {probe.DEFAULT_TIMEOUT:g})")
    command.add_argument("--cafile", metavar="FILE",
                         help="trust only the certificates in FILE (PEM)")
    command.add_argument("--insecure", action="store_true",
                         help="do not check the server's certificate")
    command.add_argument("--servername", metavar="NAME",
                         help="the name the certificate must carry (default: HOST)")


def add_probe_commands(commands: argparse._SubParsersAction[_Parser]) -> None:
    """The C{check} and C{send} sub-commands (see L{mailsink.probe})."""
    check = commands.add_parser(
        "check", help="probe an SMTP server and say which client settings work",
        description="Probe an SMTP server: greeting or silence (implicit TLS), STARTTLS, "
                    "AUTH before and after TLS, the certificate, SIZE; ends with the "
                    "settings to use or the problem. Exit status 0 when a setting works.")
    check.add_argument("target", metavar="HOST[:PORT]",
                       help=f"the server (default port {probe.DEFAULT_PORT})")
    _add_tls_options(check)
    check.set_defaults(run=run_check)
    send_command = commands.add_parser(
        "send", help="send a test message to an SMTP server",
        description="Send a test message; failures are explained in one sentence. The "
                    "password comes from standard input (--password-stdin) or "
                    "MAILSINK_PASSWORD.")
    send_command.add_argument("target", metavar="HOST[:PORT]",
                              help="the server (default port 587, 465 with --tls implicit)")
    send_command.add_argument("--tls", choices=probe.MODES, default="starttls",
                              help="none, starttls (default) or implicit")
    send_command.add_argument("--user", metavar="U", help="log in as U")
    send_command.add_argument("--password-stdin", action="store_true",
                              help="read the password from standard input's first line")
    send_command.add_argument("--from", dest="sender", metavar="A", default=send.DEFAULT_FROM,
                              help=f"the sender (default {send.DEFAULT_FROM})")
    send_command.add_argument("--to", dest="recipients", metavar="B", action="append",
                              help=f"a recipient, repeatable (default {send.DEFAULT_TO})")
    send_command.add_argument("--subject", metavar="S", default=send.DEFAULT_SUBJECT,
                              help=f"the subject (default {send.DEFAULT_SUBJECT!r})")
    send_command.add_argument("--attach", metavar="FILE", action="append", default=[],
                              help="attach FILE (content type guessed), repeatable")
    _add_tls_options(send_command)
    send_command.set_defaults(run=run_send)


def main(argv: list[str] | None = None) -> int:
    """Run the command line C{argv} (default C{sys.argv[1:]}); return the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sendmail"]:  # sendmail's own flags, which argparse cannot read
        return sendmail_main.main(argv[1:], prog="mailsink sendmail")
    parser = build_parser()
    try:
        arguments = parser.parse_args(argv)
    except SystemExit as e:  # --help exits on purpose
        return e.code if isinstance(e.code, int) else 0
    except UsageError as e:
        print(e, file=sys.stderr)
        return 2
    run: Callable[[argparse.Namespace], int] = arguments.run
    try:
        return run(arguments)
    except UsageError as e:
        print(e, file=sys.stderr)
        return 2
    except CommandFailed as e:
        print(f"mailsink {arguments.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"mailsink {arguments.command}: interrupted", file=sys.stderr)
        return 1


def run_passwd(arguments: argparse.Namespace) -> int:
    """C{mailsink passwd FILE USER}: write USER's new bcrypt hash into FILE."""
    user: str = arguments.user
    if not user or ":" in user or any(c.isspace() for c in user) or user.startswith("#"):
        raise UsageError("mailsink passwd: a user name must be non-empty, without ':' or "
                         "white space, and not start with '#'")
    password = read_password()
    try:
        entry = f"{user}:{hash_bcrypt(password, arguments.cost)}".encode()
    except ValueError as e:
        raise CommandFailed(str(e)) from None
    path = os.path.realpath(arguments.file)
    try:
        added = update_password_file(path, user.encode(), entry)
    except OSError as e:
        raise CommandFailed(f"{arguments.file}: {e.strerror or e}") from None
    print(f"{'Added' if added else 'Updated'} user {user} in {arguments.file}")
    return 0


def read_password() -> bytes:
    """The new password: asked twice on a terminal, else standard input's first line."""
    if sys.stdin.isatty():
        first = getpass.getpass("New password: ")
        if first != getpass.getpass("Repeat the password: "):
            raise CommandFailed("the passwords do not match")
        text = first
    else:
        stream = getattr(sys.stdin, "buffer", None)
        line = stream.readline() if stream else sys.stdin.readline().encode("utf-8")
        line = line.removesuffix(b"\n").removesuffix(b"\r")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise CommandFailed("the password on standard input is not UTF-8") from None
    if not text:
        raise CommandFailed("empty password")
    return text.encode("utf-8")


def replace_entry(content: bytes, user: bytes, entry: bytes) -> tuple[bytes, bool]:
    """
    C{content} with USER's first entry line replaced by C{entry} (and any later ones
    dropped, since the last would win) or C{entry} appended; every other line kept as it
    was. Also says whether the user was added.
    """
    lines = re.findall(rb"[^\n]*\n|[^\n]+\Z", content)
    ending = b"\r\n" if lines and lines[0].endswith(b"\r\n") else b"\n"
    out: list[bytes] = []
    found = False
    for line in lines:
        if line.strip().partition(b":")[0] == user and not line.strip().startswith(b"#"):
            if not found:
                out.append(entry + (b"\r\n" if line.endswith(b"\r\n") else ending))
            found = True
            continue
        out.append(line)
    if not found:
        if out and not out[-1].endswith(b"\n"):
            out[-1] += ending
        out.append(entry + ending)
    return b"".join(out), not found


def update_password_file(path: str, user: bytes, entry: bytes) -> bool:
    """
    Write USER's entry into the file atomically: a 0600 temporary file in the same folder,
    fsynced, renamed over the old one, then the folder fsynced. An existing file keeps its
    mode (and owner, when allowed). Returns whether the user was added.
    """
    try:
        with open(path, "rb") as f:
            before = os.fstat(f.fileno())
            content = f.read()
    except FileNotFoundError:
        before, content = None, b""
    updated, added = replace_entry(content, user, entry)
    folder = os.path.dirname(path) or "."
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=".mailsink-passwd-")
    try:
        with os.fdopen(descriptor, "wb") as f:
            f.write(updated)
            f.flush()
            if before is not None:
                os.fchmod(f.fileno(), before.st_mode & 0o7777)
                if (before.st_uid, before.st_gid) != (os.geteuid(), os.getegid()):
                    with contextlib.suppress(PermissionError):
                        os.fchown(f.fileno(), before.st_uid, before.st_gid)
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    folder_descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(folder_descriptor)
    finally:
        os.close(folder_descriptor)
    return added


def _target(arguments: argparse.Namespace, default_port: int) -> tuple[str, int]:
    try:
        return probe.parse_target(arguments.target, default_port)
    except ValueError as e:
        raise UsageError(f"mailsink {arguments.command}: {e}") from None


def _context(arguments: argparse.Namespace) -> ssl.SSLContext:
    if arguments.timeout <= 0:
        raise UsageError(f"mailsink {arguments.command}: --timeout must be positive")
    try:
        return probe.make_context(arguments.cafile, arguments.insecure)
    except probe.Diagnosis as e:
        raise CommandFailed(str(e)) from None


def run_check(arguments: argparse.Namespace) -> int:
    """C{mailsink check HOST[:PORT]}: print the findings and the settings to use."""
    host, port = _target(arguments, probe.DEFAULT_PORT)
    context = _context(arguments)
    print(f"checking {host}:{port}", flush=True)
    try:
        findings = probe.check(host, port, context=context, timeout=arguments.timeout,
                               servername=arguments.servername)
    except probe.Diagnosis as e:
        raise CommandFailed(str(e)) from None
    for line in findings.lines:
        print(f"  {line}")
    if findings.problem is not None:
        raise CommandFailed(findings.problem)
    print(findings.use)
    return 0


def send_password(arguments: argparse.Namespace) -> str | None:
    """The password for C{send}: standard input's first line, else C{MAILSINK_PASSWORD}."""
    if arguments.password_stdin:
        line = sys.stdin.readline()
        password = line.removesuffix("\n").removesuffix("\r")
        if not password:
            raise CommandFailed("no password on standard input")
        return password
    return os.environ.get("MAILSINK_PASSWORD")


def run_send(arguments: argparse.Namespace) -> int:
    """C{mailsink send HOST[:PORT]}: send a test message, say what the server answered."""
    host, port = _target(arguments,
                         probe.IMPLICIT_PORT if arguments.tls == "implicit" else
                         probe.DEFAULT_PORT)
    context = _context(arguments)
    password = send_password(arguments)
    if arguments.user is None and arguments.password_stdin:
        raise UsageError("mailsink send: --password-stdin needs --user")
    if arguments.user is not None and password is None:
        raise CommandFailed("no password for --user: pass --password-stdin or set "
                            "MAILSINK_PASSWORD")
    recipients = arguments.recipients or [send.DEFAULT_TO]
    try:
        message = send.build_message(arguments.sender, recipients, arguments.subject,
                                     arguments.attach)
        reply = send.send(host, port, message, mode=arguments.tls, context=context,
                          timeout=arguments.timeout, user=arguments.user, password=password,
                          servername=arguments.servername)
    except probe.Diagnosis as e:
        raise CommandFailed(str(e)) from None
    print(f"sent to {host}:{port}: {reply}")
    return 0


def _maildir(arguments: argparse.Namespace) -> str:
    """The Maildir given directly, or the one the INI names."""
    if arguments.maildir:
        return str(arguments.maildir)
    try:
        return load_config(arguments.config or DEFAULT_CONFIG_PATH).mailsink.maildir
    except ConfigError as e:
        raise CommandFailed(str(e)) from None


def run_ls(arguments: argparse.Namespace) -> int:
    """C{mailsink ls [-c INI | MAILDIR] [--mailbox NAME]}: one line a message, newest first."""
    root = _maildir(arguments)
    if not os.path.isdir(root):
        raise CommandFailed(f"{root} is not a folder: has mailsink stored anything yet? "
                            f"(or give the Maildir, or -c INI)")
    known = store_view.mailboxes(root)
    if arguments.mailbox is not None and arguments.mailbox not in known:
        raise CommandFailed(f"no mailbox {arguments.mailbox!r} in {root}; there are: "
                            + ", ".join(repr(name) for name in known))
    encoding = sys.stdout.encoding or "utf-8"  # a subject the terminal cannot show: "?"
    for item in store_view.listing(root, arguments.mailbox):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(item.received))
        mailbox = f"[{item.mailbox}] " if item.mailbox else ""
        line = (f"{item.id}  {when}  {' ' if item.read else 'N'}  {mailbox}"
                f"{item.sender or '-'}  {item.subject}")
        print(line.encode(encoding, "replace").decode(encoding))
    return 0


def run_show(arguments: argparse.Namespace) -> int:
    """C{mailsink show ID [-c INI | --maildir DIR]}: the message's bytes, as stored."""
    root = _maildir(arguments)
    path = store_view.find(root, arguments.id)
    if path is None:
        raise CommandFailed(f"no message {arguments.id} in {root}")
    try:
        with open(path, "rb") as stream:
            sys.stdout.flush()
            for chunk in iter(lambda: stream.read(1 << 16), b""):
                sys.stdout.buffer.write(chunk)
    except OSError as e:
        raise CommandFailed(f"cannot read {path}: {e.strerror}") from None
    sys.stdout.buffer.flush()
    return 0



def run_lint(arguments: argparse.Namespace) -> int:
    """C{mailsink lint FILE|-}: the findings, one a line; 1 when one is an error."""
    try:
        return lint_command.run(arguments.file, sys.stdout)
    except OSError as e:
        raise CommandFailed(f"cannot read {arguments.file}: {e.strerror or e}") from None
