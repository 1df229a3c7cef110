"""
Tags end to end (issue 13 §1): the real daemon (C{twistd -n mailsink}) with C{[tags]} rules,
mail sent with smtplib, the API read with urllib and the C{mailpit-api} npm client, IMAP with
imaplib, and the Maildir and its C{dovecot-keywords} file read from disk.

The C{mailpit-api} test needs node and the package in C{.ci/node} (C{.ci/run} installs it:
C{npm install --prefix .ci/node mailpit-api@2.1.0}); without them it is skipped, unless
C{CI=true}: then it fails.
"""

from __future__ import annotations

import imaplib
import json
import os
import shutil
import smtplib
import subprocess
import unittest
import urllib.parse
import uuid
from typing import Any

from daemon import Daemon, SharedDaemon, http_json

from mailsink.tags.keywords import FILE_NAME, parse_keywords

CLIENT_TIMEOUT = 10.0
NODE_TIMEOUT = 60.0
WAIT = 10
"""Seconds the API's ?wait= may take for a message to be indexed."""
NODE_MODULES = os.path.join(os.path.dirname(__file__), "..", ".ci", "node", "node_modules")
SECTIONS = {
    "smtp": {"tls": "none", "auth": "none"},
    "imap": {"tls": "none"},
    "web": {"auth": "none"},
    "auth": {"accept_any": "true", "allow_insecure": "true"},
    "tags": {"signup": "subject:welcome to:@new.example"},
}


def send(daemon: Daemon, subject: str, to: str = "dev@example.com", extra: str = "") -> None:
    text = (f"From: app@example.com\r\nTo: {to}\r\nSubject: {subject}\r\n{extra}"
            f"Message-ID: <{uuid.uuid4()}@e2e.test>\r\n\r\nHello\r\n")
    with smtplib.SMTP("127.0.0.1", daemon.ports["smtp"], timeout=CLIENT_TIMEOUT) as smtp:
        smtp.sendmail("app@example.com", [to], text.encode())


