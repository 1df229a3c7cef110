"""
Tags in the index over real Maildir folders: X-Tags and [tags] rules written as Dovecot
keywords on arrival, tags read back from file names after a rebuild, setting, renaming and
deleting tags by renaming files, counts, tag: search, renames by other programs followed.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks

from mailsink.index import message_index as index_module
from mailsink.index.message_index import MessageIndex
from mailsink.index.parser import ThreadParser
from mailsink.index.tag_rules import parse_rules
from mailsink.index.tags import delete_plan
from mailsink.tags.keywords import FILE_NAME, TagLimit, parse_keywords
from tests.test_index import IndexTestCase, fake_facts


class IndexTagTests(IndexTestCase):
    @inlineCallbacks
    def started_with(self, rules: dict[str, str]) -> Any:
        index = MessageIndex(self.root, self.state, ThreadParser(reactor, fake_facts), reactor,
                             self.clock,
                             inotify=False, tag_rules=parse_rules(rules))
        index.subscribe(lambda kind, payload: self.events.append((kind, payload)))
        self.addCleanup(index.stop)
        yield index.start()
        yield index.when_ready()
        return index

    def keywords(self, mailbox: str = "") -> dict[str, str]:
        with open(os.path.join(self.root, mailbox, FILE_NAME)) as stream:
            return parse_keywords(stream.read())

    @inlineCallbacks
    def tags(self, index: MessageIndex, mid: str) -> Any:
        summary = yield index.get(mid, None)
        return summary.facts.tags

    @inlineCallbacks
    def test_x_tags_and_rules_become_keywords_on_arrival(self) -> Any:
        tagged = self.write("Welcome aboard", extra="X-Tags: Blue, red\n")
        plain = self.write("Invoice")
        index = yield self.started_with({"signup": "subject:welcome"})
        self.assertEqual((yield self.tags(index, tagged)), ("Blue", "red", "signup"))
        self.assertEqual((yield self.tags(index, plain)), ())
        self.assertEqual(self.keywords(), {"a": "Blue", "b": "red", "c": "signup"})
        self.assertEqual(self.files(), {"new": [plain], "cur": [f"{tagged}:2,abc"]})
        summary = yield index.get(tagged, None)
        self.assertFalse(summary.read)
        found = yield self.listing(index, "tag:SIGNUP")
        self.assertEqual([row[0] for row in found], [tagged])

    @inlineCallbacks
    def test_tags_survive_a_deleted_index_and_cleared_tags_stay_cleared(self) -> Any:
        kept = self.write("one", extra="X-Tags: keep\n")
        cleared = self.write("two", extra="X-Tags: gone\n")
        index = yield self.started_with({})
        yield index.set_tags([cleared], [], None)
        yield index.stop()
        os.unlink(os.path.join(self.state, "index.sqlite3"))
        index = yield self.started_with({})
        self.assertEqual((yield self.tags(index, kept)), ("keep",))
        self.assertEqual((yield self.tags(index, cleared)), ())
        counts = yield index.tag_counts(None)
        self.assertEqual(counts, {"keep": 1})

    @inlineCallbacks
    def test_set_tags_renames_files_and_publishes_updates(self) -> Any:
        first = self.write("first", subdir="cur", flags="S")
        second = self.write("second")
        index = yield self.started_with({})
        yield index.set_tags([first, second, "unknown"], ["Work", "urgent"], None)
        self.assertEqual(self.files(), {"new": [], "cur": [f"{first}:2,Sab",
                                                           f"{second}:2,ab"]})
        self.assertEqual((yield self.tags(index, first)), ("urgent", "Work"))
        updates = [payload.id for kind, payload in self.events if kind == "update"]
        self.assertEqual(sorted(updates), sorted([first, second]))
        yield index.set_tags([first], ["urgent"], None)
        self.assertEqual((yield self.tags(index, first)), ("urgent",))
        counts = yield index.tag_counts(None)
        self.assertEqual(counts, {"urgent": 2, "Work": 1})
        summary = yield index.get(first, None)
        self.assertTrue(summary.read)

    @inlineCallbacks
    def test_twenty_seventh_tag_is_refused_whole(self) -> Any:
        mid = self.write("m")
        index = yield self.started_with({})
        yield index.set_tags([mid], [f"t{n}" for n in range(26)], None)
        yield self.assertFailure(index.set_tags([mid], ["t0", "extra"], None), TagLimit)
        self.assertEqual(len((yield self.tags(index, mid))), 26)

    @inlineCallbacks
    def test_rename_tag_changes_the_keyword_file_only(self) -> Any:
        mid = self.write("m", extra="X-Tags: old\n")
        index = yield self.started_with({})
        before = self.files()
        renamed = yield index.rename_tag("OLD", "New", None)
        self.assertTrue(renamed)
        self.assertEqual(self.files(), before)
        self.assertEqual(self.keywords(), {"a": "New"})
        self.assertEqual((yield self.tags(index, mid)), ("New",))
        self.assertEqual([r[0] for r in (yield self.listing(index, "tag:new"))], [mid])
        self.assertEqual((yield self.listing(index, "tag:old")), [])
        self.assertFalse((yield index.rename_tag("missing", "x", None)))

    @inlineCallbacks
    def test_rename_onto_an_existing_tag_merges(self) -> Any:
        one = self.write("one", extra="X-Tags: a\n")
        two = self.write("two", extra="X-Tags: b\n")
        both = self.write("both", extra="X-Tags: a, b\n")
        index = yield self.started_with({})
        yield index.rename_tag("a", "b", None)
        for mid in (one, two, both):
            self.assertEqual((yield self.tags(index, mid)), ("b",))
        self.assertEqual(self.keywords(), {"b": "b"})

    @inlineCallbacks
    def test_delete_tag_frees_its_letter(self) -> Any:
        one = self.write("one", extra="X-Tags: a, b\n")
        two = self.write("two", extra="X-Tags: a\n", mailbox="")
        index = yield self.started_with({})
        yield index.delete_tag("A", None)
        self.assertEqual((yield self.tags(index, one)), ("b",))
        self.assertEqual((yield self.tags(index, two)), ())
        self.assertEqual(self.keywords(), {"b": "b"})
        self.assertEqual((yield index.tag_counts(None)), {"b": 1})

    @inlineCallbacks
    def test_per_mailbox_keyword_files_and_scoped_counts(self) -> Any:
        self.make_maildir("alice")
        self.write("shared", extra="X-Tags: x\n")
        mine = self.write("alice's", mailbox="alice", extra="X-Tags: y, x\n")
        index = yield self.started_with({})
        self.assertEqual(self.keywords("alice"), {"a": "y", "b": "x"})
        self.assertEqual((yield index.tag_counts(None)), {"x": 2, "y": 1})
        self.assertEqual((yield index.tag_counts({"alice"})), {"x": 1, "y": 1})
        yield index.delete_tag("x", {"alice"})
        self.assertEqual((yield self.tags(index, mine)), ("y",))
        self.assertEqual((yield index.tag_counts(None)), {"x": 1, "y": 1})

    @inlineCallbacks
    def test_keywords_set_by_another_program_are_followed(self) -> Any:
        mid = self.write("m", subdir="cur", flags="S")
        index = yield self.started_with({})
        with open(os.path.join(self.root, FILE_NAME), "w") as stream:
            stream.write("0 $Junk\n2 from-mutt\n")
        os.rename(os.path.join(self.root, "cur", f"{mid}:2,S"),
                  os.path.join(self.root, "cur", f"{mid}:2,Sac"))
        yield self.tick(index)
        self.assertEqual((yield self.tags(index, mid)), ("$Junk", "from-mutt"))
        self.assertEqual([r[0] for r in (yield self.listing(index, "tag:from-mutt"))], [mid])

    @inlineCallbacks
    def test_marking_read_keeps_keywords(self) -> Any:
        mid = self.write("m", extra="X-Tags: t\n")
        index = yield self.started_with({})
        yield index.set_read([mid], True, None, None)
        self.assertEqual(self.files(), {"new": [], "cur": [f"{mid}:2,Sa"]})
        self.assertEqual((yield self.tags(index, mid)), ("t",))

    @inlineCallbacks
    def test_unwritable_keyword_file_leaves_the_message_untagged(self) -> Any:
        os.mkdir(os.path.join(self.root, FILE_NAME))  # a folder where the file should be
        mid = self.write("m", extra="X-Tags: t\n")
        index = yield self.started_with({})
        self.assertEqual((yield self.tags(index, mid)), ())
        self.assertEqual(self.files(), {"new": [mid], "cur": []})


    @inlineCallbacks
    def test_one_count_for_many_asks_and_a_new_one_after_a_change(self) -> Any:
        """Waiting requests answered by one message ask for the counts together: one query."""
        first = self.write("one", extra="X-Tags: a\n")
        index = yield self.started_with({})
        queries: list[object] = []
        real_db = index._db

        def counted_db(work: Any, *args: Any) -> Any:
            if getattr(work, "__name__", "") == "tag_counts":
                queries.append(args)
            return real_db(work, *args)

        index._db = counted_db  # type: ignore[method-assign]
        asked = [index.tag_counts(None) for _ in range(20)]
        answers = []
        for answer in asked:
            answers.append((yield answer))
        self.assertEqual(answers, [{"a": 1}] * 20)
        self.assertEqual((yield index.tag_counts(None)), {"a": 1})
        self.assertEqual(len(queries), 1)
        yield index.set_tags([first], ["b"], None)
        self.assertEqual((yield index.tag_counts(None)), {"b": 1})
        self.assertEqual(len(queries), 2)

    @inlineCallbacks
    def test_delete_and_merge_work_in_chunks(self) -> Any:
        self.patch(index_module, "CHUNK", 2)
        ids = [self.write(f"m{n}", extra="X-Tags: old, keep\n") for n in range(5)]
        index = yield self.started_with({})
        yield index.rename_tag("old", "older", None)  # rows refreshed two at a time
        for mid in ids:
            self.assertEqual((yield self.tags(index, mid)), ("keep", "older"))
        yield index.rename_tag("older", "keep", None)
        for mid in ids:
            self.assertEqual((yield self.tags(index, mid)), ("keep",))
        self.assertEqual(self.keywords(), {"b": "keep"})
        yield index.delete_tag("keep", None)
        self.assertEqual((yield index.tag_counts(None)), {})
        self.assertEqual(self.keywords(), {})
        self.assertEqual(self.files()["cur"], sorted(f"{mid}:2," for mid in ids))

    @inlineCallbacks
    def test_a_message_tagged_during_a_delete_loses_the_tag_too(self) -> Any:
        first = self.write("first", extra="X-Tags: doomed\n")
        index = yield self.started_with({})
        plan = yield index._db(delete_plan, index._store, "doomed", None)
        late = self.write("late", extra="X-Tags: doomed\n")  # arrives before the plan ends
        yield self.tick(index)
        self.assertEqual((yield self.tags(index, late)), ("doomed",))
        yield index._follow_plan(plan, "doomed")
        self.assertEqual((yield self.tags(index, first)), ())
        self.assertEqual((yield self.tags(index, late)), ())
        self.assertEqual(self.keywords(), {})
