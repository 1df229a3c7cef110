"""
The pytest plugin and client (C{mailsink.testing}) as a user's test suite meets them:
example suites run in C{pytester} with the plugin loaded from its C{pytest11} entry point,
against a sink the plugin starts (real twistd, real smtplib) or one this test started
(C{--mailsink-url}); the client's own edges against small stand-in servers.
"""

from __future__ import annotations

import http.server
import importlib.metadata
import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon import Daemon

from mailsink.testing import MailsinkClient, MailsinkError, Sink, server
from mailsink.testing.server import SinkFailed
from mailsink.testing.sink import DEFAULT_SMTP_PORT, remote_sink

pytest_plugins = ["pytester"]

SEND = '''
import smtplib
import ssl
from email.message import EmailMessage


def mail(subject, to="alice@example.com"):
    message = EmailMessage()
    message["From"] = "Shop <app@example.com>"
    message["To"] = to
    message["Subject"] = subject
    message.set_content("Reset your password: https://shop.example/reset/abc")
    return message


def send(host, port, message):
    with smtplib.SMTP(host, port) as smtp:
        smtp.send_message(message)
'''

SUITE = SEND + '''
import json
import threading
import time


def test_every_listener(mailsink, mailsink_server):
    with open("sink.json", "w") as stream:  # for the outer test: are they closed after?
        json.dump([mailsink_server.smtp_port, mailsink_server.starttls_port,
                   mailsink_server.smtps_port, int(mailsink.web_url.rpartition(":")[2])],
                  stream)
    context = ssl.create_default_context(cafile=mailsink.cert_path)
    send(mailsink.smtp_host, mailsink.smtp_port, mail("plain"))
    with smtplib.SMTP(mailsink.smtp_host, mailsink.starttls_port) as smtp:
        smtp.starttls(context=context)
        smtp.login("anyone", "any password")
        smtp.send_message(mail("starttls"))
    with smtplib.SMTP_SSL(mailsink.smtp_host, mailsink.smtps_port, context=context) as smtp:
        smtp.send_message(mail("smtps"))
    found = mailsink.wait_for(count=3)
    assert [summary.subject for summary in found] == ["smtps", "starttls", "plain"]
    assert [str(summary.from_) for summary in found] == ["Shop <app@example.com>"] * 3
    received = mailsink.message(found[1].id).headers["Received"][0]
    assert "ESMTPSA" in received and "listener smtp:starttls" in received


def test_store_is_empty_for_each_test(mailsink):
    assert mailsink.messages() == []


def test_message(mailsink):
    message = mail("Password reset")
    message.add_alternative("<p>Reset: <img src='cid:logo'></p>", subtype="html")
    message.get_payload()[1].add_related(b"GIF89a", "image", "gif", cid="<logo>")
    message.add_attachment(b"id,name\\n1,alice\\n", maintype="text", subtype="csv",
                           filename="users.csv")
    send(mailsink.smtp_host, mailsink.smtp_port, message)
    send(mailsink.smtp_host, mailsink.smtp_port, mail("Welcome", to="bob@example.com"))
    [summary] = mailsink.wait_for("subject:reset to:alice@example.com")
    assert summary.attachments == 1
    got = mailsink.message(summary.id)
    assert got.subject == "Password reset"
    assert got.headers["Subject"] == ["Password reset"]
    assert [address.address for address in got.to] == ["alice@example.com"]
    assert "https://shop.example/reset/abc" in got.text
    assert "<img src='cid:logo'>" in got.html
    [attachment] = got.attachments
    assert (attachment.filename, attachment.content_type) == ("users.csv", "text/csv")
    assert attachment.content == b"id,name\\n1,alice\\n"
    assert [part.content for part in got.inline] == [b"GIF89a"]
    assert got.raw.startswith(b"Return-Path: <app@example.com>")
    assert b"Subject: Password reset" in got.raw
    assert mailsink.message("latest").subject == "Welcome"
    assert [s.subject for s in mailsink.search("to:bob@example.com")] == ["Welcome"]
    assert mailsink.search("subject:nothing-like-this") == []
    assert len(mailsink.messages()) == 2
    mailsink.clear()
    assert mailsink.messages() == []


def test_waits_for_mail_that_comes_later(mailsink):
    late = threading.Timer(0.5, send, (mailsink.smtp_host, mailsink.smtp_port, mail("late")))
    started = time.monotonic()
    late.start()
    try:
        [summary] = mailsink.wait_for("subject:late", timeout=30)
    finally:
        late.join()
    assert summary.subject == "late"
    assert time.monotonic() - started < 10  # on arrival, not at the timeout


def test_waits_for_a_count(mailsink):
    send(mailsink.smtp_host, mailsink.smtp_port, mail("first"))
    second = threading.Timer(0.3, send, (mailsink.smtp_host, mailsink.smtp_port,
                                         mail("second")))
    second.start()
    try:
        found = mailsink.wait_for(count=2, timeout=30)
    finally:
        second.join()
    assert [summary.subject for summary in found] == ["second", "first"]
'''

