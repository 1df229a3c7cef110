"""
Relay failures as one sentence that names the C{[relay]} key to change.

The wording is L{mailsink.sentences}' (the same as C{mailsink check} and C{mailsink send}),
rewritten by L{for_relay} to name keys instead of command-line flags. Telling "port 465
expects TLS from the first byte" from "the server is slow" takes a second look: a TLS
handshake attempt on the same port (L{speaks_tls}), without blocking the reactor; that
second look has what is left of the operation's L{Deadline} and a short grace.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from twisted.internet import error as net
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Protocol
from twisted.mail.smtp import (
    AUTHDeclinedError,
    AuthenticationError,
    AUTHRequiredError,
    EHLORequiredError,
    SMTPClientError,
    SMTPConnectError,
    SMTPProtocolError,
    SMTPTimeoutError,
    TLSError,
    TLSRequiredError,
)
from zope.interface import implementer

from mailsink import sentences
from mailsink.config import RelaySettings
from mailsink.relay.connection import (
    PASSWORD_MECHANISMS,
    TOKEN_MECHANISMS,
    DeliveryRefused,
    EarlyReply,
    InjectedAfterStartTLS,
    RelayError,
)
from mailsink.relay.deadline import Deadline
from mailsink.relay.tls import RelayTLS
from mailsink.sentences import Diagnosis

_FOR_RELAY = (
    ("pass --cafile with the server's certificate or CA, or --insecure to skip the check",
     "add the server's CA to the system's trusted certificates, or set [relay] tls_verify = "
     "false for a self-signed development server"),
    ("(or pass --insecure to skip the check)", "(or set [relay] tls_verify = false)"),
    ("pass --user and a password", "set [relay] username and password"),
    ("check username/password", "check [relay] username and password"),
    ("check username/token", "check [relay] username and token"),
    ("leave out --user", "leave [relay] username empty"),
    ("set tls = ", "set [relay] tls = "),
    ("try tls = ", "try [relay] tls = "),
    ("check the host and port", "check [relay] host and port"),
    ("check the host name", "check [relay] host"),
)


def for_relay(sentence: str) -> str:
    """A L{mailsink.sentences} sentence, naming the C{[relay]} keys instead of flags."""
    for old, new in _FOR_RELAY:
        sentence = sentence.replace(old, new)
    if sentence.startswith("certificate is for ") and "[relay]" not in sentence:
        sentence += ": set [relay] host to a name the certificate holds"
    return sentence


class _Probe(Protocol):
    """A second look at the port: C{done} fires with yes or no, once."""

    def __init__(self) -> None:
        self.done: Deferred[bool] = Deferred()

    def answer(self, yes: bool) -> None:
        if not self.done.called:
            self.done.callback(yes)
        if self.transport is not None:
            self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.answer(False)


@implementer(IHandshakeListener)
class _HandshakeProbe(_Probe):
    """Yes once a TLS handshake completes."""

    def handshakeCompleted(self) -> None:
        self.answer(True)


class _GreetingProbe(_Probe):
    """Yes if the first line is an SMTP greeting (220) in plaintext."""

    received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if b"\n" in self.received or len(self.received) > 512:
            self.answer(self.received.startswith(b"220"))


def _look(reactor: Any, endpoint: Any, probe: _Probe, within: float) -> Deferred[bool]:
    """C{probe}'s answer, or no if it has none C{within} seconds (connecting included)."""
    connecting = connectProtocol(endpoint, probe)
    connecting.addErrback(lambda _: probe.answer(False))  # any failure to connect: no

    def time_up() -> None:
        connecting.cancel()  # still connecting: stop (fails as above)
        if probe.transport is not None:
            probe.transport.abortConnection()  # type: ignore[attr-defined]
        probe.answer(False)

    later = reactor.callLater(within, time_up)

    def stop_timer(answer: bool) -> bool:
        if later.active():
            later.cancel()
        return answer

    return probe.done.addCallback(stop_timer)


def speaks_tls(reactor: Any, host: str, port: int, within: float) -> Deferred[bool]:
    """Whether a TLS handshake (certificate not checked) completes at C{host:port}."""
    endpoint = wrapClientTLS(RelayTLS(host, verify=False),
                             HostnameEndpoint(reactor, host, port))
    return _look(reactor, endpoint, _HandshakeProbe(), within)


def speaks_plaintext(reactor: Any, host: str, port: int, within: float) -> Deferred[bool]:
    """Whether C{host:port} greets in plaintext (a first line starting with 220)."""
    return _look(reactor, HostnameEndpoint(reactor, host, port), _GreetingProbe(), within)


