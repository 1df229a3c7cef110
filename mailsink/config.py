"""
The INI file (and C{MAILSINK_<SECTION>_<KEY>} environment overrides) read into one
immutable, validated L{Config}.

Everything here is pure: tests feed strings and dictionaries, and every problem becomes a
L{ConfigError} whose text names the section, the key and what to change.
"""

from __future__ import annotations

import configparser
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from mailsink import values
from mailsink.index.tag_rules import NO_RULES, RuleError, TagRules, parse_rules
from mailsink.store.mailboxes import MailboxRule, check_name, compile_recipients

LISTENER_PROTOCOLS = ("smtp", "pop3", "imap", "web")
TLS_MODES = ("none", "starttls", "starttls-required", "implicit")
ENVIRONMENT_PREFIX = "MAILSINK_"
DEFAULT_CONFIG_PATH = "/etc/mailsink/mailsink.ini"
SPAMD_PORT = 783
"""spamd's port when C{[spamassassin] host} names none."""

Parser = Callable[[str], Any]


class ConfigError(Exception):
    """A configuration problem, told in one line: C{[section] key: what is wrong}."""

    def __init__(self, section: str, key: str | None, problem: str) -> None:
        self.section = section
        self.key = key
        self.problem = problem
        where = f"[{section}] {key}" if key else f"[{section}]"
        super().__init__(f"{where}: {problem}")


def _path(text: str) -> str:
    """A path, kept as written; made absolute against the INI's folder later."""
    return text.strip()


# (parser, default) for every key of every section; None as default means "required".
_SCHEMA: dict[str, dict[str, tuple[Parser, str | None]]] = {
    "mailsink": {
        "hostname": (values.parse_hostname, "localhost"),
        "maildir": (_path, "../var/mail"),
        "state_dir": (_path, "../var/state"),
        "max_message_size": (values.parse_size, "25M"),
        "max_recipients": (values.parse_count, "1000"),
        "max_messages": (values.parse_count, "0"),
        "max_age": (values.parse_duration, "0"),
        "isolation": (values.parse_choice(("none", "user")), "none"),
        "chaos": (values.parse_bool, "false"),
        "max_sessions": (values.parse_count, "1000"),
    },
    "tls": {
        "cert": (_path, ""),
        "key": (_path, ""),
    },
    "auth": {
        "password_file": (_path, ""),
        "accept_any": (values.parse_bool, "false"),
        "allow_insecure": (values.parse_bool, "false"),
        "admins": (values.parse_words, ""),
    },
    "relay": {
        "host": (str.strip, ""),
        "port": (values.parse_port, "587"),
        "tls": (values.parse_choice(("none", "starttls", "implicit")), "starttls"),
        "tls_verify": (values.parse_bool, "true"),
        "username": (str.strip, ""),
        "password": (str, ""),
        "token": (str.strip, ""),
        "token_command": (str.strip, ""),
        "timeout": (values.parse_duration, "30s"),
        "pool_size": (values.parse_count, "4"),
        "allowed_recipients": (values.parse_regex, ""),
        "blocked_recipients": (values.parse_regex, ""),
        "auto_relay": (values.parse_bool, "false"),
        "auto_relay_match": (values.parse_regex, ""),
    },
    "spamassassin": {
        "host": (values.parse_host_port(SPAMD_PORT), ""),
    },
}

_TLS = (values.parse_choice(TLS_MODES), "starttls")
_LISTENER_SCHEMA: dict[str, dict[str, tuple[Parser, str | None]]] = {
    "smtp": {
        "listen": (values.parse_endpoints, None),
        "tls": _TLS,
        "auth": (values.parse_choice(("none", "optional", "required")), "optional"),
        "long_lines": (values.parse_choice(("accept", "refuse")), "accept"),
    },
    "pop3": {"listen": (values.parse_endpoints, None), "tls": _TLS},
    "imap": {"listen": (values.parse_endpoints, None), "tls": _TLS},
    "web": {
        "listen": (values.parse_endpoints, None),
        "auth": (values.parse_choice(("none", "required")), "none"),
        "webhook_url": (str.strip, ""),
        "base_path": (values.parse_base_path, "/"),
    },
}