FAILING_SUITE = SEND + '''
def test_nothing_matches(mailsink):
    send(mailsink.smtp_host, mailsink.smtp_port, mail("Welcome"))
    mailsink.wait_for("subject:reset", timeout=1)


def test_too_few_match(mailsink):
    send(mailsink.smtp_host, mailsink.smtp_port, mail("reset one"))
    mailsink.wait_for("subject:reset", count=2, timeout=1)
'''

REMOTE_SUITE = SEND + '''
import os


def test_uses_the_running_sink(mailsink, mailsink_server):
    assert mailsink.web_url == os.environ["EXPECTED_URL"]
    assert (mailsink.smtp_host, mailsink.smtp_port) == ("127.0.0.1",
                                                        int(os.environ["EXPECTED_SMTP"]))
    assert mailsink.starttls_port is None and mailsink.cert_path is None
    assert mailsink.messages() == []
    send(mailsink.smtp_host, mailsink.smtp_port, mail(os.environ["SUBJECT"]))
    [summary] = mailsink.wait_for("subject:" + os.environ["SUBJECT"])
    assert mailsink.message(summary.id).text.startswith("Reset your password")
'''


def test_installed_as_a_pytest_plugin() -> None:
    """The entry point that makes installing mailsink enough (pytester relies on it too)."""
    plugins = {entry.name: entry.value
               for entry in importlib.metadata.entry_points(group="pytest11")}
    assert plugins.get("mailsink") == "mailsink.testing.plugin", (
        "mailsink's pytest11 entry point is not installed: run pip install -e . again")


def test_suite_against_a_started_sink(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_example=SUITE)
    result = pytester.runpytest()
    result.assert_outcomes(passed=5)
    # Stopped at the end of the run: nothing listens on its ports any more.
    for port in json.loads((pytester.path / "sink.json").read_text()):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_wait_for_timeout_says_what_the_store_held(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_failing=FAILING_SUITE)
    started = time.monotonic()
    result = pytester.runpytest()
    elapsed = time.monotonic() - started
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*WaitTimeout: wait_for('subject:reset', count=1) timed out after 1 s: "
        "0 of 1 matched",
        "E * the sink at http://127.0.0.1:* holds 1 message, newest first:",
        "E *   'Welcome' from Shop <app@example.com> to alice@example.com",
    ])
    result.stdout.fnmatch_lines([
        "*WaitTimeout: wait_for('subject:reset', count=2) timed out after 1 s: "
        "1 of 2 matched",
        "E *   matched: 'reset one' from Shop <app@example.com> to alice@example.com",
    ])
    assert elapsed < 30, "each wait_for gave up after its 1 s (plus one sink's start-up)"


@pytest.fixture
def running_sink(request: pytest.FixtureRequest) -> Daemon:
    """A sink started by this test, as a CI service container would be."""
    daemon = Daemon({"smtp": {"tls": "none", "auth": "none"}, "web": {}})
    request.addfinalizer(daemon.close)
    daemon.start()
    return daemon


