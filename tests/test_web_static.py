"""The web view's static files: ES modules served as JavaScript, everything else as before."""

from __future__ import annotations

import os

from twisted.trial.unittest import TestCase
from twisted.web.resource import getChildForRequest
from twisted.web.static import File
from twisted.web.test.requesthelper import DummyRequest

from mailsink.web.app import STATIC
from mailsink.web.static_files import StaticFiles


def static_paths() -> list[str]:
    """Every file under the static folder, relative to it, with '/' between folders."""
    return sorted(os.path.relpath(os.path.join(folder, name), STATIC).replace(os.sep, "/")
                  for folder, _, names in os.walk(STATIC) for name in names)


def served(root: File, path: str) -> tuple[str, bytes]:
    """The Content-Type and body a GET of path (below root) gets."""
    request = DummyRequest(path.encode().split(b"/"))
    getChildForRequest(root, request).render(request)
    types = request.responseHeaders.getRawHeaders(b"Content-Type") or [b""]
    return types[0].decode(), b"".join(request.written)


class StaticFilesTests(TestCase):
    def test_modules_are_javascript_in_every_folder(self) -> None:
        scripts = [path for path in static_paths() if path.endswith(".js")]
        self.assertIn("js/main.js", scripts)
        for path in scripts:
            content_type, body = served(StaticFiles(STATIC), path)
            self.assertEqual(content_type, "text/javascript; charset=utf-8", path)
            with open(os.path.join(STATIC, path), "rb") as stream:
                self.assertEqual(body, stream.read(), path)

    def test_other_files_keep_their_types(self) -> None:
        others = [path for path in static_paths() if not path.endswith(".js")]
        self.assertIn("style.css", others)
        for path in others:
            self.assertEqual(served(StaticFiles(STATIC), path)[0], served(File(STATIC), path)[0],
                             path)
