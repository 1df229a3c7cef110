"""Tests for mailsink.tls: certificate checks, the generated certificate, and real handshakes."""

import contextlib
import datetime
import os
import ssl
import stat
from functools import cache
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import ClientFactory, Protocol, ServerFactory
from twisted.internet.ssl import Certificate, CertificateOptions, optionsForClientTLS
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from mailsink.tls import (
    GENERATED_CERT_NAME,
    GENERATED_KEY_NAME,
    CertificateError,
    ServerCertificate,
    load_or_generate_certificate,
    server_context_factory,
)

UTC = datetime.UTC
DAY = datetime.timedelta(days=1)


def _now() -> datetime.datetime:
    """Real time: handshakes check validity against the clock, not against ``now``."""
    return datetime.datetime.now(UTC)


def _pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _issue(
    subject_key: PrivateKeyTypes,
    cn: str,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    issuer: x509.Name | None = None,
    ca: bool = False,
) -> x509.Certificate:
    """A small certificate for user-provided chains (EC keys: quick to make)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(subject_key.public_key())  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - DAY)
        .not_valid_after(_now() + 365 * DAY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


@cache
def _user_chain() -> tuple[bytes, bytes, bytes]:
    """A CA and a leaf for ``mail.example.test`` it signed: (ca PEM, leaf+ca PEM, leaf key PEM)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue(ca_key, "Test CA", ca_key, ca=True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = _issue(leaf_key, "mail.example.test", ca_key, issuer=ca.subject)
    pem = serialization.Encoding.PEM
    return ca.public_bytes(pem), leaf.public_bytes(pem) + ca.public_bytes(pem), _pem(leaf_key)


@cache
def _generated_pems() -> tuple[bytes, bytes]:
    """One generated RSA certificate and key, shared by tests that only need some valid pair."""
    import tempfile

    with tempfile.TemporaryDirectory() as state_dir:
        made = load_or_generate_certificate("", "", state_dir, "localhost")
        with open(made.cert_path, "rb") as c, open(made.key_path, "rb") as k:
            return c.read(), k.read()


def _alt_names(path: str) -> tuple[list[str], list[str]]:
    leaf = _leaf(path)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.DNSName), [
        str(ip) for ip in san.get_values_for_type(x509.IPAddress)
    ]


def _leaf(path: str) -> x509.Certificate:
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificates(f.read())[0]


