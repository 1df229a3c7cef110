"""Server certificates: check the configured one, or make and keep a self-signed one.

Generated certificates are reused so the fingerprint a user trusted survives restarts; a
configured one is checked at start-up so a wrong file costs one clear line, not every handshake.
"""

import contextlib
import datetime
import fcntl
import ipaddress
import os
import tempfile
from collections.abc import Iterator
from typing import Any, cast

import attrs
import idna
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from twisted.internet.ssl import CertificateOptions, TLSVersion

GENERATED_CERT_NAME = "mailsink-cert.pem"
GENERATED_KEY_NAME = "mailsink-key.pem"
_LOCK_NAME = "mailsink-cert.lock"

#: Ten years (with leap days), so a trusted certificate rarely has to be trusted again.
VALIDITY = datetime.timedelta(days=3653)
#: Back-dated so a client whose clock runs a little slow still accepts it.
BACKDATE = datetime.timedelta(days=1)
#: A generated certificate this close to expiry is replaced at start-up.
RENEW_BEFORE = datetime.timedelta(days=30)
#: RSA rather than EC: swaks, old Java and Outlook all speak it.
RSA_KEY_BITS = 2048

_ALWAYS_NAMES: tuple[x509.GeneralName, ...] = (
    x509.DNSName("localhost"),
    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    x509.IPAddress(ipaddress.ip_address("::1")),
)


class CertificateError(Exception):
    """A certificate or key that cannot be used.

    ``str()`` is one line naming the file and saying what to change.
    """


@attrs.frozen
class ServerCertificate:
    """A usable certificate and key on disk, and what the start-up log tells the user."""

    cert_path: str
    key_path: str
    fingerprint_sha256: str
    generated: bool
    not_after: datetime.datetime


def load_or_generate_certificate(
    cert: str, key: str, state_dir: str, hostname: str, now: datetime.datetime | None = None
) -> ServerCertificate:
    """Check the ``[tls]`` certificate and key, or generate (or reuse) one when both are empty.

    ``now`` (naive means UTC) is for tests; it defaults to the current time.
    """
    if now is None:
        now = datetime.datetime.now(datetime.UTC)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=datetime.UTC)
    if cert and key:
        return _load_configured(os.path.abspath(cert), os.path.abspath(key))
    if cert or key:
        given, empty = ("cert", "key") if cert else ("key", "cert")
        raise CertificateError(
            f"[tls] {empty} is empty but [tls] {given} is {cert or key}: set both, "
            "or leave both empty to use a generated certificate"
        )
    return _load_or_generate(os.path.abspath(state_dir), hostname, now)


def server_context_factory(certificate: ServerCertificate) -> CertificateOptions:
    """TLS options for every listener: TLS 1.2 or newer, the full chain, no client certificates."""
    which = "generated" if certificate.generated else "[tls]"
    chain = _read_chain(certificate.cert_path, f"{which} cert")
    private_key = _read_key(certificate.key_path, f"{which} key")
    return _options(chain, private_key, f"{which} cert: {certificate.cert_path}")


def _options(
    chain: list[x509.Certificate], private_key: PrivateKeyTypes, where: str
) -> CertificateOptions:
    """Build the options and their context now, so OpenSSL's objections surface at start-up."""
    # Twisted annotates these as pyOpenSSL objects but only hands them on to pyOpenSSL, which
    # prefers cryptography objects and warns (DeprecationWarning) about its own.
    options = CertificateOptions(
        privateKey=cast(Any, private_key),
        certificate=cast(Any, chain[0]),
        extraCertChain=cast(Any, chain[1:]),
        raiseMinimumTo=TLSVersion.TLSv1_2,
    )
    try:
        options.getContext()
    except SSL.Error as e:
        raise CertificateError(
            f"{where}: OpenSSL refuses this certificate or key ({openssl_reason(e)}); "
            "use an RSA key of at least 2048 bits or an EC key, signed with SHA-256 or better"
        ) from e
    return options


