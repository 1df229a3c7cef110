"""
Tests for mailsink.config: the INI file and its environment overrides, as specified in
shared/interface.md, section "The INI file".

Configs are built from strings with L{parse_config}; only L{LoadConfigTests} touches files.
"""

import os
import tempfile
import textwrap
from collections.abc import Mapping
from pathlib import Path
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from mailsink.config import Config, ConfigError, Listener, load_config, parse_config

PATH = "/x/etc/mailsink.ini"
MINIMAL = "[smtp]\nlisten = tcp:1025\n"
SHIPPED_INI = Path(__file__).resolve().parent.parent / "etc" / "mailsink.ini"

# The example of shared/interface.md, verbatim: the contract's own file must load.
INTERFACE_EXAMPLE = """\
[mailsink]
hostname = localhost          ; greeting, Received headers, generated certificate
maildir = ../var/mail         ; the store: a standard Maildir (cur/ new/ tmp/)
state_dir = ../var/state      ; generated certificate, index cache, anything rebuildable
max_message_size = 25M        ; advertised with SIZE, enforced while streaming
max_recipients = 1000
max_messages = 0              ; 0 = keep all; N = prune the oldest beyond N
max_age = 0                   ; 0 = keep all; e.g. 7d = prune messages older than that
isolation = none              ; none | user  (see Mailboxes)
chaos = false                 ; allow fault injection through /api/v1/chaos

[tls]
cert =                        ; PEM certificate (chain); empty = generated
key =                         ; PEM private key; empty = generated

[auth]
password_file =               ; htpasswd-style file; see Auth
accept_any = false            ; accept any username and password (testing)
allow_insecure = false        ; allow AUTH without TLS (RFC 4954 says no)
admins =                      ; users who see every mailbox (isolation = user)

[smtp]
listen = tcp:1025:interface=127.0.0.1
tls = starttls
auth = optional

[smtp:submission]
listen = tcp:1587:interface=127.0.0.1
tls = starttls-required
auth = required

[smtp:smtps]
listen = tcp:1465:interface=127.0.0.1
tls = implicit
auth = required

[pop3]
listen = tcp:1110:interface=127.0.0.1
tls = starttls

[imap]
listen = tcp:1143:interface=127.0.0.1
tls = starttls

[web]
listen = tcp:8025:interface=127.0.0.1
auth = none                   ; none | required (HTTP Basic against the password file)
webhook_url =                 ; POST each new message's summary here

[relay]
host =                        ; empty = relay off
port = 587
tls = starttls                ; none | starttls | implicit
tls_verify = true
username =
password =
timeout = 30s
pool_size = 4
allowed_recipients =          ; regular expression; empty = any
blocked_recipients =          ; regular expression; empty = none
auto_relay = false            ; relay captured messages at once
auto_relay_match =            ; with auto_relay: only recipients matching this expression
"""


def parse(text: str = MINIMAL, environ: Mapping[str, str] | None = None,
          path: str = PATH) -> Config:
    """Parse dedented INI C{text} as if read from C{path}."""
    return parse_config(textwrap.dedent(text), path, {} if environ is None else environ)


class ConfigTestCase(TestCase):
    def assertConfigError(self, text: str, section: str, key: str | None,
                          environ: Mapping[str, str] | None = None) -> ConfigError:
        """
        Parsing C{text} fails with a L{ConfigError} about C{section} and C{key}, told in
        one line that starts C{[section] key: }.
        """
        error = self.assertRaises(ConfigError, parse, text, environ)
        self.assertEqual((error.section, error.key), (section, key))
        where = f"[{section}] {key}: " if key else f"[{section}]: "
        self.assertTrue(str(error).startswith(where), str(error))
        self.assertNotIn("\n", str(error))
        self.assertTrue(error.problem)
        return error

    def listener(self, config: Config, section: str) -> Listener:
        [found] = [x for x in config.listeners if x.section == section]
        return found