_DEFAULT_LISTEN = {
    "smtp": "tcp:1025:interface=127.0.0.1",
    "pop3": "tcp:1110:interface=127.0.0.1",
    "imap": "tcp:1143:interface=127.0.0.1",
    "web": "tcp:8025:interface=127.0.0.1",
}
"""C{listen} of a plain C{[smtp]}, C{[pop3]}, C{[imap]} or C{[web]} that names none (loopback
only); a C{[PROTOCOL:NAME]} section must name its own."""

_FREE_SECTIONS = ("tags",)
"""Sections whose keys are the user's own names (C{[tags]}: tag = search query)."""

_SECTION_NAME = re.compile(r"(smtp|pop3|imap|web)(?::([A-Za-z0-9_-]+))?")
_MAILBOX_PREFIX = "mailbox:"
_MAILBOX_KEYS = ("recipients", "users")


@attrs.frozen
class MailsinkSettings:
    """The C{[mailsink]} section: identity, store and limits."""

    hostname: str
    maildir: str
    state_dir: str
    max_message_size: int
    max_recipients: int
    max_messages: int
    max_age: int
    isolation: str
    chaos: bool
    max_sessions: int
    """SMTP sessions kept for the Sessions view (the newest; 0 keeps none)."""


@attrs.frozen
class TLSSettings:
    """The C{[tls]} section: certificate and key files, or empty to generate them."""

    cert: str
    key: str


@attrs.frozen
class AuthSettings:
    """The C{[auth]} section."""

    password_file: str
    accept_any: bool
    allow_insecure: bool
    admins: tuple[str, ...]


@attrs.frozen
class RelaySettings:
    """The C{[relay]} section: where released messages go."""

    host: str
    port: int
    tls: str
    tls_verify: bool
    username: str
    password: str = attrs.field(repr=False)
    token: str = attrs.field(repr=False)
    """An OAuth2 access token: log in with XOAUTH2 instead of the password."""
    token_command: str
    """A shell command that prints a fresh access token, run for each new connection."""
    timeout: int
    pool_size: int
    allowed_recipients: str
    blocked_recipients: str
    auto_relay: bool
    auto_relay_match: str

    @property
    def uses_token(self) -> bool:
        """Log in with XOAUTH2 (a token, or a command printing one), not a password."""
        return bool(self.token or self.token_command)


@attrs.frozen
class SpamAssassinSettings:
    """The C{[spamassassin]} section: the spamd that C{sa-check} asks."""

    host: tuple[str, int] | None = None
    """spamd's host and port; None (C{host} empty) turns the spam check off."""


@attrs.frozen
class Listener:
    """One listener section: a protocol served on one or more endpoint strings."""

    section: str
    protocol: str
    endpoints: tuple[str, ...]
    tls: str = "none"
    auth: str = "none"
    long_lines: str = "accept"
    """SMTP: store lines over 998 octets (C{accept}) or answer 500 5.5.2 (C{refuse})."""
    webhook_url: str = ""
    base_path: str = "/"
    """Web: the URL path everything is served under, e.g. C{/mailsink/} behind a proxy."""

    @property
    def enabled(self) -> bool:
        """An empty C{listen} turns the listener off."""
        return bool(self.endpoints)


@attrs.frozen
class Config:
    """Everything the daemon is told, validated."""

    path: str
    mailsink: MailsinkSettings
    tls: TLSSettings
    auth: AuthSettings
    relay: RelaySettings
    listeners: tuple[Listener, ...]
    credentials: str = attrs.field(default="", repr=False)
    spamassassin: SpamAssassinSettings = SpamAssassinSettings()
    mailboxes: tuple[MailboxRule, ...] = ()
    """The C{[mailbox:NAME]} sections, in INI order."""
    tags: TagRules = NO_RULES
    """C{[tags]}: tags given to arriving messages that match a search query."""

    def enabled_listeners(self, protocol: str) -> tuple[Listener, ...]:
        """The listeners of C{protocol} whose C{listen} is not empty."""
        return tuple(x for x in self.listeners if x.protocol == protocol and x.enabled)


