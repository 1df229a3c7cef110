"""
The index's parse worker: L{ProcessParser} with real child processes (the real
L{mailsink.index.parse_worker}, or small scripts that misbehave, given as C{python})
against L{ThreadParser} on real message files in a temporary folder. Same answers; the
fallback answers when the child dies, hangs, talks nonsense or is stopped; restarts, giving
up, and the child's stderr in the log. The real reactor throughout: processes are involved.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.logger import ILogObserver, LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from zope.interface import implementer

import mailsink
from mailsink.index import parser as parser_module
from mailsink.index.codec import Loc
from mailsink.index.parser import Files, ProcessParser, ThreadParser
from mailsink.index.reading import PARSE_LIMIT
from mailsink.message import mime
from mailsink.message.shapes import Address, Facts
from mailsink.store.delivery import Envelope, trace_headers

POLL = 0.02
WAIT = 5.0
"""Longest any one condition is polled for."""

_ATTACHMENT = b"JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFI+PgpzdHJlYW0K\n"
_BIG_TEXT = b"".join(b"line %06d of a long text part, padded to make it big\n" % number
                     for number in range(6000))

SAMPLES: dict[str, bytes] = {
    "plain": trace_headers(
        Envelope("app@example.com", ("dev@example.com", "hidden@example.com"), "client.test",
                 "127.0.0.1", "ESMTPS", tls_version="TLSv1.3",
                 tls_cipher="TLS_AES_256_GCM_SHA384", user="app", listener="smtp",
                 session="s-1", received_at=1_700_000_000.0),
        "mailsink.test", "1700000000.M1P1Q1.mailsink.test") + (
        b"From: App <app@example.com>\nTo: Dev <dev@example.com>\n"
        b"Cc: ops@example.com\nReply-To: help@example.com\nSubject: Plain words\n"
        b"Date: Tue, 14 Nov 2023 22:13:20 +0000\nMessage-ID: <plain@example.com>\n"
        b"X-Tags: one, two\n\nHello there,\n\n  the plain   text body.\n"),
    "attachment": (
        b"From: Reports <reports@example.com>\nTo: boss@example.com\n"
        b"Subject: Monthly report\nMIME-Version: 1.0\n"
        b"Content-Type: multipart/mixed; boundary=\"b1\"\n\n"
        b"--b1\nContent-Type: text/plain; charset=utf-8\n\nSee the attached file.\n"
        b"--b1\nContent-Type: application/pdf; name=\"report.pdf\"\n"
        b"Content-Disposition: attachment; filename=\"report.pdf\"\n"
        b"Content-Transfer-Encoding: base64\n\n" + _ATTACHMENT + b"--b1--\n"),
    "html_only": (
        b"From: news@example.com\nTo: reader@example.com\nSubject: HTML only\n"
        b"MIME-Version: 1.0\nContent-Type: text/html; charset=utf-8\n\n"
        b"<html><body><h1>Title</h1><p>Only <b>HTML</b> here.</p></body></html>\n"),
    "odd_text": (
        # An encoded word in UTF-7 that decodes to a lone surrogate, one whose bytes are
        # not UTF-8, raw 8-bit bytes in headers, and a body in no declared charset.
        b"From: =?utf-8?b?gP8=?= <odd@example.com>\nTo: \xffraw\xfe <raw@example.com>\n"
        b"Subject: =?utf-7?q?+2AA-?= and =?utf-8?b?gP8=?= and \xed\xa0\x80\n"
        b"Content-Type: text/plain; charset=x-unknown\n\nbody \xff\xfe\xed\xa0\x80 end\n"),
    "big": (
        b"From: big@example.com\nSubject: Big one\nMIME-Version: 1.0\n"
        b"Content-Type: multipart/mixed; boundary=\"big\"\n\n"
        b"--big\nContent-Type: text/plain\n\n" + _BIG_TEXT +
        b"--big\nContent-Type: application/octet-stream\n"
        b"Content-Disposition: attachment; filename=\"late.bin\"\n"
        b"Content-Transfer-Encoding: base64\n\n" + _ATTACHMENT + b"--big--\n"),
    "empty": b"",
}


def worker_pids(parent: int) -> set[int]:
    """Live (not zombie) processes whose parent is C{parent} and that run the worker."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stream:
                stat = stream.read()
            with open(f"/proc/{entry}/cmdline", "rb") as stream:
                cmdline = stream.read()
        except OSError:
            continue
        state, ppid = stat.rsplit(b")", 1)[1].split()[:2]
        if int(ppid) == parent and state != b"Z" and b"parse_worker" in cmdline:
            found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stream:
            return stream.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def child_pid(parser: ProcessParser) -> int | None:
    """The pid of the parser's current child, from its protocol's transport."""
    child = parser._child
    if child is None or child.transport is None:
        return None
    pid: int | None = child.transport.pid
    return pid