def _load_configured(cert_path: str, key_path: str) -> ServerCertificate:
    """Read and cross-check a user's certificate (chain) and key."""
    chain = _read_chain(cert_path, "[tls] cert")
    private_key = _read_key(key_path, "[tls] key")
    if not _key_matches(private_key, chain[0]):
        if any(_key_matches(private_key, c) for c in chain[1:]):
            raise CertificateError(
                f"[tls] cert: {cert_path}: the certificate for [tls] key {key_path} is not the "
                "first one in the file; put the server certificate first, then its chain"
            )
        raise CertificateError(
            f"[tls] key: {key_path} does not belong to the certificate in {cert_path}; "
            "set key to that certificate's own private key"
        )
    _options(chain, private_key, f"[tls] cert: {cert_path}")
    return _describe(chain[0], cert_path, key_path, generated=False)


def _load_or_generate(state_dir: str, hostname: str, now: datetime.datetime) -> ServerCertificate:
    """Reuse the certificate in ``state_dir`` while it still fits, else write a new one."""
    host_name = _host_general_name(hostname)
    cert_path = os.path.join(state_dir, GENERATED_CERT_NAME)
    key_path = os.path.join(state_dir, GENERATED_KEY_NAME)
    try:
        if not os.path.isdir(state_dir):
            os.makedirs(state_dir, mode=0o700, exist_ok=True)
        with _locked(os.path.join(state_dir, _LOCK_NAME)):
            reused = _reusable(cert_path, key_path, host_name, now)
            if reused is not None:
                return reused
            return _generate(cert_path, key_path, host_name, now)
    except OSError as e:
        raise CertificateError(
            f"[mailsink] state_dir: cannot keep the generated certificate in {state_dir} "
            f"({e.strerror or e}); make it writable by mailsink or set [tls] cert and key"
        ) from e


@contextlib.contextmanager
def _locked(lock_path: str) -> Iterator[None]:
    """Serialise instances sharing a ``state_dir`` so none pairs one's key with another's cert."""
    with open(lock_path, "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _reusable(
    cert_path: str, key_path: str, host_name: x509.GeneralName, now: datetime.datetime
) -> ServerCertificate | None:
    """The generated certificate already on disk, if it is intact, current and names the host."""
    try:
        with open(cert_path, "rb") as f:
            leaf = x509.load_pem_x509_certificates(f.read())[0]
        with open(key_path, "rb") as f:
            private_key = serialization.load_pem_private_key(f.read(), password=None)
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm, x509.ExtensionNotFound):
        return None
    fits = (
        _key_matches(private_key, leaf)
        and host_name in names
        and leaf.not_valid_before_utc <= now
        and leaf.not_valid_after_utc - RENEW_BEFORE > now
    )
    if not fits:
        return None
    with contextlib.suppress(OSError):
        if os.stat(key_path).st_mode & 0o077:
            os.chmod(key_path, 0o600)
    return _describe(leaf, cert_path, key_path, generated=True)