def api(daemon: Daemon, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    status, data = http_json(method, f"http://127.0.0.1:{daemon.ports['web']}{path}", body)
    try:
        return status, json.loads(data)
    except ValueError:
        return status, data.decode()


def arrived(daemon: Daemon, subject: str) -> dict[str, Any]:
    """The summary of the message with this subject, once indexed (the API's wait)."""
    query = urllib.parse.quote(f'subject:"{subject}"')
    status, page = api(daemon, "GET", f"/api/v1/search?query={query}&wait={WAIT}")
    assert status == 200 and page["messages"], (status, page)
    return page["messages"][0]


def keywords(daemon: Daemon) -> dict[str, str]:
    with open(os.path.join(daemon.maildir, FILE_NAME)) as stream:
        return parse_keywords(stream.read())


def file_of(daemon: Daemon, message_id: str) -> str:
    """The message's file as sub/name."""
    for sub in ("new", "cur"):
        for name in os.listdir(os.path.join(daemon.maildir, sub)):
            if name.partition(":")[0] == message_id:
                return f"{sub}/{name}"
    raise AssertionError(f"no file for {message_id}")


class TagsEndToEnd(SharedDaemon, unittest.TestCase):
    daemon_sections = SECTIONS

    def test_x_tags_and_rule_tags_on_arrival(self) -> None:
        word = uuid.uuid4().hex[:8]
        send(self.daemon, f"Welcome {word}", to="new-user@new.example",
             extra="X-Tags: Billing, urgent-1 ,Billing\r\n")
        send(self.daemon, f"Welcome elsewhere {word}", to="someone@old.example")
        tagged = arrived(self.daemon, f"Welcome {word}")
        plain = arrived(self.daemon, f"Welcome elsewhere {word}")
        self.assertEqual(tagged["Tags"], ["Billing", "signup", "urgent-1"])
        self.assertFalse(tagged["Read"])
        self.assertEqual(plain["Tags"], [])
        on_disk = file_of(self.daemon, tagged["ID"])
        self.assertTrue(on_disk.startswith("cur/"), on_disk)
        letters = on_disk.partition(":2,")[2]
        self.assertEqual(sorted(keywords(self.daemon)[c] for c in letters),
                         ["Billing", "signup", "urgent-1"])
        self.assertEqual(file_of(self.daemon, plain["ID"]).partition("/")[0], "new")
        status, message = api(self.daemon, "GET", f"/api/v1/message/{tagged['ID']}")
        self.assertEqual((status, message["Tags"]), (200, ["Billing", "signup", "urgent-1"]))

    def test_the_four_routes_with_mailpits_shapes(self) -> None:
        word = uuid.uuid4().hex[:8]
        first, second = f"Routes one {word}", f"Routes two {word}"
        send(self.daemon, first)
        send(self.daemon, second)
        one, two = arrived(self.daemon, first)["ID"], arrived(self.daemon, second)["ID"]
        tag_a, tag_b = f"a-{word}", f"B {word}"
        self.assertEqual(api(self.daemon, "PUT", "/api/v1/tags",
                             {"IDs": [one, two], "Tags": [tag_a, tag_b, "b " + word]}),
                         (200, "ok"))
        status, listed = api(self.daemon, "GET", "/api/v1/tags")
        self.assertEqual(status, 200)
        self.assertIn(tag_a, listed)
        self.assertIn(tag_b, listed)
        self.assertEqual(listed, sorted(listed, key=str.lower))
        _, page = api(self.daemon, "GET", "/api/v1/messages")
        self.assertIn(tag_a, page["tags"])
        _, info = api(self.daemon, "GET", "/api/v1/info")
        self.assertEqual((info["Tags"][tag_a], info["Tags"][tag_b]), (2, 2))
        query = urllib.parse.quote(f'tag:"{tag_b.upper()}"')
        _, found = api(self.daemon, "GET", f"/api/v1/search?query={query}")
        self.assertEqual(sorted(m["ID"] for m in found["messages"]), sorted([one, two]))

        self.assertEqual(api(self.daemon, "PUT", "/api/v1/tags", {"IDs": [two], "Tags": []}),
                         (200, "ok"))
        self.assertEqual(arrived(self.daemon, second)["Tags"], [])
        renamed = f"renamed-{word}"
        path = "/api/v1/tags/" + urllib.parse.quote(tag_b)
        self.assertEqual(api(self.daemon, "PUT", path, {"Name": renamed}), (200, "ok"))
        self.assertEqual(arrived(self.daemon, first)["Tags"], [tag_a, renamed])
        status, text = api(self.daemon, "PUT", path, {"Name": "x"})
        self.assertEqual((status, text), (400, f"tag not found: {tag_b}"))
        self.assertEqual(api(self.daemon, "DELETE", f"/api/v1/tags/{tag_a}"), (200, "ok"))
        self.assertEqual(arrived(self.daemon, first)["Tags"], [renamed])
        _, listed = api(self.daemon, "GET", "/api/v1/tags")
        self.assertNotIn(tag_a, listed)
        self.assertNotIn(tag_a, keywords(self.daemon).values())
        status, text = api(self.daemon, "PUT", "/api/v1/tags", {"IDs": "x", "Tags": []})
        self.assertEqual((status, text), (400, "IDs must be a list of message IDs"))

    def test_tags_are_imap_keywords(self) -> None:
        word = uuid.uuid4().hex[:8]
        subject = f"IMAP keywords {word}"
        send(self.daemon, subject)
        message_id = arrived(self.daemon, subject)["ID"]
        api(self.daemon, "PUT", "/api/v1/tags", {"IDs": [message_id], "Tags": [f"web-{word}"]})
        client = imaplib.IMAP4("127.0.0.1", self.daemon.ports["imap"], timeout=CLIENT_TIMEOUT)
        with client:
            client.login("anyone", "any password")
            client.select("INBOX")
            [permanent] = client.untagged_responses["PERMANENTFLAGS"]
            self.assertIn(f"web-{word}".encode(), permanent)
            self.assertIn(b"\\*", permanent)
            typ, data = client.uid("SEARCH", "SUBJECT", f'"{subject}"')
            uid = data[0].split()[-1]
            typ, data = client.uid("FETCH", uid, "(FLAGS)")
            self.assertIn(f"web-{word}".encode(), data[0])
            typ, data = client.uid("STORE", uid, "+FLAGS", f"(signup imap-{word})")
            self.assertEqual(typ, "OK", data)
            typ, data = client.uid("SEARCH", "KEYWORD", f"imap-{word}")
            self.assertEqual(data[0].split(), [uid])
        expected = sorted([f"imap-{word}", "signup", f"web-{word}"], key=str.lower)
        _, found = api(self.daemon, "GET", "/api/v1/search?query=" +
                       urllib.parse.quote(f"tag:imap-{word}") + f"&wait={WAIT}")
        self.assertEqual([m["Tags"] for m in found["messages"]], [expected])

    @unittest.skipUnless(shutil.which("node"), "node is not installed")
    def test_mailpit_api_npm_client_tag_calls(self) -> None:
        if not os.path.isdir(os.path.join(NODE_MODULES, "mailpit-api")):
            problem = f"mailpit-api is not installed in {NODE_MODULES}"
            if os.environ.get("CI") == "true":
                raise AssertionError(problem)
            raise unittest.SkipTest(problem)
        word = uuid.uuid4().hex[:8]
        subject = f"npm client {word}"
        send(self.daemon, subject)
        message_id = arrived(self.daemon, subject)["ID"]
        script = """
const { MailpitClient } = require("mailpit-api");
const [base, id, word] = process.argv.slice(1);
(async () => {
  const mailpit = new MailpitClient(base);
  const out = {};
  out.set = await mailpit.setTags({ IDs: [id], Tags: ["npm " + word, "two-" + word] });
  out.tags = await mailpit.getTags();
  out.rename = await mailpit.renameTag("npm " + word, "npm-renamed-" + word);
  out.message = (await mailpit.getMessageSummary(id)).Tags;
  out.remove = await mailpit.deleteTag("two-" + word);
  out.after = (await mailpit.getMessageSummary(id)).Tags;
  out.clear = await mailpit.setTags({ IDs: [id] });
  out.cleared = (await mailpit.getMessageSummary(id)).Tags;
  console.log(JSON.stringify(out));
})().catch((error) => { console.error(String(error)); process.exit(1); });
"""
        result = subprocess.run(
            ["node", "-e", script, f"http://127.0.0.1:{self.daemon.ports['web']}",
             message_id, word], capture_output=True, text=True, timeout=NODE_TIMEOUT,
            env={**os.environ, "NODE_PATH": NODE_MODULES})
        self.assertEqual(result.returncode, 0, result.stderr)
        out = json.loads(result.stdout)
        self.assertEqual((out["set"], out["rename"], out["remove"], out["clear"]),
                         ("ok", "ok", "ok", "ok"))
        self.assertIn(f"npm {word}", out["tags"])
        self.assertEqual(out["message"], [f"npm-renamed-{word}", f"two-{word}"])
        self.assertEqual(out["after"], [f"npm-renamed-{word}"])
        self.assertEqual(out["cleared"], [])


class TagsSurviveARebuild(unittest.TestCase):
    def test_tags_survive_a_deleted_index_and_a_restart(self) -> None:
        daemon = Daemon.for_test(self, SECTIONS)
        send(daemon, "Welcome back", to="a@new.example", extra="X-Tags: from-header\r\n")
        send(daemon, "Set by API")
        send(daemon, "Cleared by API", extra="X-Tags: gone\r\n")
        rule = arrived(daemon, "Welcome back")["ID"]
        by_api = arrived(daemon, "Set by API")["ID"]
        cleared = arrived(daemon, "Cleared by API")["ID"]
        api(daemon, "PUT", "/api/v1/tags", {"IDs": [by_api], "Tags": ["Manual"]})
        api(daemon, "PUT", "/api/v1/tags", {"IDs": [cleared], "Tags": []})
        before = {m["ID"]: m["Tags"] for m in api(daemon, "GET", "/api/v1/messages")[1]
                  ["messages"]}
        self.assertEqual(before, {rule: ["from-header", "signup"], by_api: ["Manual"],
                                  cleared: []})
        daemon.stop()
        os.unlink(os.path.join(daemon.state_dir, "index.sqlite3"))
        daemon.start()
        after = {m["ID"]: m["Tags"] for m in api(daemon, "GET", "/api/v1/messages")[1]
                 ["messages"]}
        self.assertEqual(after, before)
        _, info = api(daemon, "GET", "/api/v1/info")
        self.assertEqual(info["Tags"], {"from-header": 1, "Manual": 1, "signup": 1})