def parse_threads() -> list[str]:
    """Live threads of L{ThreadParser}'s pool (named after it)."""
    return [thread.name for thread in threading.enumerate()
            if "mailsink-index-parse" in thread.name]


@inlineCallbacks
def until(check: Callable[[], bool], what: str, timeout: float = WAIT) -> Any:
    """Poll C{check} on the reactor until it holds; fail after C{timeout} seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        yield deferLater(reactor, POLL, lambda: None)



class Calling(ProcessParser):
    """Answers with the files themselves: each batch called at once (the index calls it in
    its database thread)."""

    def parse(self, files: Files) -> Any:
        return super().parse(files).addCallback(lambda batch: batch())

class ParserTestCase(TestCase):
    timeout = 20

    def setUp(self) -> None:
        self.root = tempfile.mkdtemp(prefix="mailsink-parser-")
        self.addCleanup(shutil.rmtree, self.root)
        os.mkdir(os.path.join(self.root, "new"))
        self.events: list[dict[str, Any]] = []

        @implementer(ILogObserver)
        def observe(event: dict[str, Any]) -> None:
            if event.get("log_namespace") == parser_module.__name__:
                self.events.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def write(self, name: str, data: bytes) -> tuple[Loc, str]:
        path = os.path.join(self.root, "new", name)
        with open(path, "wb") as stream:
            stream.write(data)
        return ("", "new", name), path

    def samples(self) -> Files:
        return [self.write(f"1700000000.M{number}P1Q{number}.{name}", data)
                for number, (name, data) in enumerate(SAMPLES.items())]

    def thread_parser(self) -> ThreadParser:
        parser = ThreadParser(reactor, mime.facts)
        self.addCleanup(parser.stop)
        return parser

    def process_parser(self, python: str = sys.executable) -> ProcessParser:
        """A started parser; stopped, and its fallback too, by the cleanups."""
        parser = Calling(reactor, self.thread_parser(), python=python)
        self.addCleanup(parser.stop)
        parser.start()
        return parser

    def script(self, body: str) -> str:
        """An executable Python script given as the parser's C{python} (it ignores -c)."""
        path = os.path.join(self.root, f"worker{len(os.listdir(self.root))}")
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(mailsink.__file__)))
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(f"#!{sys.executable}\nimport sys\n"
                         f"sys.path.insert(0, {package_parent!r})\n{body}")
        os.chmod(path, 0o755)
        return path

    @inlineCallbacks
    def expected(self, files: Files) -> Any:
        """What the thread parser answers for C{files}."""
        parser = ThreadParser(reactor, mime.facts)
        try:
            parsed = (yield parser.parse(files))()
        finally:
            yield parser.stop()
        return parsed

    def messages(self, level: LogLevel | None = None) -> list[str]:
        return [formatEvent(event) for event in self.events
                if level is None or event["log_level"] == level]

    def fallbacks(self) -> list[str]:
        return [text for text in self.messages() if "files in the daemon" in text]

    def ends(self) -> list[str]:
        return [text for text in self.messages() if text.startswith("index parse worker ended")]

    def ended(self, count: int) -> Callable[[], bool]:
        """Whether C{count} ends of a child were logged."""
        return lambda: len(self.ends()) == count