class DefaultsTests(ConfigTestCase):
    """Every key has a default when its section or the key itself is absent."""

    def test_mailsink(self) -> None:
        settings = parse().mailsink
        self.assertEqual(settings.hostname, "localhost")
        self.assertEqual(settings.maildir, "/x/var/mail")
        self.assertEqual(settings.state_dir, "/x/var/state")
        self.assertEqual(settings.max_message_size, 25 * 1024 * 1024)
        self.assertEqual(settings.max_recipients, 1000)
        self.assertEqual(settings.max_messages, 0)
        self.assertEqual(settings.max_age, 0)
        self.assertEqual(settings.isolation, "none")
        self.assertIs(settings.chaos, False)

    def test_tls(self) -> None:
        config = parse()
        self.assertEqual((config.tls.cert, config.tls.key), ("", ""))

    def test_auth(self) -> None:
        auth = parse().auth
        self.assertEqual(auth.password_file, "")
        self.assertIs(auth.accept_any, False)
        self.assertIs(auth.allow_insecure, False)
        self.assertEqual(auth.admins, ())

    def test_relay(self) -> None:
        relay = parse().relay
        self.assertEqual(relay.host, "")
        self.assertEqual(relay.port, 587)
        self.assertEqual(relay.tls, "starttls")
        self.assertIs(relay.tls_verify, True)
        self.assertEqual((relay.username, relay.password), ("", ""))
        self.assertEqual(relay.timeout, 30)
        self.assertEqual(relay.pool_size, 4)
        self.assertEqual(relay.allowed_recipients, "")
        self.assertEqual(relay.blocked_recipients, "")
        self.assertIs(relay.auto_relay, False)
        self.assertEqual(relay.auto_relay_match, "")

    def test_credentials(self) -> None:
        self.assertEqual(parse().credentials, "")

    def test_listeners(self) -> None:
        config = parse("""
            [smtp]
            listen = tcp:1025
            [pop3]
            listen = tcp:1110
            [imap]
            listen = tcp:1143
            [web]
            listen = tcp:8025
            """)
        smtp, pop3, imap, web = config.listeners
        self.assertEqual((smtp.section, smtp.protocol, smtp.tls, smtp.auth),
                         ("smtp", "smtp", "starttls", "optional"))
        self.assertEqual((pop3.protocol, pop3.tls), ("pop3", "starttls"))
        self.assertEqual((imap.protocol, imap.tls), ("imap", "starttls"))
        self.assertEqual((web.protocol, web.auth, web.webhook_url), ("web", "none", ""))

    def test_emptySections(self) -> None:
        """Empty sections mean the same as absent ones."""
        self.assertEqual(parse("[mailsink]\n[tls]\n[auth]\n[relay]\n" + MINIMAL), parse())

    def test_path(self) -> None:
        self.assertEqual(parse().path, PATH)
        self.assertEqual(parse(path="etc/m.ini").path, os.path.abspath("etc/m.ini"))

    def test_interfaceExample(self) -> None:
        """The example file in the interface, with every key and its comment, loads."""
        config = parse(INTERFACE_EXAMPLE)
        self.assertEqual(config.mailsink.maildir, "/x/var/mail")
        self.assertEqual(config.tls.cert, "")
        self.assertEqual(config.auth.admins, ())
        self.assertEqual(config.relay.host, "")
        self.assertEqual(
            [(x.section, x.endpoints, x.tls, x.auth) for x in config.enabled_listeners("smtp")],
            [("smtp", ("tcp:1025:interface=127.0.0.1",), "starttls", "optional"),
             ("smtp:submission", ("tcp:1587:interface=127.0.0.1",), "starttls-required",
              "required"),
             ("smtp:smtps", ("tcp:1465:interface=127.0.0.1",), "implicit", "required")])
        self.assertEqual([x.section for x in config.listeners if x.enabled],
                         ["smtp", "smtp:submission", "smtp:smtps", "pop3", "imap", "web"])


class PathTests(ConfigTestCase):
    """Relative paths resolve against the INI file's own folder."""

    def test_relative(self) -> None:
        config = parse("""
            [mailsink]
            maildir = ../var/mail
            state_dir = state
            [tls]
            cert = certs/mail.pem
            key = ./certs/../certs/mail.key
            [auth]
            password_file = ../passwd
            """ + MINIMAL)
        self.assertEqual(config.mailsink.maildir, "/x/var/mail")
        self.assertEqual(config.mailsink.state_dir, "/x/etc/state")
        self.assertEqual(config.tls.cert, "/x/etc/certs/mail.pem")
        self.assertEqual(config.tls.key, "/x/etc/certs/mail.key")
        self.assertEqual(config.auth.password_file, "/x/passwd")

    def test_relativeIniPath(self) -> None:
        """An INI path given relative to the working directory still anchors its paths."""
        config = parse("[mailsink]\nmaildir = mail\n" + MINIMAL, path="conf/m.ini")
        self.assertEqual(config.mailsink.maildir, os.path.abspath("conf/mail"))

    def test_home(self) -> None:
        config = parse("[mailsink]\nmaildir = ~/Maildir\n[tls]\ncert = ~/c.pem\n" + MINIMAL)
        self.assertEqual(config.mailsink.maildir, os.path.expanduser("~/Maildir"))
        self.assertEqual(config.tls.cert, os.path.expanduser("~/c.pem"))
        self.assertNotIn("~", config.mailsink.maildir)

    def test_absoluteKept(self) -> None:
        config = parse("[mailsink]\nmaildir = /srv/mail\nstate_dir = /var/lib/mailsink\n"
                       "[auth]\npassword_file = /etc/mailsink/passwd\n" + MINIMAL)
        self.assertEqual(config.mailsink.maildir, "/srv/mail")
        self.assertEqual(config.mailsink.state_dir, "/var/lib/mailsink")
        self.assertEqual(config.auth.password_file, "/etc/mailsink/passwd")

    def test_emptyCertStaysEmpty(self) -> None:
        """Empty C{cert}/C{key} mean "generate", not the INI's folder."""
        config = parse("[tls]\ncert =\nkey =\n[auth]\npassword_file =\n" + MINIMAL)
        self.assertEqual((config.tls.cert, config.tls.key), ("", ""))
        self.assertEqual(config.auth.password_file, "")

    def test_emptyMaildir(self) -> None:
        self.assertConfigError("[mailsink]\nmaildir =\n" + MINIMAL, "mailsink", "maildir")

    def test_fromEnvironment(self) -> None:
        config = parse(environ={"MAILSINK_MAILSINK_MAILDIR": "../spool"})
        self.assertEqual(config.mailsink.maildir, "/x/spool")


