"""The installed package must hold every module: setup.cfg lists packages by hand."""

from __future__ import annotations

import configparser
import os

from twisted.trial.unittest import TestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class PackagingTests(TestCase):
    def test_every_mailsink_package_is_listed(self) -> None:
        setup = configparser.ConfigParser()
        setup.read(os.path.join(ROOT, "setup.cfg"))
        listed = set(setup.get("options", "packages").split())
        found = {
            os.path.relpath(folder, ROOT).replace(os.sep, ".")
            for folder, _, files in os.walk(os.path.join(ROOT, "mailsink"))
            if "__init__.py" in files
        }
        self.assertEqual(found - listed, set())
        self.assertIn("twisted.plugins", listed)

    def test_web_assets_are_package_data(self) -> None:
        setup = configparser.ConfigParser()
        setup.read(os.path.join(ROOT, "setup.cfg"))
        data = {pattern.strip()
                for pattern in setup.get("options.package_data", "mailsink.web").split(",")}
        web = os.path.join(ROOT, "mailsink", "web")
        # A glob takes one folder's files, so every folder with files needs its own.
        folders = {os.path.relpath(folder, web).replace(os.sep, "/")
                   for folder, _, files in os.walk(os.path.join(web, "static")) if files}
        self.assertIn("static/js", folders)
        self.assertEqual({f"{folder}/*" for folder in folders} - data, set())
        self.assertIn("openapi.json", data)
