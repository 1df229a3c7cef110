"""The cred checkers: password file (reload, cache, threads, logs), environment, any, any-of."""

from __future__ import annotations

import hmac
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from typing import Any

import bcrypt
from twisted.cred.checkers import AllowAnonymousAccess, ICredentialsChecker
from twisted.cred.credentials import (
    CramMD5Credentials,
    IUsernameDigestHash,
    IUsernameHashedPassword,
    IUsernamePassword,
    UsernamePassword,
)
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase
from zope.interface import Interface, implementer

from mailsink.auth.accept_any import AcceptAnyChecker
from mailsink.auth.any_of import AnyOfChecker
from mailsink.auth.environment import EnvironmentChecker
from mailsink.auth.password_file import AvatarId, PasswordFileChecker
from mailsink.auth.passwords import hash_bcrypt
from mailsink.config import ConfigError


def cram(user: bytes, password: bytes) -> CramMD5Credentials:
    """CRAM-MD5 credentials as a client that knows C{password} would answer."""
    credentials = CramMD5Credentials(host=b"x")
    challenge = credentials.getChallenge()
    digest = hmac.new(password, challenge, "md5").hexdigest()
    credentials.setResponse(user + b" " + digest.encode())
    return credentials


class LogCapture:
    """Every log event published while a test runs."""

    def __init__(self, case: TestCase) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        case.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def texts(self) -> list[str]:
        return [formatEvent(event) for event in self.events]


BCRYPT_PW = hash_bcrypt(b"pw", rounds=4)


class FileCase(TestCase):
    def setUp(self) -> None:
        self.folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.folder)
        self.path = os.path.join(self.folder, "passwords")
        self.log = LogCapture(self)

    def write(self, text: str, bump: int = 0) -> None:
        """Rewrite the file; C{bump} moves its mtime forward so a change is always seen."""
        with open(self.path, "w", encoding="utf-8") as f:
            f.write(text)
        if bump:
            stat = os.stat(self.path)
            os.utime(self.path, ns=(stat.st_atime_ns, stat.st_mtime_ns + bump * 10**9))

    def checker(self, run_blocking: Callable[..., Any] = maybeDeferred) -> PasswordFileChecker:
        return PasswordFileChecker(self.path, run_blocking)

    def accepts(self, checker: ICredentialsChecker, credentials: Any) -> bytes:
        result = self.successResultOf(checker.requestAvatarId(credentials))
        assert isinstance(result, bytes)
        return result

    def refuses(self, checker: ICredentialsChecker, credentials: Any) -> None:
        self.failureResultOf(checker.requestAvatarId(credentials), UnauthorizedLogin)