class ValueTests(ConfigTestCase):
    """Typed values in context, and one-line errors for bad ones."""

    def mailsink(self, key: str, value: str) -> Config:
        return parse(f"[mailsink]\n{key} = {value}\n" + MINIMAL)

    def test_sizes(self) -> None:
        for text, expected in [("25M", 26214400), ("1K", 1024), ("2G", 2 * 1024**3),
                               ("1000", 1000), ("10m", 10 * 1024**2), ("0", 0)]:
            with self.subTest(text=text):
                self.assertEqual(
                    self.mailsink("max_message_size", text).mailsink.max_message_size, expected)

    def test_badSizes(self) -> None:
        for text in ("lots", "-1", "1.5M", "25X"):
            with self.subTest(text=text):
                error = self.assertConfigError(f"[mailsink]\nmax_message_size = {text}\n"
                                               + MINIMAL, "mailsink", "max_message_size")
                self.assertIn(repr(text), str(error))

    def test_emptySize(self) -> None:
        self.assertConfigError("[mailsink]\nmax_message_size =\n" + MINIMAL,
                               "mailsink", "max_message_size")

    def test_durations(self) -> None:
        self.assertEqual(self.mailsink("max_age", "7d").mailsink.max_age, 7 * 86400)
        self.assertEqual(self.mailsink("max_age", "10m").mailsink.max_age, 600)
        self.assertEqual(self.mailsink("max_age", "3600").mailsink.max_age, 3600)
        for text, expected in [("10m", 600), ("30s", 30), ("45", 45), ("1h", 3600)]:
            with self.subTest(text=text):
                config = parse(f"[relay]\ntimeout = {text}\n" + MINIMAL)
                self.assertEqual(config.relay.timeout, expected)

    def test_badDurations(self) -> None:
        for text in ("soon", "-5s", "1.5h", "10 minutes"):
            with self.subTest(text=text):
                self.assertConfigError(f"[relay]\ntimeout = {text}\n" + MINIMAL,
                                       "relay", "timeout")
        self.assertConfigError("[mailsink]\nmax_age = forever\n" + MINIMAL,
                               "mailsink", "max_age")

    def test_counts(self) -> None:
        self.assertEqual(self.mailsink("max_recipients", "50").mailsink.max_recipients, 50)
        self.assertEqual(self.mailsink("max_messages", "200").mailsink.max_messages, 200)
        for text in ("-1", "many", "1.5"):
            with self.subTest(text=text):
                self.assertConfigError(f"[mailsink]\nmax_recipients = {text}\n" + MINIMAL,
                                       "mailsink", "max_recipients")

    def test_port(self) -> None:
        self.assertEqual(parse("[relay]\nport = 25\n" + MINIMAL).relay.port, 25)
        for text in ("0", "65536", "smtp"):
            with self.subTest(text=text):
                self.assertConfigError(f"[relay]\nport = {text}\n" + MINIMAL, "relay", "port")

    def test_booleans(self) -> None:
        for text in ("true", "yes", "on", "1", "True"):
            with self.subTest(text=text):
                self.assertIs(self.mailsink("chaos", text).mailsink.chaos, True)
        for text in ("false", "no", "off", "0", "FALSE"):
            with self.subTest(text=text):
                self.assertIs(self.mailsink("chaos", text).mailsink.chaos, False)
        error = self.assertConfigError("[auth]\naccept_any = maybe\n" + MINIMAL,
                                       "auth", "accept_any")
        self.assertIn("'maybe'", str(error))

    def test_hostname(self) -> None:
        self.assertEqual(self.mailsink("hostname", "mx.example.com").mailsink.hostname,
                         "mx.example.com")
        self.assertEqual(self.mailsink("hostname", "::1").mailsink.hostname, "::1")
        for text in ("bad name", "_mx.example", ""):
            with self.subTest(text=text):
                self.assertConfigError(f"[mailsink]\nhostname = {text}\n" + MINIMAL,
                                       "mailsink", "hostname")

    def test_tlsModes(self) -> None:
        for mode in ("none", "starttls", "starttls-required", "implicit"):
            with self.subTest(mode=mode):
                config = parse(f"[smtp]\nlisten = tcp:1025\ntls = {mode}\n")
                self.assertEqual(config.listeners[0].tls, mode)
                config = parse(f"{MINIMAL}[pop3]\nlisten = tcp:1110\ntls = {mode}\n")
                self.assertEqual(config.listeners[1].tls, mode)
        self.assertEqual(parse("[smtp]\nlisten = tcp:1025\ntls = STARTTLS\n").listeners[0].tls,
                         "starttls")
        error = self.assertConfigError("[smtp]\nlisten = tcp:1025\ntls = ssl\n", "smtp", "tls")
        self.assertIn("starttls-required", str(error))

    def test_authModes(self) -> None:
        for mode in ("none", "optional", "required"):
            with self.subTest(mode=mode):
                config = parse(f"[smtp]\nlisten = tcp:1025\ntls = starttls\nauth = {mode}\n")
                self.assertEqual(config.listeners[0].auth, mode)
        self.assertConfigError("[smtp]\nlisten = tcp:1025\nauth = sometimes\n", "smtp", "auth")
        self.assertConfigError(MINIMAL + "[web]\nlisten = tcp:8025\nauth = optional\n",
                               "web", "auth")

    def test_isolation(self) -> None:
        self.assertEqual(self.mailsink("isolation", "user").mailsink.isolation, "user")
        self.assertEqual(self.mailsink("isolation", "none").mailsink.isolation, "none")
        self.assertConfigError("[mailsink]\nisolation = group\n" + MINIMAL,
                               "mailsink", "isolation")

    def test_relayTls(self) -> None:
        for mode in ("none", "starttls", "implicit"):
            with self.subTest(mode=mode):
                self.assertEqual(parse(f"[relay]\ntls = {mode}\n" + MINIMAL).relay.tls, mode)
        self.assertConfigError("[relay]\ntls = starttls-required\n" + MINIMAL, "relay", "tls")

    def test_regexes(self) -> None:
        config = parse("[relay]\nallowed_recipients = ^.*@example\\.com$\n" + MINIMAL)
        self.assertEqual(config.relay.allowed_recipients, "^.*@example\\.com$")
        error = self.assertConfigError("[relay]\nblocked_recipients = (unclosed\n" + MINIMAL,
                                       "relay", "blocked_recipients")
        self.assertIn("regular expression", str(error))

    def test_hugeRegexRepeat(self) -> None:
        self.assertConfigError("[relay]\nauto_relay_match = a{4294967296}\n" + MINIMAL,
                               "relay", "auto_relay_match")


    def test_kelvinSignSize(self) -> None:
        self.assertConfigError("[mailsink]\nmax_message_size = 1\u212a\n" + MINIMAL,
                               "mailsink", "max_message_size")


    def test_admins(self) -> None:
        config = parse("[auth]\nadmins = alice, bob\n  carol\n" + MINIMAL)
        self.assertEqual(config.auth.admins, ("alice", "bob", "carol"))

    def test_badValueOnContinuationLines(self) -> None:
        """A value spread over lines still gives a one-line error."""
        self.assertConfigError("[mailsink]\nmax_message_size = 25M\n  and more\n" + MINIMAL,
                               "mailsink", "max_message_size")

    def test_webhookUrl(self) -> None:
        config = parse(MINIMAL + "[web]\nlisten = tcp:8025\nwebhook_url = http://h/hook\n")
        self.assertEqual(config.listeners[1].webhook_url, "http://h/hook")

    def test_basePathDefaultsToRoot(self) -> None:
        self.assertEqual(self.listener(parse(MINIMAL + "[web]\n"), "web").base_path, "/")

    def test_basePathNormalised(self) -> None:
        """Repeated slashes collapse; each listener has its own."""
        for written, kept in [("/mailsink/", "/mailsink/"), ("//mail//sink///", "/mail/sink/"),
                              (" /a.b-c_~/ ", "/a.b-c_~/"), ("/", "/"), ("///", "/")]:
            with self.subTest(written=written):
                config = parse(MINIMAL + f"[web]\nbase_path = {written}\n"
                               "[web:other]\nlisten = tcp:8026\n")
                self.assertEqual(self.listener(config, "web").base_path, kept)
                self.assertEqual(self.listener(config, "web:other").base_path, "/")

    def test_basePathFromEnvironment(self) -> None:
        config = parse(MINIMAL + "[web]\n", {"MAILSINK_WEB_BASE_PATH": "/sink/"})
        self.assertEqual(self.listener(config, "web").base_path, "/sink/")

    def test_basePathRefused(self) -> None:
        """No slash at either end, an empty value, dot segments, escapes or a query."""
        for written in ["mailsink/", "/mailsink", "", "/a/../b/", "/./", "/a%20b/", "/a?b/",
                        "/a#b/", "/a b/", "/é/"]:
            with self.subTest(written=written):
                self.assertConfigError(MINIMAL + f"[web]\nbase_path = {written}\n",
                                       "web", "base_path")


