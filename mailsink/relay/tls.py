"""
Client TLS for the relay that remembers why it refused a certificate.

Twisted's C{optionsForClientTLS} refuses bad certificates correctly but reports only
"certificate verify failed"; a person needs "certificate is not trusted (self-signed
certificate)" or "certificate is for mail.example.net, not smtp.example.com". This creator
verifies the same way (the system's trusted CAs through OpenSSL's chain check, then the
host name with service-identity once the handshake is done, as Twisted does) and keeps the
refusal as a sentence for L{mailsink.relay.diagnose}.
"""

from __future__ import annotations

import ipaddress

from OpenSSL import SSL, crypto
from service_identity import VerificationError
from service_identity.pyopenssl import verify_hostname, verify_ip_address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.python.failure import Failure
from zope.interface import implementer

from mailsink import sentences
from mailsink.sentences import Diagnosis

_REASONS = {
    2: "unable to get issuer certificate",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    18: "self-signed certificate",
    19: "self-signed certificate in certificate chain",
    20: "unable to get local issuer certificate",
    21: "unable to verify the first certificate",
    27: "certificate not trusted",
}
"""OpenSSL's words for the X509_V_ERR codes a relay meets (pyOpenSSL does not expose them)."""


@implementer(IOpenSSLClientConnectionCreator)
class RelayTLS:
    """
    TLS client connections to C{hostname} (SNI set, TLS 1.2 or later), verified unless
    C{verify} is false. One instance per connection: C{refusal} is that connection's.
    """

    def __init__(self, hostname: str, verify: bool) -> None:
        self.hostname = hostname
        self.verify = verify
        self.refusal: Diagnosis | None = None
        """Why the certificate was refused, once it was."""
        self._is_address = _is_address(hostname)

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        if self.verify:
            context.set_default_verify_paths()
            context.set_verify(SSL.VERIFY_PEER, self._chain_checked)
        else:
            context.set_verify(SSL.VERIFY_NONE)
        connection = SSL.Connection(context, None)
        connection.set_app_data(tlsProtocol)
        if not self._is_address:
            connection.set_tlsext_host_name(self.hostname.encode("idna"))
        connection.set_info_callback(self._handshake_step)
        return connection

    def _chain_checked(self, connection: SSL.Connection, certificate: crypto.X509, code: int,
                       depth: int, ok: int) -> bool:
        """OpenSSL's verdict stands; the first refusal is kept as a sentence."""
        if not ok and self.refusal is None:
            reason = _REASONS.get(code, f"verification error {code}")
            leaf = connection.get_peer_certificate()
            described = sentences.describe_certificate((leaf or certificate).to_cryptography())
            self.refusal = Diagnosis(sentences.verification(code, reason, self.hostname,
                                                            described))
        return bool(ok)

    def _handshake_step(self, connection: SSL.Connection, where: int, ret: int) -> None:
        if not self.verify or not where & SSL.SSL_CB_HANDSHAKE_DONE:
            return
        try:
            if self._is_address:
                verify_ip_address(connection, self.hostname)
            else:
                verify_hostname(connection, self.hostname)
        except VerificationError:
            peer = connection.get_peer_certificate()
            names = (sentences.describe_certificate(peer.to_cryptography()).names
                     if peer is not None else [])
            self.refusal = Diagnosis(sentences.mismatch(names, self.hostname))
            connection.get_app_data().failVerification(Failure(self.refusal))


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
