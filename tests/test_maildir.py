"""The Maildir store: names, durability steps, batching, backpressure, clean-up."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase

from mailsink.store import maildir as maildir_module
from mailsink.store.maildir import FLUSH_THRESHOLD, PAUSE_THRESHOLD, Maildir, StoreError
from mailsink.store.recipient_delivery import copy_name


class RecordingProducer:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")


class SynchronousMaildirTests(TestCase):
    def setUp(self) -> None:
        self.folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.folder)
        self.maildir = Maildir(self.folder, maybeDeferred)
        self.maildir.create()

    def test_creates_standard_layout_with_tight_modes(self) -> None:
        for sub in ("cur", "new", "tmp"):
            mode = os.stat(os.path.join(self.folder, sub)).st_mode & 0o777
            self.assertEqual(mode, 0o700)

    def test_unique_names_follow_the_maildir_spec(self) -> None:
        names = {self.maildir.unique_name() for _ in range(1000)}
        self.assertEqual(len(names), 1000)
        for name in list(names)[:5]:
            self.assertRegex(name, rf"^\d+\.M\d+P{os.getpid()}Q\d+\..+$")
            self.assertNotIn("/", name)
            self.assertNotIn(":", name)

    def test_message_lands_in_new_with_mode_0600(self) -> None:
        message = self.maildir.new_message()
        message.write(b"Subject: x\n\nbody\n")
        name = self.successResultOf(message.finish())
        path = os.path.join(self.folder, "new", name)
        with open(path, "rb") as stream:
            self.assertEqual(stream.read(), b"Subject: x\n\nbody\n")
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        self.assertEqual(os.listdir(os.path.join(self.folder, "tmp")), [])

    def test_durability_steps_in_order(self) -> None:
        """fsync the file, rename into new/, fsync new/: only then report success."""
        steps: list[str] = []
        real_fsync, real_rename = os.fsync, os.rename

        def fsync(fd: int) -> None:
            kind = "dir" if os.path.isdir(os.readlink(f"/proc/self/fd/{fd}")) else "file"
            steps.append(f"fsync {kind}")
            real_fsync(fd)

        def rename(source: str, target: str) -> None:
            steps.append("rename " + os.path.basename(os.path.dirname(target)))
            real_rename(source, target)

        self.patch(maildir_module.os, "fsync", fsync)
        self.patch(maildir_module.os, "rename", rename)
        message = self.maildir.new_message()
        message.write(b"x\n")
        self.successResultOf(message.finish())
        self.assertEqual(steps, ["fsync file", "rename new", "fsync dir"])

    def test_big_message_is_written_in_batches(self) -> None:
        writes: list[int] = []
        real = maildir_module._write_all

        def counting(fd: int, chunks: list[bytes]) -> None:
            writes.append(sum(map(len, chunks)))
            real(fd, chunks)

        self.patch(maildir_module, "_write_all", counting)
        message = self.maildir.new_message()
        chunk = b"z" * 65536
        for _ in range(10):
            message.write(chunk)
        self.assertEqual(len(os.listdir(os.path.join(self.folder, "tmp"))), 1)
        self.successResultOf(message.finish())
        self.assertEqual(sum(writes), 10 * 65536)
        self.assertGreater(len(writes), 1)
        self.assertTrue(all(size <= FLUSH_THRESHOLD + 65536 for size in writes))

    def test_abort_removes_the_tmp_file(self) -> None:
        message = self.maildir.new_message()
        message.write(b"q" * (FLUSH_THRESHOLD + 1))
        self.assertEqual(len(os.listdir(os.path.join(self.folder, "tmp"))), 1)
        message.abort()
        self.assertEqual(os.listdir(os.path.join(self.folder, "tmp")), [])
        self.assertEqual(os.listdir(os.path.join(self.folder, "new")), [])

    def test_failed_directory_sync_removes_the_renamed_file(self) -> None:
        def broken_sync() -> None:
            raise OSError(5, "Input/output error")

        self.patch(self.maildir, "fsync_new", broken_sync)
        message = self.maildir.new_message()
        message.write(b"x\n")
        self.failureResultOf(message.finish(), StoreError)
        self.assertEqual(os.listdir(os.path.join(self.folder, "new")), [])
        self.assertEqual(os.listdir(os.path.join(self.folder, "tmp")), [])


class BackpressureTests(TestCase):
    def test_producer_paused_while_disk_is_behind(self) -> None:
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder)
        held: list[tuple[Any, Deferred[Any]]] = []

        def hold(work: Any) -> Deferred[Any]:
            waiting: Deferred[Any] = Deferred()
            held.append((work, waiting))
            return waiting

        maildir = Maildir(folder, hold)
        maildir.create()
        producer = RecordingProducer()
        message = maildir.new_message(producer)
        chunk = b"p" * 65536
        while not producer.calls:
            message.write(chunk)
        self.assertEqual(producer.calls, ["pause"])
        self.assertGreaterEqual(message.size, PAUSE_THRESHOLD)
        while held:
            work, waiting = held.pop(0)
            maybeDeferred(work).chainDeferred(waiting)
        self.assertEqual(producer.calls, ["pause", "resume"])
        message.abort()
        while held:
            work, waiting = held.pop(0)
            maybeDeferred(work).chainDeferred(waiting)


class StaleTmpTests(TestCase):
    def setUp(self) -> None:
        self.folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.folder)
        self.maildir = Maildir(self.folder, maybeDeferred)
        self.maildir.create()
        self.tmp = os.path.join(self.folder, "tmp")

    def plant(self, name: str, age: float = 0) -> None:
        path = os.path.join(self.tmp, name)
        with open(path, "w") as stream:
            stream.write("partial")
        then = time.time() - age
        os.utime(path, (then, then))

    def test_removes_files_of_dead_processes_of_this_host_and_old_files(self) -> None:
        host = maildir_module.maildir_hostname()
        dead = self._dead_pid()
        self.plant(f"1.M1P{dead}Q1.{host}")
        self.plant(f"1.M1P{os.getpid()}Q1.{host}")
        self.plant(f"1.M1P1Q1.{host}")  # pid 1 is alive: another process's delivery
        self.plant(f"1.M1P{dead}Q1.otherhost")  # another host's: not ours to judge
        self.plant("strange-name-old", age=37 * 3600)
        self.plant("strange-name-fresh", age=60)
        removed = self.maildir.remove_stale_tmp()
        self.assertEqual(sorted(os.listdir(self.tmp)), sorted(
            [f"1.M1P1Q1.{host}", f"1.M1P{dead}Q1.otherhost", "strange-name-fresh"]))
        self.assertEqual(len(removed), 3)

    def _dead_pid(self) -> int:
        pid = 4_000_000
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return pid
            pid -= 1


class ThreadedGroupCommitTests(TestCase):
    """Real threads: concurrent messages all land, sharing directory fsyncs."""

    @inlineCallbacks
    def test_concurrent_messages_share_directory_syncs(self) -> Any:
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder)
        pool = ThreadPool(minthreads=0, maxthreads=16)
        pool.start()
        self.addCleanup(pool.stop)
        maildir = Maildir(folder, lambda work: deferToThreadPool(reactor, pool, work))
        maildir.create()
        directory_syncs = []
        real_fsync = os.fsync
        lock = threading.Lock()

        def fsync(fd: int) -> None:
            if os.path.isdir(os.readlink(f"/proc/self/fd/{fd}")):
                with lock:
                    directory_syncs.append(fd)
                time.sleep(0.01)  # a slow disk makes batching visible
            real_fsync(fd)

        self.patch(maildir_module.os, "fsync", fsync)
        pending = []
        for number in range(60):
            message = maildir.new_message()
            message.write(b"message %d\n" % number)
            pending.append(message.finish())
        names = []
        for waiting in pending:
            names.append((yield waiting))
        self.assertEqual(sorted(names), sorted(os.listdir(os.path.join(folder, "new"))))
        self.assertEqual(len(names), 60)
        self.assertLess(len(directory_syncs), 60)
        for name in names:
            with open(os.path.join(folder, "new", name), "rb") as stream:
                self.assertRegex(stream.read().decode(), re.compile(r"^message \d+\n$"))


class GroupCommitOrderTests(TestCase):
    """Held worker calls, run by hand: which fsync of C{new/} answers which message."""

    def setUp(self) -> None:
        self.folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.folder)
        self.held: list[tuple[Any, Deferred[Any]]] = []

        def hold(work: Any) -> Deferred[Any]:
            waiting: Deferred[Any] = Deferred()
            self.held.append((work, waiting))
            return waiting

        self.maildir = Maildir(self.folder, hold)
        self.maildir.create()
        self.syncs = 0
        real = self.maildir.fsync_new

        def counted() -> None:
            self.syncs += 1
            real()

        self.patch(self.maildir, "fsync_new", counted)

    def run_held(self) -> None:
        """Run the calls held so far (those they cause are held again)."""
        batch, self.held = self.held, []
        for work, waiting in batch:
            waiting.callback(work())

    def finished(self, text: bytes) -> Deferred[str]:
        message = self.maildir.new_message()
        message.write(text)
        return message.finish()

    def test_messages_waiting_while_an_fsync_runs_share_the_next(self) -> None:
        done = [self.finished(b"%d\n" % n) for n in range(4)]
        self.run_held()  # four commits: the first starts an fsync, three wait for the next
        self.assertEqual(len(self.held), 1)
        self.run_held()
        self.successResultOf(done[0])
        self.assertFalse(any(d.called for d in done[1:]))
        self.run_held()
        self.assertEqual(self.syncs, 2)
        self.assertEqual(len({self.successResultOf(d) for d in done}), 4)

    def test_a_rename_during_an_fsync_waits_for_the_next_one(self) -> None:
        first = self.finished(b"first\n")
        self.run_held()  # commit; the fsync is held
        (fsync, running), = self.held
        self.held = []
        second = self.finished(b"second\n")
        self.run_held()  # second's commit: its rename came after that fsync began
        self.assertEqual(self.held, [])
        running.callback(fsync())
        self.successResultOf(first)
        self.assertNoResult(second)
        self.assertEqual(len(self.held), 1)  # the next fsync, for the second only
        self.run_held()
        self.successResultOf(second)
        self.assertEqual(self.syncs, 2)

    def test_a_failed_fsync_fails_and_removes_everything_it_served(self) -> None:
        def broken() -> None:
            raise OSError(5, "Input/output error")

        self.patch(self.maildir, "fsync_new", broken)
        done = [self.finished(b"%d\n" % n) for n in range(2)]
        while self.held:
            self.run_held_tolerant()
        for waiting in done:
            self.failureResultOf(waiting, StoreError)
        self.assertEqual(os.listdir(os.path.join(self.folder, "new")), [])
        self.assertEqual(os.listdir(os.path.join(self.folder, "tmp")), [])

    def run_held_tolerant(self) -> None:
        batch, self.held = self.held, []
        for work, waiting in batch:
            maybeDeferred(work).chainDeferred(waiting)


class RefusedFsyncTests(TestCase):
    def test_an_fsync_the_pool_cannot_take_fails_that_delivery_only(self) -> None:
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder)
        calls: list[Any] = []

        def pool(work: Any) -> Deferred[Any]:
            calls.append(work)
            if len(calls) == 2:  # the first message's fsync of new/
                raise RuntimeError("can't start new thread")
            return maybeDeferred(work)

        maildir = Maildir(folder, pool)
        maildir.create()
        first = maildir.new_message()
        first.write(b"first\n")
        self.failureResultOf(first.finish(), StoreError)
        self.assertEqual(os.listdir(os.path.join(folder, "new")), [])
        second = maildir.new_message()
        second.write(b"second\n")
        name = self.successResultOf(second.finish())
        self.assertEqual(os.listdir(os.path.join(folder, "new")), [name])


class AbortTwiceTests(TestCase):
    def test_abort_is_idempotent_and_closes_once(self) -> None:
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder)
        maildir = Maildir(folder, maybeDeferred)
        maildir.create()
        closed: list[int] = []
        real_close = os.close

        def close(fd: int) -> None:
            closed.append(fd)
            real_close(fd)

        self.patch(maildir_module.os, "close", close)
        message = maildir.new_message()
        message.write(b"a" * (FLUSH_THRESHOLD + 1))
        message.abort()
        message.abort()
        self.assertEqual(len(closed), 1)
        self.assertEqual(os.listdir(os.path.join(folder, "tmp")), [])


class DeliveredHookTests(TestCase):
    def test_told_after_the_message_is_in_new_and_not_on_failure(self) -> None:
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder)
        told: list[tuple[str, bool]] = []
        maildir = Maildir(folder, maybeDeferred,
                          lambda path: told.append((path, os.path.exists(path))))
        maildir.create()
        message = maildir.new_message()
        message.write(b"x\n")
        name = self.successResultOf(message.finish())
        self.assertEqual(told, [(os.path.join(folder, "new", name), True)])
        self.patch(maildir_module, "_write_all", _raise_enospc)
        failing = maildir.new_message()
        failing.write(b"y\n")
        self.failureResultOf(failing.finish(), StoreError)
        self.assertEqual(len(told), 1)


def _raise_enospc(fd: int, chunks: list[bytes]) -> None:
    raise OSError(28, "No space left on device")


class DeliveredHereTests(TestCase):
    """Which file names in new/ are this process's own deliveries (the index waits for those)."""

    def test_own_names_and_copies(self) -> None:
        maildir = Maildir(tempfile.mkdtemp(), maybeDeferred)
        self.addCleanup(shutil.rmtree, maildir.path)
        name = maildir.unique_name()
        self.assertTrue(maildir_module.delivered_here(name))
        self.assertTrue(maildir_module.delivered_here(copy_name(name, "alice")))

    def test_other_processes_hosts_and_flagged_files(self) -> None:
        maildir = Maildir(tempfile.mkdtemp(), maybeDeferred)
        self.addCleanup(shutil.rmtree, maildir.path)
        name = maildir.unique_name()
        seconds, left, host = name.split(".", 2)
        other_pid = left.replace(f"P{os.getpid()}Q", f"P{os.getpid() + 1}Q")
        for other in (f"{seconds}.{other_pid}.{host}", f"{seconds}.{left}.elsewhere",
                      name + ":2,S", "1700000000.123_4.mutt"):
            self.assertFalse(maildir_module.delivered_here(other), other)
