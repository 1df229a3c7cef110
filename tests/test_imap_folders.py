"""
Tests for mailsink.imap.mailbox.MaildirAccount's folders: INBOX plus one per
C{[mailbox:NAME]} the user may see, listed by LIST patterns and opened by SELECT.
"""

import os
import tempfile

from twisted.mail import imap4
from twisted.trial.unittest import TestCase

from mailsink.imap.mailbox import MaildirAccount, inline
from mailsink.store.maildir import Maildir


class FolderTests(TestCase):
    def setUp(self) -> None:
        self.root = tempfile.mkdtemp()
        self.addCleanup(lambda: __import__("shutil").rmtree(self.root))
        for folder in ("", "shop", "shop-eu"):
            Maildir(os.path.join(self.root, folder), inline).create()
        with open(os.path.join(self.root, "shop", "new", "1.M1P1Q1.host"), "wb") as stream:
            stream.write(b"Subject: hi\n\nbody\n")
        self.account = MaildirAccount(
            self.root, "alice", os.path.join(self.root, ".state"), inline,
            {"shop": os.path.join(self.root, "shop"),
             "shop-eu": os.path.join(self.root, "shop-eu")})

    def names(self, ref: str, pattern: str) -> list[str]:
        return [name for name, _ in self.account.listMailboxes(ref, pattern)]

    def test_list_patterns(self) -> None:
        self.assertEqual(self.names("", "*"), ["INBOX", "shop", "shop-eu"])
        self.assertEqual(self.names("", "%"), ["INBOX", "shop", "shop-eu"])
        self.assertEqual(self.names("", "shop"), ["shop"])
        self.assertEqual(self.names("", "shop*"), ["shop", "shop-eu"])
        self.assertEqual(self.names("", "inbox"), ["INBOX"])
        self.assertEqual(self.names("", "INB"), [])
        self.assertEqual(self.names("", ""), [])

    def test_select_each(self) -> None:
        shop = self.successResultOf(self.account.select("shop"))
        self.assertEqual(shop.getMessageCount(), 1)
        inbox = self.successResultOf(self.account.select("inbox"))
        self.assertEqual(inbox.getMessageCount(), 0)
        self.assertIsNone(self.successResultOf(self.account.select("ops")))

    def test_subscriptions_and_changes(self) -> None:
        self.assertTrue(self.account.isSubscribed("shop"))
        self.assertFalse(self.account.isSubscribed("ops"))
        self.assertRaises(imap4.MailboxException, self.account.subscribe, "ops")
        self.assertRaises(imap4.MailboxException, self.account.create, "new-one")
        self.assertRaises(imap4.MailboxException, self.account.delete, "shop")

    def test_without_folders_inbox_only(self) -> None:
        account = MaildirAccount(self.root, "alice", os.path.join(self.root, ".state"), inline)
        self.assertEqual([n for n, _ in account.listMailboxes("", "*")], ["INBOX"])
        self.assertIsNone(self.successResultOf(account.select("shop")))
