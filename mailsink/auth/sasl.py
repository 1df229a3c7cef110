"""
SASL mechanisms as small state machines: PLAIN, LOGIN, CRAM-MD5, XOAUTH2, OAUTHBEARER.

Each takes the client's decoded responses one at a time and answers with a L{Challenge}
to send, or with twisted.cred credentials to check. Malformed input raises L{SASLError}
carrying the SMTP reply, so the protocol answers it and the connection stays usable
(Twisted's own challengers crash on some of these). Base64 and C{*} belong to the protocol.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

import attrs
from twisted.cred.credentials import CramMD5Credentials, UsernamePassword


class SASLError(Exception):
    """The exchange cannot go on; C{code} and C{text} are the SMTP reply."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text


@attrs.frozen
class Challenge:
    """Bytes to send the client (base64-encoded by the protocol) in a 334 reply."""

    data: bytes


Step = Challenge | Any
"""A challenge, or credentials (UsernamePassword or CramMD5Credentials)."""


def _malformed(mechanism: str, why: str) -> SASLError:
    return SASLError(501, f"5.5.2 Malformed {mechanism} response: {why}")


class Mechanism:
    """One exchange of one mechanism; a new instance per AUTH command."""

    name: ClassVar[str]
    needs_plaintext: ClassVar[bool] = False
    """True when the server must know the password in clear text (CRAM-MD5)."""

    def step(self, response: bytes | None) -> Step:
        """C{None} means the AUTH command carried no initial response."""
        raise NotImplementedError

    def failure_challenge(self) -> bytes | None:
        """What to send after failed credentials before the 535, if the mechanism says."""
        return None


class Plain(Mechanism):
    """RFC 4616: C{authzid NUL authcid NUL passwd}."""

    name = "PLAIN"

    def step(self, response: bytes | None) -> Step:
        if response is None:
            return Challenge(b"")
        parts = response.split(b"\0")
        if len(parts) != 3:
            raise _malformed("PLAIN", "expected authzid NUL user NUL password")
        _, user, password = parts
        if not user:
            raise _malformed("PLAIN", "empty user name")
        return UsernamePassword(_checked_user(user, "PLAIN"), password)


class Login(Mechanism):
    """The non-standard LOGIN that Outlook speaks: C{Username:} then C{Password:}."""

    name = "LOGIN"

    def __init__(self) -> None:
        self._user: bytes | None = None

    def step(self, response: bytes | None) -> Step:
        if response is None:
            return Challenge(b"Username:")
        if self._user is None:
            if not response:
                raise _malformed("LOGIN", "empty user name")
            self._user = _checked_user(response, "LOGIN")
            return Challenge(b"Password:")
        return UsernamePassword(self._user, response)


_CRAM_RESPONSE = re.compile(rb"(.+) ([0-9a-fA-F]{32})", re.S)


class CramMD5(Mechanism):
    """RFC 2195: an HMAC-MD5 of our challenge, keyed with the password."""

    name = "CRAM-MD5"
    needs_plaintext = True

    def __init__(self, hostname: str) -> None:
        self._credentials = CramMD5Credentials(host=hostname.encode("idna"))
        self._challenged = False

    def step(self, response: bytes | None) -> Step:
        if not self._challenged:
            if response is not None:
                raise SASLError(501, "5.5.2 CRAM-MD5 takes no initial response")
            self._challenged = True
            return Challenge(self._credentials.getChallenge())
        if response is None or not _CRAM_RESPONSE.fullmatch(response):
            raise _malformed("CRAM-MD5", "expected user name, a space, 32 hex digits")
        _checked_user(response.rsplit(b" ", 1)[0], "CRAM-MD5")
        self._credentials.setResponse(response)
        return self._credentials


class XOAuth2(Mechanism):
    """Google's and Microsoft's XOAUTH2: C{user=U^Aauth=Bearer TOKEN^A^A}."""

    name = "XOAUTH2"

    def step(self, response: bytes | None) -> Step:
        if response is None:
            return Challenge(b"")
        fields = _key_values(response.rstrip(b"\x01").split(b"\x01"), "XOAUTH2")
        user, token = fields.get(b"user"), _bearer(fields, "XOAUTH2")
        if not user:
            raise _malformed("XOAUTH2", "no user=")
        return UsernamePassword(_checked_user(user, "XOAUTH2"), token)

    def failure_challenge(self) -> bytes:
        return json.dumps({"status": "401", "schemes": "Bearer",
                           "scope": "https://mail.google.com/"}).encode()


class OAuthBearer(Mechanism):
    """RFC 7628: a GS2 header naming the user, then C{auth=Bearer TOKEN}."""

    name = "OAUTHBEARER"

    def step(self, response: bytes | None) -> Step:
        if response is None:
            return Challenge(b"")
        header, _, rest = response.partition(b"\x01")
        gs2 = header.split(b",")
        if len(gs2) < 2 or (gs2[0] not in (b"n", b"y") and not gs2[0].startswith(b"p=")):
            raise _malformed("OAUTHBEARER", "expected a GS2 header such as 'n,a=user,'")
        user = gs2[1][2:] if gs2[1].startswith(b"a=") else b""
        fields = _key_values(rest.rstrip(b"\x01").split(b"\x01"), "OAUTHBEARER")
        token = _bearer(fields, "OAUTHBEARER")
        if not user:
            raise _malformed("OAUTHBEARER", "the GS2 header names no user (a=)")
        user = user.replace(b"=2C", b",").replace(b"=3D", b"=")
        return UsernamePassword(_checked_user(user, "OAUTHBEARER"), token)

    def failure_challenge(self) -> bytes:
        return json.dumps({"status": "invalid_token", "schemes": "bearer",
                           "scope": "https://mail.google.com/"}).encode()


def _key_values(pairs: list[bytes], mechanism: str) -> dict[bytes, bytes]:
    fields = {}
    for pair in pairs:
        key, equals, value = pair.partition(b"=")
        if not equals:
            raise _malformed(mechanism, "expected key=value fields separated by ^A")
        fields[key.lower()] = value
    return fields


def _bearer(fields: dict[bytes, bytes], mechanism: str) -> bytes:
    scheme, _, token = fields.get(b"auth", b"").partition(b" ")
    if scheme.lower() != b"bearer" or not token:
        raise _malformed(mechanism, "expected auth=Bearer <token>")
    return token


def _checked_user(user: bytes, mechanism: str) -> bytes:
    """A user name without control characters (they would forge trace header lines)."""
    if any(byte < 0x20 or byte == 0x7F for byte in user):
        raise _malformed(mechanism, "the user name contains control characters")
    return user


MECHANISMS: tuple[type[Mechanism], ...] = (Plain, Login, CramMD5, XOAuth2, OAuthBearer)
"""Every mechanism, in the order EHLO lists them."""


def mechanism_names(plaintext_available: bool) -> list[str]:
    """What to advertise: CRAM-MD5 only where a clear-text password can be had."""
    return [m.name for m in MECHANISMS if plaintext_available or not m.needs_plaintext]


def start_mechanism(name: str, hostname: str, plaintext_available: bool) -> Mechanism:
    """A new exchange of the mechanism called C{name} (case-insensitive)."""
    for mechanism in MECHANISMS:
        if mechanism.name == name.upper() and (plaintext_available
                                               or not mechanism.needs_plaintext):
            return CramMD5(hostname) if mechanism is CramMD5 else mechanism()
    raise SASLError(504, "5.5.4 Unrecognized authentication type")
