"""
End-to-end: mailboxes chosen by recipient (issue 13 section 2) in the real daemon.

C{twistd -n mailsink} with two C{[mailbox:NAME]} rules (C{shop} for alice, C{ops} for
bob), C{[web] auth = required} and C{MAILSINK_AUTH} accounts (C{boss} an admin). Mail is
sent with smtplib: to one mailbox, to both (stored once per mailbox, hard-linked: one
inode), to none (the shared Maildir). Read back through the API (C{Mailbox}, C{?mailbox=}
on list, search and delete, C{/api/v1/mailboxes}), IMAP (C{LIST}, C{SELECT}), POP3
(C{user#NAME} logins) and
C{mailsink ls --mailbox}, each as alice, bob and the admin; and the web view's mailbox
switcher in headless Chromium.
"""

from __future__ import annotations

import base64
import imaplib
import json
import os
import poplib
import shutil
import smtplib
import subprocess
import sys
import unittest
import urllib.error
import urllib.request
from typing import Any

from daemon import Daemon
from test_e2e_web import (
    CHROMIUM,
    CHROMIUM_ARGS,
    LAUNCH_TIMEOUT_MS,
    STEP_TIMEOUT_MS,
    load_playwright,
)

TIMEOUT = 10.0
ACCOUNTS = {"alice": "a-pass", "bob": "b-pass", "carol": "c-pass", "boss": "x-pass"}
SECTIONS = {
    "mailsink": {},
    "auth": {"admins": "boss", "allow_insecure": "true"},
    "mailbox:shop": {"recipients": r"@shop\.example$", "users": "alice"},
    "mailbox:ops": {"recipients": r"^ops@", "users": "bob"},
    "smtp": {"tls": "none"},
    "imap": {"tls": "none"},
    "pop3": {"tls": "none"},
    "web": {"auth": "required"},
}
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class MailboxesTests(unittest.TestCase):
    """One daemon per test: each sends its own mail into empty mailboxes."""

    def setUp(self) -> None:
        env = {"MAILSINK_AUTH": " ".join(f"{u}:{p}" for u, p in ACCOUNTS.items())}
        self.daemon = Daemon.for_test(self, SECTIONS, env=env)

    # Clients.

    def send(self, subject: str, *recipients: str) -> None:
        with smtplib.SMTP("127.0.0.1", self.daemon.ports["smtp"], timeout=TIMEOUT) as smtp:
            smtp.sendmail("app@sender.example", list(recipients),
                          f"From: app@sender.example\r\nTo: {recipients[0]}\r\n"
                          f"Subject: {subject}\r\n\r\nhello\r\n".encode())

    def api(self, user: str, path: str, method: str = "GET",
            body: Any = None) -> tuple[int, Any]:
        url = f"http://127.0.0.1:{self.daemon.ports['web']}{path}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        token = base64.b64encode(f"{user}:{ACCOUNTS[user]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        try:
            with _DIRECT.open(request, timeout=TIMEOUT) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        if raw[:1] in (b"{", b"["):
            return status, json.loads(raw)
        return status, raw.decode()

    def listed(self, user: str, query: str = "") -> dict[str, str]:
        """Subject -> Mailbox of every message C{user} sees with C{query}."""
        status, page = self.api(user, "/api/v1/messages" + query)
        self.assertEqual(status, 200, page)
        return {m["Subject"]: m["Mailbox"] for m in page["messages"]}

    def imap(self, user: str) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.daemon.ports["imap"], timeout=TIMEOUT)
        self.addCleanup(client.shutdown)
        client.login(user, ACCOUNTS[user])
        return client

    def files(self, mailbox: str) -> list[str]:
        folder = os.path.join(self.daemon.maildir, mailbox, "new")
        return [os.path.join(folder, name) for name in sorted(os.listdir(folder))]

    # Routing.

    def test_one_several_and_no_matching_mailboxes(self) -> None:
        self.send("to shop", "Ann@SHOP.example")
        self.send("to both", "ops@shop.example")
        self.send("to none", "someone@else.example")
        self.send("to ops and none", "x@else.example", "ops@else.example")
        status, page = self.api("boss", "/api/v1/messages")
        self.assertEqual(status, 200)
        pairs = sorted((m["Subject"], m["Mailbox"]) for m in page["messages"])
        self.assertEqual(pairs, [("to both", "ops"), ("to both", "shop"), ("to none", ""),
                                 ("to ops and none", "ops"), ("to shop", "shop")])
        self.assertEqual(len(self.files("")), 1)
        shop, ops = self.files("shop"), self.files("ops")
        self.assertEqual((len(shop), len(ops)), (2, 2))
        both = [path for path in shop + ops if os.path.basename(path).count("-")]
        self.assertEqual(len(both), 2)
        first, second = (os.stat(path) for path in both)
        self.assertEqual(first.st_ino, second.st_ino)
        self.assertEqual(first.st_nlink, 2)
        ids = {m["ID"] for m in page["messages"] if m["Subject"] == "to both"}
        self.assertEqual(len(ids), 2)

    # Who sees what.

    def test_access_through_the_api(self) -> None:
        self.send("to shop", "a@shop.example")
        self.send("to ops", "ops@elsewhere.example")
        self.send("to none", "a@else.example")
        self.assertEqual(self.listed("alice"), {"to shop": "shop", "to none": ""})
        self.assertEqual(self.listed("bob"), {"to ops": "ops", "to none": ""})
        self.assertEqual(self.listed("carol"), {"to none": ""})
        self.assertEqual(self.listed("boss"),
                         {"to shop": "shop", "to ops": "ops", "to none": ""})
        status, answer = self.api("alice", "/api/v1/messages?mailbox=ops")
        self.assertEqual((status, answer), (404, "mailbox not found"))
        status, answer = self.api("alice", "/api/v1/info")
        self.assertEqual(answer["Messages"], 2)
        status, answer = self.api("alice", "/api/v1/mailboxes")
        self.assertEqual(answer, {"Mailboxes": [{"Name": "", "Total": 1, "Unread": 1},
                                                {"Name": "shop", "Total": 1, "Unread": 1}]})
        status, answer = self.api("boss", "/api/v1/mailboxes")
        self.assertEqual(answer, {"Mailboxes": [{"Name": "", "Total": 1, "Unread": 1},
                                                {"Name": "shop", "Total": 1, "Unread": 1},
                                                {"Name": "ops", "Total": 1, "Unread": 1}]})
        ops_id = next(m["ID"] for m in self.api("boss", "/api/v1/messages")[1]["messages"]
                      if m["Mailbox"] == "ops")
        self.assertEqual(self.api("alice", f"/api/v1/message/{ops_id}")[0], 404)
        status, message = self.api("bob", f"/api/v1/message/{ops_id}")
        self.assertEqual((status, message["Mailbox"]), (200, "ops"))
        status, answer = self.api("bob", "/api/v1/mailboxes")
        self.assertEqual(answer["Mailboxes"][1], {"Name": "ops", "Total": 1, "Unread": 0})

    def test_access_through_imap(self) -> None:
        self.send("to shop", "a@shop.example")
        self.send("to none", "a@else.example")
        alice = self.imap("alice")
        status, lines = alice.list()
        self.assertEqual(status, "OK")
        self.assertEqual([line.decode().rsplit(" ", 1)[1].strip('"') for line in lines],
                         ["INBOX", "shop"])
        self.assertEqual(alice.select("shop"), ("OK", [b"1"]))
        status, data = alice.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        self.assertIn(b"Subject: to shop", data[0][1])
        self.assertEqual(alice.select("INBOX"), ("OK", [b"1"]))
        self.assertEqual(alice.select("ops")[0], "NO")
        boss = self.imap("boss")
        names = [line.decode().rsplit(" ", 1)[1].strip('"') for line in boss.list()[1]]
        self.assertEqual(names, ["INBOX", "shop", "ops"])
        self.assertEqual(boss.select("ops"), ("OK", [b"0"]))
        bob = self.imap("bob")
        names = [line.decode().rsplit(" ", 1)[1].strip('"') for line in bob.list()[1]]
        self.assertEqual(names, ["INBOX", "ops"])
        self.assertEqual(bob.select("shop")[0], "NO")

    def pop3_subjects(self, login: str, password: str) -> list[str]:
        client = poplib.POP3("127.0.0.1", self.daemon.ports["pop3"], timeout=TIMEOUT)
        try:
            client.user(login)
            client.pass_(password)
            count = len(client.list()[1])
            return [next(line.decode() for line in client.top(i, 0)[1]
                         if line.startswith(b"Subject:")) for i in range(1, count + 1)]
        finally:
            client.quit()

    def test_access_through_pop3(self) -> None:
        self.send("to shop", "a@shop.example")
        self.send("to none", "a@else.example")
        self.assertEqual(self.pop3_subjects("alice", ACCOUNTS["alice"]), ["Subject: to none"])
        self.assertEqual(self.pop3_subjects("alice#shop", ACCOUNTS["alice"]),
                         ["Subject: to shop"])
        self.assertEqual(self.pop3_subjects("boss#shop", ACCOUNTS["boss"]),
                         ["Subject: to shop"])
        self.assertEqual(self.pop3_subjects("bob#ops", ACCOUNTS["bob"]), [])
        for login, password in (("bob#shop", ACCOUNTS["bob"]), ("alice#nope", ACCOUNTS["alice"]),
                                ("alice#shop", "wrong")):
            with self.assertRaises(poplib.error_proto) as refused:
                self.pop3_subjects(login, password)
            self.assertIn(b"authentication failed", refused.exception.args[0])

    # ?mailbox= on list, search and delete.

    def test_mailbox_parameter(self) -> None:
        self.send("hello shop", "a@shop.example")
        self.send("hello both", "ops@shop.example")
        self.send("hello none", "a@else.example")
        self.assertEqual(self.listed("boss", "?mailbox=shop"),
                         {"hello shop": "shop", "hello both": "shop"})
        self.assertEqual(self.listed("boss", "?mailbox="), {"hello none": ""})
        self.assertEqual(self.listed("boss", "?mailbox=nothing-here"), {})
        status, page = self.api("boss", "/api/v1/search?query=hello&mailbox=ops")
        self.assertEqual([(m["Subject"], m["Mailbox"]) for m in page["messages"]],
                         [("hello both", "ops")])
        self.assertEqual((page["total"], page["messages_count"]), (1, 1))
        self.assertEqual(self.api("alice", "/api/v1/search?query=hello&mailbox=ops")[0], 404)
        status, _ = self.api("boss", "/api/v1/search?query=both&mailbox=shop", "DELETE")
        self.assertEqual(status, 200)
        self.assertEqual(self.listed("boss"), {"hello shop": "shop", "hello both": "ops",
                                               "hello none": ""})
        (left,) = self.files("ops")
        self.assertEqual(os.stat(left).st_nlink, 1)
        self.assertEqual(self.api("alice", "/api/v1/messages?mailbox=ops", "DELETE")[0], 404)
        status, _ = self.api("alice", "/api/v1/messages?mailbox=shop", "DELETE")
        self.assertEqual(status, 200)
        self.assertEqual(self.listed("boss"), {"hello both": "ops", "hello none": ""})

    # The command line.

    def test_ls_mailbox(self) -> None:
        self.send("ls shop", "a@shop.example")
        self.send("ls both", "ops@shop.example")
        self.send("ls none", "a@else.example")
        mailsink = shutil.which("mailsink", path=os.path.dirname(sys.executable))
        self.assertIsNotNone(mailsink)

        def ls(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([str(mailsink), "ls", "-c", self.daemon.config_path, *args],
                                  capture_output=True, text=True, timeout=30)

        shop = ls("--mailbox", "shop")
        self.assertEqual(shop.returncode, 0, shop.stderr)
        self.assertIn("ls shop", shop.stdout)
        self.assertIn("ls both", shop.stdout)
        self.assertNotIn("ls none", shop.stdout)
        shared = ls("--mailbox", "")
        self.assertEqual(shared.returncode, 0, shared.stderr)
        self.assertIn("ls none", shared.stdout)
        self.assertNotIn("ls shop", shared.stdout)
        unknown = ls("--mailbox", "nope")
        self.assertNotEqual(unknown.returncode, 0)
        self.assertIn("nope", unknown.stderr)

    # The web view.

    def test_switcher_in_the_page(self) -> None:
        sync_api = load_playwright()
        self.send("page shop", "a@shop.example")
        self.send("page ops", "ops@else.example")
        self.send("page none", "a@else.example")
        playwright = sync_api.sync_playwright().start()
        self.addCleanup(playwright.stop)
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                             timeout=LAUNCH_TIMEOUT_MS)
        self.addCleanup(browser.close)
        context = browser.new_context(
            http_credentials={"username": "alice", "password": ACCOUNTS["alice"]})
        page = context.new_page()
        page.set_default_timeout(STEP_TIMEOUT_MS)
        expect = sync_api.expect
        page.goto(f"http://127.0.0.1:{self.daemon.ports['web']}/")
        rows = page.locator("#message-list .message-row .subject")
        expect(rows).to_have_text(["page none", "page shop"])
        switcher = page.locator("#mailbox-switcher")
        expect(switcher).to_be_visible()
        expect(switcher.locator("option")).to_have_text(
            ["All mailboxes (2 unread)", "Shared (1 unread)", "shop (1 unread)"])
        switcher.select_option("=shop")
        expect(rows).to_have_text(["page shop"])
        expect(page.locator("#counts")).to_have_text("1 message, 1 unread")
        rows.first.click()
        expect(page.locator("#message-subject")).to_have_text("page shop")
        expect(switcher.locator("option")).to_have_text(
            ["All mailboxes (1 unread)", "Shared (1 unread)", "shop"])
        self.send("page shop later", "b@shop.example")
        self.send("page none later", "b@else.example")
        expect(rows).to_have_text(["page shop later", "page shop"])
        expect(switcher.locator("option")).to_have_text(
            ["All mailboxes (3 unread)", "Shared (2 unread)", "shop (1 unread)"])
        switcher.select_option("=")
        expect(rows).to_have_text(["page none later", "page none"])
        switcher.select_option("*")
        expect(rows).to_have_text(["page none later", "page shop later", "page none",
                                   "page shop"])
