"""The fleet's own certificate authority (never a public one: any CA in Mosquitto's
``cafile`` can mint client certificates it accepts), server certificates for the
broker's TLS listeners, client certificates with CN = device id, and a CRL."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _write_secret(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class FleetCA:
    """A CA kept in ``folder``: ca.key (0600), ca.pem, crl.pem, revoked serials."""

    folder: Path

    @property
    def key_path(self) -> Path:
        return self.folder / "ca.key"

    @property
    def cert_path(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def crl_path(self) -> Path:
        return self.folder / "crl.pem"

    @property
    def exists(self) -> bool:
        return self.key_path.exists() and self.cert_path.exists()

    def init(self, name: str = "Gnahat device CA", *, years: int = 20) -> None:
        if self.exists:
            raise FileExistsError(f"a CA already exists in {self.folder}")
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, name),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Gnahat"),
            ]
        )
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365 * years))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        _write_secret(self.key_path, _key_pem(key))
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.write_crl([])

    def _load(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        if not self.exists:
            raise FileNotFoundError(f"no CA in {self.folder}: run `gnahat-provision ca init`")
        key = serialization.load_pem_private_key(self.key_path.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key, x509.load_pem_x509_certificate(self.cert_path.read_bytes())

    def issue(
        self,
        common_name: str,
        *,
        server: bool = False,
        hosts: list[str] | None = None,
        days: int = 3650,
    ) -> tuple[bytes, bytes, int]:
        """A key and certificate (PEM) signed by this CA; returns (key, cert, serial)."""
        import ipaddress

        ca_key, ca_cert = self._load()
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        serial = x509.random_serial_number()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            names: list[x509.GeneralName] = []
            for h in hosts or [common_name]:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(h)))
                except ValueError:
                    names.append(x509.DNSName(h))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return _key_pem(key), cert.public_bytes(serialization.Encoding.PEM), serial

    def revoked_serials(self) -> list[int]:
        if not self.crl_path.exists():
            return []
        crl = x509.load_pem_x509_crl(self.crl_path.read_bytes())
        return [r.serial_number for r in crl]

    def write_crl(self, serials: list[int]) -> None:
        if not self.key_path.exists():
            return
        ca_key, ca_cert = self._load()
        now = _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca_cert.subject)
            .last_update(now)
            .next_update(now + dt.timedelta(days=3650))
        )
        for s in sorted(set(serials)):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(s).revocation_date(now).build()
            )
        crl = builder.sign(ca_key, hashes.SHA256())
        self.crl_path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))

    def revoke(self, serial: int) -> None:
        self.write_crl([*self.revoked_serials(), serial])


def write_secret(path: Path, data: bytes) -> None:
    _write_secret(path, data)
