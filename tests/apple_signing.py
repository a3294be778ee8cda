"""A stand-in for Apple's signing: a CA of our own (root → intermediate → leaf, with the extensions
Apple's chain carries) and App Store Server Notifications V2 signed with it, as Apple sends them.

Shaped after ``appstoreserverlibrary/signed_data_verifier.py`` (apple/app-store-server-library-python):
the ``x5c`` header holds exactly three base64 DER certificates (leaf, intermediate, root), ``alg`` is
ES256, the chain is checked with X509_STRICT, the leaf must carry OID 1.2.840.113635.100.6.11.1 and the
intermediate 1.2.840.113635.100.6.2.1.
"""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

LEAF_OID = x509.ObjectIdentifier("1.2.840.113635.100.6.11.1")
INTERMEDIATE_OID = x509.ObjectIdentifier("1.2.840.113635.100.6.2.1")
BUNDLE_ID = "com.example.fitapp"
APP_APPLE_ID = 1234567890


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
          issuer_key: ec.EllipticCurvePrivateKey, ca: bool, marker: x509.ObjectIdentifier | None) -> x509.Certificate:
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test CA")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=not ca, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    if marker is not None:
        builder = builder.add_extension(x509.UnrecognizedExtension(marker, b"\x05\x00"), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class AppleCA:
    """A root, an intermediate and a signing leaf; ``root_path`` is the root as a DER file."""

    root: x509.Certificate
    intermediate: x509.Certificate
    leaf: x509.Certificate
    leaf_key: ec.EllipticCurvePrivateKey
    root_path: Path

    @classmethod
    def create(cls, directory: Path, name: str = "root") -> AppleCA:
        root_key, inter_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
        root = _cert(f"Test Root {name}", root_key, None, root_key, True, None)
        inter = _cert(f"Test WWDR {name}", inter_key, root, root_key, True, INTERMEDIATE_OID)
        leaf = _cert(f"Test Store Signing {name}", leaf_key, inter, inter_key, False, LEAF_OID)
        path = directory / f"{name}.cer"
        path.write_bytes(root.public_bytes(serialization.Encoding.DER))
        return cls(root, inter, leaf, leaf_key, path)

    def sign(self, claims: dict[str, Any]) -> str:
        x5c = [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()
               for c in (self.leaf, self.intermediate, self.root)]
        return jwt.encode(claims, self.leaf_key, algorithm="ES256", headers={"x5c": x5c})


def ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def transaction(original_id: str, purchased: datetime, *, free_trial: bool = False, price: int = 9990,
                original_purchase: datetime | None = None, expires: datetime | None = None,
                revoked: datetime | None = None, account_token: str | None = None) -> dict[str, Any]:
    """A JWSTransactionDecodedPayload as Apple documents it (prices in milliunits)."""
    tx: dict[str, Any] = {
        "transactionId": str(uuid.uuid4().int)[:15], "originalTransactionId": original_id,
        "webOrderLineItemId": "2000000012345678", "bundleId": BUNDLE_ID, "productId": "fit.premium.monthly",
        "subscriptionGroupIdentifier": "21345678", "purchaseDate": ms(purchased),
        "originalPurchaseDate": ms(original_purchase or purchased),
        "expiresDate": ms(expires or purchased + timedelta(days=7 if free_trial else 30)),
        "quantity": 1, "type": "Auto-Renewable Subscription", "inAppOwnershipType": "PURCHASED",
        "signedDate": int(time.time() * 1000), "environment": "Production", "transactionReason": "PURCHASE",
        "storefront": "DEU", "storefrontId": "143443", "currency": "EUR", "price": 0 if free_trial else price,
    }
    if free_trial:
        tx.update(offerType=1, offerDiscountType="FREE_TRIAL", offerPeriod="P1W")
    if revoked is not None:
        tx.update(revocationDate=ms(revoked), revocationReason=0)
    if account_token:
        tx["appAccountToken"] = account_token
    return tx


def notification(ca: AppleCA, kind: str, tx: dict[str, Any] | None, subtype: str | None = None,
                 tx_ca: AppleCA | None = None) -> dict[str, str]:
    """A request body ``{"signedPayload": …}``; the transaction signed by ``tx_ca`` (default ``ca``)."""
    data: dict[str, Any] = {"appAppleId": APP_APPLE_ID, "bundleId": BUNDLE_ID, "bundleVersion": "42",
                            "environment": "Production", "status": 1}
    if tx is not None:
        data["signedTransactionInfo"] = (tx_ca or ca).sign(tx)
    claims: dict[str, Any] = {"notificationType": kind, "notificationUUID": str(uuid.uuid4()), "data": data,
                              "version": "2.0", "signedDate": int(time.time() * 1000)}
    if subtype:
        claims["subtype"] = subtype
    return {"signedPayload": ca.sign(claims)}
