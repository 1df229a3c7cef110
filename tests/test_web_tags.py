"""
The tag routes in memory (StubTreq over the Klein app, a fake index recording calls): the
bodies Mailpit's clients send, what reaches the index, the viewer's scope, and the 400s.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed

from mailsink.tags.keywords import TagLimit
from tests.test_web_api import FakeIndex, WebTestCase, message_bytes


class TagIndex(FakeIndex):
    """FakeIndex with the tag calls recorded; rename answers whether the tag existed."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, ...]] = []
        self.full = False

    def set_tags(self, ids: list[str], tags: list[str], mailboxes: Any) -> Deferred[None]:
        self.calls.append(("set", ids, tags, mailboxes))
        return fail(TagLimit(tags)) if self.full else succeed(None)

    def rename_tag(self, old: str, new: str, mailboxes: Any) -> Deferred[bool]:
        self.calls.append(("rename", old, new, mailboxes))
        return succeed(old == "known")

    def delete_tag(self, tag: str, mailboxes: Any) -> Deferred[None]:
        self.calls.append(("delete", tag, mailboxes))
        return succeed(None)


class TagRouteTests(WebTestCase):
    index: TagIndex

    def setUp(self) -> None:
        super().setUp()
        self.index = self.web.index = TagIndex()

    def put(self, url: str, body: Any) -> tuple[int, bytes]:
        response, data = self.request("PUT", url, data=json.dumps(body).encode(),
                                      headers={"Content-Type": "application/json"})
        return response.code, data

    def test_get_lists_tags_sorted_and_counts_show_in_info_and_list(self) -> None:
        self.store(message_bytes("one"))
        raw = message_bytes("two").replace(b"Subject:", b"X-Tags: zeta, Alpha\nSubject:", 1)
        self.store(raw)
        self.store(raw)
        self.assertEqual(self.get_json("/api/v1/tags"), ["zeta", "Alpha"])
        self.assertEqual(self.get_json("/api/v1/info")["Tags"], {"zeta": 2, "Alpha": 2})
        self.assertEqual(self.get_json("/api/v1/messages")["tags"], ["zeta", "Alpha"])

    def test_set_tags_cleans_and_clears(self) -> None:
        self.assertEqual(self.put("/api/v1/tags", {"IDs": ["a", "b"],
                                                   "Tags": ["One!", " one", "two  words"]}),
                         (200, b"ok"))
        self.assertEqual(self.put("/api/v1/tags", {"IDs": ["a"], "Tags": []}), (200, b"ok"))
        self.assertEqual(self.put("/api/v1/tags", {"IDs": ["a"]}), (200, b"ok"))
        self.assertEqual(self.put("/api/v1/tags", {"IDs": [], "Tags": ["x"]}), (200, b"ok"))
        self.assertEqual(self.index.calls, [("set", ["a", "b"], ["One", "two words"], None),
                                            ("set", ["a"], [], None), ("set", ["a"], [], None)])

    def test_set_tags_bad_bodies(self) -> None:
        self.assertEqual(self.put("/api/v1/tags", {"Tags": ["x"]}),
                         (400, b"IDs must be a list of message IDs"))
        self.assertEqual(self.put("/api/v1/tags", {"IDs": ["a"], "Tags": "x"}),
                         (400, b"Tags must be a list of tag names"))
        self.assertEqual(self.index.calls, [])

    def test_past_26_tags_is_a_400_that_says_so(self) -> None:
        self.index.full = True
        code, body = self.put("/api/v1/tags", {"IDs": ["a"], "Tags": ["extra"]})
        self.assertEqual(code, 400)
        self.assertIn(b"a Maildir holds at most 26 tags", body)

    def test_rename_and_delete_take_the_url_encoded_name(self) -> None:
        self.assertEqual(self.put("/api/v1/tags/known", {"Name": "New  name?"}), (200, b"ok"))
        self.assertEqual(self.put("/api/v1/tags/two%20words", {"Name": "x"}),
                         (400, b"tag not found: two words"))
        self.assertEqual(self.put("/api/v1/tags/known", {"Name": "?!"}),
                         (400, b"Name must be a tag name: letters, digits, spaces, '-', '_', '.'"))
        response, body = self.request("DELETE", "/api/v1/tags/two%20words")
        self.assertEqual((response.code, body), (200, b"ok"))
        self.assertEqual(self.index.calls, [("rename", "known", "New name", None),
                                            ("rename", "two words", "x", None),
                                            ("delete", "two words", None)])