class SameAnswersTests(ParserTestCase):
    @inlineCallbacks
    def test_same_facts_as_the_thread(self) -> Any:
        files = self.samples()
        gone: tuple[Loc, str] = (("", "new", "gone"), os.path.join(self.root, "new", "gone"))
        files.insert(2, gone)
        expected = yield self.expected(files)
        parser = self.process_parser()
        parsed = yield parser.parse(files)
        self.assertEqual(parsed, expected)
        self.assertEqual([item.loc for item in parsed],
                         [loc for loc, _ in files if loc != gone[0]])
        self.assertEqual(self.fallbacks(), [], "the child answered")
        self.assertIsNotNone(child_pid(parser))

        by_name = {item.loc[2].rsplit(".", 1)[1]: item for item in parsed}
        plain = by_name["plain"].facts
        self.assertEqual((plain.subject, plain.sender, plain.tags, plain.bcc,
                          plain.transport.tls_version, plain.transport.rcpt_to),
                         ("Plain words", Address("App", "app@example.com"), ("one", "two"),
                          (Address("", "hidden@example.com"),), "TLSv1.3",
                          ("dev@example.com", "hidden@example.com")))
        self.assertEqual(by_name["attachment"].facts.attachments, 1)
        self.assertIn("HTML", by_name["html_only"].facts.snippet)
        self.assertIn("\ufffd", by_name["odd_text"].facts.subject)
        big = by_name["big"]
        self.assertEqual(big.size, len(SAMPLES["big"]))
        self.assertGreater(big.size, PARSE_LIMIT)
        self.assertEqual(big.facts.attachments, 0, "the attachment lies past the head")
        self.assertEqual(mime.facts(SAMPLES["big"]).attachments, 1)
        self.assertEqual((by_name["empty"].size, by_name["empty"].facts), (0, Facts()))

    @inlineCallbacks
    def test_file_name_that_is_not_utf8(self) -> Any:
        files = [self.write("1700000000.M9P9Q9.host\udcff\udcfe", SAMPLES["plain"])]
        expected = yield self.expected(files)
        parsed = yield self.process_parser().parse(files)
        self.assertEqual((parsed, len(parsed)), (expected, 1))
        self.assertEqual(self.fallbacks(), [])

    @inlineCallbacks
    def test_batches_in_flight_are_answered_in_order(self) -> Any:
        files = self.samples()
        parser = self.process_parser()
        asked = [parser.parse(files[number:number + 2]) for number in range(len(files))]
        answers = yield gatherResults(asked)
        for number, answer in enumerate(answers):
            expected = yield self.expected(files[number:number + 2])
            self.assertEqual(answer, expected)
        self.assertEqual(self.fallbacks(), [])

    @inlineCallbacks
    def test_nothing_to_parse_asks_nobody(self) -> Any:
        parser = self.process_parser()
        pid = child_pid(parser)
        self.assertEqual((yield parser.parse([])), [])
        self.assertEqual((child_pid(parser), self.messages()), (pid, []))

    @inlineCallbacks
    def test_answer_in_pieces(self) -> Any:
        """An answer line that arrives a few bytes at a time is put together."""
        python = self.script(
            "import json\nfrom mailsink.index.parse_worker import answer\n"
            "for line in sys.stdin.buffer:\n"
            "    out = json.dumps(answer(json.loads(line))).encode('ascii') + b'\\n'\n"
            "    for start in range(0, len(out), 7):\n"
            "        sys.stdout.buffer.write(out[start:start + 7])\n"
            "        sys.stdout.buffer.flush()\n")
        files = self.samples()
        parsed = yield self.process_parser(python).parse(files)
        self.assertEqual(parsed, (yield self.expected(files)))
        self.assertEqual(self.fallbacks(), [])