def _generate(
    cert_path: str, key_path: str, host_name: x509.GeneralName, now: datetime.datetime
) -> ServerCertificate:
    """Write a fresh self-signed key and certificate, each replaced atomically."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    public_key = private_key.public_key()
    common_name = str(host_name.value)
    if len(common_name) > 64:  # the most X.509 allows; clients match the SAN anyway
        common_name = "mailsink"
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    alt_names = [host_name, *(n for n in _ALWAYS_NAMES if n != host_name)]
    leaf = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
        .sign(private_key, hashes.SHA256())
    )
    key_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_atomically(key_path, key_pem, 0o600)
    _write_atomically(cert_path, leaf.public_bytes(serialization.Encoding.PEM), 0o644)
    # Make the renames durable, so a crash cannot leave a certificate without its key.
    directory = os.open(os.path.dirname(cert_path), os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return _describe(leaf, cert_path, key_path, generated=True)


def _write_atomically(path: str, data: bytes, mode: int) -> None:
    """Replace ``path`` whole; the temporary file is 0600 from birth, so a key never leaks."""
    fd, temp_path = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_path)
        raise


def _host_general_name(hostname: str) -> x509.GeneralName:
    """``hostname`` as the SAN a client looks for: an IP address, or a (punycoded) DNS name."""
    name = hostname.strip().rstrip(".")
    with contextlib.suppress(ValueError):
        return x509.IPAddress(ipaddress.ip_address(name))
    # Underscores are not DNS but are common in container host names; allow them.
    with contextlib.suppress(idna.IDNAError):
        name = name if name.isascii() else idna.encode(name, uts46=True).decode("ascii")
    if not name or not all(c.isascii() and (c.isalnum() or c in "-._") for c in name):
        raise CertificateError(
            f"[mailsink] hostname: {hostname!r} cannot name the generated certificate; "
            "set it to a DNS name or an IP address"
        )
    return x509.DNSName(name.lower())


def _read_file(path: str, label: str) -> bytes:
    """The file's bytes, or an error that says why it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        problem = "file not found; correct the path (relative paths start at the INI file)"
    except PermissionError:
        problem = "permission denied; make it readable by the user mailsink runs as"
    except IsADirectoryError:
        problem = "is a directory, not a PEM file"
    except OSError as e:
        problem = f"cannot be read ({e.strerror or e})"
    raise CertificateError(f"{label}: {path}: {problem}")


def _read_chain(path: str, label: str) -> list[x509.Certificate]:
    """All certificates in a PEM file, the server's own first."""
    data = _read_file(path, label)
    if b"-----BEGIN" not in data:
        raise CertificateError(
            f"{label}: {path}: not a PEM file; convert a DER certificate with "
            f"`openssl x509 -inform der -in {path} -out cert.pem`"
        )
    if b"CERTIFICATE-----" not in data and b"PRIVATE KEY-----" in data:
        raise CertificateError(
            f"{label}: {path}: holds a private key, not a certificate; are cert and key swapped?"
        )
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise CertificateError(
            f"{label}: {path}: no readable PEM certificate ({_one_line(e)}); "
            "set it to the server certificate followed by its chain"
        ) from e


def _read_key(path: str, label: str) -> PrivateKeyTypes:
    """The unencrypted private key in a PEM file."""
    data = _read_file(path, label)
    if b"PRIVATE KEY-----" not in data:
        hint = "holds a certificate, not a key; are cert and key swapped?"
        if b"CERTIFICATE-----" not in data:
            hint = "no PEM private key in it"
        raise CertificateError(f"{label}: {path}: {hint}")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError as e:
        raise CertificateError(
            f"{label}: {path}: the key is encrypted and mailsink cannot ask for a passphrase; "
            f"decrypt it with `openssl pkey -in {path} -out key.pem`"
        ) from e
    except (ValueError, UnsupportedAlgorithm) as e:
        raise CertificateError(
            f"{label}: {path}: the private key cannot be read ({_one_line(e)}); "
            "use an unencrypted PEM RSA or EC key"
        ) from e


def _key_matches(private_key: PrivateKeyTypes, certificate: x509.Certificate) -> bool:
    """Whether the key is the one the certificate was issued for."""
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    certified = certificate.public_key().public_bytes(der, spki)
    return private_key.public_key().public_bytes(der, spki) == certified


def _describe(
    leaf: x509.Certificate, cert_path: str, key_path: str, *, generated: bool
) -> ServerCertificate:
    """What the rest of mailsink needs to know about a usable certificate."""
    fingerprint = leaf.fingerprint(hashes.SHA256()).hex(":").upper()
    return ServerCertificate(cert_path, key_path, fingerprint, generated, leaf.not_valid_after_utc)


def openssl_reason(error: SSL.Error) -> str:
    """OpenSSL's reasons, without its tuple-of-lists dressing."""
    listed = error.args[0] if error.args and isinstance(error.args[0], list) else []
    reasons = [r[2] for r in listed if isinstance(r, tuple) and len(r) == 3 and r[2]]
    return "; ".join(reasons) if reasons else _one_line(error)


def _one_line(error: BaseException) -> str:
    """An exception's text squeezed onto one line."""
    return " ".join(str(error).split())
