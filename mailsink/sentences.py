"""
The one-sentence diagnoses for SMTP client failures, shared by C{mailsink check},
C{mailsink send} (blocking, L{mailsink.probe}) and the relay (Twisted,
L{mailsink.relay.diagnose}), so the same mistake reads the same wherever it shows.

Sentences name the command-line flags; L{mailsink.relay.diagnose.for_relay} rewrites them
to name the C{[relay]} keys.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

PLAINTEXT_REASONS = {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "UNKNOWN_PROTOCOL",
                     "HTTP_REQUEST", "PACKET_LENGTH_TOO_LONG", "WRONG_SSL_VERSION"}
"""OpenSSL reasons for a handshake answered with something that is not TLS."""
UNTRUSTED_CODES = {2, 18, 19, 20, 21, 27}
"""X509_V_ERR codes for self-signed or unknown-issuer certificates."""
MISMATCH_CODES = {62, 64}
"""X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH."""
EXPIRED = 10
"""X509_V_ERR_CERT_HAS_EXPIRED."""


class Diagnosis(Exception):
    """A failure worded as one sentence a person can act on."""


def is_plaintext_reason(reason: str) -> bool:
    """Whether an OpenSSL reason (C{WRONG_VERSION_NUMBER} or C{wrong version number}) means
    the peer answered the handshake with something that is not TLS."""
    return reason.upper().replace(" ", "_") in PLAINTEXT_REASONS


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


def describe_certificate(cert: x509.Certificate) -> Certificate:
    """The parts of C{cert} the sentences and C{mailsink check} show."""
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


def parse_certificate(der: bytes) -> Certificate:
    return describe_certificate(x509.load_der_x509_certificate(der))


def _join(names: Iterable[str]) -> str:
    items = list(names)
    if not items:
        return "no names"
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def mismatch(names: Iterable[str], host: str) -> str:
    """The one sentence for a certificate that does not name C{host}."""
    return f"certificate is for {_join(names)}, not {host}"


def verification(code: int, reason: str, host: str, certificate: Certificate | None) -> str:
    """The one sentence for a certificate refused with X509_V_ERR C{code}."""
    if code in MISMATCH_CODES:
        if certificate is not None:
            return mismatch(certificate.names, host)
        return f"certificate does not name {host}"
    if code == EXPIRED and certificate is not None:
        return (f"certificate expired on {certificate.not_after:%Y-%m-%d}: the server must "
                f"renew it (or pass --insecure to skip the check)")
    if code in UNTRUSTED_CODES:
        return (f"certificate is not trusted ({reason}): pass --cafile with the server's "
                f"certificate or CA, or --insecure to skip the check")
    return f"certificate refused: {reason}"


# Connecting and greeting.

def refused(where: str) -> str:
    return f"{where} refused the connection — nothing listens on that port: check the host " \
           f"and port"


def unknown_host(host: str, why: str) -> str:
    return f"cannot find {host}: {why}: check the host name"


def no_answer(where: str, timeout: float) -> str:
    return (f"{where} did not answer a connection in {timeout:g} s — a firewall may drop it, "
            f"or the host or port is wrong")


def silence(host: str, port: int, timeout: float, *, closed: bool = False,
            implicit: bool = True) -> str:
    """The one sentence for a server that did not greet (C{implicit}: TLS works there)."""
    what = ("closed the connection without a greeting" if closed
            else f"sent no greeting in {timeout:g} s")
    if implicit:
        return (f"{host}:{port} {what} — port {port} expects TLS from the first byte: "
                f"set tls = implicit")
    return (f"{host}:{port} {what} — the server may be overloaded, or something between "
            f"holds the connection")


def plaintext(reason: str) -> str:
    """The one sentence for a TLS handshake answered in plaintext."""
    return (f"TLS handshake failed: {reason} — the server speaks plaintext first: "
            f"set tls = starttls")


def handshake_failed(where: str, reason: str) -> str:
    return f"TLS handshake with {where} failed: {reason}"


def handshake_timeout(where: str, timeout: float) -> str:
    return f"{where} did not finish the TLS handshake in {timeout:g} s"


def stopped(where: str, timeout: float) -> str:
    return f"{where} stopped answering for {timeout:g} s"


def closed(where: str) -> str:
    return f"{where} closed the connection unexpectedly"


# STARTTLS and AUTH.

def no_starttls(where: str) -> str:
    return f"{where} does not offer STARTTLS: set tls = none, or use the server's TLS port"


def auth_only_after_starttls(where: str) -> str:
    return f"{where} does not offer AUTH before STARTTLS: set tls = starttls"


def no_auth(where: str, tls: bool) -> str:
    return (f"{where} does not offer AUTH: leave out --user"
            + ("" if tls else ", or try tls = starttls or implicit"))


def no_common_mechanism(where: str, offered: Iterable[str], spoken: Iterable[str]) -> str:
    return (f"{where} offers AUTH {' '.join(offered)}, none of which mailsink speaks here "
            f"({', '.join(spoken)})")


def auth_failed(code: int, text: str = "", *, token: bool = False) -> str:
    """The one sentence for a refused login, with the server's own words."""
    said = f" (the server said: {text})" if text else ""
    if code // 100 == 4:
        return f"{code} the server cannot check logins right now{said}: try again later"
    if "5.7.139" in text:  # Microsoft 365: SMTP AUTH disabled for the mailbox or tenant
        return (f"{code} SMTP AUTH is turned off for this account{said}: turn on "
                f"Authenticated SMTP for the mailbox in Microsoft 365, or log in with an "
                f"OAuth2 token")
    if code == 534 and "5.7.9" in text:  # Gmail: an app password is required
        return f"{code} the account needs an app password{said}: create one and use it"
    if token:
        return (f"{code} authentication failed: check username/token; OAuth2 access tokens "
                f"expire (often after an hour){said}")
    return (f"{code} authentication failed: check username/password; some providers need "
            f"an app password{said}")


# Replies.

def reply(code: int, text: str, tls: bool) -> str:
    """The one sentence for a refusing reply C{code text} to a command."""
    if code == 530 and "auth" in text.lower():
        return f"{code} the server requires authentication: pass --user and a password"
    if code in (530, 538) and not tls:
        return f"{code} the server requires TLS first ({text}): set tls = starttls"
    return f"the server answered {code} {text}"


def _refused(refusals: Iterable[tuple[str, int, str]]) -> str:
    return ", ".join(f"{to} ({code} {text})" for to, code, text in refusals)


def recipients_refused(refusals: Iterable[tuple[str, int, str]]) -> str:
    return f"the server refused every recipient: {_refused(refusals)}"


def partly_delivered(refusals: Iterable[tuple[str, int, str]], delivered: Iterable[str]) -> str:
    return (f"the server refused {_refused(refusals)}; the copy went to {_join(delivered)} "
            f"only")


def maybe_delivered(where: str, what: str) -> str:
    """The one sentence for a message sent whole whose answer never came."""
    return (f"{where} {what}: the message may have been delivered all the same; check "
            f"before sending it again")


def early_reply(where: str, line: str) -> str:
    return f"{where} answered before the whole message was sent ({line}): it was not delivered"


def injected_after_starttls(where: str) -> str:
    return (f"{where} sent more lines right after agreeing to STARTTLS, before TLS began: "
            f"something on the way may be tampering with the connection; not going on")
