"""
The installed package must hold every module: setup.cfg lists packages by hand. And the
layout stays walkable: no chain of imports leads from a package back to itself.
"""

from __future__ import annotations

import ast
import configparser
import os
from collections.abc import Callable

from twisted.trial.unittest import TestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mailsink_modules() -> dict[str, str]:
    """Every module of mailsink (a package by its own name) -> its file."""
    modules = {}
    for folder, _, files in os.walk(os.path.join(ROOT, "mailsink")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                modules[module.removesuffix(".__init__")] = path
    return modules


def imports(modules: dict[str, str]) -> dict[str, set[str]]:
    """Module -> the mailsink modules it imports anywhere (TYPE_CHECKING blocks too)."""
    found: dict[str, set[str]] = {}
    for module, path in modules.items():
        with open(path, encoding="utf-8") as source:
            tree = ast.parse(source.read())
        package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
        names = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join([*parent, base] if base else parent)
                names += [base, *(f"{base}.{alias.name}" for alias in node.names)]
        targets = set()
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        found[module] = targets
    return found


def cycle(edges: dict[str, set[str]]) -> list[str]:
    """One chain of edges that comes back to where it started, or []."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str]:
        if node in path:
            return [*path[path.index(node):], node]
        if node in done:
            return []
        for target in sorted(edges.get(node, ())):
            found = visit(target, [*path, node])
            if found:
                return found
        done.add(node)
        return []

    for start in sorted(edges):
        found = visit(start, [])
        if found:
            return found
    return []


def grouped(edges: dict[str, set[str]], group: Callable[[str], str]) -> dict[str, set[str]]:
    """The edges between groups of modules (within a group left out)."""
    between: dict[str, set[str]] = {}
    for source, targets in edges.items():
        for target in targets:
            if group(source) != group(target):
                between.setdefault(group(source), set()).add(group(target))
    return between


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


class ImportCycleTests(TestCase):
    def test_no_cycle_between_packages(self) -> None:
        """
        Each subpackage of mailsink (and each module at its top) is one node: none imports,
        through others, something that imports it back.
        """
        modules = mailsink_modules()

        def package(module: str) -> str:
            top = ".".join(module.split(".")[:2])
            return top if modules.get(top, "").endswith("__init__.py") else module

        self.assertEqual(cycle(grouped(imports(modules), package)), [])

    def test_no_cycle_between_imap_modules(self) -> None:
        """The parts mixed into the IMAP protocol do not import the protocol back."""
        edges = imports(mailsink_modules())
        imap = {module: {target for target in targets if target.startswith("mailsink.imap.")}
                for module, targets in edges.items() if module.startswith("mailsink.imap.")}
        self.assertEqual(cycle(imap), [])

    def test_cycles_are_found(self) -> None:
        self.assertEqual(cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}), ["a", "b", "c", "a"])
        self.assertEqual(cycle({"a": {"b", "c"}, "b": {"c"}}), [])