class GeneratedCertificateTests(TestCase):
    """Empty ``[tls] cert``/``key``: a self-signed certificate kept in ``state_dir``."""

    def setUp(self) -> None:
        self.state_dir = os.path.abspath(os.path.join(self.mktemp(), "var", "state"))

    def generate(self, hostname: str = "localhost", **kwargs: Any) -> ServerCertificate:
        return load_or_generate_certificate("", "", self.state_dir, hostname, **kwargs)

    def test_files_and_modes(self) -> None:
        """Both files land in a new 0700 ``state_dir``; the key is 0600."""
        made = self.generate()
        self.assertEqual(made.cert_path, os.path.join(self.state_dir, GENERATED_CERT_NAME))
        self.assertEqual(made.key_path, os.path.join(self.state_dir, GENERATED_KEY_NAME))
        self.assertTrue(made.generated)
        self.assertEqual(stat.S_IMODE(os.stat(self.state_dir).st_mode), 0o700)
        self.assertEqual(stat.S_IMODE(os.stat(made.key_path).st_mode), 0o600)
        self.assertFalse(os.stat(made.cert_path).st_mode & 0o022)
        leftovers = set(os.listdir(self.state_dir)) - {GENERATED_CERT_NAME, GENERATED_KEY_NAME}
        self.assertFalse({n for n in leftovers if n.startswith(".tmp")})

    def test_certificate_contents(self) -> None:
        """Self-signed RSA 2048, CN and SANs for the host, server-only usages, ten years."""
        now = _now()
        made = self.generate("mail.example.test", now=now)
        leaf = _leaf(made.cert_path)
        self.assertEqual(
            leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value, "mail.example.test"
        )
        self.assertEqual(leaf.issuer, leaf.subject)
        leaf.verify_directly_issued_by(leaf)
        public_key = leaf.public_key()
        assert isinstance(public_key, rsa.RSAPublicKey)
        self.assertEqual(public_key.key_size, 2048)
        self.assertEqual(
            _alt_names(made.cert_path), (["mail.example.test", "localhost"], ["127.0.0.1", "::1"])
        )
        extensions = leaf.extensions
        self.assertFalse(extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
        self.assertEqual(
            list(extensions.get_extension_for_class(x509.ExtendedKeyUsage).value),
            [ExtendedKeyUsageOID.SERVER_AUTH],
        )
        usage = extensions.get_extension_for_class(x509.KeyUsage).value
        self.assertTrue(usage.digital_signature and usage.key_encipherment)
        self.assertFalse(usage.key_cert_sign)
        self.assertLess(leaf.not_valid_before_utc, now)
        self.assertGreater(leaf.not_valid_before_utc, now - 2 * DAY)
        self.assertEqual(made.not_after, leaf.not_valid_after_utc)
        self.assertEqual(made.not_after.tzinfo, UTC)
        ten_years = now.replace(year=now.year + 10)
        self.assertLess(abs(made.not_after - ten_years), 2 * DAY)

    def test_fingerprint(self) -> None:
        """The fingerprint is colon-separated uppercase SHA-256 of the certificate's DER."""
        made = self.generate()
        digest = _leaf(made.cert_path).fingerprint(hashes.SHA256())
        self.assertEqual(made.fingerprint_sha256, digest.hex(":").upper())
        self.assertRegex(made.fingerprint_sha256, r"^([0-9A-F]{2}:){31}[0-9A-F]{2}$")

    def test_localhost_not_repeated(self) -> None:
        made = self.generate("localhost")
        self.assertEqual(_alt_names(made.cert_path), (["localhost"], ["127.0.0.1", "::1"]))

    def test_ip_hostname(self) -> None:
        """An IP literal ``hostname`` becomes an IP SAN, never a DNS one."""
        made = self.generate("192.0.2.7")
        self.assertEqual(
            _alt_names(made.cert_path), (["localhost"], ["192.0.2.7", "127.0.0.1", "::1"])
        )

    def test_ipv6_loopback_hostname_not_repeated(self) -> None:
        made = self.generate("::1")
        self.assertEqual(_alt_names(made.cert_path), (["localhost"], ["::1", "127.0.0.1"]))

    def test_international_and_container_names(self) -> None:
        """Non-ASCII names are punycoded; underscores (container names) are kept."""
        made = self.generate("Bücher.example")
        self.assertEqual(_alt_names(made.cert_path)[0], ["xn--bcher-kva.example", "localhost"])
        made = self.generate("app_mailsink_1")
        self.assertEqual(_alt_names(made.cert_path)[0], ["app_mailsink_1", "localhost"])

    def test_bad_hostname(self) -> None:
        for bad in ["", "two words"]:
            error = self.assertRaises(CertificateError, self.generate, bad)
            self.assertIn("[mailsink] hostname", str(error))

    def test_reused(self) -> None:
        """A second start keeps the same files, so the trusted fingerprint still holds."""
        first = self.generate()
        with open(first.key_path, "rb") as f:
            key = f.read()
        second = self.generate(now=_now() + 300 * DAY)
        self.assertEqual(second, first)
        with open(first.key_path, "rb") as f:
            self.assertEqual(f.read(), key)

    def test_reuse_tightens_key_mode(self) -> None:
        first = self.generate()
        os.chmod(first.key_path, 0o644)
        self.assertEqual(self.generate(), first)
        self.assertEqual(stat.S_IMODE(os.stat(first.key_path).st_mode), 0o600)

    def test_hostname_change_regenerates(self) -> None:
        first = self.generate("localhost")
        second = self.generate("mail.example.test")
        self.assertNotEqual(second.fingerprint_sha256, first.fingerprint_sha256)
        self.assertIn("mail.example.test", _alt_names(second.cert_path)[0])
        self.assertEqual(self.generate("mail.example.test"), second)

    def test_near_expiry_regenerates(self) -> None:
        """Reused up to 30 days before expiry, replaced from then on."""
        now = _now()
        first = self.generate(now=now)
        self.assertEqual(self.generate(now=first.not_after - 31 * DAY), first)
        later = first.not_after - 29 * DAY  # nine years and eleven months on
        second = self.generate(now=later)
        self.assertNotEqual(second.fingerprint_sha256, first.fingerprint_sha256)
        self.assertGreater(second.not_after, later + 3650 * DAY)

    def test_not_yet_valid_regenerates(self) -> None:
        """A clock set back before the certificate began gets one it can use."""
        now = _now()
        first = self.generate(now=now)
        second = self.generate(now=now - 30 * DAY)
        self.assertNotEqual(second.fingerprint_sha256, first.fingerprint_sha256)

    def test_damaged_files_regenerate(self) -> None:
        """Missing, garbled or mismatched files are replaced, not reported."""
        first = self.generate()
        os.remove(first.key_path)
        second = self.generate()
        self.assertNotEqual(second.fingerprint_sha256, first.fingerprint_sha256)
        with open(second.cert_path, "wb") as f:
            f.write(b"-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
        third = self.generate()
        self.assertNotEqual(third.fingerprint_sha256, second.fingerprint_sha256)
        with open(third.key_path, "wb") as f:
            f.write(_pem(ec.generate_private_key(ec.SECP256R1())))
        fourth = self.generate()
        self.assertNotEqual(fourth.fingerprint_sha256, third.fingerprint_sha256)
        server_context_factory(fourth)

    def test_unusable_state_dir(self) -> None:
        """A ``state_dir`` that cannot be created is a start-up error naming it."""
        parent = os.path.dirname(self.state_dir)
        os.makedirs(os.path.dirname(parent))
        with open(parent, "w"):
            pass  # a file where a directory should be
        error = self.assertRaises(CertificateError, self.generate)
        self.assertIn("[mailsink] state_dir", str(error))
        self.assertIn(self.state_dir, str(error))


class ConfiguredCertificateTests(TestCase):
    """``[tls] cert`` and ``key`` set: loaded and checked at start-up."""

    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)

    def write(self, name: str, data: bytes) -> str:
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def load(self, cert: str, key: str) -> ServerCertificate:
        return load_or_generate_certificate(cert, key, os.path.join(self.dir, "state"), "x")

    def assertError(self, cert: str, key: str, *fragments: str) -> str:
        """The load fails with one line that contains each fragment."""
        message = str(self.assertRaises(CertificateError, self.load, cert, key))
        self.assertNotIn("\n", message)
        for fragment in fragments:
            self.assertIn(fragment, message)
        return message

    def test_loaded(self) -> None:
        _, chain, key = _user_chain()
        cert_path, key_path = self.write("cert.pem", chain), self.write("key.pem", key)
        loaded = self.load(cert_path, key_path)
        leaf = x509.load_pem_x509_certificates(chain)[0]
        self.assertEqual(
            loaded,
            ServerCertificate(
                cert_path=cert_path,
                key_path=key_path,
                fingerprint_sha256=leaf.fingerprint(hashes.SHA256()).hex(":").upper(),
                generated=False,
                not_after=leaf.not_valid_after_utc,
            ),
        )
        self.assertFalse(os.path.exists(os.path.join(self.dir, "state")))

    def test_combined_file(self) -> None:
        """One PEM file holding key and certificate may serve as both."""
        cert, key = _generated_pems()
        both = self.write("both.pem", key + cert)
        self.assertEqual(self.load(both, both).cert_path, both)

    def test_only_one_set(self) -> None:
        cert_path = self.write("cert.pem", _generated_pems()[0])
        self.assertError(cert_path, "", "[tls] key is empty", cert_path)
        self.assertError("", cert_path, "[tls] cert is empty", cert_path)

    def test_missing_files(self) -> None:
        cert, key = _generated_pems()
        cert_path, key_path = self.write("cert.pem", cert), self.write("key.pem", key)
        missing = os.path.join(self.dir, "nope.pem")
        self.assertError(missing, key_path, "[tls] cert", missing, "not found")
        self.assertError(cert_path, missing, "[tls] key", missing, "not found")
        self.assertError(self.dir, key_path, "[tls] cert", "directory")

    def test_unreadable(self) -> None:
        if os.geteuid() == 0:
            self.skipTest("root reads anything")
        cert, key = _generated_pems()
        cert_path, key_path = self.write("cert.pem", cert), self.write("key.pem", key)
        os.chmod(key_path, 0)
        self.assertError(cert_path, key_path, key_path, "permission denied")

    def test_mismatched_key(self) -> None:
        cert_path = self.write("cert.pem", _generated_pems()[0])
        key_path = self.write("key.pem", _user_chain()[2])
        self.assertError(cert_path, key_path, "does not belong", key_path, cert_path)

    def test_leaf_not_first(self) -> None:
        ca, chain, key = _user_chain()
        leaf = chain[: -len(ca)]
        cert_path, key_path = self.write("cert.pem", ca + leaf), self.write("key.pem", key)
        self.assertError(cert_path, key_path, "first", cert_path)

    def test_not_pem(self) -> None:
        cert, key = _generated_pems()
        der = x509.load_pem_x509_certificate(cert).public_bytes(serialization.Encoding.DER)
        key_path = self.write("key.pem", key)
        self.assertError(self.write("cert.der", der), key_path, "not a PEM file", "openssl x509")
        garbled = self.write("bad.pem", cert.replace(b"M", b"!"))
        self.assertError(garbled, key_path, "[tls] cert", garbled)
        self.assertError(self.write("empty.pem", b""), key_path, "not a PEM file")

    def test_swapped(self) -> None:
        cert, key = _generated_pems()
        cert_path, key_path = self.write("cert.pem", cert), self.write("key.pem", key)
        self.assertError(key_path, cert_path, "swapped", key_path)

    def test_encrypted_key(self) -> None:
        cert, key = _generated_pems()
        private_key = serialization.load_pem_private_key(key, password=None)
        encrypted = private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
        cert_path, key_path = self.write("cert.pem", cert), self.write("key.pem", encrypted)
        self.assertError(cert_path, key_path, "encrypted", "openssl pkey")

    def test_weak_key_refused(self) -> None:
        """OpenSSL's own refusal (here a 1024-bit key) shows at start-up, not per handshake."""
        weak_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        weak = _issue(weak_key, "localhost", weak_key)
        cert_path = self.write("cert.pem", weak.public_bytes(serialization.Encoding.PEM))
        self.assertError(cert_path, self.write("key.pem", _pem(weak_key)), cert_path, "small")


@implementer(IHandshakeListener)
class _Peer(Protocol):
    """Records whether the TLS handshake finished and why the connection ended."""

    handshook = False
    lost: Failure | None = None

    def handshakeCompleted(self) -> None:
        self.handshook = True

    def connectionLost(self, reason: Failure = ...) -> None:  # type: ignore[assignment]
        self.lost = reason


def _twisted_handshake(
    server_options: CertificateOptions, client_options: Any
) -> tuple[TLSMemoryBIOProtocol, _Peer, _Peer]:
    """Run Twisted's own TLS layer on both ends in memory, as the listeners will.

    Returns the client's TLS protocol and the client and server application protocols.
    """
    # cast: mypy without the zope plugin cannot see these classes implement the interfaces.
    server_factory = TLSMemoryBIOFactory(
        cast(Any, server_options), False, cast(Any, ServerFactory.forProtocol(_Peer))
    )
    client_factory = TLSMemoryBIOFactory(
        client_options, True, cast(Any, ClientFactory.forProtocol(_Peer))
    )
    client, server, pump = connectedServerAndClient(
        lambda: server_factory.buildProtocol(None),
        lambda: client_factory.buildProtocol(None),
        greet=False,
    )
    client_peer, server_peer = client.wrappedProtocol, server.wrappedProtocol
    pump.flush()
    return client, client_peer, server_peer


def _openssl_handshake(server_options: CertificateOptions, client: SSL.Context) -> SSL.Connection:
    """Drive a raw pyOpenSSL client against the server context; returns the server side."""
    server_end = SSL.Connection(server_options.getContext(), None)
    server_end.set_accept_state()
    client_end = SSL.Connection(client, None)
    client_end.set_connect_state()
    for _ in range(10):
        for this, other in ((client_end, server_end), (server_end, client_end)):
            with contextlib.suppress(SSL.WantReadError):
                this.do_handshake()
            with contextlib.suppress(SSL.WantReadError):
                other.bio_write(this.bio_read(65536))
    return server_end


class ServerContextTests(TestCase):
    """The options the listeners use work in real handshakes, and only from TLS 1.2 up."""

    def setUp(self) -> None:
        state_dir = os.path.abspath(self.mktemp())
        os.makedirs(state_dir)
        cert, key = _generated_pems()
        for name, data in [(GENERATED_CERT_NAME, cert), (GENERATED_KEY_NAME, key)]:
            with open(os.path.join(state_dir, name), "wb") as f:
                f.write(data)
        self.certificate = load_or_generate_certificate("", "", state_dir, "localhost")
        self.trust = Certificate.loadPEM(cert)

    def test_trusting_client_verifies(self) -> None:
        """A client that trusts the generated certificate accepts it by name and by address."""
        options = server_context_factory(self.certificate)
        for name in ["localhost", "127.0.0.1", "::1"]:
            client, client_peer, server_peer = _twisted_handshake(
                options, optionsForClientTLS(name, trustRoot=self.trust)
            )
            self.assertTrue(client_peer.handshook, name)
            self.assertTrue(server_peer.handshook, name)
            version = client.getHandle().get_protocol_version_name()
            self.assertIn(version, {"TLSv1.2", "TLSv1.3"})

    def test_other_name_rejected(self) -> None:
        _, client_peer, _ = _twisted_handshake(
            server_context_factory(self.certificate),
            optionsForClientTLS("mail.example.test", trustRoot=self.trust),
        )
        self.assertFalse(client_peer.handshook)
        assert client_peer.lost is not None
        self.assertIn("mail.example.test", str(client_peer.lost.value))

    def test_python_ssl_client_verifies(self) -> None:
        """smtplib-style clients (stdlib ssl, strict X.509 as in Python 3.13) trust it too."""
        context = ssl.create_default_context(cadata=self.trust.dumpPEM().decode("ascii"))
        context.verify_flags |= ssl.VERIFY_X509_STRICT
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        client = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
        server = SSL.Connection(server_context_factory(self.certificate).getContext(), None)
        server.set_accept_state()
        for _ in range(10):
            try:
                client.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            server.bio_write(outgoing.read())
            with contextlib.suppress(SSL.WantReadError):
                server.do_handshake()
            with contextlib.suppress(SSL.WantReadError):
                incoming.write(server.bio_read(65536))
        self.assertIn(client.version(), {"TLSv1.2", "TLSv1.3"})
        peer = client.getpeercert()
        assert peer is not None
        self.assertEqual(peer["subject"], ((("commonName", "localhost"),),))

    def test_tls12_client(self) -> None:
        client = SSL.Context(SSL.TLS_CLIENT_METHOD)
        client.set_max_proto_version(SSL.TLS1_2_VERSION)
        server = _openssl_handshake(server_context_factory(self.certificate), client)
        self.assertEqual(server.get_protocol_version_name(), "TLSv1.2")

    def test_tls11_client_refused(self) -> None:
        """The server, not just a modern client library, refuses TLS 1.1."""
        client = SSL.Context(SSL.TLS_CLIENT_METHOD)
        client.set_max_proto_version(SSL.TLS1_1_VERSION)
        client.set_cipher_list(b"DEFAULT:@SECLEVEL=0")  # let the client offer TLS 1.1 at all
        error = self.assertRaises(
            SSL.Error, _openssl_handshake, server_context_factory(self.certificate), client
        )
        self.assertIn("unsupported protocol", str(error))

    def test_no_client_certificate_requested(self) -> None:
        context = server_context_factory(self.certificate).getContext()
        self.assertEqual(context.get_verify_mode(), SSL.VERIFY_NONE)

    def test_chain_sent(self) -> None:
        """A configured chain is presented whole, so clients trusting only the CA connect."""
        ca, chain, key = _user_chain()
        directory = self.mktemp()
        os.makedirs(directory)
        cert_path, key_path = (os.path.join(directory, n) for n in ["cert.pem", "key.pem"])
        for path, data in [(cert_path, chain), (key_path, key)]:
            with open(path, "wb") as f:
                f.write(data)
        loaded = load_or_generate_certificate(cert_path, key_path, directory, "x")
        client, client_peer, _ = _twisted_handshake(
            server_context_factory(loaded),
            optionsForClientTLS("mail.example.test", trustRoot=Certificate.loadPEM(ca)),
        )
        self.assertTrue(client_peer.handshook)
        presented = client.getHandle().get_peer_cert_chain(as_cryptography=True)
        self.assertEqual(len(presented), 2)

    def test_files_reread(self) -> None:
        """A file that went bad after start-up is reported, not crashed on."""
        with open(self.certificate.key_path, "wb") as f:
            f.write(b"")
        error = self.assertRaises(CertificateError, server_context_factory, self.certificate)
        self.assertIn(self.certificate.key_path, str(error))