class DeathTests(ParserTestCase):
    @inlineCallbacks
    def test_a_child_that_cannot_be_started_leaves_the_fallback(self) -> Any:
        """No file descriptors or processes left: the batch is parsed here, and a later
        parse tries to start a child again."""
        attempts: list[str] = []

        class Exhausted:
            def __getattr__(self, name: str) -> Any:
                return getattr(reactor, name)

            def spawnProcess(self, *args: Any, **kwargs: Any) -> None:
                attempts.append(args[1])
                raise OSError(24, "Too many open files")

        parser = Calling(Exhausted(), self.thread_parser())
        self.addCleanup(parser.stop)
        files = self.samples()
        parsed = yield parser.parse(files)
        self.assertEqual(parsed, (yield self.expected(files)))
        self.assertEqual(len(attempts), 1)
        self.assertTrue(any("could not start" in text for text in self.messages()))
        again = yield parser.parse(files[:1])
        self.assertEqual(again, (yield self.expected(files[:1])))
        self.assertEqual(len(attempts), 2)

    @inlineCallbacks
    def test_killed_with_a_batch_outstanding(self) -> Any:
        files = self.samples()
        parser = self.process_parser()
        pid = child_pid(parser)
        assert pid is not None
        asked = parser.parse(files)
        os.kill(pid, 9)
        parsed = yield asked
        self.assertEqual(parsed, (yield self.expected(files)))
        self.assertEqual(len(self.fallbacks()), 1)
        self.assertIn("ended before answering", self.fallbacks()[0])
        self.assertEqual(len(self.ends()), 1)
        self.assertFalse(alive(pid))

        again = yield parser.parse(files[:2])
        self.assertEqual(again, (yield self.expected(files[:2])))
        new_pid = child_pid(parser)
        self.assertNotIn(new_pid, (None, pid))
        self.assertEqual(worker_pids(os.getpid()), {new_pid})
        self.assertEqual(len(self.fallbacks()), 1, "the new child answered")

    @inlineCallbacks
    def test_killed_between_batches(self) -> Any:
        files = self.samples()
        parser = self.process_parser()
        first = yield parser.parse(files[:1])
        self.assertEqual(first, (yield self.expected(files[:1])))
        pid = child_pid(parser)
        assert pid is not None
        os.kill(pid, 9)
        yield until(lambda: len(self.ends()) == 1, "the death noticed")
        self.assertIsNone(child_pid(parser))
        parsed = yield parser.parse(files)
        self.assertEqual(parsed, (yield self.expected(files)))
        self.assertNotIn(child_pid(parser), (None, pid))
        self.assertEqual(self.fallbacks(), [], "a new child answered")

    @inlineCallbacks
    def test_killed_just_before_a_batch(self) -> Any:
        """Asked before the death is noticed: the fallback or a new child answers."""
        files = self.samples()
        parser = self.process_parser()
        pid = child_pid(parser)
        assert pid is not None
        os.kill(pid, 9)
        parsed = yield parser.parse(files)
        self.assertEqual(parsed, (yield self.expected(files)))
        later = yield parser.parse(files[:1])
        self.assertEqual(later, (yield self.expected(files[:1])))
        self.assertNotIn(child_pid(parser), (None, pid))

    @inlineCallbacks
    def test_three_deaths_within_the_window_give_up(self) -> Any:
        files = self.samples()
        parser = self.process_parser()
        for death in range(parser_module.RESTARTS):
            yield parser.parse(files[:1])
            pid = child_pid(parser)
            assert pid is not None, f"no child before death {death + 1}"
            os.kill(pid, 9)
            yield until(self.ended(death + 1), f"death {death + 1} noticed")
        for _ in range(3):
            parsed = yield parser.parse(files)
            self.assertEqual(parsed, (yield self.expected(files)))
        self.assertIsNone(child_pid(parser))
        self.assertEqual(worker_pids(os.getpid()), set())
        errors = self.messages(LogLevel.error)
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("died 3 times", errors[0])
        self.assertEqual(len(self.ends()), parser_module.RESTARTS)

    @inlineCallbacks
    def test_deaths_further_apart_than_the_window_restart(self) -> Any:
        self.patch(parser_module, "RESTART_WINDOW", 0.0)
        files = self.samples()
        parser = self.process_parser()
        seen = set()
        for death in range(parser_module.RESTARTS + 1):
            parsed = yield parser.parse(files[:1])
            self.assertEqual(parsed, (yield self.expected(files[:1])))
            pid = child_pid(parser)
            assert pid is not None, f"no child after {death} deaths"
            seen.add(pid)
            os.kill(pid, 9)
            yield until(self.ended(death + 1), f"death {death + 1} noticed")
        self.assertEqual(len(seen), parser_module.RESTARTS + 1)
        self.assertEqual((self.messages(LogLevel.error), self.fallbacks()), ([], []))


