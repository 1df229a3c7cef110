"""
SMTP AUTH in memory: each mechanism, each malformed input, the policy matrix, the
failure throttle (on a Clock), per-user Maildirs and the trace headers of a user's mail.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import os
import shutil
import tempfile
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import maybeDeferred
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from zope.interface import directlyProvides

from mailsink.auth.accept_any import AcceptAnyChecker
from mailsink.auth.any_of import AnyOfChecker
from mailsink.auth.environment import EnvironmentChecker
from mailsink.auth.throttle import FIRST_DELAY, MAX_DELAY, FailureThrottle
from mailsink.realm import build_portal, mailbox_folder
from mailsink.smtp.auth import AuthSetup
from mailsink.smtp.factory import SMTPFactory
from mailsink.smtp.server import SMTPSettings
from mailsink.store.maildir import Maildir


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


class TLSTransport(StringTransport):
    """A transport that is already encrypted (as after STARTTLS or on implicit TLS)."""

    def __init__(self, host: str = "10.0.0.1") -> None:
        super().__init__(peerAddress=_Peer(host))
        directlyProvides(self, ISSLTransport)

    def getHandle(self) -> Any:
        return _Handle()


class _Peer:
    def __init__(self, host: str) -> None:
        self.host = host


class _Handle:
    def get_protocol_version_name(self) -> str:
        return "TLSv1.3"

    def get_cipher_name(self) -> str:
        return "TLS_AES_128_GCM_SHA256"

    def get_cipher_bits(self) -> int:
        return 128


class AuthTestCase(TestCase):
    credentials = "alice:wonderland bob:builder"
    accept_any = False
    isolation = "none"

    def setUp(self) -> None:
        self.folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.folder)
        self.maildir = Maildir(self.folder, maybeDeferred)
        self.maildir.create()
        self.clock = Clock()
        self.throttle = FailureThrottle(self.clock)
        checkers: list[Any] = []
        if self.credentials:
            checkers.append(EnvironmentChecker(self.credentials))
        if self.accept_any:
            checkers.append(AcceptAnyChecker())
        self.checker = AnyOfChecker(checkers) if checkers else None
        self.events: list[Any] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def connect(self, auth: str = "optional", tls: bool = True, allow_insecure: bool = False,
                host: str = "10.0.0.1") -> tuple[Any, StringTransport]:
        settings = SMTPSettings(hostname="sink.test", listener="smtp:submission",
                                tls_mode="none", max_message_size=0, max_recipients=10,
                                auth=auth, allow_insecure=allow_insecure)
        setup = (AuthSetup(self.checker.offers_plaintext, self.throttle, self.clock)
                 if self.checker else None)
        factory = SMTPFactory(settings, build_portal(self.maildir, self.isolation, self.checker),
                              None, self.clock, auth_setup=setup)
        protocol = factory.buildProtocol(None)
        transport = TLSTransport(host) if tls else StringTransport(peerAddress=_Peer(host))
        protocol.makeConnection(transport)
        transport.clear()
        return protocol, transport

    def say(self, protocol: Any, transport: StringTransport, *lines: bytes) -> list[str]:
        transport.clear()
        for line in lines:
            protocol.dataReceived(line + b"\r\n")
        return transport.value().decode().splitlines()

    def logged(self) -> str:
        return "\n".join(formatEvent(event) for event in self.events)

    def stored(self, folder: str | None = None) -> list[bytes]:
        new = os.path.join(folder or self.folder, "new")
        contents = []
        for name in sorted(os.listdir(new)):
            with open(os.path.join(new, name), "rb") as stream:
                contents.append(stream.read())
        return contents


class MechanismTests(AuthTestCase):
    def test_ehlo_lists_mechanisms_over_tls(self) -> None:
        protocol, transport = self.connect()
        lines = self.say(protocol, transport, b"EHLO c")
        self.assertIn("250 AUTH PLAIN LOGIN CRAM-MD5 XOAUTH2 OAUTHBEARER", lines)

    def test_plain_with_and_without_initial_response(self) -> None:
        protocol, transport = self.connect()
        self.assertEqual(self.say(protocol, transport, b"AUTH PLAIN " + b64(
            b"\0alice\0wonderland")), ["235 2.7.0 Authentication successful"])
        protocol, transport = self.connect()
        self.assertEqual(self.say(protocol, transport, b"AUTH PLAIN"), ["334 "])
        self.assertEqual(self.say(protocol, transport, b64(b"alice\0alice\0wonderland")),
                         ["235 2.7.0 Authentication successful"])

    def test_login_prompts(self) -> None:
        protocol, transport = self.connect()
        self.assertEqual(self.say(protocol, transport, b"AUTH LOGIN"),
                         ["334 " + b64(b"Username:").decode()])
        self.assertEqual(self.say(protocol, transport, b64(b"bob")),
                         ["334 " + b64(b"Password:").decode()])
        self.assertEqual(self.say(protocol, transport, b64(b"builder")),
                         ["235 2.7.0 Authentication successful"])

    def test_login_with_initial_user(self) -> None:
        protocol, transport = self.connect()
        self.assertEqual(self.say(protocol, transport, b"AUTH LOGIN " + b64(b"bob")),
                         ["334 " + b64(b"Password:").decode()])

    def test_cram_md5(self) -> None:
        protocol, transport = self.connect()
        [line] = self.say(protocol, transport, b"AUTH CRAM-MD5")
        challenge = base64.b64decode(line[4:])
        self.assertRegex(challenge.decode(), r"^<[^>]+@sink\.test>$")
        digest = hmac.new(b"wonderland", challenge, hashlib.md5).hexdigest().encode()
        self.assertEqual(self.say(protocol, transport, b64(b"alice " + digest)),
                         ["235 2.7.0 Authentication successful"])

    def test_xoauth2_and_its_failure_challenge(self) -> None:
        protocol, transport = self.connect()
        token = b"user=alice\x01auth=Bearer wonderland\x01\x01"
        self.assertEqual(self.say(protocol, transport, b"AUTH XOAUTH2 " + b64(token)),
                         ["235 2.7.0 Authentication successful"])
        protocol, transport = self.connect()
        self.say(protocol, transport, b"AUTH XOAUTH2 " + b64(
            b"user=alice\x01auth=Bearer expired\x01\x01"))
        self.clock.advance(MAX_DELAY)
        [line] = transport.value().decode().splitlines()
        self.assertTrue(line.startswith("334 "))
        self.assertEqual(json.loads(base64.b64decode(line[4:]))["status"], "401")
        self.assertEqual(self.say(protocol, transport, b""),
                         ["535 5.7.8 Error: authentication failed"])

    def test_oauthbearer_and_its_failure_challenge(self) -> None:
        protocol, transport = self.connect()
        good = b"n,a=bob,\x01host=sink.test\x01port=587\x01auth=Bearer builder\x01\x01"
        self.assertEqual(self.say(protocol, transport, b"AUTH OAUTHBEARER " + b64(good)),
                         ["235 2.7.0 Authentication successful"])
        protocol, transport = self.connect()
        self.say(protocol, transport, b"AUTH OAUTHBEARER " + b64(good.replace(b"builder", b"x")))
        self.clock.advance(MAX_DELAY)
        [line] = transport.value().decode().splitlines()
        self.assertEqual(json.loads(base64.b64decode(line[4:]))["status"], "invalid_token")
        self.assertEqual(self.say(protocol, transport, b64(b"\x01")),
                         ["535 5.7.8 Error: authentication failed"])

    def test_bad_inputs_get_replies_and_the_connection_stays_usable(self) -> None:
        protocol, transport = self.connect()
        cases = [
            (b"AUTH", "501 5.5.4 Syntax: AUTH mechanism [initial-response]"),
            (b"AUTH NTLM", "504 5.5.4 Unrecognized authentication type"),
            (b"AUTH PLAIN %%%", "501 5.5.2 Invalid base64 data"),
            (b"AUTH PLAIN " + b64(b"no nul at all"),
             "501 5.5.2 Malformed PLAIN response: expected authzid NUL user NUL password"),
            (b"AUTH PLAIN " + b64(b"\0\0pw"), "501 5.5.2 Malformed PLAIN response: empty "
                                               "user name"),
            (b"AUTH CRAM-MD5 " + b64(b"x"), "501 5.5.2 CRAM-MD5 takes no initial response"),
            (b"AUTH XOAUTH2 " + b64(b"garbage"),
             "501 5.5.2 Malformed XOAUTH2 response: expected key=value fields separated by ^A"),
            (b"AUTH OAUTHBEARER " + b64(b"x\x01auth=Bearer t\x01\x01"),
             "501 5.5.2 Malformed OAUTHBEARER response: expected a GS2 header such as "
             "'n,a=user,'"),
        ]
        for command, reply in cases:
            self.assertEqual(self.say(protocol, transport, command), [reply], command)
            self.assertEqual(self.say(protocol, transport, b"NOOP"), ["250 2.0.0 Ok"])
        self.say(protocol, transport, b"AUTH LOGIN")
        self.assertEqual(self.say(protocol, transport, b"*"), ["501 5.7.0 Authentication aborted"])
        self.say(protocol, transport, b"AUTH CRAM-MD5")
        self.assertEqual(self.say(protocol, transport, b64(b"alice nothex")),
                         ["501 5.5.2 Malformed CRAM-MD5 response: expected user name, a space, "
                          "32 hex digits"])
        self.assertEqual(self.say(protocol, transport, b"NOOP"), ["250 2.0.0 Ok"])

    def test_equals_is_an_empty_initial_response(self) -> None:
        protocol, transport = self.connect()
        self.assertEqual(self.say(protocol, transport, b"AUTH PLAIN ="),
                         ["501 5.5.2 Malformed PLAIN response: expected authzid NUL user NUL "
                          "password"])

    def test_sequence_rules(self) -> None:
        protocol, transport = self.connect()
        self.say(protocol, transport, b"MAIL FROM:<a@b>")
        self.assertEqual(self.say(protocol, transport, b"AUTH PLAIN " + b64(b"\0bob\0builder")),
                         ["503 5.5.1 Error: MAIL transaction in progress"])
        self.say(protocol, transport, b"RSET", b"AUTH PLAIN " + b64(b"\0bob\0builder"))
        self.assertEqual(self.say(protocol, transport, b"AUTH PLAIN " + b64(b"\0bob\0builder")),
                         ["503 5.5.1 Error: already authenticated"])


class PolicyTests(AuthTestCase):
    def test_matrix(self) -> None:
        """tls x auth x allow_insecure x accept_any: offered, AUTH reply, MAIL reply."""
        good = b"AUTH PLAIN " + b64(b"\0alice\0wonderland")
        for tls, auth, insecure, accept_any in itertools.product(
                (True, False), ("none", "optional", "required"), (False, True), (False, True)):
            self.accept_any = accept_any
            self.setUp()
            protocol, transport = self.connect(auth=auth, tls=tls, allow_insecure=insecure)
            where = f"tls={tls} auth={auth} allow_insecure={insecure} accept_any={accept_any}"
            offered = auth != "none" and (tls or insecure)
            ehlo = self.say(protocol, transport, b"EHLO c")
            self.assertEqual(any("AUTH " in line for line in ehlo), offered, where)
            mail_first = self.say(protocol, transport, b"MAIL FROM:<a@b>", b"RSET")[0]
            expected_mail = ("530 5.7.0 Authentication required" if auth == "required"
                             else "250 2.1.0 Ok")
            self.assertEqual(mail_first, expected_mail, where)
            [answer] = self.say(protocol, transport, good)
            if auth == "none":
                self.assertEqual(answer, "503 5.5.1 Error: authentication not enabled", where)
            elif not offered:
                self.assertEqual(answer, "538 5.7.11 Encryption required for requested "
                                 "authentication mechanism", where)
            else:
                self.assertEqual(answer, "235 2.7.0 Authentication successful", where)
                self.assertEqual(self.say(protocol, transport, b"MAIL FROM:<a@b>"),
                                 ["250 2.1.0 Ok"], where)

    def test_accept_any_keeps_the_user_name(self) -> None:
        self.credentials = ""
        self.accept_any = True
        self.setUp()
        protocol, transport = self.connect()
        self.assertEqual(self.say(protocol, transport, b"AUTH PLAIN " + b64(b"\0zed\0anything")),
                         ["235 2.7.0 Authentication successful"])
        self.say(protocol, transport, b"MAIL FROM:<a@b>", b"RCPT TO:<c@d>", b"DATA", b"hi", b".")
        [message] = self.stored()
        self.assertIn(b"(Authenticated sender: zed)", message)

    def test_without_credentials_auth_is_not_offered(self) -> None:
        self.credentials = ""
        self.setUp()
        protocol, transport = self.connect()
        self.assertNotIn("AUTH", " ".join(self.say(protocol, transport, b"EHLO c")))
        self.assertEqual(self.say(protocol, transport, b"AUTH PLAIN " + b64(b"\0a\0b")),
                         ["503 5.5.1 Error: authentication not enabled"])


class FailureTests(AuthTestCase):
    def test_bad_password_is_slowed_logged_without_password(self) -> None:
        protocol, transport = self.connect(host="10.9.9.9")
        self.say(protocol, transport, b"AUTH PLAIN " + b64(b"\0alice\0hunter2-wrong"))
        self.assertEqual(transport.value(), b"")
        self.clock.advance(FIRST_DELAY)
        self.assertEqual(transport.value(), b"535 5.7.8 Error: authentication failed\r\n")
        self.assertIn("authentication failed for 'alice' from 10.9.9.9", self.logged())
        self.assertNotIn("hunter2", self.logged())

    def test_commands_wait_behind_a_delayed_failure(self) -> None:
        protocol, transport = self.connect()
        self.say(protocol, transport, b"AUTH PLAIN " + b64(b"\0alice\0nope"), b"NOOP")
        self.clock.advance(FIRST_DELAY)
        self.assertEqual(transport.value().decode().splitlines(),
                         ["535 5.7.8 Error: authentication failed", "250 2.0.0 Ok"])

    def test_delay_grows_per_address_and_spares_others(self) -> None:
        bad = b"AUTH PLAIN " + b64(b"\0alice\0nope")
        delays = []
        for _ in range(20):
            protocol, transport = self.connect(host="10.6.6.6")
            self.say(protocol, transport, bad)
            waited = 0.0
            while not transport.value():
                self.clock.advance(0.25)
                waited += 0.25
            delays.append(waited)
        self.assertEqual(delays[:4], [0.5, 1.0, 2.0, 4.0])
        self.assertEqual(delays[-1], MAX_DELAY)
        other, other_transport = self.connect(host="10.7.7.7")
        self.say(other, other_transport, bad)
        self.clock.advance(FIRST_DELAY)
        self.assertEqual(other_transport.value(), b"535 5.7.8 Error: authentication failed\r\n")
        good, good_transport = self.connect(host="10.8.8.8")
        self.assertEqual(self.say(good, good_transport, b"AUTH PLAIN " + b64(
            b"\0alice\0wonderland")), ["235 2.7.0 Authentication successful"])


class TraceAndIsolationTests(AuthTestCase):
    isolation = "user"

    def test_user_mail_goes_to_its_own_maildir_with_esmtpsa(self) -> None:
        protocol, transport = self.connect()
        self.say(protocol, transport, b"EHLO c", b"AUTH PLAIN " + b64(b"\0alice\0wonderland"),
                 b"MAIL FROM:<a@b>", b"RCPT TO:<c@d>", b"DATA", b"hi", b".")
        self.assertEqual(self.stored(), [])
        [message] = self.stored(os.path.join(self.folder, "alice"))
        self.assertIn(b"(Authenticated sender: alice)", message)
        self.assertIn(b"with ESMTPSA id", message)
        anonymous, anonymous_transport = self.connect()
        self.say(anonymous, anonymous_transport, b"EHLO c", b"MAIL FROM:<a@b>",
                 b"RCPT TO:<c@d>", b"DATA", b"hi", b".")
        [shared] = self.stored()
        self.assertIn(b"with ESMTPS id", shared)
        self.assertNotIn(b"Authenticated sender", shared)

    def test_hostile_user_name_stays_inside(self) -> None:
        self.credentials = ""
        self.accept_any = True
        self.setUp()
        protocol, transport = self.connect()
        self.say(protocol, transport, b"AUTH PLAIN " + b64(b"\0../../etc\0x"),
                 b"MAIL FROM:<a@b>", b"RCPT TO:<c@d>", b"DATA", b"hi", b".")
        [folder] = [name for name in os.listdir(self.folder)
                    if name not in ("cur", "new", "tmp")]
        self.assertEqual(folder, "%2E%2E%2F%2E%2E%2Fetc")
        self.assertEqual(len(self.stored(os.path.join(self.folder, folder))), 1)

    def test_starttls_forgets_authentication(self) -> None:
        protocol, transport = self.connect(tls=False, allow_insecure=True)
        self.say(protocol, transport, b"AUTH PLAIN " + b64(b"\0alice\0wonderland"))
        self.assertTrue(protocol.authenticated)
        protocol.canStartTLS = True
        protocol.ctx = object()
        transport.startTLS = lambda context: directlyProvides(  # type: ignore[attr-defined]
            transport, ISSLTransport)
        self.say(protocol, transport, b"STARTTLS")
        self.assertFalse(protocol.authenticated)
        self.assertIsNone(protocol.delivery)


class MailboxFolderTests(TestCase):
    @given(st.text(max_size=300))
    def test_any_user_name_maps_inside_and_apart(self, user: str) -> None:
        folder = mailbox_folder(user)
        self.assertNotIn("/", folder)
        self.assertNotIn("\0", folder)
        self.assertFalse(folder.startswith("."))
        self.assertNotIn(folder, ("", "cur", "new", "tmp", "..", "."))
        self.assertLessEqual(len(folder.encode()), 255)

    @given(st.text(max_size=40), st.text(max_size=40))
    def test_distinct_names_get_distinct_folders(self, one: str, two: str) -> None:
        if one != two:
            self.assertNotEqual(mailbox_folder(one), mailbox_folder(two))

    def test_plain_names_are_kept(self) -> None:
        for user in ("alice", "john.doe", "dev+ci@example.com", "A_B-c"):
            self.assertEqual(mailbox_folder(user), user)


class SlowChecker:
    """Answers like a password file: later, from a worker thread (held until released)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.credentialInterfaces = inner.credentialInterfaces
        self.pending: list[tuple[Any, Any]] = []

    def offers_plaintext(self) -> bool:
        return False

    def requestAvatarId(self, credentials: Any) -> Any:
        from twisted.internet.defer import Deferred
        waiting: Deferred[Any] = Deferred()
        self.pending.append((credentials, waiting))
        return waiting

    def release(self) -> None:
        while self.pending:
            credentials, waiting = self.pending.pop(0)
            self.inner.requestAvatarId(credentials).chainDeferred(waiting)


