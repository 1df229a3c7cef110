"""
The pytest plugin (entry point C{pytest11}: installing mailsink is enough).

C{mailsink_server} (session) starts a real sink on free loopback ports for the test run, or,
with C{--mailsink-url} / C{MAILSINK_URL}, uses one that is already running (a CI service
container); C{mailsink} (each test) empties its store and gives a L{MailsinkClient}.
Nothing here runs unless a test asks for a fixture.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from mailsink.testing.client import MailsinkClient, MailsinkError
from mailsink.testing.readiness import ProbeFailed, smtp_greets, wait_ready, web_ready
from mailsink.testing.server import SinkFailed, SinkProcess
from mailsink.testing.sink import DEFAULT_SMTP_PORT, Sink, remote_sink

REMOTE_TIMEOUT = 30.0
"""Seconds a running sink (a service container still starting) may take to answer."""

_PROCESS = pytest.StashKey[SinkProcess]()
_RUNNING = pytest.StashKey[Sink]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mailsink", "mailsink: a mail sink for the tests")
    group.addoption(
        "--mailsink-url", metavar="URL", default=None,
        help="use the running mailsink whose web listener is at URL instead of "
             "starting one (default: $MAILSINK_URL)")
    group.addoption(
        "--mailsink-smtp", metavar="HOST:PORT", default=None,
        help="where that sink takes SMTP (default: $MAILSINK_SMTP, else the URL's host, "
             f"port {DEFAULT_SMTP_PORT})")


def pytest_configure(config: pytest.Config) -> None:
    """A sink named by URL is checked now: a typo is a usage error, not failing tests."""
    url = config.getoption("mailsink_url") or os.environ.get("MAILSINK_URL")
    if url:
        smtp = config.getoption("mailsink_smtp") or os.environ.get("MAILSINK_SMTP")
        try:
            config.stash[_RUNNING] = remote_sink(url, smtp)
        except ValueError as error:
            raise pytest.UsageError(f"--mailsink-url / --mailsink-smtp: {error}") from None


@pytest.fixture(scope="session")
def mailsink_server(request: pytest.FixtureRequest,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sink]:
    """The sink of this test run: started for it and stopped at its end, or the running
    one named by C{--mailsink-url}."""
    running = request.config.stash.get(_RUNNING, None)
    if running is not None:
        yield _ready(running)
        return
    process = SinkProcess(str(tmp_path_factory.mktemp("mailsink")))
    request.config.stash[_PROCESS] = process
    try:
        try:
            sink = process.start()
        except SinkFailed as error:
            pytest.fail(str(error), pytrace=False)
        yield sink
    finally:
        process.stop()


@pytest.fixture
def mailsink(request: pytest.FixtureRequest, mailsink_server: Sink) -> MailsinkClient:
    """A client of the run's sink, whose store is emptied before the test."""
    process = request.config.stash.get(_PROCESS, None)
    client = MailsinkClient(mailsink_server)
    try:
        if process is not None:
            process.check_alive()
        client.clear()
    except (SinkFailed, MailsinkError) as error:
        pytest.fail(f"the mail sink cannot be used: {error}", pytrace=False)
    return client


def _ready(sink: Sink) -> Sink:
    """C{sink}, once its API and SMTP listener answer."""
    try:
        wait_ready([(f"the sink's web listener at {sink.web_url}", web_ready(sink.web_url)),
                    (f"the sink's SMTP listener at {sink.smtp_host}:{sink.smtp_port}",
                     smtp_greets(sink.smtp_host, sink.smtp_port))], REMOTE_TIMEOUT)
    except (TimeoutError, ProbeFailed) as error:
        pytest.fail(f"{error} (--mailsink-url and --mailsink-smtp, or MAILSINK_URL and "
                    "MAILSINK_SMTP, say where it runs)", pytrace=False)
    return sink
