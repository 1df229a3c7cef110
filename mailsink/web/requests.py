"""
Reading what a request asks for: paging, the search query, waiting for mail, and JSON
bodies.

State-changing routes take only JSON (C{Content-Type: application/json}), so a plain HTML
form on another site cannot trigger them (no CSRF); a bad value is a 400 that says why.
"""

from __future__ import annotations

import json
import re
from typing import Any

from twisted.web.iweb import IRequest

MAX_LIMIT = 1000
"""The most messages one page may ask for."""
MAX_BODY = 1024 * 1024
"""The largest JSON body accepted."""
MAX_WAIT = 60
"""The longest a request may wait for mail (C{?wait=}), in seconds."""
_SECONDS = re.compile(r"\d{1,9}(\.\d{1,9})?")


class BadRequest(Exception):
    """Answered with 400 and this text."""


def page_arguments(request: IRequest) -> tuple[int, int]:
    """C{start} (default 0) and C{limit} (default 50, at most L{MAX_LIMIT})."""
    start = _whole_number(request, b"start", 0)
    limit = _whole_number(request, b"limit", 50)
    return start, min(limit, MAX_LIMIT)


def query_argument(request: IRequest) -> str:
    """The C{query} argument, or ""."""
    values = request.args.get(b"query") or [b""]
    try:
        return values[0].decode("utf-8").strip()
    except UnicodeDecodeError:
        raise BadRequest("query must be UTF-8") from None


def wait_arguments(request: IRequest) -> tuple[float, int] | None:
    """
    C{wait} (seconds, at most L{MAX_WAIT}; decimals allowed) and C{count} (default 1), or
    None when the request does not wait. Waiting longer is refused, not shortened: a client
    asking for more would otherwise take an early empty answer for "no mail".
    """
    values = request.args.get(b"wait")
    if not values or values[0] == b"":
        return None  # and C{count} alone changes nothing: Mailpit's answer, as without it
    text = values[0].decode("ascii", "replace")
    if not _SECONDS.fullmatch(text):
        raise BadRequest("wait must be a number of seconds")
    seconds = float(text)
    if seconds > MAX_WAIT:
        raise BadRequest(f"wait must be at most {MAX_WAIT} seconds")
    count = _whole_number(request, b"count", 1)
    if count < 1:
        raise BadRequest("count must be 1 or more")
    return seconds, count


def json_body(request: IRequest, required: bool) -> dict[str, Any]:
    """The body as a JSON object; an empty body is {} unless C{required}."""
    body = request.content.read(MAX_BODY + 1) if request.content is not None else b""
    if len(body) > MAX_BODY:
        raise BadRequest("request body too large")
    if not body.strip():
        if required:
            raise BadRequest("a JSON body is required")
        return {}
    content_type = (request.getHeader(b"Content-Type") or b"").split(b";")[0].strip().lower()
    if content_type != b"application/json":
        raise BadRequest("the body must be JSON (Content-Type: application/json)")
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise BadRequest(f"the body is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise BadRequest("the body must be a JSON object")
    return value


def _whole_number(request: IRequest, name: bytes, default: int) -> int:
    values = request.args.get(name)
    if not values or values[0] == b"":
        return default
    text = values[0].decode("ascii", "replace")
    if not text.isdigit():
        raise BadRequest(f"{name.decode()} must be a whole number of 0 or more")
    return int(text)