class PasswordFileCheckerTests(FileCase):
    def test_each_scheme_right_and_wrong(self) -> None:
        self.write(f"b:{BCRYPT_PW}\ns:{{SHA}}GpHWL3ymc5liWkNopqtdSjuqYHM=\n"
                   "m:$apr1$guGkg1uW$JWPLZ5b5rPAE0/wWY1bRH1\np:{PLAIN}pw\n")
        checker = self.checker()
        for user, password in ((b"b", b"pw"), (b"s", b"pw"), (b"m", b"p"), (b"p", b"pw")):
            self.assertEqual(self.accepts(checker, UsernamePassword(user, password)), user)
            self.refuses(checker, UsernamePassword(user, password + b"!"))
        self.refuses(checker, UsernamePassword(b"nobody", b"pw"))
        self.refuses(checker, UsernamePassword(b"", b"pw"))
        self.refuses(checker, UsernamePassword(b"\xff", b"pw"))

    def test_utf8_user_is_the_avatar_id(self) -> None:
        self.write("jürgen:{PLAIN}pässwörd\n")
        avatar = self.accepts(self.checker(), UsernamePassword("jürgen".encode(),
                                                               "pässwörd".encode()))
        self.assertEqual(avatar, "jürgen".encode())

    def test_cram_md5_only_for_plain_entries(self) -> None:
        self.write(f"p:{{PLAIN}}pw\nb:{BCRYPT_PW}\n")
        checker = self.checker()
        self.assertEqual(self.accepts(checker, cram(b"p", b"pw")), b"p")
        self.refuses(checker, cram(b"p", b"wrong"))
        self.refuses(checker, cram(b"b", b"pw"))
        self.refuses(checker, cram(b"nobody", b"pw"))
        self.refuses(checker, CramMD5Credentials(host=b"x"))

    def test_missing_file_is_a_config_error(self) -> None:
        error = self.assertRaises(ConfigError, self.checker)
        self.assertEqual((error.section, error.key), ("auth", "password_file"))
        self.assertIn(self.path, str(error))
        self.assertIn("No such file", str(error))

    def test_directory_is_a_config_error(self) -> None:
        error = self.assertRaises(ConfigError, PasswordFileChecker, self.folder, maybeDeferred)
        self.assertIn(self.folder, str(error))

    def test_unreadable_file_is_a_config_error(self) -> None:
        if os.geteuid() == 0:
            self.skipTest("root reads any file")
        self.write("a:{PLAIN}x\n")
        os.chmod(self.path, 0)
        self.assertIn("Permission denied", str(self.assertRaises(ConfigError, self.checker)))

    def test_path_through_a_file_is_a_config_error(self) -> None:
        self.write("a:{PLAIN}x\n")
        error = self.assertRaises(ConfigError, PasswordFileChecker,
                                  os.path.join(self.path, "child"), maybeDeferred)
        self.assertIn("Not a directory", str(error))

    def test_file_turned_unreadable_keeps_last_table(self) -> None:
        self.write("a:{PLAIN}pw\n")
        checker = self.checker()
        os.unlink(self.path)
        os.mkdir(self.path)
        self.accepts(checker, UsernamePassword(b"a", b"pw"))
        self.accepts(checker, UsernamePassword(b"a", b"pw"))
        warnings = [t for t in self.log.texts() if "Is a directory" in t]
        self.assertEqual(len(warnings), 1, self.log.texts())

    def test_change_applies_without_restart(self) -> None:
        self.write("a:{PLAIN}old\n")
        checker = self.checker()
        self.accepts(checker, UsernamePassword(b"a", b"old"))
        self.write("a:{PLAIN}new\nb:{PLAIN}added\n", bump=1)
        self.accepts(checker, UsernamePassword(b"a", b"new"))
        self.accepts(checker, UsernamePassword(b"b", b"added"))
        self.refuses(checker, UsernamePassword(b"a", b"old"))

    def test_same_size_rewrite_is_seen(self) -> None:
        self.write("a:{PLAIN}aaa\n")
        checker = self.checker()
        self.write("a:{PLAIN}bbb\n", bump=1)
        self.accepts(checker, UsernamePassword(b"a", b"bbb"))

    def test_vanished_file_keeps_last_table_and_warns_once(self) -> None:
        self.write("a:{PLAIN}pw\n")
        checker = self.checker()
        os.unlink(self.path)
        for _ in range(3):
            self.accepts(checker, UsernamePassword(b"a", b"pw"))
        warnings = [t for t in self.log.texts() if "keeping the 1 users" in t]
        self.assertEqual(len(warnings), 1, self.log.texts())
        self.write("a:{PLAIN}back\n", bump=1)
        self.accepts(checker, UsernamePassword(b"a", b"back"))
        os.unlink(self.path)
        self.accepts(checker, UsernamePassword(b"a", b"back"))
        self.assertEqual(len([t for t in self.log.texts() if "keeping the" in t]), 2)

    def test_malformed_line_logged_with_number_others_still_work(self) -> None:
        self.write("a:{PLAIN}pw\nb:hunter2-unknown\n# c\nc:{PLAIN}pw2\n")
        checker = self.checker()
        self.assertIn(f"{self.path} line 2: unknown password hash format (use bcrypt, {{SHA}},"
                      " $apr1$ or {PLAIN}); the line is skipped", self.log.texts())
        self.accepts(checker, UsernamePassword(b"a", b"pw"))
        self.accepts(checker, UsernamePassword(b"c", b"pw2"))
        self.refuses(checker, UsernamePassword(b"b", b"hunter2-unknown"))
        event = next(e for e in self.log.events if e.get("line") == 2)
        self.assertEqual(event["path"], self.path)

    def test_problems_are_logged_again_after_a_change(self) -> None:
        self.write("a:{PLAIN}pw\n")
        checker = self.checker()
        self.write("a:{PLAIN}pw\nbroken\n", bump=1)
        self.accepts(checker, UsernamePassword(b"a", b"pw"))
        self.assertEqual(len([t for t in self.log.texts() if " line 2: " in t]), 1)
        self.accepts(checker, UsernamePassword(b"a", b"pw"))
        self.assertEqual(len([t for t in self.log.texts() if " line 2: " in t]), 1)

    def test_no_password_or_hash_in_logs(self) -> None:
        self.write(f"a:{BCRYPT_PW}\nhunter2\nb:hunter3\nc:{{PLAIN}}hunter4\n"
                   "c:{PLAIN}hunter5\nd:{SHA}hunter6\n")
        checker = self.checker()
        self.refuses(checker, UsernamePassword(b"a", b"hunter7"))
        self.accepts(checker, UsernamePassword(b"a", b"pw"))
        self.refuses(checker, cram(b"c", b"hunter8"))
        self.write("e:hunter9\n", bump=1)
        self.refuses(checker, UsernamePassword(b"e", b"hunter9"))
        os.unlink(self.path)
        self.refuses(checker, UsernamePassword(b"e", b"hunter9"))
        logged = "\n".join(self.log.texts() + [repr(e) for e in self.log.events])
        self.assertIn("line 2", logged)
        for secret in ("hunter", BCRYPT_PW, BCRYPT_PW[7:]):
            self.assertNotIn(secret, logged)

    def test_offers_plaintext_from_the_loaded_table_without_disk(self) -> None:
        self.write(f"b:{BCRYPT_PW}\n")
        checker = self.checker()
        self.assertFalse(checker.offers_plaintext())
        self.write(f"b:{BCRYPT_PW}\np:{{PLAIN}}x\n", bump=1)
        self.assertFalse(checker.offers_plaintext())  # not re-read until a check
        self.refuses(checker, UsernamePassword(b"p", b"y"))
        self.assertTrue(checker.offers_plaintext())
        os.unlink(self.path)
        self.assertTrue(checker.offers_plaintext())


