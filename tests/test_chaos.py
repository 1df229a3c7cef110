"""
Chaos (Mailpit's fault injection): trigger validation and probability with a scripted
random source, each SMTP trigger's reply in memory (the session carries on afterwards),
and GET/PUT /api/v1/chaos through StubTreq, enabled and disabled.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import maybeDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from mailsink.auth.environment import EnvironmentChecker
from mailsink.auth.throttle import FailureThrottle
from mailsink.chaos import KINDS, Chaos, Trigger, parse_triggers, reply_text
from mailsink.metrics import Metrics
from mailsink.realm import build_portal
from mailsink.smtp.auth import AuthSetup
from mailsink.smtp.factory import SMTPFactory
from mailsink.smtp.server import SMTPSettings
from mailsink.store.maildir import Maildir
from mailsink.web.access import Access
from mailsink.web.app import WebApp
from mailsink.web.events import EventHub
from tests.test_smtp_auth import TLSTransport, b64
from tests.test_web_api import FakeIndex


def scripted(*values: float) -> Any:
    """A random source returning C{values} in turn."""
    numbers: Iterator[float] = iter(values)
    return lambda: next(numbers)


def off() -> dict[str, int]:
    return {"ErrorCode": 451, "Probability": 0}


class TriggerTests(TestCase):
    def test_starts_disabled_in_mailpit_shape(self) -> None:
        chaos = Chaos(scripted())
        self.assertEqual(chaos.to_json(), {kind: off() for kind in KINDS})
        for kind in KINDS:
            self.assertIsNone(chaos.should_fail(kind))

    def test_missing_triggers_and_fields_are_reset(self) -> None:
        chaos = Chaos()
        chaos.set_triggers({"Sender": {"ErrorCode": 550, "Probability": 10},
                            "Recipient": {"Probability": 20}})
        self.assertEqual(chaos.to_json(), {
            "Sender": {"ErrorCode": 550, "Probability": 10},
            "Recipient": {"ErrorCode": 451, "Probability": 20},
            "Authentication": off()})
        chaos.set_triggers({})
        self.assertEqual(chaos.to_json(), {kind: off() for kind in KINDS})

    def test_triggers_wrapper_is_accepted(self) -> None:
        self.assertEqual(parse_triggers({"Triggers": {"Sender": {"ErrorCode": 421,
                                                                 "Probability": 5}}}),
                         {"Sender": Trigger(421, 5), "Recipient": Trigger(),
                          "Authentication": Trigger()})

    def test_bad_input_is_refused_with_a_reason_and_changes_nothing(self) -> None:
        chaos = Chaos()
        chaos.set_triggers({"Sender": {"ErrorCode": 550, "Probability": 50}})
        before = chaos.to_json()
        cases = [
            ([], "JSON object"),
            ({"Triggers": 3}, "Triggers must be"),
            ({"Helo": {}}, "unknown trigger 'Helo'"),
            ({"Sender": 5}, "Sender must be an object"),
            ({"Sender": {"Code": 450}}, "unknown field 'Code'"),
            ({"Sender": {"ErrorCode": 399}}, "from 400 to 599, not 399"),
            ({"Sender": {"ErrorCode": 600}}, "from 400 to 599, not 600"),
            ({"Sender": {"ErrorCode": "451"}}, "ErrorCode must be a whole number"),
            ({"Recipient": {"Probability": -1}}, "from 0 to 100, not -1"),
            ({"Recipient": {"Probability": 101}}, "from 0 to 100, not 101"),
            ({"Recipient": {"Probability": 1.5}}, "Probability must be a whole number"),
            ({"Authentication": {"Probability": True}}, "whole number, not True"),
        ]
        for body, reason in cases:
            with self.assertRaises(ValueError) as raised:
                chaos.set_triggers(body)
            self.assertIn(reason, str(raised.exception), body)
        self.assertEqual(chaos.to_json(), before)

    def test_limits_are_accepted(self) -> None:
        triggers = parse_triggers({"Sender": {"ErrorCode": 400, "Probability": 0},
                                   "Recipient": {"ErrorCode": 599, "Probability": 100}})
        self.assertEqual(triggers["Recipient"], Trigger(599, 100))

    def test_probability_uses_the_random_source(self) -> None:
        chaos = Chaos(scripted(0.0, 0.249, 0.25, 0.99))
        chaos.set_triggers({"Recipient": {"ErrorCode": 452, "Probability": 25}})
        self.assertEqual([chaos.should_fail("Recipient") for _ in range(4)],
                         [452, 452, None, None])
        self.assertIsNone(chaos.should_fail("Sender"))  # 0%: the source is not asked

    def test_certain_and_never(self) -> None:
        chaos = Chaos(scripted())  # neither 0% nor 100% asks the random source
        chaos.set_triggers({"Sender": {"ErrorCode": 554, "Probability": 100}})
        self.assertEqual(chaos.should_fail("Sender"), 554)
        self.assertIsNone(chaos.should_fail("Authentication"))

    def test_reply_texts(self) -> None:
        self.assertEqual(reply_text("Sender", 451), "4.3.0 Chaos: sender rejected")
        self.assertEqual(reply_text("Recipient", 550), "5.7.1 Chaos: recipient rejected")
        self.assertEqual(reply_text("Authentication", 454),
                         "4.3.0 Chaos: authentication failed")


class SMTPChaosTests(TestCase):
    def setUp(self) -> None:
        self.folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.folder)
        self.maildir = Maildir(self.folder, maybeDeferred)
        self.maildir.create()
        self.clock = Clock()
        self.chaos = Chaos(scripted())
        self.metrics = Metrics()

    def connect(self, chaos: Chaos | None) -> tuple[Any, StringTransport]:
        checker = EnvironmentChecker("alice:wonderland")
        settings = SMTPSettings(hostname="sink.test", listener="smtp", tls_mode="none",
                                max_message_size=0, max_recipients=10, auth="optional",
                                chaos=chaos)
        factory = SMTPFactory(settings, build_portal(self.maildir, "none", checker), None,
                              self.clock, metrics=self.metrics,
                              auth_setup=AuthSetup(checker.offers_plaintext,
                                                   FailureThrottle(self.clock), self.clock))
        protocol = factory.buildProtocol(None)
        transport = TLSTransport()
        protocol.makeConnection(transport)
        transport.clear()
        return protocol, transport

    def say(self, protocol: Any, transport: StringTransport, *lines: bytes) -> list[str]:
        transport.clear()
        for line in lines:
            protocol.dataReceived(line + b"\r\n")
        return transport.value().decode().splitlines()

    def send_rest(self, protocol: Any, transport: StringTransport) -> list[str]:
        return self.say(protocol, transport, b"MAIL FROM:<a@example.com>",
                        b"RCPT TO:<b@example.com>", b"DATA", b"Subject: hi", b"", b"x", b".")

    def test_sender_trigger_then_the_session_continues(self) -> None:
        self.chaos.set_triggers({"Sender": {"ErrorCode": 451, "Probability": 100}})
        protocol, transport = self.connect(self.chaos)
        self.say(protocol, transport, b"EHLO c")
        self.assertEqual(self.say(protocol, transport, b"MAIL FROM:<a@example.com>"),
                         ["451 4.3.0 Chaos: sender rejected"])
        self.chaos.set_triggers({})
        lines = self.send_rest(protocol, transport)
        self.assertTrue(lines[-1].startswith("250 2.0.0 Ok: queued as "), lines)
        self.assertEqual(len(self.maildir_new()), 1)
        self.assertIn('reason="chaos"', self.metrics.prometheus_text().decode())

    def test_recipient_trigger_5xx_then_another_recipient(self) -> None:
        self.chaos = Chaos(scripted(0.1, 0.9))
        self.chaos.set_triggers({"Recipient": {"ErrorCode": 550, "Probability": 50}})
        protocol, transport = self.connect(self.chaos)
        lines = self.say(protocol, transport, b"EHLO c", b"MAIL FROM:<a@example.com>",
                         b"RCPT TO:<b@example.com>", b"RCPT TO:<c@example.com>",
                         b"DATA", b"x", b".")
        self.assertEqual(lines[-5:-2], ["250 2.1.0 Ok", "550 5.7.1 Chaos: recipient rejected",
                                        "250 2.1.5 Ok"])
        self.assertTrue(lines[-1].startswith("250 2.0.0 Ok: queued as "), lines)
        [name] = self.maildir_new()
        with open(f"{self.folder}/new/{name}", "rb") as stream:
            self.assertIn(b"Delivered-To: c@example.com", stream.read())

    def test_authentication_trigger_refuses_good_credentials(self) -> None:
        self.chaos.set_triggers({"Authentication": {"ErrorCode": 454, "Probability": 100}})
        protocol, transport = self.connect(self.chaos)
        self.say(protocol, transport, b"EHLO c")
        plain = b"AUTH PLAIN " + b64(b"\0alice\0wonderland")
        self.assertEqual(self.say(protocol, transport, plain),
                         ["454 4.3.0 Chaos: authentication failed"])
        self.assertFalse(protocol.authenticated)
        self.chaos.set_triggers({})
        self.assertEqual(self.say(protocol, transport, plain),
                         ["235 2.7.0 Authentication successful"])
        self.assertTrue(protocol.authenticated)

    def test_wrong_password_is_not_chaos(self) -> None:
        self.chaos.set_triggers({"Authentication": {"ErrorCode": 454, "Probability": 100}})
        protocol, transport = self.connect(self.chaos)
        self.say(protocol, transport, b"EHLO c")
        self.say(protocol, transport, b"AUTH PLAIN " + b64(b"\0alice\0nope"))
        self.clock.advance(60)
        self.assertEqual(transport.value().decode().splitlines(),
                         ["535 5.7.8 Error: authentication failed"])

    def test_without_chaos_nothing_changes(self) -> None:
        protocol, transport = self.connect(None)
        self.say(protocol, transport, b"EHLO c")
        self.assertEqual(self.say(protocol, transport, b"AUTH PLAIN " + b64(
            b"\0alice\0wonderland")), ["235 2.7.0 Authentication successful"])
        self.assertTrue(self.send_rest(protocol, transport)[-1].startswith("250 2.0.0"))

    def maildir_new(self) -> list[str]:
        return os.listdir(os.path.join(self.folder, "new"))


JSON = {"Content-Type": ["application/json"]}


class APIChaosTests(TestCase):
    enabled = True

    def setUp(self) -> None:
        self.chaos = Chaos(scripted()) if self.enabled else None
        access = Access(False, EnvironmentChecker("alice:wonderland"), "none", [])
        self.web = WebApp(FakeIndex(), access, EventHub(Clock()), Metrics(), maybeDeferred,
                          chaos=self.chaos)
        self.treq = StubTreq(self.web.resource())

    def request(self, method: str, body: Any = None, raw: bytes | None = None,
                headers: Any = JSON) -> tuple[int, Any, bytes]:
        data = raw if raw is not None else (
            json.dumps(body).encode() if body is not None else None)
        response = self.successResultOf(self.treq.request(
            method, "http://sink/api/v1/chaos", data=data, headers=headers))
        content = self.successResultOf(response.content())
        return response.code, response.headers.getRawHeaders("Content-Type"), content

    def test_get_put_round_trip(self) -> None:
        code, content_type, body = self.request("GET")
        self.assertEqual((code, content_type), (200, ["application/json; charset=utf-8"]))
        self.assertEqual(json.loads(body), {kind: off() for kind in KINDS})
        wanted = {"Sender": {"ErrorCode": 421, "Probability": 5},
                  "Recipient": {"ErrorCode": 550, "Probability": 100},
                  "Authentication": {"ErrorCode": 535, "Probability": 50}}
        code, _, body = self.request("PUT", wanted)
        self.assertEqual((code, json.loads(body)), (200, wanted))
        self.assertEqual(json.loads(self.request("GET")[2]), wanted)
        assert self.chaos is not None
        self.assertEqual(self.chaos.should_fail("Recipient"), 550)

    def test_put_leaves_out_triggers_and_empty_body_resets(self) -> None:
        self.request("PUT", {"Sender": {"ErrorCode": 550, "Probability": 10}})
        code, _, body = self.request("PUT", {"Recipient": {"Probability": 7}})
        self.assertEqual(json.loads(body), {"Sender": off(),
                                            "Recipient": {"ErrorCode": 451, "Probability": 7},
                                            "Authentication": off()})
        code, _, body = self.request("PUT", raw=b"")
        self.assertEqual((code, json.loads(body)), (200, {kind: off() for kind in KINDS}))

    def test_bad_bodies_are_400_with_a_reason(self) -> None:
        self.request("PUT", {"Sender": {"ErrorCode": 550, "Probability": 10}})
        cases = [
            ({"Sender": {"ErrorCode": 200, "Probability": 10}}, None, b"from 400 to 599"),
            ({"Sender": {"Probability": 101}}, None, b"from 0 to 100"),
            ({"Nope": {}}, None, b"unknown trigger"),
            (None, b"[1]", b"must be a JSON object"),
            (None, b"{not json", b"not valid JSON"),
        ]
        for body, raw, reason in cases:
            code, content_type, text = self.request("PUT", body, raw)
            self.assertEqual((code, content_type), (400, ["text/plain; charset=utf-8"]))
            self.assertIn(reason, text)
        code, _, text = self.request("PUT", raw=b"{}", headers={})
        self.assertEqual(code, 400)
        self.assertIn(b"Content-Type: application/json", text)
        self.assertEqual(json.loads(self.request("GET")[2])["Sender"],
                         {"ErrorCode": 550, "Probability": 10})

    def test_webui_reports_chaos_enabled(self) -> None:
        response = self.successResultOf(self.treq.get("http://sink/api/v1/webui"))
        body = json.loads(self.successResultOf(response.content()))
        self.assertIs(body["ChaosEnabled"], self.enabled)


class DisabledAPIChaosTests(APIChaosTests):
    enabled = False

    def test_get_put_round_trip(self) -> None:
        for method in ("GET", "PUT"):
            code, content_type, body = self.request(
                method, {"Sender": {"ErrorCode": 451, "Probability": 100}})
            self.assertEqual((code, content_type, body),
                             (400, ["text/plain; charset=utf-8"], b"Chaos is not enabled"))

    test_put_leaves_out_triggers_and_empty_body_resets = test_get_put_round_trip
    test_bad_bodies_are_400_with_a_reason = test_get_put_round_trip
