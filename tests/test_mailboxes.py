"""
Tests for mailsink.store.mailboxes and the C{[mailbox:NAME]} sections of mailsink.config: names,
recipient rules, routing and who sees which mailbox (issue 13 section 2).
"""

import textwrap

from twisted.trial.unittest import TestCase

from mailsink.config import ConfigError, parse_config
from mailsink.store.mailboxes import (
    MailboxRule,
    check_name,
    compile_recipients,
    route,
    split_login,
    visible,
)

MINIMAL = "[smtp]\nlisten = tcp:1025\n"


def parse(text: str):  # type: ignore[no-untyped-def]
    return parse_config(MINIMAL + textwrap.dedent(text), "/x/etc/mailsink.ini", {})


def rule(name: str, pattern: str, users: tuple[str, ...] = ()) -> MailboxRule:
    return MailboxRule(name, compile_recipients(pattern), users)


class ConfigTests(TestCase):
    def test_sections_in_order(self) -> None:
        config = parse("""
            [mailbox:shop]
            recipients = @shop\\.example$
            users = alice, bob
            [mailbox:ops-2]
            recipients = ^ops@
            """)
        self.assertEqual([m.name for m in config.mailboxes], ["shop", "ops-2"])
        self.assertEqual(config.mailboxes[0].users, ("alice", "bob"))
        self.assertEqual(config.mailboxes[1].users, ())
        self.assertEqual(config.listeners[0].section, "smtp")

    def test_recipients_case_insensitive(self) -> None:
        (shop,) = parse("[mailbox:shop]\nrecipients = @shop\\.example$\n").mailboxes
        self.assertTrue(shop.wants(["Ann@SHOP.Example"]))
        self.assertFalse(shop.wants(["ann@shop.example.org"]))

    def test_none_by_default(self) -> None:
        self.assertEqual(parse("").mailboxes, ())

    def test_bad_regex(self) -> None:
        error = self.assertRaises(ConfigError, parse, "[mailbox:shop]\nrecipients = (a\n")
        self.assertEqual((error.section, error.key), ("mailbox:shop", "recipients"))
        self.assertIn("not a valid regular expression", str(error))

    def test_missing_recipients(self) -> None:
        error = self.assertRaises(ConfigError, parse, "[mailbox:shop]\nusers = alice\n")
        self.assertEqual(str(error).split(":")[0:2], ["[mailbox", "shop] recipients"])
        self.assertIn("missing", str(error))

    def test_unknown_key(self) -> None:
        error = self.assertRaises(ConfigError, parse,
                                  "[mailbox:shop]\nrecipients = x\nuser = alice\n")
        self.assertEqual(error.key, "user")

    def test_unsafe_names(self) -> None:
        for name in ("", ".hidden", "a.b", "a/b", "..", "-x", "cur", "new", "tmp", "INBOX",
                     "Inbox", "é", "a b", "x" * 65):
            error = self.assertRaises(ConfigError, parse,
                                      f"[mailbox:{name}]\nrecipients = x\n")
            self.assertEqual(error.section, f"mailbox:{name}")

    def test_safe_names(self) -> None:
        for name in ("a", "shop", "Team_2", "x-y", "9", "x" * 64):
            self.assertEqual(check_name(name), name)


class RouteTests(TestCase):
    rules = (rule("shop", r"@shop\.example$"), rule("ops", r"^ops@"),
             rule("all-shop", "shop"))

    def test_none(self) -> None:
        self.assertEqual(route(self.rules, ["a@elsewhere.example"]), ())

    def test_one(self) -> None:
        self.assertEqual(route(self.rules, ["x@elsewhere.example", "ops@b.example"]),
                         ("ops",))

    def test_several_in_ini_order(self) -> None:
        self.assertEqual(route(self.rules, ["ops@shop.example"]), ("shop", "ops", "all-shop"))

    def test_no_rules(self) -> None:
        self.assertEqual(route((), ["a@b"]), ())


class VisibleTests(TestCase):
    rules = (rule("shop", "x", ("alice",)), rule("ops", "y", ("bob",)), rule("open", "z"))

    def test_nobody_logged_in_sees_all(self) -> None:
        self.assertIsNone(visible(self.rules, None, (), None))

    def test_admin_sees_all(self) -> None:
        self.assertIsNone(visible(self.rules, "root", ("root",), "root"))

    def test_user_sees_shared_and_theirs(self) -> None:
        self.assertEqual(visible(self.rules, "alice", ("root",), None), ("", "shop", "open"))
        self.assertEqual(visible(self.rules, "bob", (), None), ("", "ops", "open"))
        self.assertEqual(visible(self.rules, "carol", (), None), ("", "open"))

    def test_isolation_replaces_shared(self) -> None:
        self.assertEqual(visible(self.rules, "alice", (), "alice"), ("alice", "shop", "open"))

    def test_without_rules_as_before(self) -> None:
        self.assertIsNone(visible((), "alice", (), None))
        self.assertEqual(visible((), "alice", (), "alice"), ("alice",))


class SplitLoginTests(TestCase):
    def test_mailbox_after_the_last_hash(self) -> None:
        self.assertEqual(split_login(b"alice#shop"), (b"alice", "shop"))
        self.assertEqual(split_login(b"a#b#ops-2"), (b"a#b", "ops-2"))

    def test_plain_logins(self) -> None:
        for login in (b"alice", b"#shop", b"alice#", b"alice#a.b", b"alice#-x",
                      b"alice@example.com"):
            self.assertEqual(split_login(login), (login, None))