class PasswordFileCacheTests(FileCase):
    def setUp(self) -> None:
        super().setUp()
        self.calls: list[threading.Thread] = []
        real = bcrypt.checkpw

        def counting(password: bytes, hashed: bytes) -> bool:
            self.calls.append(threading.current_thread())
            return real(password, hashed)

        self.patch(bcrypt, "checkpw", counting)

    def test_thousand_logins_pay_bcrypt_once(self) -> None:
        self.write(f"a:{BCRYPT_PW}\n")
        checker = self.checker()
        for _ in range(1000):
            self.accepts(checker, UsernamePassword(b"a", b"pw"))
        self.assertEqual(len(self.calls), 1)

    def test_file_change_clears_the_cache(self) -> None:
        self.write(f"a:{BCRYPT_PW}\n")
        checker = self.checker()
        self.accepts(checker, UsernamePassword(b"a", b"pw"))
        self.write(f"a:{hash_bcrypt(b'new', 4)}\n", bump=1)
        self.refuses(checker, UsernamePassword(b"a", b"pw"))
        self.accepts(checker, UsernamePassword(b"a", b"new"))
        self.accepts(checker, UsernamePassword(b"a", b"new"))
        self.assertEqual(len(self.calls), 3)

    def test_removed_user_is_refused_despite_cache(self) -> None:
        self.write(f"a:{BCRYPT_PW}\nb:{{PLAIN}}x\n")
        checker = self.checker()
        self.accepts(checker, UsernamePassword(b"a", b"pw"))
        self.write("b:{PLAIN}x\n", bump=1)
        self.refuses(checker, UsernamePassword(b"a", b"pw"))

    def test_wrong_passwords_are_never_cached(self) -> None:
        self.write(f"a:{BCRYPT_PW}\n")
        checker = self.checker()
        for _ in range(3):
            self.refuses(checker, UsernamePassword(b"a", b"wrong"))
        self.assertEqual(len(self.calls), 3)
        self.accepts(checker, UsernamePassword(b"a", b"pw"))
        self.assertEqual(len(self.calls), 4)

    def test_cache_keys_user_and_password_together(self) -> None:
        self.write(f"a:{BCRYPT_PW}\nb:{BCRYPT_PW}\n")
        checker = self.checker()
        self.accepts(checker, UsernamePassword(b"a", b"pw"))
        self.accepts(checker, UsernamePassword(b"b", b"pw"))
        self.refuses(checker, UsernamePassword(b"a", b"pw2"))
        self.assertEqual(len(self.calls), 3)

    @inlineCallbacks
    def test_file_work_and_bcrypt_run_in_worker_threads(self) -> Any:
        pool = ThreadPool(minthreads=0, maxthreads=4)
        pool.start()
        self.addCleanup(pool.stop)
        self.write(f"a:{BCRYPT_PW}\n")
        checker = self.checker(lambda work: deferToThreadPool(reactor, pool, work))
        refreshes: list[threading.Thread] = []
        real_refresh = checker._refresh

        def recording_refresh() -> None:
            refreshes.append(threading.current_thread())
            real_refresh()

        checker._refresh = recording_refresh  # type: ignore[method-assign]
        self.write(f"a:{BCRYPT_PW}\nb:{hash_bcrypt(b'other', 4)}\n", bump=1)
        results = yield defer.gatherResults([
            checker.requestAvatarId(UsernamePassword(user, password))
            for user, password in [(b"a", b"pw"), (b"b", b"other")] * 10
        ])
        self.assertEqual(results, [b"a", b"b"] * 10)
        failure = yield self.assertFailure(
            checker.requestAvatarId(UsernamePassword(b"a", b"wrong")), UnauthorizedLogin)
        self.assertIsInstance(failure, UnauthorizedLogin)
        caller = threading.current_thread()
        self.assertTrue(self.calls)
        self.assertTrue(refreshes)
        self.assertNotIn(caller, self.calls + refreshes)
        self.assertNotIn(threading.main_thread(), self.calls + refreshes)


