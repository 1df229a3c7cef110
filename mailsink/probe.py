"""
Probing any SMTP server from the command line (C{mailsink check}) and turning what goes
wrong into one sentence a person can act on (shared with C{mailsink send}).

This is a short-lived command-line tool, so it uses blocking C{smtplib}, C{ssl} and
C{socket} with a timeout on every step.
"""

from __future__ import annotations

import datetime
import ipaddress
import smtplib
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.x509.oid import NameOID

DEFAULT_TIMEOUT = 10.0
DEFAULT_PORT = 587
IMPLICIT_PORT = 465
MODES = ("none", "starttls", "implicit")
PROBE_SENDER = "mailsink-check@example.invalid"

_PLAINTEXT_REASONS = {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "UNKNOWN_PROTOCOL",
                      "HTTP_REQUEST", "PACKET_LENGTH_TOO_LONG", "WRONG_SSL_VERSION"}
"""OpenSSL reasons for a handshake answered with something that is not TLS."""
_UNTRUSTED_CODES = {18, 19, 20, 21, 27}
"""X509_V_ERR codes for self-signed or unknown-issuer certificates."""
_MISMATCH_CODES = {62, 64}
"""X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH."""


class Diagnosis(Exception):
    """A failure worded as one sentence a person can act on."""


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


# The certificate.

@dataclass
class Certificate:
    subject: str
    issuer: str
    dns_names: list[str]
    ip_addresses: list[str]
    not_after: datetime.datetime

    @property
    def names(self) -> list[str]:
        return self.dns_names + self.ip_addresses

    def matches(self, host: str) -> bool:
        """Whether the certificate names C{host} (an IP address or a DNS name)."""
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return any(_dns_match(pattern, host) for pattern in self.dns_names)
        return any(ipaddress.ip_address(ip) == address for ip in self.ip_addresses)


def _dns_match(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        first, _, rest = host.partition(".")
        return bool(first) and rest == pattern[2:]
    return pattern == host


def parse_certificate(der: bytes) -> Certificate:
    cert = x509.load_der_x509_certificate(der)
    dns: list[str] = []
    ips: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = san.get_values_for_type(x509.DNSName)
        ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        dns = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return Certificate(cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(), dns, ips,
                       cert.not_valid_after_utc)


def _join(names: Iterable[str]) -> str:
    items = list(names)
    if not items:
        return "no names"
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def mismatch_sentence(names: Iterable[str], host: str) -> str:
    """The one sentence for a certificate that does not name C{host}."""
    return f"certificate is for {_join(names)}, not {host}"


def verification_sentence(error: ssl.SSLCertVerificationError, host: str,
                          certificate: Certificate | None) -> str:
    """The one sentence for a certificate the client refused."""
    code = error.verify_code
    if code in _MISMATCH_CODES:
        if certificate is not None:
            return mismatch_sentence(certificate.names, host)
        return f"certificate does not name {host}"
    if code == 10 and certificate is not None:
        return (f"certificate expired on {certificate.not_after:%Y-%m-%d}: the server must "
                f"renew it (or pass --insecure to skip the check)")
    reason = error.verify_message or str(error)
    if code in _UNTRUSTED_CODES:
        return (f"certificate is not trusted ({reason}): pass --cafile with the server's "
                f"certificate or CA, or --insecure to skip the check")
    return f"certificate refused: {reason}"


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


def silence_sentence(host: str, port: int, timeout: float, *, closed: bool = False,
                     implicit: bool = True) -> str:
    """The one sentence for a server that did not greet (C{implicit}: TLS works there)."""
    what = ("closed the connection without a greeting" if closed
            else f"sent no greeting in {timeout:g} s")
    if implicit:
        return (f"{host}:{port} {what} — port {port} expects TLS from the first byte: "
                f"set tls = implicit")
    return (f"{host}:{port} {what} — the server may be overloaded, or something between "
            f"holds the connection")


def plaintext_sentence(reason: str) -> str:
    """The one sentence for a TLS handshake answered in plaintext."""
    return (f"TLS handshake failed: {reason} — the server speaks plaintext first: "
            f"set tls = starttls")


def _fetch_certificate(host: str, port: int, mode: str, timeout: float,
                       servername: str | None) -> Certificate | None:
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
        return Diagnosis(verification_sentence(error, name, certificate))
    if isinstance(error, ssl.SSLError):
        reason = (error.reason or str(error)).replace("_", " ").lower()
        if stage == "handshake" and (error.reason in _PLAINTEXT_REASONS
                                     or _speaks_plaintext(host, port, timeout)):
            return Diagnosis(plaintext_sentence(reason))
        return Diagnosis(f"TLS handshake with {where} failed: {reason}")
    if isinstance(error, socket.gaierror):
        return Diagnosis(f"cannot find {host}: {error.strerror}: check the host name")
    if isinstance(error, ConnectionRefusedError):
        return Diagnosis(f"{where} refused the connection — nothing listens on that port: "
                         f"check the host and port")
    if isinstance(error, TimeoutError):
        if stage == "connect":
            return Diagnosis(f"{where} did not answer a connection in {timeout:g} s — a "
                             f"firewall may drop it, or the host or port is wrong")
        if stage == "greeting" and client.mode != "implicit":
            return Diagnosis(silence_sentence(
                host, port, timeout,
                implicit=_speaks_tls(host, port, timeout, client.servername)))
        if stage == "handshake":
            return Diagnosis(f"{where} did not finish the TLS handshake in {timeout:g} s")
        return Diagnosis(f"{where} stopped answering for {timeout:g} s")
    if isinstance(error, smtplib.SMTPServerDisconnected | ConnectionResetError |
                  BrokenPipeError | EOFError):
        if stage == "handshake" and _speaks_plaintext(host, port, timeout):
            return Diagnosis(plaintext_sentence("the server closed the connection"))
        if stage == "greeting" and client.mode != "implicit":
            return Diagnosis(silence_sentence(
                host, port, timeout, closed=True,
                implicit=_speaks_tls(host, port, timeout, client.servername)))
        return Diagnosis(f"{where} closed the connection unexpectedly")
    if isinstance(error, smtplib.SMTPAuthenticationError):
        return Diagnosis(f"{error.smtp_code} authentication failed: check username/"
                         f"password; some providers need an app password")
    if isinstance(error, smtplib.SMTPResponseException):
        text = error.smtp_error.decode("utf-8", "replace") if isinstance(
            error.smtp_error, bytes) else str(error.smtp_error)
        code = error.smtp_code
        if code == 530 and "auth" in text.lower():
            return Diagnosis(f"{code} the server requires authentication: pass --user and a "
                             f"password")
        if code in (530, 538) and not client.tls:
            return Diagnosis(f"{code} the server requires TLS first ({text}): set tls = "
                             f"starttls")
        return Diagnosis(f"the server answered {code} {text}")
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        refused = ", ".join(f"{to} ({code} {reply.decode('utf-8', 'replace')})"
                            for to, (code, reply) in error.recipients.items())
        return Diagnosis(f"the server refused every recipient: {refused}")
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
                 "yes" if matches else f"no — {mismatch_sentence(cert.names, name)}")


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
        findings.problem = findings.problem or verification_sentence(e, name, certificate)
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
