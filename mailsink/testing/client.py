"""
A small client of the sink's HTTP API for test suites: list, search, wait for, read and
clear messages. Standard library only (urllib, json), so it fits any test suite.

Waiting is the API's C{wait=SECONDS}: one long request that the sink answers as soon as
enough messages match, never a loop of requests with sleeps between them.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from mailsink.testing.models import Attachment, Message, Summary
from mailsink.testing.sink import Sink

REQUEST_TIMEOUT = 30.0
"""Seconds an ordinary API request may take."""
MAX_WAIT = 60
"""The longest C{wait} the API grants one request; longer waits take several."""
PAGE = 1000
"""Messages asked for per request (the API's largest page)."""
SHOWN_ON_TIMEOUT = 20
"""Messages of the store listed when L{MailsinkClient.wait_for} gives up."""

# The sink is reached directly: a proxy from the environment would not know a loopback port.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class MailsinkError(Exception):
    """The sink could not be reached or refused a request; the text says which and why."""


class WaitTimeout(AssertionError):
    """L{MailsinkClient.wait_for} gave up: a test failure that lists what the store held."""


class MailsinkClient:
    """
    The messages in one sink, through its API. The addresses of L{Sink} are attributes,
    so a test configures its application from the client it was given.
    """

    smtp_host: str
    smtp_port: int
    starttls_port: int | None
    smtps_port: int | None
    cert_path: str | None
    web_url: str

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.smtp_host = sink.smtp_host
        self.smtp_port = sink.smtp_port
        self.starttls_port = sink.starttls_port
        self.smtps_port = sink.smtps_port
        self.cert_path = sink.cert_path
        self.web_url = sink.web_url

    def __repr__(self) -> str:
        return f"<MailsinkClient {self.web_url} smtp {self.smtp_host}:{self.smtp_port}>"

    # Reading the store.

    def messages(self) -> list[Summary]:
        """Every message in the store, newest first."""
        return self._all("/api/v1/messages", {})

    def search(self, query: str) -> list[Summary]:
        """The messages matching C{query} (the web view's search syntax), newest first."""
        return self._all("/api/v1/search", {"query": query})

    def wait_for(self, query: str = "", count: int = 1, timeout: float = 10) -> list[Summary]:
        """
        The messages matching C{query} ("" for any), newest first, as soon as there are at
        least C{count} of them. Raises L{WaitTimeout} (an C{AssertionError} that lists what
        the store holds) if there are still fewer after C{timeout} seconds.

        One request asks the API to wait (C{wait}, at most L{MAX_WAIT} seconds) until
        C{count} match; another is made only when the sink answered before the timeout with
        fewer (a timeout over L{MAX_WAIT}). A sink that answers at once without waiting does
        not support C{wait}: L{MailsinkError}, rather than asking it again and again.
        """
        __tracebackhide__ = True  # pytest: the failure is the test's line, not this loop
        if count < 1:
            raise ValueError("count must be 1 or more")
        deadline = time.monotonic() + timeout
        path, arguments = ("/api/v1/search", {"query": query}) if query else (
            "/api/v1/messages", {})
        while True:
            asked = time.monotonic()
            wait = min(MAX_WAIT, max(0.0, deadline - asked))
            page = self._json("GET", path, {
                **arguments, "limit": str(PAGE), "count": str(count), "wait": _seconds(wait)},
                timeout=wait + REQUEST_TIMEOUT)
            matched = int(page["messages_count"])
            if matched >= count:
                if matched > len(page["messages"]):
                    return self._all(path, arguments)
                return [Summary.from_json(value) for value in page["messages"]]
            if time.monotonic() >= deadline:
                found = [Summary.from_json(value) for value in page["messages"]]
                raise WaitTimeout(self._timeout_report(query, count, timeout, found))
            if time.monotonic() - asked < wait / 2:
                raise MailsinkError(
                    f"the sink at {self.web_url} answered at once when asked to wait "
                    f"{wait:g} s for {count} message{'' if count == 1 else 's'}: it does not "
                    "support the API's wait parameter (mailsink's API has it)")

    def message(self, message_id: str) -> Message:
        """
        The whole message C{message_id} (C{"latest"} for the newest): headers, text, HTML,
        attachments with their content, and the raw bytes. Reading it marks it read.
        """
        data = self._json("GET", f"/api/v1/message/{_quote(message_id)}")
        base = f"/api/v1/message/{_quote(data['ID'])}"  # "latest" pinned to one message
        headers = self._json("GET", f"{base}/headers")
        raw = self._request("GET", f"{base}/raw")
        return Message.from_json(
            data, headers=headers, raw=raw,
            attachments=self._parts(base, data.get("Attachments")),
            inline=self._parts(base, data.get("Inline")))

    # Changing it.

    def clear(self) -> None:
        """Delete every message in the store."""
        self._request("DELETE", "/api/v1/messages")

    # Helpers.

    def _all(self, path: str, arguments: dict[str, str]) -> list[Summary]:
        """Every page of a list or search answer."""
        found: list[Summary] = []
        while True:
            page = self._json("GET", path, {**arguments, "start": str(len(found)),
                                            "limit": str(PAGE)})
            found += [Summary.from_json(value) for value in page["messages"]]
            if not page["messages"] or len(found) >= int(page["messages_count"]):
                return found

    def _parts(self, base: str, parts: list[dict[str, Any]] | None) -> tuple[Attachment, ...]:
        return tuple(
            Attachment(part_id=part["PartID"], filename=part.get("FileName") or "",
                       content_type=part.get("ContentType") or "",
                       content_id=part.get("ContentID") or "",
                       content=self._request("GET", f"{base}/part/{_quote(part['PartID'])}"))
            for part in parts or ())

    def _timeout_report(self, query: str, count: int, timeout: float,
                        matches: list[Summary]) -> str:
        """What a failed wait says: what matched, and what the store held instead."""
        lines = [f"wait_for({query!r}, count={count}) timed out after {timeout:g} s: "
                 f"{len(matches)} of {count} matched"]
        lines += [f"  matched: {summary}" for summary in matches[:SHOWN_ON_TIMEOUT]]
        page = self._json("GET", "/api/v1/messages", {"limit": str(SHOWN_ON_TIMEOUT)})
        total = int(page["total"])
        held = [Summary.from_json(value) for value in page["messages"]]
        if not total:
            lines.append(f"the sink at {self.web_url} holds no messages")
        else:
            lines.append(f"the sink at {self.web_url} holds {total} message"
                         f"{'' if total == 1 else 's'}, newest first:")
            lines += [f"  {summary}" for summary in held]
            if total > len(held):
                lines.append(f"  ... and {total - len(held)} more")
        return "\n".join(lines)

    def _json(self, method: str, path: str, arguments: dict[str, str] | None = None,
              timeout: float = REQUEST_TIMEOUT) -> Any:
        body = self._request(method, path, arguments, timeout)
        try:
            return json.loads(body)
        except ValueError:
            raise MailsinkError(f"{method} {self.web_url}{path} did not answer JSON: "
                                f"{body[:200]!r}") from None

    def _request(self, method: str, path: str, arguments: dict[str, str] | None = None,
                 timeout: float = REQUEST_TIMEOUT) -> bytes:
        url = self.web_url + path
        if arguments:
            url += "?" + urllib.parse.urlencode(arguments)
        try:
            with _DIRECT.open(urllib.request.Request(url, method=method),
                              timeout=timeout) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as error:
            text = error.read()[:300].decode("utf-8", "replace").strip()
            raise MailsinkError(f"{method} {url} answered {error.code}: {text}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise MailsinkError(f"cannot reach the sink at {self.web_url} "
                                f"({method} {path}): {reason}") from None


def _quote(message_id: str) -> str:
    return urllib.parse.quote(message_id, safe="")


def _seconds(value: float) -> str:
    """Seconds for the C{wait} argument, to the millisecond."""
    return f"{value:.3f}".rstrip("0").rstrip(".") or "0"
