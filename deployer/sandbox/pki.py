"""Key material for the sandbox, generated locally with ``cryptography`` and
``bcrypt``: the registry's CA and server certificate, its htpasswd entry, the
SSH client key and the hosts' SSH host keys.

Everything here is pure (bytes in, bytes out); the manager decides where the
results are written.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
from dataclasses import dataclass

import bcrypt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
SERVER_DAYS = 825  # the longest validity some TLS clients still accept


@dataclass(frozen=True)
class KeyPair:
    """A private key (PEM or OpenSSH format) and its public half."""

    private: bytes
    public: bytes


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_ca(common_name: str) -> KeyPair:
    """A self-signed CA (ECDSA P-256) that signs only the sandbox registry's
    certificate: ``(key_pem, cert_pem)``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(_key_pem(key), cert.public_bytes(serialization.Encoding.PEM))


def make_server_cert(
    ca: KeyPair, common_name: str, ips: list[str], dns_names: list[str] | None = None
) -> KeyPair:
    """A TLS server certificate signed by ``ca`` for the given IP and DNS
    subject alternative names: ``(key_pem, cert_pem)``."""
    ca_key = serialization.load_pem_private_key(ca.private, password=None)
    ca_cert = x509.load_pem_x509_certificate(ca.public)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    sans += [x509.DNSName(d) for d in dns_names or []]
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return KeyPair(_key_pem(key), cert.public_bytes(serialization.Encoding.PEM))


def cert_ip_sans(cert_pem: bytes) -> set[str]:
    """The IP addresses a certificate is valid for."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return set()
    return {str(ip) for ip in ext.value.get_values_for_type(x509.IPAddress)}


def cert_issued_by(cert_pem: bytes, ca_pem: bytes) -> bool:
    """Whether ``cert_pem`` was signed by the CA ``ca_pem``."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    ca = x509.load_pem_x509_certificate(ca_pem)
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:  # InvalidSignature, or a key type mismatch
        return False
    return True


def cert_days_left(cert_pem: bytes) -> float:
    cert = x509.load_pem_x509_certificate(cert_pem)
    end = getattr(cert, "not_valid_after_utc", None)  # cryptography >= 42
    if end is None:
        end = cert.not_valid_after.replace(tzinfo=dt.timezone.utc)
    return float((end - _now()).total_seconds() / 86400)


def new_password(nbytes: int = 24) -> str:
    """A URL-safe random password (no characters that YAML or dotenv mangle)."""
    return secrets.token_urlsafe(nbytes)


# registry:2 checks the password on every request (each manifest and blob),
# so the bcrypt cost is paid per request: cost 10 took about 90 ms here, most
# of a no-op ship's registry lookup. Cost 5 is what Docker's registry docs
# get from `htpasswd -Bbn`, and the password is 192 random bits, which no
# cost factor needs to slow down.
HTPASSWD_BCRYPT_COST = 5


def htpasswd_line(username: str, password: str) -> str:
    """One htpasswd entry with a bcrypt hash, the only kind registry:2 accepts."""
    salt = bcrypt.gensalt(rounds=HTPASSWD_BCRYPT_COST)
    return f"{username}:{bcrypt.hashpw(password.encode(), salt).decode()}\n"


def htpasswd_matches(line: str, username: str, password: str) -> bool:
    """``line`` is :func:`htpasswd_line`'s entry for these credentials, at
    the current cost (an entry made with another cost is made again)."""
    user, _, hashed = line.strip().partition(":")
    parts = hashed.split("$")  # $2b$<cost>$<salt+hash>
    if user != username or len(parts) != 4 or parts[2] != f"{HTPASSWD_BCRYPT_COST:02d}":
        return False
    try:
        return bcrypt.checkpw(password.encode(), hashed.encode())
    except ValueError:
        return False


def ssh_keypair(comment: str) -> KeyPair:
    """An Ed25519 SSH key: OpenSSH private key and ``ssh-ed25519 AAAA... comment``."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return KeyPair(private, public + b" " + comment.encode() + b"\n")


def public_key_fields(public_line: bytes | str) -> tuple[str, str]:
    """``(key_type, base64)`` of an OpenSSH public key line."""
    text = public_line.decode() if isinstance(public_line, bytes) else public_line
    parts = text.split()
    if len(parts) < 2:
        raise ValueError(f"not an OpenSSH public key: {text[:40]!r}")
    return parts[0], parts[1]
