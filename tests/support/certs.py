"""Throwaway X.509 material for TLS tests: a CA, a server certificate and a client certificate."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.config import ServerTls


@dataclass(frozen=True)
class KeyPair:
    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class Pki:
    ca_file: Path
    server: KeyPair
    client: KeyPair
    others: tuple[KeyPair, ...] = ()  # more client certificates from the same CA


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey):
    cert_file = directory / f"{stem}.crt"
    key_file = directory / f"{stem}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return KeyPair(cert_file, key_file)


def make_pki(
    directory: Path,
    client_sans: list[x509.GeneralName] | None = None,
    other_clients: list[list[x509.GeneralName]] | None = None,
) -> Pki:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("opsgate test CA"))
        .issuer_name(_name("opsgate test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(
        common_name: str, sans: list[x509.GeneralName]
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        return cert, key

    ca_file = directory / "ca.crt"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    server = _write(
        directory,
        "server",
        *leaf(
            "localhost",
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        ),
    )
    client_names = client_sans or [x509.UniformResourceIdentifier("spiffe://test/client")]
    client = _write(directory, "client", *leaf("client", client_names))
    others = tuple(
        _write(directory, f"client{index}", *leaf(f"client{index}", sans))
        for index, sans in enumerate(other_clients or [], 1)
    )
    return Pki(ca_file, server, client, others)


def requiring_client_certs(pki: Pki) -> ServerTls:
    """Server TLS with the PKI's server certificate that demands a client certificate."""
    return ServerTls(
        cert_file=pki.server.cert_file,
        key_file=pki.server.key_file,
        client_ca_file=pki.ca_file,
        require_client_cert=True,
    )