def load_config(path: str, environ: Mapping[str, str] | None = None) -> Config:
    """Read the INI file at C{path}; see L{parse_config}."""
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except OSError as error:
        raise ConfigError("mailsink", None, f"cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError("mailsink", None, f"{path} is not UTF-8 text") from None
    return parse_config(text, path, os.environ if environ is None else environ)


def parse_config(text: str, path: str, environ: Mapping[str, str]) -> Config:
    """
    Build a L{Config} from INI C{text} as if read from C{path} (relative paths resolve
    against its folder), with C{environ}'s C{MAILSINK_*} variables winning over the file.
    """
    raw = _read_ini(text, path)
    _apply_environment(raw, environ)
    _check_section_names(raw)
    base = os.path.dirname(os.path.abspath(path))
    sections = {name: _section(name, raw.get(name, {}), _SCHEMA[name]) for name in _SCHEMA}
    for key in ("maildir", "state_dir"):
        sections["mailsink"][key] = _resolve(base, sections["mailsink"][key])
        if not sections["mailsink"][key]:
            raise ConfigError("mailsink", key, "must not be empty")
    for key in ("cert", "key"):
        sections["tls"][key] = _resolve(base, sections["tls"][key])
    sections["auth"]["password_file"] = _resolve(base, sections["auth"]["password_file"])
    mailboxes = tuple(_mailbox(name, raw[name]) for name in raw
                      if name.startswith(_MAILBOX_PREFIX))
    listeners = tuple(_listener(name, raw[name]) for name in raw
                      if name not in (*_SCHEMA, *_FREE_SECTIONS)
                      and not name.startswith(_MAILBOX_PREFIX))
    config = Config(
        path=os.path.abspath(path),
        mailsink=MailsinkSettings(**sections["mailsink"]),
        tls=TLSSettings(**sections["tls"]),
        auth=AuthSettings(**sections["auth"]),
        relay=RelaySettings(**sections["relay"]),
        listeners=listeners,
        credentials=environ.get("MAILSINK_AUTH", ""),
        spamassassin=SpamAssassinSettings(**sections["spamassassin"]),
        mailboxes=mailboxes,
        tags=_tag_rules(raw.get("tags", {})),
    )
    _check_policies(config)
    return config


def _read_ini(text: str, path: str) -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser(
        interpolation=None,
        inline_comment_prefixes=(";",),
        comment_prefixes=("#", ";"),
        default_section="\0no default section",
        strict=True,
    )
    try:
        parser.read_string(text, source=path)
    except configparser.DuplicateSectionError as error:
        raise ConfigError(error.section, None, "appears twice") from None
    except configparser.DuplicateOptionError as error:
        raise ConfigError(error.section, error.option, "appears twice in the section") from None
    except configparser.MissingSectionHeaderError as error:
        raise ConfigError("mailsink", None, f"{path} line {error.lineno}: a key before "
                          "any [section] header") from None
    except configparser.Error as error:
        first_line = str(error).splitlines()[0]
        raise ConfigError("mailsink", None, f"{path} is not a valid INI file: {first_line}") \
            from None
    return {name: dict(parser.items(name)) for name in parser.sections()}


def _check_section_names(raw: Mapping[str, object]) -> None:
    for name in raw:
        if name.startswith(_MAILBOX_PREFIX):
            try:
                check_name(name[len(_MAILBOX_PREFIX):])
            except ValueError as error:
                raise ConfigError(name, None, str(error)) from None
        elif name not in (*_SCHEMA, *_FREE_SECTIONS) and not _SECTION_NAME.fullmatch(name):
            known = ", ".join([*_SCHEMA, *_FREE_SECTIONS, *LISTENER_PROTOCOLS])
            raise ConfigError(name, None, f"unknown section; known: {known}, mailbox:NAME "
                              "(listeners may be named, e.g. [smtp:submission])")


def _tag_rules(section: Mapping[str, str]) -> TagRules:
    try:
        return parse_rules(section)
    except RuleError as error:
        raise ConfigError("tags", error.key, str(error)) from None


def _apply_environment(raw: dict[str, dict[str, str]], environ: Mapping[str, str]) -> None:
    """Overlay C{MAILSINK_<SECTION>_<KEY>} variables; a named section may come from here."""
    for variable, value in environ.items():
        if variable.startswith(ENVIRONMENT_PREFIX):
            target = _environment_target(variable[len(ENVIRONMENT_PREFIX):], raw)
            if target is not None:
                section, key = target
                raw.setdefault(section, {})[key] = value


def _environment_target(
    name: str, raw: Mapping[str, Mapping[str, str]]
) -> tuple[str, str] | None:
    for section, schema in _SCHEMA.items():
        prefix = section.upper() + "_"
        if name.startswith(prefix) and name[len(prefix):].lower() in schema:
            return section, name[len(prefix):].lower()
    for protocol, schema in _LISTENER_SCHEMA.items():
        prefix = protocol.upper() + "_"
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix):]
        if rest.lower() in schema:
            return protocol, rest.lower()
        for key in schema:
            suffix = "_" + key.upper()
            if rest.endswith(suffix) and len(rest) > len(suffix):
                wanted = f"{protocol}:{rest[: -len(suffix)]}"
                existing = [s for s in raw if s.lower() == wanted.lower()]
                return (existing[0] if existing else wanted.lower()), key
    return None