class NonsenseTests(ParserTestCase):
    @inlineCallbacks
    def answered_by_the_fallback(self, reply: str) -> Any:
        """A child printing C{reply} for every request: fallback answers, child stopped."""
        python = self.script(f"for line in sys.stdin:\n    print({reply!r}, flush=True)\n")
        files = self.samples()
        parser = self.process_parser(python)
        pid = child_pid(parser)
        assert pid is not None
        parsed = yield parser.parse(files)
        self.assertEqual(parsed, (yield self.expected(files)))
        self.assertEqual(len(self.fallbacks()), 1)
        self.assertIn("unreadable answer", self.fallbacks()[0])
        yield until(lambda: not alive(pid), "the child stopped")
        yield until(lambda: len(self.ends()) == 1, "its end noticed")

    def test_not_json(self) -> Any:
        return self.answered_by_the_fallback("this is not JSON")

    def test_not_a_list(self) -> Any:
        return self.answered_by_the_fallback('{"answer": 42}')

    def test_wrong_length(self) -> Any:
        return self.answered_by_the_fallback("[null]")

    def test_entry_of_the_wrong_shape(self) -> Any:
        return self.answered_by_the_fallback("[[1, 2]" + ", null" * (len(SAMPLES) - 1) + "]")

    def test_facts_not_an_object(self) -> Any:
        return self.answered_by_the_fallback(
            '[[1, 2, "facts"]' + ", null" * (len(SAMPLES) - 1) + "]")

    def test_size_not_a_number(self) -> Any:
        return self.answered_by_the_fallback(
            '[["big", 2, {}]' + ", null" * (len(SAMPLES) - 1) + "]")

    @inlineCallbacks
    def test_answer_nobody_asked_for(self) -> Any:
        python = self.script('print("[]", flush=True)\nsys.stdin.read()\n')
        parser = self.process_parser(python)
        pid = child_pid(parser)
        assert pid is not None
        yield until(lambda: not alive(pid), "the child stopped")
        self.assertTrue(any("answered what nobody asked" in text for text in self.messages()))
        files = self.samples()
        parsed = yield parser.parse(files)
        self.assertEqual(parsed, (yield self.expected(files)))


class SilenceTests(ParserTestCase):
    @inlineCallbacks
    def test_no_answer_within_the_timeout(self) -> Any:
        self.patch(parser_module, "REQUEST_TIMEOUT", 0.5)
        python = self.script("for line in sys.stdin:\n    pass\n")
        files = self.samples()
        parser = self.process_parser(python)
        pid = child_pid(parser)
        assert pid is not None
        started = time.monotonic()
        parsed = yield parser.parse(files)
        took = time.monotonic() - started
        self.assertEqual(parsed, (yield self.expected(files)))
        self.assertGreaterEqual(took, 0.5)
        self.assertLess(took, 3.0)
        self.assertTrue(any("no answer within" in text for text in self.messages()))
        self.assertEqual(len(self.fallbacks()), 1)
        yield until(lambda: not alive(pid), "the silent child killed")


