"""
The message index over real Maildir folders in a temporary directory: build and rebuild,
corrupt caches, outside changes (rescan on a Clock, and inotify), read state and deletion
on disk, retention, IDs, per-user mailboxes, `latest`, `path`, events.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
from email.parser import BytesHeaderParser
from email.utils import getaddresses, parseaddr
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks, maybeDeferred
from twisted.internet.task import Clock, deferLater
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from mailsink.index import message_index as index_module
from mailsink.index import reading
from mailsink.index.codec import (
    Parsed,
    facts_from_json,
    facts_to_json,
    flagged,
    message_id,
    received_at,
    split_name,
)
from mailsink.index.db import IndexStore
from mailsink.index.message_index import MessageIndex
from mailsink.index.parser import ThreadParser
from mailsink.message.shapes import Address, Facts, Transport
from mailsink.store.maildir import Maildir

BASE = 1_700_000_000


def fake_facts(data: bytes) -> Facts:
    """A small stand-in for mailsink.message.mime.facts: Subject, From, To, X-Tags."""
    headers = BytesHeaderParser().parsebytes(data)
    name, address = parseaddr(str(headers.get("From", "")))
    return Facts(
        subject=str(headers.get("Subject", "")),
        sender=Address(name, address) if address else None,
        to=tuple(Address(n, a) for n, a in getaddresses([str(headers.get("To", ""))]) if a),
        tags=tuple(t.strip() for t in str(headers.get("X-Tags", "")).split(",") if t.strip()),
        message_id=str(headers.get("Message-ID", "")).strip("<>"))


class IndexTestCase(TestCase):
    timeout = 20

    def setUp(self) -> None:
        self.root = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.root)
        self.state = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.state)
        self.make_maildir("")
        self.clock = Clock()
        self.clock.advance(BASE + 10 * 86400)
        self.events: list[tuple[str, Any]] = []
        self.counter = 0

    def make_maildir(self, mailbox: str) -> str:
        folder = os.path.join(self.root, mailbox)
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(folder, sub), exist_ok=True)
        return folder

    def write(self, subject: str, mailbox: str = "", subdir: str = "new", flags: str | None = None,
              when: int | None = None, sender: str = "App <app@example.com>",
              extra: str = "", name: str | None = None) -> str:
        """A message file written straight into the Maildir; returns its ID."""
        self.counter += 1
        when = BASE + self.counter if when is None else when
        base = name or f"{when}.M{self.counter}P100Q{self.counter}.testhost"
        filename = base if flags is None else f"{base}:2,{flags}"
        path = os.path.join(self.root, mailbox, subdir, filename)
        with open(path, "wb") as stream:
            stream.write(f"From: {sender}\nTo: dev@example.com\nSubject: {subject}\n{extra}"
                         f"\nbody of {subject}\n".encode())
        return message_id(base)

    def files(self, mailbox: str = "") -> dict[str, list[str]]:
        return {sub: sorted(os.listdir(os.path.join(self.root, mailbox, sub)))
                for sub in ("new", "cur")}

    @inlineCallbacks
    def started(self, inotify: bool = False, facts_of: Any = fake_facts,
                delivered_here: Any = lambda filename: False) -> Any:
        index = MessageIndex(self.root, self.state, ThreadParser(reactor, facts_of), reactor,
                             self.clock,
                             inotify=inotify, delivered_here=delivered_here)
        index.subscribe(lambda kind, payload: self.events.append((kind, payload)))
        self.addCleanup(index.stop)
        yield index.start()
        yield index.when_ready()
        return index

    @inlineCallbacks
    def listing(self, index: MessageIndex, query: str = "", mailboxes: Any = None) -> Any:
        page = yield index.page(query, 0, 1000, mailboxes)
        return [(s.id, s.mailbox, s.read, s.facts.subject) for s in page.messages]

    @inlineCallbacks
    def tick(self, index: MessageIndex) -> Any:
        """One rescan interval on the clock, then wait for the work it started."""
        self.clock.advance(index_module.RESCAN_INTERVAL)
        yield index.settled()


class BuildTests(IndexTestCase):
    @inlineCallbacks
    def test_builds_from_the_maildir_newest_first(self) -> Any:
        old = self.write("old", when=BASE + 1)
        seen = self.write("seen", subdir="cur", flags="S", when=BASE + 2)
        flagged_unread = self.write("flagged", subdir="cur", flags="F", when=BASE + 3)
        index = yield self.started()
        self.assertTrue(index.is_ready)
        page = yield index.page("", 0, 2, None)
        self.assertEqual((page.total, page.unread, page.matches, page.matches_unread),
                         (3, 2, 3, 2))
        self.assertEqual([s.id for s in page.messages], [flagged_unread, seen])
        rest = yield index.page("", 2, 50, None)
        self.assertEqual([s.id for s in rest.messages], [old])
        summary = yield index.get(seen, None)
        self.assertEqual((summary.read, summary.mailbox, summary.created),
                         (True, "", BASE + 2 + 2 / 1e6))
        self.assertEqual(summary.facts.sender, Address("App", "app@example.com"))
        self.assertEqual(summary.size, os.path.getsize(os.path.join(
            self.root, "cur", seen + ":2,S")))
        self.assertEqual(self.events, [])

    @inlineCallbacks
    def test_search_page_counts_matches(self) -> Any:
        self.write("invoice one")
        self.write("invoice two", subdir="cur", flags="S")
        self.write("hello")
        index = yield self.started()
        page = yield index.page("subject:invoice", 0, 1, None)
        self.assertEqual((page.total, page.unread, page.matches, page.matches_unread),
                         (3, 2, 2, 1))
        self.assertEqual([s.facts.subject for s in page.messages], ["invoice two"])

    @inlineCallbacks
    def test_deleted_database_is_rebuilt_equal(self) -> Any:
        for number in range(30):
            self.write(f"message {number}", subdir="cur" if number % 3 else "new",
                       flags="S" if number % 3 == 1 else None)
        index = yield self.started()
        before = yield index.page("", 0, 100, None)
        yield index.stop()
        os.unlink(index.db_path)
        again = yield self.started()
        after = yield again.page("", 0, 100, None)
        self.assertEqual(after, before)
        self.assertEqual(after.total, 30)

    @inlineCallbacks
    def test_corrupt_database_is_rebuilt(self) -> Any:
        ids = [self.write(f"message {number}") for number in range(5)]
        os.makedirs(self.state, exist_ok=True)
        with open(os.path.join(self.state, "index.sqlite3"), "wb") as stream:
            stream.write(b"this is not an SQLite database at all" * 100)
        index = yield self.started()
        page = yield index.page("", 0, 10, None)
        self.assertEqual(sorted(s.id for s in page.messages), sorted(ids))

    @inlineCallbacks
    def test_other_schema_is_rebuilt(self) -> Any:
        first = self.write("one")
        index = yield self.started()
        yield index.stop()
        db = sqlite3.connect(index.db_path)
        db.execute("UPDATE meta SET value = 'schema of another version'")
        db.execute("DELETE FROM messages")
        db.commit()
        db.close()
        again = yield self.started()
        page = yield again.page("", 0, 10, None)
        self.assertEqual([s.id for s in page.messages], [first])

    @inlineCallbacks
    def test_restart_finds_changes_made_while_stopped(self) -> Any:
        keep = self.write("keep")
        gone = self.write("gone")
        moved = self.write("moved")
        index = yield self.started()
        yield index.stop()
        os.unlink(os.path.join(self.root, "new", gone))
        os.rename(os.path.join(self.root, "new", moved),
                  os.path.join(self.root, "cur", moved + ":2,S"))
        added = self.write("added while stopped")
        with open(os.path.join(self.root, "new", keep), "ab") as stream:
            stream.write(b"more text\n")
        again = yield self.started()
        page = yield again.page("", 0, 10, None)
        self.assertEqual(sorted((s.id, s.read) for s in page.messages),
                         sorted([(keep, False), (moved, True), (added, False)]))
        grown = yield again.get(keep, None)
        self.assertEqual(grown.size, os.path.getsize(os.path.join(self.root, "new", keep)))

    @inlineCallbacks
    def test_ids_are_stable_and_url_safe(self) -> Any:
        plain = self.write("plain")
        odd = self.write("odd", name="1700000000.odd name+ü=")
        index = yield self.started()
        first = yield self.listing(index)
        yield index.stop()
        again = yield self.started()
        self.assertEqual((yield self.listing(again)), first)
        self.assertEqual(plain, f"{BASE + 1}.M1P100Q1.testhost")
        self.assertTrue(odd.startswith("x"))
        self.assertRegex(odd, r"^[A-Za-z0-9_-]+$")
        self.assertEqual(sorted(row[0] for row in first), sorted([plain, odd]))
        path = yield again.path(odd, None)
        self.assertTrue(os.path.exists(path))

    @inlineCallbacks
    def test_first_of_two_same_names_wins(self) -> Any:
        self.make_maildir("alice")
        name = f"{BASE}.M1P1Q1.host"
        self.write("shared copy", name=name)
        self.write("alice copy", mailbox="alice", name=name)
        index = yield self.started()
        rows = yield self.listing(index)
        self.assertEqual(len(rows), 1)
        self.assertEqual(rows[0][0], name)
        winner = rows[0][1]
        loser = "alice" if winner == "" else ""
        os.unlink(os.path.join(self.root, winner, "new", name))
        yield self.tick(index)
        self.assertEqual([(r[0], r[1]) for r in (yield self.listing(index))], [(name, loser)])

    @inlineCallbacks
    def test_reads_at_most_256k_of_a_file(self) -> Any:
        seen: list[int] = []

        def measuring(data: bytes) -> Facts:
            seen.append(len(data))
            return fake_facts(data)

        mid = self.write("big", extra="X-Pad: " + "x" * 600_000 + "\n")
        index = yield self.started(facts_of=measuring)
        summary = yield index.get(mid, None)
        self.assertEqual(seen, [reading.PARSE_LIMIT])
        self.assertGreater(summary.size, 600_000)

    @inlineCallbacks
    def test_unparseable_message_is_still_listed(self) -> Any:
        def broken(data: bytes) -> Facts:
            raise ValueError("cannot parse")

        mid = self.write("whatever")
        index = yield self.started(facts_of=broken)
        summary = yield index.get(mid, None)
        self.assertEqual(summary.facts, Facts())
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    @inlineCallbacks
    def test_real_mime_parser(self) -> Any:
        from mailsink.message import mime
        mid = self.write("Réunion", extra="X-Tags: alpha, beta\nContent-Type: text/plain\n")
        index = yield self.started(facts_of=mime.facts)
        summary = yield index.get(mid, None)
        self.assertEqual(summary.facts.subject, "Réunion")
        found = yield index.page("tag:beta from:app@example", 0, 10, None)
        self.assertEqual([s.id for s in found.messages], [mid])

    def test_facts_round_trip_through_json(self) -> None:
        facts = Facts(message_id="m@x", sender=Address("A", "a@x"), to=(Address("", "b@x"),),
                      cc=(Address("C", "c@x"),), bcc=(Address("", "d@x"),),
                      reply_to=(Address("", "r@x"),), subject="Grüße", date="2026-01-01",
                      snippet="text", attachments=2, tags=("t1", "t2"), return_path="<a@x>",
                      transport=Transport("192.0.2.1", "laptop", "TLSv1.3", "AES", "user",
                                          "a@x", ("b@x", "d@x"), "smtp:submission", "ESMTPS"))
        self.assertEqual(facts_from_json(facts_to_json(facts)), facts)
        self.assertEqual(facts_from_json(facts_to_json(Facts())), Facts())
        self.assertEqual(facts_to_json(Facts()), "{}")

    def test_rescan_hands_out_new_files_newest_first_and_once(self) -> None:
        ids = [self.write(f"m{n}", when=BASE + n) for n in (5, 1, 9, 3)]
        store = IndexStore(self.root, os.path.join(self.state, "index.sqlite3"))
        store.open()
        self.addCleanup(store.close)
        changes, mailboxes = store.rescan(full=True)
        self.assertEqual(mailboxes, [""])
        self.assertEqual([loc[2] for loc in changes.to_parse],
                         [ids[2], ids[0], ids[3], ids[1]])
        again, _ = store.rescan(full=True)
        self.assertEqual(again.to_parse, [])
        store.apply(changes.to_parse[:1], [])
        self.assertEqual(store.rescan(full=True)[0].to_parse, changes.to_parse[:1])

    def test_facts_sqlite_cannot_take_do_not_stall_the_index(self) -> None:
        """A lone surrogate in a subject lists the message without facts; the rest go on."""
        ids = [self.write(f"m{n}", when=BASE + n) for n in (1, 2)]
        store = IndexStore(self.root, os.path.join(self.state, "index.sqlite3"))
        store.open()
        self.addCleanup(store.close)
        changes, _ = store.rescan(full=True)
        store.apply(changes.to_parse, [])
        subjects = ("bad \udce9", "good")
        bad, good = (Parsed(loc, 10, 1, Facts(subject=subject))
                     for loc, subject in zip(changes.to_parse, subjects, strict=True))
        stored = store.insert([bad, good])
        self.assertEqual(sorted((kind, summary.facts.subject) for kind, summary in stored.events),
                         [("new", ""), ("new", "good")])
        self.assertEqual(len(ids), 2)
        self.assertEqual(len(self.flushLoggedErrors(UnicodeEncodeError)), 1)


class NameTests(TestCase):
    def test_split_name_and_flags(self) -> None:
        self.assertEqual(split_name("123.M4P5Q6.host:2,RS"), ("123.M4P5Q6.host", "RS"))
        self.assertEqual(split_name("123.M4P5Q6.host"), ("123.M4P5Q6.host", ""))
        self.assertEqual(split_name("123.x:1,experimental"), ("123.x", ""))

    def test_flagged_moves_as_mutt_does(self) -> None:
        self.assertEqual(flagged("new", "X", True), ("cur", "X:2,S"))
        self.assertEqual(flagged("new", "X", False), ("new", "X"))
        self.assertEqual(flagged("cur", "X:2,RF", True), ("cur", "X:2,FRS"))
        self.assertEqual(flagged("cur", "X:2,FRS", False), ("cur", "X:2,FR"))
        self.assertEqual(flagged("cur", "X:2,", True), ("cur", "X:2,S"))

    def test_received_time_from_the_name(self) -> None:
        self.assertEqual(received_at("1700000000.M250000P1Q1.h", 5.0), 1700000000.25)
        self.assertEqual(received_at("1700000000.12345_1.h", 5.0), 1700000000.0)
        self.assertEqual(received_at("custom-name", 5.0), 5.0)

    def test_message_ids(self) -> None:
        self.assertEqual(message_id("1.M2P3Q4.host-a_b"), "1.M2P3Q4.host-a_b")
        self.assertEqual(message_id("a/b"), "xYS9i")
        self.assertEqual(message_id("host\\057x"), "xaG9zdFwwNTd4")


class OutsideChangeTests(IndexTestCase):
    @inlineCallbacks
    def test_file_copied_into_new_appears_within_one_rescan(self) -> Any:
        index = yield self.started()
        mid = self.write("copied in")
        yield self.tick(index)
        summary = yield index.get(mid, None)
        self.assertEqual(summary.facts.subject, "copied in")
        self.assertEqual([(kind, payload.id) for kind, payload in self.events], [("new", mid)])

    @inlineCallbacks
    def test_removed_file_disappears(self) -> Any:
        mid = self.write("doomed")
        index = yield self.started()
        os.unlink(os.path.join(self.root, "new", mid))
        yield self.tick(index)
        self.assertIsNone((yield index.get(mid, None)))
        self.assertEqual(self.events, [("delete", [mid])])
        self.assertEqual((yield index.counts(None)), (0, 0))

    @inlineCallbacks
    def test_mutt_rename_shows_as_read(self) -> Any:
        mid = self.write("read me")
        index = yield self.started()
        os.rename(os.path.join(self.root, "new", mid),
                  os.path.join(self.root, "cur", mid + ":2,S"))
        yield self.tick(index)
        summary = yield index.get(mid, None)
        self.assertTrue(summary.read)
        self.assertEqual([(kind, payload.read) for kind, payload in self.events],
                         [("update", True)])
        self.assertEqual((yield index.counts(None)), (1, 0))

    @inlineCallbacks
    def test_file_rewritten_soon_after_it_appeared_is_parsed_again(self) -> Any:
        index = yield self.started()
        path = os.path.join(self.root, "new", f"{BASE}.M1P1Q1.host")
        with open(path, "wb") as stream:
            stream.write(b"Subject: partial")
        yield self.tick(index)
        with open(path, "wb") as stream:
            stream.write(b"Subject: complete\n\nthe whole message\n")
        yield self.tick(index)
        summary = yield index.get(f"{BASE}.M1P1Q1.host", None)
        self.assertEqual(summary.facts.subject, "complete")
        self.assertEqual([kind for kind, _ in self.events], ["new", "update"])

    @inlineCallbacks
    def test_rescan_lists_only_directories_that_changed(self) -> Any:
        self.write("one")
        index = yield self.started()
        for folder in (self.root, os.path.join(self.root, "new"), os.path.join(self.root, "cur")):
            os.utime(folder, (BASE, BASE))
        listed: list[str] = []
        real = os.scandir

        def spying(path: Any = ".") -> Any:
            listed.append(str(path))
            return real(path)

        self.patch(os, "scandir", spying)
        yield self.tick(index)
        self.assertEqual(sorted(listed), sorted([self.root, os.path.join(self.root, "new"),
                                                 os.path.join(self.root, "cur")]))
        listed.clear()
        yield self.tick(index)
        yield self.tick(index)
        self.assertEqual(listed, [])
        self.write("two")
        yield self.tick(index)
        self.assertEqual(listed, [os.path.join(self.root, "new")])
        self.assertEqual(len((yield self.listing(index))), 2)

    @inlineCallbacks
    def test_new_user_folder_is_found(self) -> Any:
        index = yield self.started()
        self.make_maildir("bob")
        os.makedirs(os.path.join(self.root, ".Trash", "new"))
        os.makedirs(os.path.join(self.root, "notes"))
        mid = self.write("for bob", mailbox="bob")
        self.write("in trash", mailbox=".Trash")
        yield self.tick(index)
        self.assertEqual((yield self.listing(index)), [(mid, "bob", False, "for bob")])

    @inlineCallbacks
    def test_inotify_reports_a_copied_file_without_a_rescan(self) -> Any:
        index = yield self.started(inotify=True)
        if index._watcher is None or index._watcher._notifier is None:
            self.skipTest("no inotify here")
        mid = self.write("dropped in")
        deadline = time.monotonic() + 2.0
        summary = None
        while summary is None and time.monotonic() < deadline:
            yield deferLater(reactor, 0.05, lambda: None)
            summary = yield index.get(mid, None)
        self.assertIsNotNone(summary)
        self.assertEqual(self.events[0][0], "new")
        os.rename(os.path.join(self.root, "new", mid),
                  os.path.join(self.root, "cur", mid + ":2,S"))
        deadline = time.monotonic() + 2.0
        while not summary.read and time.monotonic() < deadline:
            yield deferLater(reactor, 0.05, lambda: None)
            summary = yield index.get(mid, None)
        self.assertTrue(summary.read)
        self.assertEqual([kind for kind, _ in self.events], ["new", "update"])

    @inlineCallbacks
    def test_inotify_ignores_this_process_deliveries_until_the_store_tells(self) -> Any:
        """A delivery is in new/ before its fsync and 250: the index waits for L{added}."""
        index = yield self.started(inotify=True,
                                   delivered_here=lambda filename: "ours" in filename)
        if index._watcher is None or index._watcher._notifier is None:
            self.skipTest("no inotify here")
        ours = self.write("ours", name=f"{BASE}.M1P100Q1.ours")
        theirs = self.write("theirs")
        deadline = time.monotonic() + 2.0
        while (yield index.get(theirs, None)) is None and time.monotonic() < deadline:
            yield deferLater(reactor, 0.05, lambda: None)
        self.assertIsNotNone((yield index.get(theirs, None)))
        self.assertIsNone((yield index.get(ours, None)))
        index.added("", os.path.join(self.root, "new", ours))
        yield index.settled()
        self.assertIsNotNone((yield index.get(ours, None)))
        self.assertEqual(sorted(payload.id for kind, payload in self.events if kind == "new"),
                         sorted([ours, theirs]))

    @inlineCallbacks
    def test_added_by_the_store_is_indexed_and_published(self) -> Any:
        index = yield self.started()
        mid = self.write("delivered")
        index.added("", os.path.join(self.root, "new", mid))
        yield index.settled()
        self.assertEqual([(kind, payload.id) for kind, payload in self.events], [("new", mid)])
        yield self.tick(index)
        self.assertEqual(len(self.events), 1)

    @inlineCallbacks
    def test_store_hook_indexes_deliveries_into_user_folders(self) -> Any:
        index = yield self.started()
        store = Maildir(os.path.join(self.root, "carol"), maybeDeferred, index.delivered)
        store.create()
        message = store.new_message()
        message.write(b"Subject: for carol\n\nhello\n")
        name = yield message.finish()
        yield index.settled()
        self.assertEqual((yield self.listing(index)), [(name, "carol", False, "for carol")])
        self.assertEqual([kind for kind, _ in self.events], ["new"])
        index.delivered("/elsewhere/new/1.M1P1Q1.h")
        yield index.settled()
        self.assertEqual(len((yield self.listing(index))), 1)


class ChangeTests(IndexTestCase):
    @inlineCallbacks
    def test_set_read_renames_files(self) -> Any:
        fresh = self.write("fresh")
        replied = self.write("replied", subdir="cur", flags="RF")
        index = yield self.started()
        changed = yield index.set_read([fresh, replied], True, None, None)
        self.assertEqual(changed, 2)
        self.assertEqual(self.files(), {"new": [], "cur": sorted(
            [fresh + ":2,S", replied + ":2,FRS"])})
        self.assertEqual((yield index.counts(None)), (2, 0))
        self.assertEqual(sorted((kind, s.id, s.read) for kind, s in self.events),
                         sorted([("update", fresh, True), ("update", replied, True)]))
        changed = yield index.set_read(None, False, None, None)
        self.assertEqual(changed, 2)
        self.assertEqual(self.files(), {"new": [], "cur": sorted(
            [fresh + ":2,", replied + ":2,FR"])})
        self.assertEqual((yield index.counts(None)), (2, 2))
        yield self.tick(index)
        self.assertEqual(len(self.events), 4)

    @inlineCallbacks
    def test_set_read_by_query_and_after_an_outside_rename(self) -> Any:
        invoice = self.write("invoice")
        other = self.write("other")
        index = yield self.started()
        os.rename(os.path.join(self.root, "new", invoice),
                  os.path.join(self.root, "cur", invoice + ":2,F"))
        changed = yield index.set_read(None, True, "subject:invoice", None)
        self.assertEqual(changed, 1)
        self.assertEqual(self.files(), {"new": [other], "cur": [invoice + ":2,FS"]})

    @inlineCallbacks
    def test_delete_unlinks(self) -> Any:
        one, _two, three = self.write("one"), self.write("two"), self.write("three")
        index = yield self.started()
        self.assertEqual((yield index.delete([one, "no-such-id"], None, None)), 1)
        self.assertEqual(self.events, [("delete", [one])])
        self.assertEqual((yield index.delete(None, "subject:two", None)), 1)
        self.assertEqual(self.files(), {"new": [three], "cur": []})
        self.assertEqual((yield index.delete(None, None, None)), 1)
        self.assertEqual(self.events[-1], ("truncate", None))
        self.assertEqual(self.files(), {"new": [], "cur": []})
        stats = yield index.stats()
        self.assertEqual((stats.total, stats.deleted, stats.pruned), (0, 3, 0))
        self.assertGreater(stats.size, 0)
        self.assertEqual(stats.path, os.path.join(self.state, "index.sqlite3"))


class RetentionTests(IndexTestCase):
    def logged(self) -> list[str]:
        messages: list[str] = []

        def observer(event: dict[str, Any]) -> None:
            if "pruned" in event.get("log_format", ""):
                from twisted.logger import formatEvent
                messages.append(formatEvent(event))

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        return messages

    @inlineCallbacks
    def test_prune_by_count_per_mailbox(self) -> Any:
        self.make_maildir("alice")
        shared = [self.write(f"shared {n}") for n in range(5)]
        alice = [self.write(f"alice {n}", mailbox="alice") for n in range(2)]
        index = yield self.started()
        logged = self.logged()
        removed = yield index.prune(3, 0)
        self.assertEqual(removed, 2)
        self.assertEqual(sorted(r[0] for r in (yield self.listing(index))),
                         sorted(shared[2:] + alice))
        self.assertEqual(self.files()["new"], sorted(shared[2:]))
        self.assertEqual(len(logged), 1)
        self.assertTrue(logged[0].startswith("pruned 2 messages"), logged[0])
        self.assertEqual((yield index.stats()).pruned, 2)

    @inlineCallbacks
    def test_prune_by_age(self) -> Any:
        old = self.write("old", when=BASE - 3 * 86400)
        new = self.write("new", when=BASE + 9 * 86400)
        index = yield self.started()
        self.assertEqual((yield index.prune(0, 86400)), 1)
        self.assertEqual([r[0] for r in (yield self.listing(index))], [new])
        self.assertFalse(os.path.exists(os.path.join(self.root, "new", old)))
        self.assertEqual((yield index.prune(0, 0)), 0)

    @inlineCallbacks
    def test_pruning_on_a_timer_and_after_delivery(self) -> Any:
        for n in range(4):
            self.write(f"m{n}")
        index = yield self.started()
        index.start_pruning(2, 0, interval=60)
        yield index.settled()
        yield deferLater(reactor, 0.05, lambda: None)
        self.assertEqual((yield index.counts(None)), (2, 2))
        latest = self.write("latest", when=BASE + 100)
        index.added("", os.path.join(self.root, "new", latest))
        yield index.settled()
        yield deferLater(reactor, 0.05, lambda: None)
        self.assertEqual((yield index.counts(None)), (2, 2))
        self.assertEqual((yield index.latest("", None)).id, latest)
        for n in range(3):
            self.write(f"outside {n}", when=BASE + 200 + n)
        yield self.tick(index)
        self.clock.advance(60)
        yield deferLater(reactor, 0.1, lambda: None)
        self.assertEqual((yield index.counts(None))[0], 2)


class ScopeTests(IndexTestCase):
    @inlineCallbacks
    def test_mailboxes_filter_every_query(self) -> Any:
        self.make_maildir("alice")
        self.make_maildir("bob")
        shared = self.write("shared")
        alice = self.write("for alice", mailbox="alice")
        bob = self.write("for bob", mailbox="bob", subdir="cur", flags="S")
        index = yield self.started()
        self.assertEqual((yield self.listing(index, mailboxes=["alice"])),
                         [(alice, "alice", False, "for alice")])
        page = yield index.page("", 0, 10, ["alice", "bob"])
        self.assertEqual((page.total, page.unread), (2, 1))
        self.assertEqual((yield index.counts([""])), (1, 1))
        self.assertEqual((yield index.counts(None)), (3, 2))
        self.assertEqual((yield index.counts([])), (0, 0))
        self.assertIsNone((yield index.get(bob, ["alice"])))
        self.assertIsNone((yield index.path(bob, ["alice"])))
        self.assertIsNotNone((yield index.get(bob, ["bob"])))
        self.assertEqual((yield index.delete(None, None, ["alice"])), 1)
        self.assertNotIn(("truncate", None), self.events)
        self.assertEqual((yield index.set_read(None, True, None, [""])), 1)
        self.assertEqual(sorted(r[0] for r in (yield self.listing(index))), sorted([shared, bob]))
        stats = yield index.stats(["bob"])
        self.assertEqual((stats.total, stats.unread), (1, 0))

    @inlineCallbacks
    def test_latest_with_and_without_query(self) -> Any:
        invoice = self.write("invoice", when=BASE + 1)
        newest = self.write("hello", when=BASE + 2)
        index = yield self.started()
        self.assertEqual((yield index.latest("", None)).id, newest)
        self.assertEqual((yield index.latest(None, None)).id, newest)
        self.assertEqual((yield index.latest("subject:invoice", None)).id, invoice)
        self.assertIsNone((yield index.latest("nothing-like-this", None)))
        self.assertIsNone((yield index.latest("", ["nobody"])))

    @inlineCallbacks
    def test_path_follows_a_rename(self) -> Any:
        mid = self.write("moved by mutt")
        index = yield self.started()
        self.assertEqual((yield index.path(mid, None)), os.path.join(self.root, "new", mid))
        os.rename(os.path.join(self.root, "new", mid),
                  os.path.join(self.root, "cur", mid + ":2,RS"))
        self.assertEqual((yield index.path(mid, None)),
                         os.path.join(self.root, "cur", mid + ":2,RS"))
        self.assertTrue((yield index.get(mid, None)).read)
        os.unlink(os.path.join(self.root, "cur", mid + ":2,RS"))
        self.assertIsNone((yield index.path(mid, None)))
