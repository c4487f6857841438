"""CertificateIdentities: a certificate is parsed and mapped once; its Principal is reused."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from gateway.authn.certificates import PEM_KEY, CertificateIdentities
from gateway.authn.settings import CertificateIdentity, ClientCertificateConfig
from tests.support.certs import make_pki

DEPLOYER = (
    "principal://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/subject/ci"
)


def test_a_mapped_certificate_gives_one_principal_for_all_its_calls(tmp_path: Path) -> None:
    pki = make_pki(
        tmp_path,
        client_sans=[x509.UniformResourceIdentifier("spiffe://acme.example/ns/ci/sa/deployer")],
        other_clients=[[x509.UniformResourceIdentifier("spiffe://acme.example/ns/ci/sa/other")]],
    )
    identities = CertificateIdentities(
        ClientCertificateConfig(
            identities=(
                CertificateIdentity(
                    principal=DEPLOYER, san_uri="spiffe://acme.example/ns/ci/sa/deployer"
                ),
            ),
            require_token=False,
        )
    )
    mapped = {PEM_KEY: [pki.client.cert_file.read_bytes()]}
    unmapped = {PEM_KEY: [pki.others[0].cert_file.read_bytes()]}

    first = identities.principal_for(mapped)
    assert first is not None
    assert first.member == DEPLOYER
    assert first.subject == "spiffe://acme.example/ns/ci/sa/deployer"
    assert first.token_kind == "client_certificate"
    assert identities.principal_for(mapped) is first  # and with it, one policy Caller
    assert identities.principal_for(unmapped) is None
    assert identities.principal_for(unmapped) is None  # a remembered "no mapping"
    assert identities.principal_for({}) is None
