"""
Tests for mailsink.store.recipient_delivery: messages stored by the [mailbox:NAME] recipient
rules, once per matching mailbox (hard links), or in the shared Maildir.

The store runs its disk work inline (C{maybeDeferred}), on real temporary folders.
"""

import errno
import os
import tempfile
from unittest import mock

from twisted.internet.defer import maybeDeferred
from twisted.trial.unittest import TestCase

from mailsink.realm import MailboxRealm
from mailsink.store.delivery import Envelope
from mailsink.store.mailboxes import MailboxRule, compile_recipients
from mailsink.store.maildir import Maildir, StoreError
from mailsink.store.recipient_delivery import copy_name

RULES = (MailboxRule("shop", compile_recipients(r"@shop\.example$")),
         MailboxRule("ops", compile_recipients(r"^ops@")))


def envelope(*recipients: str) -> Envelope:
    return Envelope("from@x.example", recipients, "client", "127.0.0.1", "ESMTP")


class RoutedDeliveryTests(TestCase):
    def setUp(self) -> None:
        self.root = tempfile.mkdtemp()
        self.addCleanup(lambda: __import__("shutil").rmtree(self.root))
        self.shared = Maildir(self.root, maybeDeferred)
        self.shared.create()
        self.announced: list[str] = []
        self.shared.delivered = self.announced.append
        self.realm = MailboxRealm(self.shared, rules=RULES)

    def deliver(self, *recipients: str) -> str:
        avatar = self.realm._routed(None)
        message = avatar.open_message(envelope(*recipients), "sink.example", None)
        message.write(b"Subject: hi\n\nbody\n")
        return self.successResultOf(message.finish())

    def files(self, mailbox: str = "") -> list[str]:
        return sorted(os.listdir(os.path.join(self.root, mailbox, "new")))

    def test_mailbox_folders_made_at_start(self) -> None:
        for name in ("shop", "ops"):
            for sub in ("cur", "new", "tmp"):
                self.assertTrue(os.path.isdir(os.path.join(self.root, name, sub)))

    def test_no_match_goes_to_shared(self) -> None:
        name = self.deliver("a@elsewhere.example")
        self.assertEqual(self.files(), [name])
        self.assertEqual((self.files("shop"), self.files("ops")), ([], []))

    def test_one_match(self) -> None:
        name = self.deliver("a@elsewhere.example", "Ann@SHOP.example")
        self.assertEqual((self.files(), self.files("shop"), self.files("ops")), ([], [name], []))
        self.assertEqual(self.announced, [os.path.join(self.root, "shop", "new", name)])

    def test_several_matches_are_hard_links(self) -> None:
        name = self.deliver("ops@shop.example")
        self.assertEqual(name, copy_name(name.replace("-shop.", ".", 1), "shop"))
        (shop,), (ops,) = self.files("shop"), self.files("ops")
        self.assertEqual(shop, name)
        self.assertEqual(ops, name.replace("-shop.", "-ops.", 1))
        first = os.stat(os.path.join(self.root, "shop", "new", shop))
        second = os.stat(os.path.join(self.root, "ops", "new", ops))
        self.assertEqual((first.st_ino, first.st_nlink), (second.st_ino, 2))
        self.assertEqual(self.files(), [])
        self.assertEqual(len(self.announced), 2)
        with open(os.path.join(self.root, "ops", "new", ops), "rb") as stream:
            self.assertIn(b"Delivered-To: ops@shop.example\n", stream.read())

    def test_copied_where_links_are_refused(self) -> None:
        refused = OSError(errno.EXDEV, "cross-device link")
        with mock.patch("os.link", side_effect=refused):
            self.deliver("ops@shop.example")
        (shop,), (ops,) = self.files("shop"), self.files("ops")
        first = os.stat(os.path.join(self.root, "shop", "new", shop))
        second = os.stat(os.path.join(self.root, "ops", "new", ops))
        self.assertNotEqual(first.st_ino, second.st_ino)
        self.assertEqual(first.st_size, second.st_size)
        self.assertEqual(os.listdir(os.path.join(self.root, "ops", "tmp")), [])

    def test_failed_copy_keeps_none(self) -> None:
        avatar = self.realm._routed(None)
        message = avatar.open_message(envelope("ops@shop.example"), "sink.example", None)
        message.write(b"Subject: hi\n\nbody\n")
        with mock.patch("os.link", side_effect=OSError(errno.ENOSPC, "full")):
            self.failureResultOf(message.finish(), StoreError)
        self.assertEqual((self.files("shop"), self.files("ops")), ([], []))

    def test_copy_name(self) -> None:
        self.assertEqual(copy_name("1700000000.M5P6Q7.host.example", "ops"),
                         "1700000000.M5P6Q7-ops.host.example")

    def test_reading_folders(self) -> None:
        realm = MailboxRealm(self.shared, rules=(
            MailboxRule("shop", compile_recipients("x"), ("alice",)),
            MailboxRule("ops", compile_recipients("y"), ("bob",))), admins=("root",))
        self.assertEqual(realm.reading_folders("alice"),
                         {"shop": os.path.join(self.root, "shop")})
        self.assertEqual(sorted(realm.reading_folders("root")), ["ops", "shop"])