class StopTests(ParserTestCase):
    @inlineCallbacks
    def test_stop_answers_pending_then_ends_the_child(self) -> Any:
        files = self.samples()
        parser = self.process_parser()
        pid = child_pid(parser)
        assert pid is not None
        asked = [parser.parse(files[:3]), parser.parse(files[3:])]
        yield parser.stop()
        answers = yield gatherResults(asked)
        self.assertEqual(answers, [(yield self.expected(files[:3])),
                                   (yield self.expected(files[3:]))])
        self.assertEqual(self.fallbacks(), [], "the child answered before it ended")
        yield until(lambda: not alive(pid), "the child gone")
        self.assertEqual(worker_pids(os.getpid()), set())
        self.assertEqual(self.ends(), [], "a stop is no death")

        yield parser.stop()
        parsed = yield parser.parse(files)
        self.assertEqual(parsed, (yield self.expected(files)))
        self.assertEqual(worker_pids(os.getpid()), set())
        self.assertIsNone(child_pid(parser))

    @inlineCallbacks
    def test_stop_twice_at_once(self) -> Any:
        parser = self.process_parser()
        pid = child_pid(parser)
        assert pid is not None
        first, second = parser.stop(), parser.stop()
        yield first
        yield second
        yield until(lambda: not alive(pid), "the child gone")
        self.assertEqual(self.messages(LogLevel.error), [])

    @inlineCallbacks
    def test_stop_kills_a_child_that_does_not_exit(self) -> Any:
        """
        A child that neither answers nor exits at end of input is killed after
        C{STOP_TIMEOUT}; its pending batch is parsed by the fallback, and once stop()
        fired no parse thread is left running.
        """
        self.patch(parser_module, "STOP_TIMEOUT", 0.5)
        python = self.script("import time\nsys.stdin.read()\ntime.sleep(60)\n")
        files = self.samples()
        parser = self.process_parser(python)
        pid = child_pid(parser)
        assert pid is not None
        asked = parser.parse(files)
        started = time.monotonic()
        yield parser.stop()
        self.assertLess(time.monotonic() - started, 3.0)
        self.assertFalse(alive(pid))
        parsed = yield asked
        yield until(lambda: not parse_threads(), "no parse thread left after stop()")
        self.assertEqual(parsed, (yield self.expected(files)))


class StderrTests(ParserTestCase):
    @inlineCallbacks
    def test_stderr_lines_are_warnings(self) -> Any:
        python = self.script(
            "sys.stderr.write('first complaint\\n\\n  second complaint  \\n')\n"
            "sys.stderr.flush()\n"
            "from mailsink.index.parse_worker import main\nmain()\n")
        files = self.samples()
        parser = self.process_parser(python)
        parsed = yield parser.parse(files)
        self.assertEqual(parsed, (yield self.expected(files)))
        yield until(lambda: len(self.messages(LogLevel.warn)) >= 2, "two warnings")
        self.assertEqual(self.messages(LogLevel.warn),
                         ["index parse worker: first complaint",
                          "index parse worker:   second complaint"])

    @inlineCallbacks
    def test_a_line_written_in_two_pieces_is_one_warning(self) -> Any:
        """
        The first piece is on the pipe before the first answer, the second comes with the
        second answer: two reads, one line (as a traceback's last line is written:
        C{RuntimeError}, then C{: message}).
        """
        python = self.script(
            "import json\nfrom mailsink.index.parse_worker import answer\n"
            "for piece in ('first half', ' second half\\n'):\n"
            "    paths = json.loads(sys.stdin.readline())\n"
            "    sys.stderr.write(piece)\n"
            "    sys.stderr.flush()\n"
            "    print(json.dumps(answer(paths)), flush=True)\n"
            "sys.stdin.read()\n")
        files = self.samples()
        parser = self.process_parser(python)
        for batch in (files[:1], files[1:]):
            self.assertEqual((yield parser.parse(batch)), (yield self.expected(batch)))
        yield until(lambda: "second half" in " ".join(self.messages()), "the second piece")
        self.assertEqual(self.messages(), ["index parse worker: first half second half"])

    @inlineCallbacks
    def test_a_crash_is_logged_and_the_batch_answered(self) -> Any:
        python = self.script("sys.stdin.readline()\nraise RuntimeError('worker broke')\n")
        files = self.samples()
        parsed = yield self.process_parser(python).parse(files)
        self.assertEqual(parsed, (yield self.expected(files)))
        yield until(lambda: any("worker broke" in text for text in self.messages(LogLevel.warn)),
                    "the traceback logged")
        self.assertEqual(len(self.fallbacks()), 1)