class ListenTests(ConfigTestCase):
    """C{listen}: endpoint strings separated by white space; empty turns a listener off."""

    def test_several(self) -> None:
        config = parse("[smtp]\nlisten = tcp:1025 tcp6:1025:interface=\\:\\:1  unix:/run/m\n")
        self.assertEqual(config.listeners[0].endpoints,
                         ("tcp:1025", "tcp6:1025:interface=\\:\\:1", "unix:/run/m"))

    def test_continuationLines(self) -> None:
        config = parse("""
            [smtp]
            listen = tcp:1025:interface=127.0.0.1
                tcp6:1025:interface=\\:\\:1
                ; a comment between endpoints
                systemd:domain=INET:index=0 haproxy:tcp:2525
            tls = starttls
            """)
        self.assertEqual(config.listeners[0].endpoints, (
            "tcp:1025:interface=127.0.0.1", "tcp6:1025:interface=\\:\\:1",
            "systemd:domain=INET:index=0", "haproxy:tcp:2525"))
        self.assertEqual(config.listeners[0].tls, "starttls")

    def test_continuationAfterEmptyFirstLine(self) -> None:
        config = parse("[smtp]\nlisten =\n    tcp:1025\n    tcp:1026\n")
        self.assertEqual(config.listeners[0].endpoints, ("tcp:1025", "tcp:1026"))

    def test_emptyTurnsOff(self) -> None:
        config = parse(MINIMAL + "[smtp:submission]\nlisten =\n[pop3]\nlisten =\n")
        submission, pop3 = config.listeners[1:]
        self.assertEqual(submission.endpoints, ())
        self.assertFalse(submission.enabled)
        self.assertFalse(pop3.enabled)
        self.assertTrue(config.listeners[0].enabled)
        self.assertEqual([x.section for x in config.enabled_listeners("smtp")], ["smtp"])
        self.assertEqual(config.enabled_listeners("pop3"), ())

    def test_namedSections(self) -> None:
        config = parse("""
            [smtp:submission]
            listen = tcp:1587
            tls = starttls-required
            [smtp]
            listen = tcp:1025
            [smtp:smtps]
            listen = tcp:1465
            tls = implicit
            [pop3:pop3s]
            listen = tcp:1995
            tls = implicit
            [web:admin]
            listen = unix:/run/mailsink-web
            """)
        self.assertEqual([(x.section, x.protocol) for x in config.listeners], [
            ("smtp:submission", "smtp"), ("smtp", "smtp"), ("smtp:smtps", "smtp"),
            ("pop3:pop3s", "pop3"), ("web:admin", "web")])
        self.assertEqual([x.section for x in config.enabled_listeners("smtp")],
                         ["smtp:submission", "smtp", "smtp:smtps"])
        self.assertEqual(self.listener(config, "smtp:submission").tls, "starttls-required")
        self.assertEqual(self.listener(config, "smtp:submission").auth, "optional")

    def test_missingListen(self) -> None:
        """A plain section listens where interface.md says; a named one must say where."""
        config = parse(MINIMAL + "[pop3]\ntls = starttls\n[web]\n")
        self.assertEqual(self.listener(config, "pop3").endpoints,
                         ("tcp:1110:interface=127.0.0.1",))
        self.assertEqual(self.listener(config, "web").endpoints,
                         ("tcp:8025:interface=127.0.0.1",))
        error = self.assertConfigError(MINIMAL + "[smtp:submission]\ntls = starttls-required\n",
                                       "smtp:submission", "listen")
        self.assertIn("missing", str(error))

    def test_noListenerEnabled(self) -> None:
        self.assertConfigError("", "smtp", "listen")
        self.assertConfigError("[mailsink]\nhostname = mx\n", "smtp", "listen")
        self.assertConfigError("[smtp]\nlisten =\n[smtp:submission]\nlisten =\n",
                               "smtp", "listen")

    def test_anyEnabledListenerIsEnough(self) -> None:
        """The loader only needs one listener on; which protocols exist is not its business."""
        config = parse("[smtp]\nlisten =\n[pop3]\nlisten = tcp:1110\n")
        self.assertEqual([x.section for x in config.listeners if x.enabled], ["pop3"])

    def test_sslEndpointNeedsImplicit(self) -> None:
        for mode in ("starttls", "none", "starttls-required"):
            with self.subTest(mode=mode):
                error = self.assertConfigError(
                    MINIMAL + f"[smtp:smtps]\nlisten = ssl:1465:privateKey=k.pem\ntls = {mode}\n",
                    "smtp:smtps", "tls")
                self.assertIn("ssl:1465", str(error))
                self.assertIn("implicit", str(error))

    def test_sslEndpointAmongOthers(self) -> None:
        self.assertConfigError("[smtp]\nlisten = tcp:1025\n  ssl:1465:privateKey=k.pem\n",
                               "smtp", "tls")

    def test_sslEndpointIsImplicitByDefault(self) -> None:
        """interface.md: an C{ssl:} endpoint string is implicit TLS; C{tls} need not say so."""
        config = parse(MINIMAL + "[smtp:smtps]\nlisten = ssl:1465:privateKey=k.pem\n"
                       "[imap:imaps]\nlisten = ssl:1993:privateKey=k.pem\n")
        self.assertEqual([x.tls for x in config.listeners[1:]], ["implicit", "implicit"])
        environment = parse(MINIMAL, {"MAILSINK_POP3_S_LISTEN": "ssl:1995:privateKey=k.pem"})
        self.assertEqual(environment.listeners[-1].tls, "implicit")

    def test_longLines(self) -> None:
        config = parse(MINIMAL + "[smtp:strict]\nlisten = tcp:2525\nlong_lines = refuse\n")
        self.assertEqual([x.long_lines for x in config.listeners], ["accept", "refuse"])
        self.assertConfigError(MINIMAL + "[smtp:x]\nlisten = tcp:2\nlong_lines = fold\n",
                               "smtp:x", "long_lines")

    def test_sslEndpointWithImplicit(self) -> None:
        config = parse("[smtp]\nlisten = ssl:1465:privateKey=k.pem\ntls = implicit\n")
        self.assertEqual(config.listeners[0].endpoints, ("ssl:1465:privateKey=k.pem",))

    def test_sslEndpointOnWeb(self) -> None:
        """
        C{[web]} has no C{tls} key, yet C{listen} may hold C{ssl:} strings (HTTPS); such
        a web listener must load, with C{auth = required} too.
        """
        config = parse(MINIMAL + "[web]\nlisten = ssl:8443:privateKey=k.pem\nauth = required\n")
        self.assertEqual(config.listeners[1].endpoints, ("ssl:8443:privateKey=k.pem",))