def _section(
    name: str, given: Mapping[str, str], schema: Mapping[str, tuple[Parser, str | None]]
) -> dict[str, Any]:
    unknown = sorted(set(given) - set(schema))
    if unknown:
        raise ConfigError(name, unknown[0], f"unknown key; known: {', '.join(schema)}")
    parsed: dict[str, Any] = {}
    for key, (parse, default) in schema.items():
        text = given.get(key, default)
        if text is None:
            raise ConfigError(name, key, "missing; give endpoint strings such as "
                              "tcp:2525:interface=127.0.0.1, or leave it empty to turn "
                              "the listener off")
        try:
            parsed[key] = parse(text)
        except ValueError as error:
            raise ConfigError(name, key, str(error)) from None
    return parsed


def _listener(name: str, given: Mapping[str, str]) -> Listener:
    protocol = name.split(":", 1)[0]
    schema = _LISTENER_SCHEMA[protocol]
    if name == protocol:
        schema = {**schema, "listen": (values.parse_endpoints, _DEFAULT_LISTEN[protocol])}
    if "tls" in schema and "tls" not in given and _all_ssl_endpoints(given.get("listen", "")):
        schema = {**schema, "tls": (schema["tls"][0], "implicit")}
    fields = _section(name, given, schema)
    return Listener(section=name, protocol=protocol, endpoints=fields.pop("listen"), **fields)


def _mailbox(name: str, given: Mapping[str, str]) -> MailboxRule:
    """A C{[mailbox:NAME]} section (its name was checked with the other section names)."""
    unknown = sorted(set(given) - set(_MAILBOX_KEYS))
    if unknown:
        raise ConfigError(name, unknown[0], f"unknown key; known: {', '.join(_MAILBOX_KEYS)}")
    try:
        recipients = compile_recipients(given.get("recipients", ""))
    except ValueError as error:
        raise ConfigError(name, "recipients", str(error)) from None
    return MailboxRule(name[len(_MAILBOX_PREFIX):], recipients,
                       values.parse_words(given.get("users", "")))


def _all_ssl_endpoints(listen: str) -> bool:
    """
    C{ssl:} endpoints are implicit TLS, so they make it the listener's default C{tls} (mixed
    with C{tcp:} ones the intent is unclear, and L{_check_policies} asks).
    """
    try:
        endpoints = values.parse_endpoints(listen)
    except ValueError:
        return False  # reported with the section's other keys
    return bool(endpoints) and all(e.startswith("ssl:") for e in endpoints)


def _resolve(base: str, path: str) -> str:
    if not path:
        return ""
    return os.path.normpath(os.path.join(base, os.path.expanduser(path)))


def _check_policies(config: Config) -> None:
    """Combinations of valid values that cannot work together."""
    for listener in config.listeners:
        if "tls" not in _LISTENER_SCHEMA[listener.protocol]:
            continue
        implicit_endpoints = [e for e in listener.endpoints if e.startswith("ssl:")]
        if implicit_endpoints and listener.tls != "implicit":
            raise ConfigError(
                listener.section, "tls",
                f"is {listener.tls!r} but listen has {implicit_endpoints[0]!r}, which is "
                "implicit TLS; set tls = implicit or use a tcp: endpoint")
        if (listener.protocol == "smtp" and listener.auth == "required"
                and listener.tls == "none"
                and not config.auth.allow_insecure):
            raise ConfigError(
                listener.section, "auth",
                "is required but tls = none, so passwords would cross the network in "
                "clear text; set tls = starttls-required or implicit, or "
                "[auth] allow_insecure = true")
    if not any(listener.enabled for listener in config.listeners):
        raise ConfigError("smtp", "listen", "no listener is enabled; add an [smtp] section "
                          "with listen = tcp:1025:interface=127.0.0.1")
