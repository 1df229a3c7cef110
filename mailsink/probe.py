"""
Probing any SMTP server from the command line (C{mailsink check}) and turning what goes
wrong into one sentence a person can act on (shared with C{mailsink send}).

This is a short-lived command-line tool, so it uses blocking C{smtplib}, C{ssl} and
C{socket} with a timeout on every step.
"""

from __future__ import annotations

import datetime
import smtplib
import socket
import ssl
from dataclasses import dataclass, field

from mailsink import sentences
from mailsink.sentences import Diagnosis, mismatch, parse_certificate, verification

DEFAULT_TIMEOUT = 10.0
DEFAULT_PORT = 587
IMPLICIT_PORT = 465
MODES = ("none", "starttls", "implicit")
PROBE_SENDER = "mailsink-check@example.invalid"


def parse_target(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """C{HOST}, C{HOST:PORT}, C{[V6]:PORT} or a bare IPv6 address as (host, port)."""
    host, port = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ValueError(f"bad address {text!r}: expected [IPV6]:PORT")
        port = rest[1:]
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    if not host:
        raise ValueError(f"bad address {text!r}: no host")
    if not port:
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad port {port!r} in {text!r}")
    return host, int(port)


def make_context(cafile: str | None = None, insecure: bool = False) -> ssl.SSLContext:
    """A client context: the system's CAs (or only C{cafile}), unless C{insecure}."""
    if insecure:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as e:
        raise Diagnosis(f"cannot read the CA file {cafile}: "
                        f"{getattr(e, 'strerror', None) or e}") from None


def _unverified() -> ssl.SSLContext:
    return make_context(insecure=True)


class Client(smtplib.SMTP):
    """
    An SMTP client that knows how far it got (C{stage}: connect, handshake, greeting,
    starttls, smtp) so a timeout or an error can be worded for that step, and that
    verifies certificates against C{servername} (default: the host connected to).
    """

    def __init__(self, *, mode: str, context: ssl.SSLContext, timeout: float,
                 servername: str | None = None) -> None:
        self.mode = mode
        self.context = context
        self.servername = servername
        self.stage = "connect"
        self.tls = False
        self.greeting = ""
        super().__init__(timeout=timeout, local_hostname="mailsink-check.invalid")

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        self.stage = "connect"
        sock = socket.create_connection((host, port), timeout, self.source_address)
        if self.mode == "implicit":
            self.stage = "handshake"
            try:
                sock = self.context.wrap_socket(sock, server_hostname=self.servername or host)
            except BaseException:
                sock.close()
                raise
            self.tls = True
        self.stage = "greeting"
        return sock

    def open(self, host: str, port: int) -> None:
        """Connect and read the greeting (through TLS first when C{mode} is implicit)."""
        code, message = self.connect(host, port)
        self.greeting = f"{code} {message.decode('utf-8', 'replace')}"
        self._host = self.servername or host
        if code != 220:
            self.close()
            raise smtplib.SMTPConnectError(code, message)
        self.stage = "smtp"

    def upgrade(self) -> None:
        """STARTTLS, then EHLO again."""
        self.stage = "starttls"
        code, message = self.starttls(context=self.context)
        if code != 220:
            raise smtplib.SMTPResponseException(code, message)
        self.tls = True
        self.stage = "smtp"
        self.ehlo()

    def peer_certificate(self) -> bytes | None:
        """The server's certificate (DER), once TLS is up."""
        sock = self.sock
        if isinstance(sock, ssl.SSLSocket):
            return sock.getpeercert(binary_form=True)
        return None

    def features(self) -> tuple[list[str], int | None]:
        """AUTH mechanisms and SIZE from the last EHLO."""
        mechanisms = self.esmtp_features.get("auth", "").upper().split()
        size = self.esmtp_features.get("size", "").strip()
        return mechanisms, int(size) if size.isdigit() else None

    def quit_quietly(self) -> None:
        try:
            self.quit()
        except (smtplib.SMTPException, OSError):
            self.close()


# Wording failures.

def _speaks_tls(host: str, port: int, timeout: float, servername: str | None) -> bool:
    """Whether a TLS handshake (certificate not checked) completes at C{host:port}."""
    try:
        with socket.create_connection((host, port), timeout) as raw, \
                _unverified().wrap_socket(raw, server_hostname=servername or host):
            return True
    except (OSError, ssl.SSLError):
        return False


def _speaks_plaintext(host: str, port: int, timeout: float) -> bool:
    """Whether C{host:port} greets in plaintext (a line starting with 220)."""
    try:
        with socket.create_connection((host, port), timeout) as sock:
            data = b""
            while b"\n" not in data and len(data) < 4096:
                chunk = sock.recv(1024)
                if not chunk:
                    break
                data += chunk
            return data.startswith(b"220")
    except OSError:
        return False


def _fetch_certificate(host: str, port: int, mode: str, timeout: float,
                       servername: str | None) -> sentences.Certificate | None:
    """The certificate, fetched again without checking it, for wording a refusal."""
    client = Client(mode=mode, context=_unverified(), timeout=timeout, servername=servername)
    try:
        client.open(host, port)
        if mode == "starttls":
            client.ehlo()
            client.upgrade()
        der = client.peer_certificate()
        client.quit_quietly()
        return parse_certificate(der) if der else None
    except (OSError, smtplib.SMTPException, ssl.SSLError, ValueError):
        client.close()
        return None


def diagnose(error: BaseException, client: Client, host: str, port: int) -> Diagnosis:
    """C{error}, raised while C{client} talked to C{host:port}, as one sentence."""
    timeout = float(client.timeout)
    stage = client.stage
    where = f"{host}:{port}"
    name = client.servername or host
    if isinstance(error, Diagnosis):
        return error
    if isinstance(error, ssl.SSLCertVerificationError):
        certificate = _fetch_certificate(host, port, client.mode, timeout, client.servername)
        return Diagnosis(verification(error.verify_code, error.verify_message or str(error),
                                      name, certificate))
    if isinstance(error, ssl.SSLError):
        reason = (error.reason or str(error)).replace("_", " ").lower()
        if stage == "handshake" and (sentences.is_plaintext_reason(error.reason or "")
                                     or _speaks_plaintext(host, port, timeout)):
            return Diagnosis(sentences.plaintext(reason))
        return Diagnosis(sentences.handshake_failed(where, reason))
    if isinstance(error, socket.gaierror):
        return Diagnosis(sentences.unknown_host(host, str(error.strerror)))
    if isinstance(error, ConnectionRefusedError):
        return Diagnosis(sentences.refused(where))
    if isinstance(error, TimeoutError):
        if stage == "connect":
            return Diagnosis(sentences.no_answer(where, timeout))
        if stage == "greeting" and client.mode != "implicit":
            return Diagnosis(sentences.silence(
                host, port, timeout,
                implicit=_speaks_tls(host, port, timeout, client.servername)))
        if stage == "handshake":
            return Diagnosis(sentences.handshake_timeout(where, timeout))
        return Diagnosis(sentences.stopped(where, timeout))
    if isinstance(error, smtplib.SMTPServerDisconnected | ConnectionResetError |
                  BrokenPipeError | EOFError):
        if stage == "handshake" and _speaks_plaintext(host, port, timeout):
            return Diagnosis(sentences.plaintext("the server closed the connection"))
        if stage == "greeting" and client.mode != "implicit":
            return Diagnosis(sentences.silence(
                host, port, timeout, closed=True,
                implicit=_speaks_tls(host, port, timeout, client.servername)))
        return Diagnosis(sentences.closed(where))
    if isinstance(error, smtplib.SMTPAuthenticationError):
        said = error.smtp_error.decode("utf-8", "replace") if isinstance(
            error.smtp_error, bytes) else str(error.smtp_error)
        return Diagnosis(sentences.auth_failed(error.smtp_code, said))
    if isinstance(error, smtplib.SMTPResponseException):
        text = error.smtp_error.decode("utf-8", "replace") if isinstance(
            error.smtp_error, bytes) else str(error.smtp_error)
        return Diagnosis(sentences.reply(error.smtp_code, text, client.tls))
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        return Diagnosis(sentences.recipients_refused(
            (to, code, reply.decode("utf-8", "replace"))
            for to, (code, reply) in error.recipients.items()))
    if isinstance(error, OSError):
        return Diagnosis(f"{where}: {error.strerror or error}")
    return Diagnosis(f"{where}: {error}")


# mailsink check.

@dataclass
class Findings:
    """What a probe found out, printed line by line."""

    lines: list[str] = field(default_factory=list)
    use: str | None = None
    problem: str | None = None

    def add(self, label: str, value: object) -> None:
        self.lines.append(f"{label}: {value}")


def _auth_choice(mechanisms: list[str]) -> str:
    for preferred in ("PLAIN", "LOGIN"):
        if preferred in mechanisms:
            return preferred
    return mechanisms[0]


def _auth_required(client: Client) -> bool | None:
    """MAIL FROM without AUTH: refused with 530 means required (then RSET)."""
    try:
        code, message = client.mail(PROBE_SENDER)
        client.rset()
    except (smtplib.SMTPException, OSError):
        return None
    if code == 530 and b"auth" in message.lower():
        return True
    return False if code == 250 else None


def _describe_certificate(findings: Findings, client: Client, name: str) -> None:
    der = client.peer_certificate()
    if not der:
        return
    try:
        cert = parse_certificate(der)
    except ValueError as e:
        findings.add("certificate", f"unreadable ({e})")
        return
    now = datetime.datetime.now(datetime.UTC)
    findings.add("certificate subject", cert.subject)
    findings.add("certificate SANs", ", ".join(cert.names) or "none")
    findings.add("certificate issuer", cert.issuer)
    days = (cert.not_after - now).days
    findings.add("certificate expires", f"{cert.not_after:%Y-%m-%d} "
                 f"({'expired' if days < 0 else f'in {days} days'})")
    matches = cert.matches(name)
    findings.add(f"certificate matches {name}",
                 "yes" if matches else f"no — {mismatch(cert.names, name)}")


def _tls_session(findings: Findings, host: str, port: int, mode: str, context: ssl.SSLContext,
                 timeout: float, servername: str | None, label: str) -> Client | None:
    """
    A TLS session (implicit or after STARTTLS, EHLO sent after it) with the checking
    context. If the certificate is refused, the reason becomes the problem and the probe
    goes on without checking, to list what the server offers.
    """
    name = servername or host
    client = Client(mode=mode, context=context, timeout=timeout, servername=servername)
    try:
        client.open(host, port)
        if mode == "implicit":
            findings.add(f"greeting ({label})", client.greeting)
        client.ehlo()
        if mode == "starttls":
            client.upgrade()
        version = client.sock.version() if isinstance(client.sock, ssl.SSLSocket) else None
        findings.add("TLS", f"{version}, certificate accepted"
                     if context.verify_mode != ssl.CERT_NONE else f"{version}, not checked")
        _describe_certificate(findings, client, name)
        return client
    except ssl.SSLCertVerificationError as e:
        client.close()
        certificate = _fetch_certificate(host, port, mode, timeout, servername)
        findings.problem = findings.problem or verification(
            e.verify_code, e.verify_message or str(e), name, certificate)
        findings.add("certificate check", f"refused: {e.verify_message}")
        return _tls_session(findings, host, port, mode, _unverified(), timeout, servername,
                            label)
    except (OSError, smtplib.SMTPException, ssl.SSLError) as e:
        client.close()
        findings.problem = findings.problem or str(diagnose(e, client, host, port))
        return None


def check(host: str, port: int, *, context: ssl.SSLContext, timeout: float = DEFAULT_TIMEOUT,
          servername: str | None = None) -> Findings:
    """Probe C{host:port}: what works, and the client settings to use (or the problem)."""
    findings = Findings()
    plain = Client(mode="none", context=context, timeout=timeout, servername=servername)
    try:
        plain.open(host, port)
    except TimeoutError as e:
        if plain.stage != "greeting":
            raise diagnose(e, plain, host, port) from None
        findings.add("greeting", f"none in {timeout:g} s (implicit TLS?)")
        plain.close()
        return _check_implicit(findings, host, port, context, timeout, servername)
    except (smtplib.SMTPServerDisconnected, ConnectionResetError) as e:
        if plain.stage != "greeting":
            raise diagnose(e, plain, host, port) from None
        findings.add("greeting", "the connection closed without one (implicit TLS?)")
        plain.close()
        return _check_implicit(findings, host, port, context, timeout, servername)
    except (OSError, smtplib.SMTPException) as e:
        plain.close()
        raise diagnose(e, plain, host, port) from None
    findings.add("greeting", plain.greeting)
    try:
        plain.ehlo()
        mechanisms, size = plain.features()
        starttls = plain.has_extn("starttls")
        findings.add("STARTTLS", "offered" if starttls else "not offered")
        findings.add("AUTH before TLS", " ".join(mechanisms) or "not offered")
        if size is not None:
            findings.add("SIZE", size)
        required = None if starttls else _auth_required(plain)
    except (OSError, smtplib.SMTPException) as e:
        plain.close()
        raise diagnose(e, plain, host, port) from None
    plain.quit_quietly()
    if not starttls:
        if required is not None:
            findings.add("AUTH required", "yes" if required else "no")
        auth = f", AUTH {_auth_choice(mechanisms)}" if mechanisms else ""
        if required and not mechanisms:
            findings.problem = "the server requires AUTH but offers no mechanism"
        else:
            findings.use = f"use: port {port}, no TLS{auth}"
        return findings
    client = _tls_session(findings, host, port, "starttls", context, timeout, servername,
                          "after STARTTLS")
    return _after_tls(findings, client, port, "STARTTLS")


def _check_implicit(findings: Findings, host: str, port: int, context: ssl.SSLContext,
                    timeout: float, servername: str | None) -> Findings:
    client = _tls_session(findings, host, port, "implicit", context, timeout, servername,
                          "over TLS")
    if client is None:
        findings.problem = (f"{host}:{port} sent no greeting in {timeout:g} s and no TLS "
                            f"handshake worked either ({findings.problem})")
        return findings
    findings.add("implicit TLS", "yes")
    return _after_tls(findings, client, port, "implicit TLS")


def _after_tls(findings: Findings, client: Client | None, port: int, tls: str) -> Findings:
    if client is None:
        return findings
    try:
        mechanisms, size = client.features()
        findings.add("AUTH after TLS", " ".join(mechanisms) or "not offered")
        if size is not None:
            findings.add("SIZE after TLS", size)
        required = _auth_required(client)
        if required is not None:
            findings.add("AUTH required", "yes" if required else "no")
    finally:
        client.quit_quietly()
    if required and not mechanisms:
        findings.problem = findings.problem or "the server requires AUTH but offers no " \
                                               "mechanism"
    if findings.problem is None:
        auth = f", AUTH {_auth_choice(mechanisms)}" if mechanisms else ""
        findings.use = f"use: port {port}, {tls}{auth}"
    return findings