class AuthPolicyTests(ConfigTestCase):
    """C{auth = required} with C{tls = none} needs C{[auth] allow_insecure}."""

    CLEAR = "[smtp]\nlisten = tcp:1025\ntls = none\nauth = required\n"

    def test_refused(self) -> None:
        error = self.assertConfigError(self.CLEAR, "smtp", "auth")
        self.assertIn("allow_insecure", str(error))

    def test_refusedOnNamedListener(self) -> None:
        error = self.assertConfigError(
            MINIMAL + "[smtp:submission]\nlisten = tcp:1587\ntls = none\nauth = required\n",
            "smtp:submission", "auth")
        self.assertIn("allow_insecure", str(error))

    def test_allowInsecure(self) -> None:
        config = parse("[auth]\nallow_insecure = true\n" + self.CLEAR)
        self.assertEqual((config.listeners[0].tls, config.listeners[0].auth), ("none", "required"))
        self.assertIs(config.auth.allow_insecure, True)

    def test_allowInsecureFromEnvironment(self) -> None:
        config = parse(self.CLEAR, {"MAILSINK_AUTH_ALLOW_INSECURE": "yes",
                                    "MAILSINK_AUTH": "alice:secret"})
        self.assertIs(config.auth.allow_insecure, True)
        self.assertEqual(config.credentials, "alice:secret")

    def test_withTls(self) -> None:
        for mode in ("starttls", "starttls-required", "implicit"):
            with self.subTest(mode=mode):
                config = parse(f"[smtp]\nlisten = tcp:1025\ntls = {mode}\nauth = required\n")
                self.assertEqual(config.listeners[0].auth, "required")

    def test_optionalWithoutTls(self) -> None:
        """Only C{required} is refused: C{optional} AUTH is simply not offered in clear."""
        config = parse("[smtp]\nlisten = tcp:1025\ntls = none\nauth = optional\n")
        self.assertEqual(config.listeners[0].auth, "optional")

    def test_disabledListenerStillChecked(self) -> None:
        self.assertConfigError(MINIMAL + "[smtp:x]\nlisten =\ntls = none\nauth = required\n",
                               "smtp:x", "auth")