def test_suite_against_a_running_sink(pytester: pytest.Pytester, running_sink: Daemon,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{running_sink.ports['web']}"
    smtp_port = running_sink.ports["smtp"]
    monkeypatch.setenv("EXPECTED_URL", url)
    monkeypatch.setenv("EXPECTED_SMTP", str(smtp_port))
    pytester.makepyfile(test_remote=REMOTE_SUITE)

    monkeypatch.setenv("SUBJECT", "by-option")
    result = pytester.runpytest("--mailsink-url", url + "/",
                                "--mailsink-smtp", f"127.0.0.1:{smtp_port}")
    result.assert_outcomes(passed=1)
    assert len(_stored(running_sink)) == 1

    # The same through the environment; its fixture empties the store first.
    monkeypatch.setenv("SUBJECT", "by-environment")
    monkeypatch.setenv("MAILSINK_URL", url)
    monkeypatch.setenv("MAILSINK_SMTP", f"127.0.0.1:{smtp_port}")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    [path] = _stored(running_sink)
    assert b"Subject: by-environment" in path.read_bytes()


def _stored(daemon: Daemon) -> list[Path]:
    """The messages in the daemon's Maildir (in cur/ once read through the API)."""
    return [path for folder in ("new", "cur")
            for path in (Path(daemon.maildir) / folder).iterdir()]


def test_a_url_that_is_no_web_listener_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_remote="def test_never(mailsink):\n    pass\n")
    result = pytester.runpytest("--mailsink-url", "localhost:8025")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--mailsink-url*'localhost:8025' is not an http(s) URL*"])


# The client's edges, without a sink.

@pytest.mark.parametrize(("smtp", "expected"), [
    (None, ("sink.example", DEFAULT_SMTP_PORT)),
    ("mail.example:2525", ("mail.example", 2525)),
    (":2525", ("sink.example", 2525)),
    ("mail.example", ("mail.example", DEFAULT_SMTP_PORT)),
    ("[::1]:2525", ("::1", 2525)),
    ("::1", ("::1", DEFAULT_SMTP_PORT)),
])
def test_where_a_running_sink_takes_smtp(smtp: str | None,
                                         expected: tuple[str, int]) -> None:
    sink = remote_sink("http://sink.example:8025/", smtp)
    assert sink.web_url == "http://sink.example:8025"
    assert (sink.smtp_host, sink.smtp_port) == expected


@pytest.mark.parametrize(("url", "smtp"), [
    ("sink.example:8025", None), ("ftp://sink.example/", None),
    ("http://sink.example", "sink.example:smtp"), ("http://sink.example", "x:70000"),
    ("http://sink.example", "[::1"),
])
def test_what_a_running_sink_cannot_be(url: str, smtp: str | None) -> None:
    with pytest.raises(ValueError):
        remote_sink(url, smtp)


class _AnswersAtOnce(http.server.BaseHTTPRequestHandler):
    """An API that ignores C{wait}: every list is empty, at once (as Mailpit's)."""

    def do_GET(self) -> None:
        body = json.dumps({"total": 0, "unread": 0, "count": 0, "messages_count": 0,
                           "messages_unread": 0, "start": 0, "tags": [],
                           "messages": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def api_without_wait() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AnswersAtOnce)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,))
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_sink_that_does_not_wait_is_not_polled(api_without_wait: str) -> None:
    client = MailsinkClient(Sink(web_url=api_without_wait, smtp_host="127.0.0.1",
                                 smtp_port=DEFAULT_SMTP_PORT))
    started = time.monotonic()
    with pytest.raises(MailsinkError, match="does not support the API's wait parameter"):
        client.wait_for("subject:x", timeout=20)
    assert time.monotonic() - started < 5


def test_an_unreachable_sink_is_one_clear_error() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    client = MailsinkClient(Sink(web_url=f"http://127.0.0.1:{port}", smtp_host="127.0.0.1",
                                 smtp_port=DEFAULT_SMTP_PORT))
    with pytest.raises(MailsinkError, match=f"cannot reach the sink at http://127.0.0.1:{port}"):
        client.messages()


# The started sink's process, directly.

def test_a_port_taken_meanwhile_is_tried_again_and_the_sink_stopped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken_port = taken.getsockname()[1]
        picks = itertools.count()
        free_port = server._free_port
        monkeypatch.setattr(server, "_free_port",
                            lambda: taken_port if next(picks) == 0 else free_port())
        process = server.SinkProcess(str(tmp_path))
        try:
            sink = process.start()
            assert process.process is not None and process.process.poll() is None
            assert taken_port not in (sink.smtp_port, sink.starttls_port, sink.smtps_port)
            assert "Address already in use" in (tmp_path / "twistd.log").read_text()
        finally:
            process.stop()
    assert process.process.returncode is not None
    with pytest.raises(SinkFailed, match="mailsink exited with status"):
        process.check_alive()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", sink.smtp_port), timeout=5).close()


def test_no_twistd_is_one_clear_error(tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "TWISTD", str(tmp_path / "twistd"))
    with pytest.raises(SinkFailed, match="no twistd next to"):
        server.SinkProcess(str(tmp_path)).start()
