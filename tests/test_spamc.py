"""
mailsink's SPAMC client in memory (mailsink.checks.spamc): the request it writes, the
answers of a real spamd 4.0 parsed (captured from C{spamd --local}), spamd's errors and
answers that are not spamd's, and the client over a fake endpoint with a Clock: refused,
silent for ten seconds, an answer in pieces, an endless answer.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet import error as net
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from mailsink.checks.spamc import (
    MAX_ANSWER,
    TIMEOUT,
    SpamcProtocol,
    Spamd,
    SpamdError,
    SpamResult,
    SpamRule,
    parse_answer,
    report_request,
)

GTUBE_ANSWER = (
    b"SPAMD/1.1 0 EX_OK\r\nContent-length: 878\r\nSpam: True ; 1000.0 / 5.0\r\n\r\n"
    b'Spam detection software, running on the system "vm",\nhas identified this incoming '
    b"email as possible spam.  The original\nmessage has been attached to this so you can "
    b"view it or label\nsimilar future email.  If you have any questions, see\n"
    b"@@CONTACT_ADDRESS@@ for details.\n\nContent preview:  XJS*C4JDBQADN1.NSBN3*2IDNEN*"
    b"GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\n   \n\n"
    b"Content analysis details:   (1000.0 points, 5.0 required)\n\n"
    b" pts rule name              description\n"
    b"---- ---------------------- --------------------------------------------------\n"
    b"-0.0 NO_RECEIVED            Informational: message has no Received headers\n"
    b" 0.0 MSGID_SHORT            Message-ID is unusually short\n"
    b"-0.0 NO_RELAYS              Informational: message was not relayed via SMTP\n"
    b"1000 GTUBE                  BODY: Generic Test for Unsolicited Bulk Email\n"
    b" 0.0 TVD_SPACE_RATIO        No description available.\n\n")
CLEAN_ANSWER = (
    b"SPAMD/1.1 0 EX_OK\r\nContent-length: 734\r\nSpam: False ; -0.0 / 5.0\r\n\r\n"
    b"Content analysis details:   (-0.0 points, 5.0 required)\n\n"
    b" pts rule name              description\n"
    b"---- ---------------------- --------------------------------------------------\n"
    b"-0.0 NO_RELAYS              Informational: message was not relayed via SMTP\n\n")
WRAPPED_ANSWER = (
    b"SPAMD/1.1 0 EX_OK\r\nSpam: False ; 2.6 / 5.0\r\n\r\n"
    b" pts rule name              description\n"
    b"---- ---------------------- --------------------------------------------------\n"
    b" 0.0 URIBL_BLOCKED          ADMINISTRATOR NOTICE: The query to URIBL was\n"
    b"                            blocked.  See\n"
    b"                            http://wiki.apache.org/spamassassin/DnsBlocklists#dnsbl-block\n"
    b"                             for more information.\n"
    b"                            [URIs: example.com]\n"
    b" 2.6 MISSING_DATE           Missing Date: header\n"
    b"\n"
    b"-0.0 NOT_A_RULE             after the table\n")


class RequestTests(TestCase):
    def test_report_command(self) -> None:
        self.assertEqual(report_request(b"Subject: x\n\nhello\n"),
                         b"REPORT SPAMC/1.5\r\nContent-length: 18\r\n\r\nSubject: x\n\nhello\n")


class AnswerTests(TestCase):
    def test_gtube(self) -> None:
        result = parse_answer(GTUBE_ANSWER)
        self.assertEqual((result.is_spam, result.score, result.error), (True, 1000.0, ""))
        self.assertEqual(result.rules, (
            SpamRule("NO_RECEIVED", 0.0, "Informational: message has no Received headers"),
            SpamRule("MSGID_SHORT", 0.0, "Message-ID is unusually short"),
            SpamRule("NO_RELAYS", 0.0, "Informational: message was not relayed via SMTP"),
            SpamRule("GTUBE", 1000.0, "BODY: Generic Test for Unsolicited Bulk Email"),
            SpamRule("TVD_SPACE_RATIO", 0.0, "No description available.")))

    def test_mailpit_shape(self) -> None:
        self.assertEqual(parse_answer(CLEAN_ANSWER).to_json(), {
            "IsSpam": False, "Score": 0.0, "Error": "",
            "Rules": [{"Name": "NO_RELAYS", "Score": 0.0,
                       "Description": "Informational: message was not relayed via SMTP"}]})

    def test_wrapped_description_joined_and_table_ends_at_blank_line(self) -> None:
        result = parse_answer(WRAPPED_ANSWER)
        self.assertEqual(result.rules, (
            SpamRule("URIBL_BLOCKED", 0.0, "ADMINISTRATOR NOTICE: The query to URIBL was "
                     "blocked.  See http://wiki.apache.org/spamassassin/DnsBlocklists"
                     "#dnsbl-block for more information. [URIs: example.com]"),
            SpamRule("MISSING_DATE", 2.6, "Missing Date: header")))
        self.assertEqual((result.is_spam, result.score), (False, 2.6))

    def test_report_without_table_still_has_the_verdict(self) -> None:
        result = parse_answer(b"SPAMD/1.1 0 EX_OK\r\nSpam: Yes ; 7.5 / 5.0\r\n\r\nlocal text\n")
        self.assertEqual(result, SpamResult(is_spam=True, score=7.5))

    def test_spamd_errors(self) -> None:
        for answer, said in [
                (b"SPAMD/1.0 76 Bad header line: (Content-Length mismatch)\r\n",
                 "refused the check with error 76 ('Bad header line: (Content-Length "
                 "mismatch)')"),
                (b"HTTP/1.1 400 Bad Request\r\n\r\n", "answered something that is not the "
                 "SPAMD protocol: 'HTTP/1.1 400 Bad Request'"),
                (b"SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\n\r\n",
                 "answered without the Spam: header of a verdict"),
        ]:
            with self.assertRaises(SpamdError) as raised:
                parse_answer(answer)
            self.assertEqual(raised.exception.what, said)


class ProtocolTests(TestCase):
    def test_writes_request_and_collects_answer_until_close(self) -> None:
        protocol = SpamcProtocol(b"REQUEST")
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertEqual(transport.value(), b"REQUEST")
        for piece in (GTUBE_ANSWER[:10], GTUBE_ANSWER[10:200], GTUBE_ANSWER[200:]):
            protocol.dataReceived(piece)
        self.assertNoResult(protocol.answer)
        protocol.connectionLost(Failure(net.ConnectionDone()))
        self.assertEqual(self.successResultOf(protocol.answer), GTUBE_ANSWER)

    def test_endless_answer_is_cut_off(self) -> None:
        protocol = SpamcProtocol(b"REQUEST")
        transport = StringTransport()
        protocol.makeConnection(transport)
        for _ in range(MAX_ANSWER // 65536 + 1):
            protocol.dataReceived(b"x" * 65536)
        self.failureResultOf(protocol.answer, SpamdError)
        self.assertTrue(transport.disconnecting)


class FakeEndpoint:
    """Connects to a StringTransport (spamd that the test plays), or fails with C{error}."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.transport = StringTransport()
        self.protocol: Protocol | None = None

    def connect(self, factory: Factory) -> defer.Deferred[Any]:
        if self.error is not None:
            return defer.fail(self.error)
        self.protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 783))
        assert self.protocol is not None
        self.protocol.makeConnection(self.transport)
        return defer.succeed(self.protocol)


class ClientTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()

    def spamd(self, endpoint: FakeEndpoint) -> Spamd:
        return Spamd(endpoint, self.clock, "localhost:783")  # type: ignore[arg-type]

    def test_verdict(self) -> None:
        endpoint = FakeEndpoint()
        checking = self.spamd(endpoint).check(b"Subject: x\n\nbody\n")
        self.assertEqual(endpoint.transport.value(), report_request(b"Subject: x\n\nbody\n"))
        assert endpoint.protocol is not None
        endpoint.protocol.dataReceived(GTUBE_ANSWER)
        endpoint.protocol.connectionLost(Failure(net.ConnectionDone()))
        result = self.successResultOf(checking)
        self.assertTrue(result.is_spam)
        self.assertIn("GTUBE", [rule.name for rule in result.rules])

    def test_refused_and_unresolvable(self) -> None:
        refused = self.successResultOf(self.spamd(FakeEndpoint(net.ConnectionRefusedError()))
                                       .check(b"x"))
        self.assertEqual(refused.to_json(), {
            "IsSpam": False, "Score": 0.0, "Rules": [],
            "Error": "spamd at localhost:783 refused the connection: start spamd, or set "
                     "[spamassassin] host to where it listens"})
        unknown = self.successResultOf(self.spamd(FakeEndpoint(net.DNSLookupError("nowhere")))
                                       .check(b"x"))
        self.assertEqual(unknown.error, "cannot find the host of localhost:783: check "
                                        "[spamassassin] host")

    def test_silent_spamd_gets_ten_seconds(self) -> None:
        endpoint = FakeEndpoint()
        checking = self.spamd(endpoint).check(b"x")
        self.clock.advance(TIMEOUT - 0.01)
        self.assertNoResult(checking)
        self.clock.advance(0.01)
        self.assertEqual(self.successResultOf(checking).error,
                         "spamd at localhost:783 did not answer within 10 s; it may be "
                         "overloaded or still starting, or the port is not spamd's")
        self.assertTrue(endpoint.transport.disconnecting)

    def test_connection_that_never_completes_gets_ten_seconds(self) -> None:
        class Pending:
            def connect(self, factory: Factory) -> defer.Deferred[Any]:
                return defer.Deferred()

        checking = Spamd(Pending(), self.clock, "localhost:783").check(b"x")  # type: ignore
        self.clock.advance(TIMEOUT)
        self.assertIn("did not answer within 10 s", self.successResultOf(checking).error)

    def test_closed_without_answer_or_with_garbage(self) -> None:
        endpoint = FakeEndpoint()
        checking = self.spamd(endpoint).check(b"x")
        assert endpoint.protocol is not None
        endpoint.protocol.connectionLost(Failure(net.ConnectionLost()))
        self.assertEqual(self.successResultOf(checking).error,
                         "spamd at localhost:783 closed the connection without an answer; "
                         "spamd's log may say why")
        endpoint = FakeEndpoint()
        checking = self.spamd(endpoint).check(b"x")
        assert endpoint.protocol is not None
        endpoint.protocol.dataReceived(b"220 mail.example.com ESMTP\r\n")
        endpoint.protocol.connectionLost(Failure(net.ConnectionDone()))
        self.assertEqual(self.successResultOf(checking).error,
                         "spamd at localhost:783 answered something that is not the SPAMD "
                         "protocol: '220 mail.example.com ESMTP'; check that [spamassassin] "
                         "host is spamd's address")