class StructureTests(ConfigTestCase):
    """Unknown or repeated names and malformed files."""

    def test_unknownSection(self) -> None:
        for name in ("smtpd", "SMTP", "smtp:", "mailsink:extra", "tls:x", "DEFAULT",
                     "smtp:bad name"):
            with self.subTest(name=name):
                error = self.assertConfigError(f"{MINIMAL}[{name}]\nlisten = tcp:1\n", name, None)
                self.assertIn("unknown section", str(error))

    def test_unknownSectionNamesKnownOnes(self) -> None:
        error = self.assertConfigError(MINIMAL + "[smtps]\n", "smtps", None)
        for known in ("mailsink", "tls", "auth", "relay", "smtp", "pop3", "imap", "web"):
            self.assertIn(known, str(error))

    def test_unknownKey(self) -> None:
        error = self.assertConfigError("[mailsink]\ncolour = blue\n" + MINIMAL,
                                       "mailsink", "colour")
        self.assertIn("unknown key", str(error))
        self.assertConfigError("[smtp]\nlisten = tcp:1025\nport = 25\n", "smtp", "port")
        self.assertConfigError(MINIMAL + "[smtp:submission]\nlisten = tcp:1587\nlisen = x\n",
                               "smtp:submission", "lisen")
        self.assertConfigError(MINIMAL + "[relay]\npasword = x\n", "relay", "pasword")

    def test_keysOfOtherProtocols(self) -> None:
        """POP3 and IMAP have no C{auth}; the web view has no C{tls}."""
        self.assertConfigError(MINIMAL + "[pop3]\nlisten = tcp:1110\nauth = none\n",
                               "pop3", "auth")
        self.assertConfigError(MINIMAL + "[imap]\nlisten = tcp:1143\nwebhook_url = x\n",
                               "imap", "webhook_url")
        self.assertConfigError(MINIMAL + "[web]\nlisten = tcp:8025\ntls = none\n", "web", "tls")

    def test_duplicateSection(self) -> None:
        error = self.assertConfigError(MINIMAL + "[mailsink]\n[mailsink]\n", "mailsink", None)
        self.assertIn("twice", str(error))
        self.assertConfigError(MINIMAL + "[smtp]\nlisten = tcp:1026\n", "smtp", None)

    def test_duplicateKey(self) -> None:
        error = self.assertConfigError("[smtp]\nlisten = tcp:1025\nlisten = tcp:1026\n",
                                       "smtp", "listen")
        self.assertIn("twice", str(error))
        self.assertConfigError("[mailsink]\nhostname = a\nHostname = b\n" + MINIMAL,
                               "mailsink", "hostname")

    def test_keyBeforeAnySection(self) -> None:
        error = self.assertRaises(ConfigError, parse, "hostname = mx\n" + MINIMAL)
        self.assertNotIn("\n", str(error))
        self.assertIn("line 1", str(error))
        self.assertIn("before any [section]", str(error))

    def test_notIni(self) -> None:
        error = self.assertRaises(ConfigError, parse, MINIMAL + "this line has no equals sign\n")
        self.assertNotIn("\n", str(error))

    def test_inlineComments(self) -> None:
        config = parse("""
            ; a comment
            # another comment
            [mailsink]   ; the main section
            max_message_size = 10M   ; ten megabytes
            hostname = mx.example ; name
            [tls]
            cert =               ; empty = generated
            [smtp]
            listen = tcp:1025 ; the plain port
            """)
        self.assertEqual(config.mailsink.max_message_size, 10 * 1024**2)
        self.assertEqual(config.mailsink.hostname, "mx.example")
        self.assertEqual(config.tls.cert, "")
        self.assertEqual(config.listeners[0].endpoints, ("tcp:1025",))

    def test_semicolonInsideValue(self) -> None:
        """Only a C{;} after white space starts a comment."""
        config = parse("[relay]\nallowed_recipients = a;b\n" + MINIMAL)
        self.assertEqual(config.relay.allowed_recipients, "a;b")

    def test_noInterpolation(self) -> None:
        config = parse("[relay]\npassword = 100%(x)s\n" + MINIMAL)
        self.assertEqual(config.relay.password, "100%(x)s")

    def test_configIsImmutable(self) -> None:
        config = parse()
        self.assertRaises(AttributeError, setattr, config.mailsink, "hostname", "other")
        self.assertRaises(AttributeError, setattr, config, "listeners", ())