class Diagnoser:
    """Words the failures of connections to one C{[relay]} server."""

    def __init__(self, settings: RelaySettings, reactor: Any) -> None:
        self.settings = settings
        self.reactor = reactor
        self.where = f"{settings.host}:{settings.port}"

    @inlineCallbacks
    def diagnose(self, failure: BaseException, deadline: Deadline,
                 tls: RelayTLS | None = None) -> Any:
        """
        C{failure} (a L{RelayError}, or an endpoint's connection error) as a Diagnosis, by
        C{deadline} (and its grace, when the port takes a second look).
        """
        if tls is not None and tls.refusal is not None:
            return Diagnosis(for_relay(str(tls.refusal)))
        if isinstance(failure, RelayError):
            sentence = yield self._session(failure, deadline.second_look(self.reactor))
        else:
            sentence = self._connecting(failure)
        return Diagnosis(for_relay(sentence))

    def _connecting(self, error: BaseException) -> str:
        settings = self.settings
        if isinstance(error, Diagnosis):
            return str(error)
        if isinstance(error, net.ConnectionRefusedError):
            return sentences.refused(self.where)
        if isinstance(error, net.DNSLookupError):
            return sentences.unknown_host(settings.host, "no such host")
        if isinstance(error, net.TimeoutError | net.TCPTimedOutError):
            return sentences.no_answer(self.where, float(settings.timeout))
        return f"{self.where}: {error}"

    @inlineCallbacks
    def _session(self, failure: RelayError, second_look: float) -> Any:
        error, stage = failure.error, failure.stage
        settings = self.settings
        timeout = float(settings.timeout)
        if isinstance(error, Diagnosis):
            return str(error)
        if isinstance(error, InjectedAfterStartTLS):
            return sentences.injected_after_starttls(self.where)
        if isinstance(error, EarlyReply):
            return sentences.early_reply(self.where, error.line)
        if failure.after_data and isinstance(error, SMTPTimeoutError):
            return sentences.maybe_delivered(
                self.where, f"did not answer the end of the message in {timeout:g} s")
        if failure.after_data and isinstance(error, net.ConnectionDone | net.ConnectionLost):
            return sentences.maybe_delivered(
                self.where, "closed the connection before answering the end of the message")
        if isinstance(error, SSL.Error):
            reason = _openssl_reason(error)
            if stage == "handshake" and settings.tls == "implicit" and \
                    sentences.is_plaintext_reason(reason):
                return sentences.plaintext(reason)
            return sentences.handshake_failed(self.where, reason)
        silent = isinstance(error, SMTPTimeoutError) or (
            stage == "greeting" and isinstance(error, net.ConnectionDone | net.ConnectionLost))
        if silent and stage == "greeting" and settings.tls != "implicit":
            implicit = yield speaks_tls(self.reactor, settings.host, settings.port,
                                        second_look)
            return sentences.silence(settings.host, settings.port, timeout,
                                     closed=not isinstance(error, SMTPTimeoutError),
                                     implicit=implicit)
        if isinstance(error, SMTPTimeoutError):
            if stage == "handshake":
                return sentences.handshake_timeout(self.where, timeout)
            return sentences.stopped(self.where, timeout)
        if isinstance(error, net.ConnectionDone | net.ConnectionLost):
            if stage == "handshake" and settings.tls == "implicit":
                # A plaintext server may drop a ClientHello before the client reads its
                # greeting (mailsink's own listeners do): look again, in plaintext.
                plain = yield speaks_plaintext(self.reactor, settings.host, settings.port,
                                               second_look)
                if plain:
                    return sentences.plaintext("the server closed the connection")
            return sentences.closed(self.where)
        if isinstance(error, SMTPClientError):
            return self._refusal(error, failure)
        if isinstance(error, DeliveryRefused):
            if failure.delivered:
                return sentences.partly_delivered(failure.refusals, failure.delivered)
            if failure.refusals and error.text == "No recipients accepted":
                return sentences.recipients_refused(failure.refusals)
            return sentences.reply(error.code, error.text, failure.tls)
        return f"{self.where}: {error}"

    def _refusal(self, error: SMTPClientError, failure: RelayError) -> str:
        """An error Twisted's client raised on a reply (or on what the server offers)."""
        text = error.resp.decode("utf-8", "replace") if isinstance(error.resp, bytes) \
            else str(error.resp)
        token = self.settings.uses_token
        if isinstance(error, AUTHDeclinedError):
            code = error.code if error.code > 0 else 535
            return sentences.auth_failed(code, text.replace("\n", " "), token=token)
        if isinstance(error, AUTHRequiredError):
            return self._no_mechanism(failure)
        if isinstance(error, TLSRequiredError):
            return sentences.no_starttls(self.where)
        if isinstance(error, TLSError):
            return f"{self.where} answered STARTTLS with {error.code} {text}"
        if isinstance(error, EHLORequiredError):
            return f"{self.where} refused EHLO, so it cannot do STARTTLS or AUTH"
        if isinstance(error, AuthenticationError):
            return f"{self.where} answered AUTH with {error.code} {text}"
        if isinstance(error, SMTPProtocolError):
            return f"{self.where} does not speak SMTP: {text}"
        if isinstance(error, SMTPConnectError):
            return f"{self.where} refused the session: {error.code} {text}"
        return sentences.reply(error.code, text, failure.tls)

    def _no_mechanism(self, failure: RelayError) -> str:
        extensions = failure.extensions
        if not (self.settings.password or self.settings.uses_token):
            return f"{self.where} needs a password for [relay] username " \
                   f"{self.settings.username}: set [relay] password (or token)"
        offered = (extensions.get(b"AUTH") or b"").decode("ascii", "replace").upper().split()
        if not offered:
            if not failure.tls and b"STARTTLS" in extensions:
                return sentences.auth_only_after_starttls(self.where)
            return sentences.no_auth(self.where, failure.tls)
        spoken = TOKEN_MECHANISMS if self.settings.uses_token else PASSWORD_MECHANISMS
        return sentences.no_common_mechanism(self.where, offered, spoken)


def _openssl_reason(error: SSL.Error) -> str:
    """The reason text of the last OpenSSL error in C{error} (C{wrong version number})."""
    details = error.args[0] if error.args else None
    if isinstance(details, list) and details and isinstance(details[-1], tuple):
        return str(details[-1][-1])
    return str(error) or "unknown error"