class EnvironmentCheckerTests(FileCase):
    def test_users_and_passwords(self) -> None:
        checker = EnvironmentChecker(" alice:s3cret\tbob:with:colon\n jürgen:pässwörd ")
        self.assertEqual(self.accepts(checker, UsernamePassword(b"alice", b"s3cret")), b"alice")
        self.assertEqual(self.accepts(checker, UsernamePassword(b"bob", b"with:colon")), b"bob")
        self.accepts(checker, UsernamePassword("jürgen".encode(), "pässwörd".encode()))
        self.refuses(checker, UsernamePassword(b"alice", b"s3cre"))
        self.refuses(checker, UsernamePassword(b"carol", b"s3cret"))
        self.refuses(checker, UsernamePassword(b"carol", b""))
        self.refuses(checker, UsernamePassword(b"", b""))
        self.assertTrue(checker.offers_plaintext())

    def test_cram_md5(self) -> None:
        checker = EnvironmentChecker("alice:s3cret")
        self.assertEqual(self.accepts(checker, cram(b"alice", b"s3cret")), b"alice")
        self.refuses(checker, cram(b"alice", b"wrong"))
        self.refuses(checker, cram(b"bob", b"s3cret"))

    def test_malformed_entries_name_their_number_not_their_text(self) -> None:
        cases = {
            "alice:one bobsecret2": "MAILSINK_AUTH entry 2: no ':' between user name and "
                                    "password",
            ":secret3": "MAILSINK_AUTH entry 1: empty user name",
            "alice: secret4": "MAILSINK_AUTH entry 1: empty password",
            "a:secret5 a:secret6": "MAILSINK_AUTH entry 2: user 'a' appears twice",
            "  ": "MAILSINK_AUTH is set but holds no user:password entry",
        }
        for text, message in cases.items():
            error = self.assertRaises(ConfigError, EnvironmentChecker, text)
            self.assertEqual(str(error), f"[auth]: {message}")
            self.assertEqual((error.section, error.key), ("auth", None))
            self.assertNotIn("secret", str(error))


class AcceptAnyCheckerTests(FileCase):
    def test_any_user_any_password(self) -> None:
        checker = AcceptAnyChecker()
        self.assertEqual(self.accepts(checker, UsernamePassword(b"who", b"")), b"who")
        self.assertEqual(self.accepts(checker, UsernamePassword(b"x", b"tok")), b"x")
        self.assertEqual(self.accepts(checker, cram(b"c", b"anything")), b"c")
        self.refuses(checker, UsernamePassword(b"", b"pw"))
        self.refuses(checker, CramMD5Credentials(host=b"x"))
        self.assertTrue(checker.offers_plaintext())