class EnvironmentTests(ConfigTestCase):
    """C{MAILSINK_<SECTION>_<KEY>} variables win over the file."""

    def test_plainSection(self) -> None:
        config = parse(environ={"MAILSINK_MAILSINK_MAX_MESSAGE_SIZE": "1M"})
        self.assertEqual(config.mailsink.max_message_size, 1024 * 1024)
        config = parse("[mailsink]\nmax_message_size = 25M\n" + MINIMAL,
                       {"MAILSINK_MAILSINK_MAX_MESSAGE_SIZE": "1M"})
        self.assertEqual(config.mailsink.max_message_size, 1024 * 1024)

    def test_otherSections(self) -> None:
        config = parse(environ={"MAILSINK_RELAY_TLS_VERIFY": "false",
                                "MAILSINK_RELAY_HOST": "smtp.example.com",
                                "MAILSINK_TLS_CERT": "/etc/ssl/mail.pem",
                                "MAILSINK_AUTH_ADMINS": "alice bob"})
        self.assertIs(config.relay.tls_verify, False)
        self.assertEqual(config.relay.host, "smtp.example.com")
        self.assertEqual(config.tls.cert, "/etc/ssl/mail.pem")
        self.assertEqual(config.auth.admins, ("alice", "bob"))

    def test_listenWinsOverFile(self) -> None:
        config = parse(environ={"MAILSINK_SMTP_LISTEN": "tcp:2525 tcp:2526"})
        self.assertEqual(config.listeners[0].section, "smtp")
        self.assertEqual(config.listeners[0].endpoints, ("tcp:2525", "tcp:2526"))

    def test_listenCreatesSection(self) -> None:
        config = parse("[mailsink]\n", {"MAILSINK_SMTP_LISTEN": "tcp:2525"})
        self.assertEqual([(x.section, x.endpoints) for x in config.listeners],
                         [("smtp", ("tcp:2525",))])

    def test_emptyListenTurnsOff(self) -> None:
        config = parse(MINIMAL + "[pop3]\nlisten = tcp:1110\n", {"MAILSINK_SMTP_LISTEN": ""})
        self.assertFalse(config.listeners[0].enabled)

    def test_namedSection(self) -> None:
        config = parse(MINIMAL + "[smtp:submission]\nlisten = tcp:1587\ntls = starttls\n",
                       {"MAILSINK_SMTP_SUBMISSION_TLS": "implicit"})
        self.assertEqual([x.section for x in config.listeners], ["smtp", "smtp:submission"])
        submission = self.listener(config, "smtp:submission")
        self.assertEqual(submission.tls, "implicit")
        self.assertEqual(submission.endpoints, ("tcp:1587",))
        self.assertEqual(self.listener(config, "smtp").tls, "starttls")

    def test_interfaceExampleName(self) -> None:
        """Section C{smtp:smtps} reads C{MAILSINK_SMTP_SMTPS_<KEY>}."""
        config = parse(MINIMAL + "[smtp:smtps]\nlisten = tcp:1465\ntls = implicit\n",
                       {"MAILSINK_SMTP_SMTPS_LISTEN": "tcp:465"})
        self.assertEqual(self.listener(config, "smtp:smtps").endpoints, ("tcp:465",))

    def test_namedSectionNotInFile(self) -> None:
        config = parse(environ={"MAILSINK_SMTP_EXTRA_LISTEN": "tcp:2526"})
        self.assertEqual([x.section for x in config.listeners], ["smtp", "smtp:extra"])
        extra = self.listener(config, "smtp:extra")
        self.assertEqual(
            (extra.protocol, extra.endpoints, extra.tls, extra.auth),
            ("smtp", ("tcp:2526",), "starttls", "optional"))

    def test_namedSectionNotInFileNeedsListen(self) -> None:
        self.assertConfigError(MINIMAL, "smtp:extra", "listen",
                               {"MAILSINK_SMTP_EXTRA_TLS": "implicit"})

    def test_badValue(self) -> None:
        error = self.assertConfigError(MINIMAL, "mailsink", "max_message_size",
                                       {"MAILSINK_MAILSINK_MAX_MESSAGE_SIZE": "lots"})
        self.assertIn("'lots'", str(error))
        self.assertConfigError(MINIMAL + "[smtp:submission]\nlisten = tcp:1587\n",
                               "smtp:submission", "tls", {"MAILSINK_SMTP_SUBMISSION_TLS": "tls"})
        self.assertConfigError(MINIMAL, "relay", "port", {"MAILSINK_RELAY_PORT": "99999"})

    def test_policyCheckedAfterEnvironment(self) -> None:
        self.assertConfigError("[smtp]\nlisten = tcp:1025\nauth = required\n", "smtp", "auth",
                               {"MAILSINK_SMTP_TLS": "none"})
        self.assertConfigError(MINIMAL + "tls = starttls\n", "smtp", "tls",
                               {"MAILSINK_SMTP_LISTEN": "ssl:465"})

    def test_credentials(self) -> None:
        config = parse(environ={"MAILSINK_AUTH": "user1:pass1 user2:pass2"})
        self.assertEqual(config.credentials, "user1:pass1 user2:pass2")
        shown = repr(config)
        for secret in ("user1", "pass1", "pass2"):
            self.assertNotIn(secret, shown)

    def test_relayPassword(self) -> None:
        config = parse(environ={"MAILSINK_RELAY_PASSWORD": "hunter2",
                                "MAILSINK_RELAY_USERNAME": "relayuser"})
        self.assertEqual(config.relay.password, "hunter2")
        self.assertEqual(config.relay.username, "relayuser")
        self.assertNotIn("hunter2", repr(config))
        self.assertNotIn("hunter2", repr(config.relay))

    def test_relayPasswordFromFileNotShown(self) -> None:
        config = parse("[relay]\npassword = s3cr3t-from-file\n" + MINIMAL)
        self.assertEqual(config.relay.password, "s3cr3t-from-file")
        self.assertNotIn("s3cr3t-from-file", repr(config))

    def test_unrelatedIgnored(self) -> None:
        environ = {
            "PATH": "/usr/bin", "HOME": "/home/x", "SMTP_LISTEN": "tcp:1",
            "MAILSINK_PASSWORD": "for mailsink send", "MAILSINK": "x", "MAILSINK_": "x",
            "MAILSINK_NOPE": "x", "MAILSINK_SMTP_NOPE": "x", "MAILSINK_SMTP": "x",
            "MAILSINK_RELAY": "x", "MAILSINKSMTP_LISTEN": "tcp:1", "mailsink_smtp_listen": "tcp:1",
        }
        self.assertEqual(parse(environ=environ), parse())

    def test_processEnvironmentNotRead(self) -> None:
        """L{parse_config} reads only the mapping it is given."""
        with mock.patch.dict(os.environ, {"MAILSINK_SMTP_LISTEN": "tcp:9999",
                                          "MAILSINK_AUTH": "eve:x"}):
            config = parse()
        self.assertEqual(config.listeners[0].endpoints, ("tcp:1025",))
        self.assertEqual(config.credentials, "")

    @settings(derandomize=True, database=None, max_examples=150)
    @given(st.sampled_from([
        ("MAILSINK", key) for key in ("hostname", "maildir", "state_dir", "max_message_size",
                                      "max_recipients", "max_messages", "max_age",
                                      "isolation", "chaos")
    ] + [("TLS", "cert"), ("AUTH", "accept_any"), ("AUTH", "allow_insecure"),
         ("RELAY", "port"), ("RELAY", "tls"), ("RELAY", "timeout"), ("RELAY", "pool_size"),
         ("SMTP", "tls"), ("SMTP", "auth")]), st.text())
    def test_anyValueLoadsOrNamesItsKey(self, target: tuple[str, str], value: str) -> None:
        """Whatever a variable holds, the result is a config or a one-line error naming it."""
        section, key = target
        try:
            parse(environ={f"MAILSINK_{section}_{key.upper()}": value})
        except ConfigError as error:
            self.assertEqual((error.section, error.key), (section.lower(), key))
            self.assertNotIn("\n", str(error))


