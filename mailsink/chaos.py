"""
Chaos: Mailpit's fault injection (C{GET/PUT /api/v1/chaos}), on only with
C{[mailsink] chaos = true}.

Three triggers -- C{Sender} (MAIL FROM), C{Recipient} (RCPT TO) and C{Authentication} (a
successful AUTH) -- each with an SMTP C{ErrorCode} (400-599) and a C{Probability} (0-100
percent), so applications can be tested against a server that refuses mail. The random
source is injected, so tests are deterministic. Used from the reactor thread only.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import attrs
from twisted.logger import Logger

log = Logger()

KINDS = ("Sender", "Recipient", "Authentication")
"""The trigger names, as Mailpit spells them."""
DEFAULT_ERROR_CODE = 451
"""The ErrorCode of a trigger that does not give one (Mailpit's default)."""

_WHAT = {"Sender": "sender rejected", "Recipient": "recipient rejected",
         "Authentication": "authentication failed"}


@attrs.frozen
class Trigger:
    """One trigger: answer C{error_code} C{probability} percent of the time."""

    error_code: int = DEFAULT_ERROR_CODE
    probability: int = 0

    def to_json(self) -> dict[str, int]:
        return {"ErrorCode": self.error_code, "Probability": self.probability}


class Chaos:
    """The current triggers, replaced as a whole by L{set_triggers}."""

    def __init__(self, random_source: Callable[[], float] = random.random) -> None:
        """C{random_source} returns a float in [0, 1), like L{random.random}."""
        self.random = random_source
        self.triggers: dict[str, Trigger] = {kind: Trigger() for kind in KINDS}

    def to_json(self) -> dict[str, dict[str, int]]:
        """The triggers in Mailpit's C{ChaosTriggers} shape."""
        return {kind: self.triggers[kind].to_json() for kind in KINDS}

    def set_triggers(self, body: Any) -> None:
        """
        Replace every trigger from a C{ChaosTriggers} object; a trigger left out is reset
        (probability 0). Bad input raises L{ValueError} saying why, and changes nothing.
        """
        self.triggers = parse_triggers(body)
        log.info("chaos triggers set: {triggers}", triggers=", ".join(
            f"{kind} {t.error_code} at {t.probability}%"
            for kind, t in self.triggers.items()))

    def should_fail(self, kind: str) -> int | None:
        """The ErrorCode to answer for C{kind} this time, or None to carry on."""
        trigger = self.triggers[kind]
        if trigger.probability <= 0:
            return None
        if trigger.probability >= 100 or self.random() * 100 < trigger.probability:
            return trigger.error_code
        return None


def reply_text(kind: str, code: int) -> str:
    """The reply text (after the code) for a triggered C{kind}, with an enhanced status."""
    enhanced = "4.3.0" if code < 500 else "5.7.1"
    return f"{enhanced} Chaos: {_WHAT[kind]}"


def parse_triggers(body: Any) -> dict[str, Trigger]:
    """Validate a C{ChaosTriggers} object (also accepted wrapped in C{{"Triggers": ...}})."""
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object of triggers")
    if set(body) == {"Triggers"}:
        body = body["Triggers"]
        if not isinstance(body, dict):
            raise ValueError("Triggers must be a JSON object")
    unknown = sorted(set(body) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown trigger {unknown[0]!r}; triggers are "
                         f"{', '.join(KINDS)}")
    return {kind: _trigger(kind, body.get(kind)) for kind in KINDS}


def _trigger(kind: str, value: Any) -> Trigger:
    if value is None:
        return Trigger()
    if not isinstance(value, dict):
        raise ValueError(f"{kind} must be an object with ErrorCode and Probability")
    unknown = sorted(set(value) - {"ErrorCode", "Probability"})
    if unknown:
        raise ValueError(f"{kind}: unknown field {unknown[0]!r}; use ErrorCode and "
                         "Probability")
    code = _whole(kind, "ErrorCode", value.get("ErrorCode", DEFAULT_ERROR_CODE))
    if not 400 <= code <= 599:
        raise ValueError(f"{kind}.ErrorCode must be an SMTP error code from 400 to 599, "
                         f"not {code}")
    probability = _whole(kind, "Probability", value.get("Probability", 0))
    if not 0 <= probability <= 100:
        raise ValueError(f"{kind}.Probability must be a percentage from 0 to 100, "
                         f"not {probability}")
    return Trigger(code, probability)


def _whole(kind: str, field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{kind}.{field} must be a whole number, not {value!r}")
    return value