class IOther(Interface):
    """Credentials no mailsink checker handles."""


@implementer(ICredentialsChecker)
class Recording:
    """A checker that answers as told and records what it was asked."""

    def __init__(self, answer: bytes | Exception, interfaces: tuple[Any, ...] = (
            IUsernamePassword,), plaintext: bool = False) -> None:
        self.answer = answer
        self.credentialInterfaces = interfaces
        self.asked: list[Any] = []
        self.plaintext = plaintext

    def offers_plaintext(self) -> bool:
        return self.plaintext

    def requestAvatarId(self, credentials: Any) -> Deferred[AvatarId]:
        self.asked.append(credentials)
        if isinstance(self.answer, Exception):
            return defer.fail(self.answer)
        return defer.succeed(self.answer)


@implementer(IRealm)
class EchoRealm:
    def requestAvatar(self, avatarId: Any, mind: object, *interfaces: Any) -> Any:
        return interfaces[0], avatarId, lambda: None


class AnyOfCheckerTests(FileCase):
    def test_first_success_wins_in_order(self) -> None:
        first, second, third = (Recording(UnauthorizedLogin()), Recording(b"two"),
                                Recording(b"three"))
        checker = AnyOfChecker([first, second, third])
        credentials = UsernamePassword(b"u", b"p")
        self.assertEqual(self.accepts(checker, credentials), b"two")
        self.assertEqual((first.asked, second.asked, third.asked),
                         ([credentials], [credentials], []))

    def test_none_accepts(self) -> None:
        checker = AnyOfChecker([Recording(UnauthorizedLogin()), Recording(UnauthorizedLogin())])
        self.refuses(checker, UsernamePassword(b"u", b"p"))
        self.refuses(AnyOfChecker([]), UsernamePassword(b"u", b"p"))

    def test_only_willing_checkers_are_asked(self) -> None:
        other = Recording(b"other", (IOther,))
        password = Recording(b"password")
        checker = AnyOfChecker([other, password])
        self.assertEqual(self.accepts(checker, UsernamePassword(b"u", b"p")), b"password")
        self.assertEqual(other.asked, [])
        self.refuses(checker, cram(b"u", b"p"))
        self.assertEqual(len(password.asked), 1)

    def test_interfaces_are_the_union_without_repeats(self) -> None:
        checker = AnyOfChecker([
            Recording(b"", (IUsernamePassword, IUsernameHashedPassword)),
            Recording(b"", (IUsernameDigestHash, IUsernamePassword)),
        ])
        self.assertEqual(checker.credentialInterfaces,
                         (IUsernamePassword, IUsernameHashedPassword, IUsernameDigestHash))

    def test_other_errors_are_not_swallowed(self) -> None:
        checker = AnyOfChecker([Recording(ZeroDivisionError()), Recording(b"ok")])
        self.failureResultOf(checker.requestAvatarId(UsernamePassword(b"u", b"p")),
                             ZeroDivisionError)

    def test_offers_plaintext_if_any_does(self) -> None:
        self.assertFalse(AnyOfChecker([Recording(b"")]).offers_plaintext())
        self.assertTrue(AnyOfChecker([Recording(b""), Recording(b"", plaintext=True)])
                        .offers_plaintext())
        self.assertFalse(AnyOfChecker([AllowAnonymousAccess()]).offers_plaintext())

    def test_real_checkers_behind_a_portal(self) -> None:
        self.write(f"file:{BCRYPT_PW}\n")
        checker = AnyOfChecker([self.checker(), EnvironmentChecker("env:pw2")])
        self.assertTrue(checker.offers_plaintext())
        portal = Portal(EchoRealm(), [checker])
        for user, password in ((b"file", b"pw"), (b"env", b"pw2")):
            result = self.successResultOf(
                portal.login(UsernamePassword(user, password), None, IOther))
            self.assertEqual(result[1], user)
        self.assertEqual(self.successResultOf(portal.login(cram(b"env", b"pw2"), None,
                                                           IOther))[1], b"env")
        self.failureResultOf(portal.login(UsernamePassword(b"file", b"no"), None, IOther),
                             UnauthorizedLogin)