class LoadConfigTests(ConfigTestCase):
    """L{load_config} reads a file, then does what L{parse_config} does."""

    def test_file(self) -> None:
        with tempfile.TemporaryDirectory() as folder:
            etc = Path(folder, "etc")
            etc.mkdir()
            ini = etc / "mailsink.ini"
            ini.write_text("[mailsink]\nmaildir = ../var/mail\n" + MINIMAL, encoding="utf-8")
            config = load_config(str(ini), {"MAILSINK_SMTP_LISTEN": "tcp:2525"})
            self.assertEqual(config.path, str(ini))
            self.assertEqual(config.mailsink.maildir, os.path.join(folder, "var", "mail"))
            self.assertEqual(config.listeners[0].endpoints, ("tcp:2525",))

            ini.write_bytes(b"[mailsink]\nhostname = caf\xe9\n" + MINIMAL.encode())
            error = self.assertRaises(ConfigError, load_config, str(ini), {})
            self.assertIn("UTF-8", str(error))

    def test_missingFile(self) -> None:
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "absent.ini")
            error = self.assertRaises(ConfigError, load_config, path, {})
        self.assertIn(path, str(error))
        self.assertNotIn("\n", str(error))

    def test_shippedFile(self) -> None:
        """etc/mailsink.ini: three SMTP listeners, the web view, POP3 and IMAP on 127.0.0.1."""
        config = load_config(str(SHIPPED_INI), {})
        self.assertEqual(
            [(x.section, x.endpoints, x.tls) for x in config.enabled_listeners("smtp")],
            [("smtp", ("tcp:1025:interface=127.0.0.1",), "starttls"),
             ("smtp:submission", ("tcp:1587:interface=127.0.0.1",), "starttls-required"),
             ("smtp:smtps", ("tcp:1465:interface=127.0.0.1",), "implicit")])
        [web] = config.enabled_listeners("web")
        self.assertEqual((web.section, web.endpoints, web.auth),
                         ("web", ("tcp:8025:interface=127.0.0.1",), "none"))
        for protocol, port in (("pop3", 1110), ("imap", 1143)):
            with self.subTest(protocol=protocol):
                [listener] = config.enabled_listeners(protocol)
                self.assertEqual((listener.section, listener.endpoints, listener.tls),
                                 (protocol, (f"tcp:{port}:interface=127.0.0.1",), "starttls"))
        self.assertEqual(config.mailsink.maildir, str(SHIPPED_INI.parent.parent / "var" / "mail"))
        self.assertEqual(config.mailsink.hostname, "localhost")
        self.assertEqual((config.tls.cert, config.tls.key), ("", ""))


class SpamAssassinTests(ConfigTestCase):
    def test_off_unless_host_is_set(self) -> None:
        self.assertIsNone(parse().spamassassin.host)
        self.assertIsNone(parse(MINIMAL + "[spamassassin]\nhost =\n").spamassassin.host)

    def test_host_and_port(self) -> None:
        for written, address in [("localhost:783", ("localhost", 783)),
                                 ("spamd.example.com", ("spamd.example.com", 783)),
                                 ("127.0.0.1:7830", ("127.0.0.1", 7830)),
                                 ("[::1]:7830", ("::1", 7830))]:
            with self.subTest(written=written):
                config = parse(MINIMAL + f"[spamassassin]\nhost = {written}\n")
                self.assertEqual(config.spamassassin.host, address)

    def test_environment_wins(self) -> None:
        config = parse(MINIMAL + "[spamassassin]\nhost = localhost:783\n",
                       {"MAILSINK_SPAMASSASSIN_HOST": "spamd.internal:7830"})
        self.assertEqual(config.spamassassin.host, ("spamd.internal", 7830))

    def test_bad_values_and_keys(self) -> None:
        for text in ("host = localhost:99999", "host = spam d:783", "host = localhost:",
                     "host = http://localhost:783/"):
            with self.subTest(text=text):
                self.assertConfigError(MINIMAL + f"[spamassassin]\n{text}\n",
                                       "spamassassin", "host")
        self.assertConfigError(MINIMAL + "[spamassassin]\nport = 783\n", "spamassassin", "port")