class PipelinedAfterFailureTests(AuthTestCase):
    def test_commands_behind_a_slow_failed_auth_wait_for_its_delayed_reply(self) -> None:
        slow = SlowChecker(EnvironmentChecker(self.credentials))
        self.checker = AnyOfChecker([slow])
        protocol, transport = self.connect(auth="required")
        self.say(protocol, transport, b"AUTH PLAIN " + b64(b"\0alice\0nope"),
                 b"MAIL FROM:<a@b>", b"AUTH PLAIN " + b64(b"\0alice\0wonderland"))
        self.assertEqual(transport.value(), b"")
        slow.release()
        self.assertEqual(transport.value(), b"")
        self.clock.advance(FIRST_DELAY)
        slow.release()
        self.assertEqual(transport.value().decode().splitlines(),
                         ["535 5.7.8 Error: authentication failed",
                          "530 5.7.0 Authentication required",
                          "235 2.7.0 Authentication successful"])


class UserNameTests(AuthTestCase):
    def test_control_characters_in_user_names_are_refused(self) -> None:
        self.credentials = ""
        self.accept_any = True
        self.setUp()
        protocol, transport = self.connect()
        for response in (b"\0evil\nX-Injected: 1\0x", b"\0a\rb\0x"):
            self.assertEqual(self.say(protocol, transport, b"AUTH PLAIN " + b64(response)),
                             ["501 5.5.2 Malformed PLAIN response: the user name contains "
                              "control characters"])
        self.say(protocol, transport, b"AUTH LOGIN")
        self.assertEqual(self.say(protocol, transport, b64(b"x\ny")),
                         ["501 5.5.2 Malformed LOGIN response: the user name contains "
                          "control characters"])

    def test_trace_headers_escape_control_characters(self) -> None:
        from mailsink.store.delivery import Envelope, trace_headers
        headers = trace_headers(Envelope("a@b\nX: 1", ("c@d\r\nY: 2",), "helo\rZ: 3",
                                         "127.0.0.1", "ESMTPA", user="u\nW: 4"), "h", "1.M1.h")
        self.assertEqual([line for line in headers.split(b"\n")
                          if line[:1] in (b"X", b"Y", b"Z", b"W")], [])


class ReaderAvatarTests(TestCase):
    """POP3 and IMAP avatars get the Maildir their user may read."""

    def test_reading_path_by_isolation_and_admins(self) -> None:
        from mailsink.realm import MailboxRealm
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder)
        shared = Maildir(folder, maybeDeferred)
        realm = MailboxRealm(shared, "user", admins=["boss"])
        realm.readers[ISSLTransport] = lambda path, user: (path, user)
        _, avatar, _ = self.successResultOf(
            realm.requestAvatar(b"alice", None, ISSLTransport))
        self.assertEqual(avatar, (os.path.join(folder, "alice"), "alice"))
        _, avatar, _ = self.successResultOf(realm.requestAvatar(b"boss", None, ISSLTransport))
        self.assertEqual(avatar, (folder, "boss"))
        self.assertEqual(MailboxRealm(shared, "none").reading_path("alice"), folder)
