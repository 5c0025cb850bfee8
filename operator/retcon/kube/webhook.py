"""The admission webhook's server: where it listens and with which certificate.

Modes (``RETCON_WEBHOOK``):
- ``local``: listen on 127.0.0.1 with a self-signed certificate made at start,
  and let kopf register the ValidatingWebhookConfiguration pointing at that URL
  (an operator running outside the cluster, as in development and tests);
- ``cluster``: listen on all interfaces with the certificate mounted at
  ``RETCON_WEBHOOK_CERT_DIR`` (tls.crt, tls.key); the Helm chart owns the
  configuration and the Service;
- ``off``: nothing registers the webhook (validation then rests on the CRDs' schema
  and CEL rules); kopf still needs a server for its handlers, so one listens on
  127.0.0.1 where no one calls it.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import tempfile
from pathlib import Path
from typing import Any

import kopf
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CONFIGURATION_NAME = "retcon.dev"


def build_self_signed(folder: Path, hosts: list[str]) -> tuple[Path, Path]:
    """A short-lived self-signed serving certificate for `hosts` (names or IPs)."""
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = folder / "tls.crt", folder / "tls.key"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    keyfile.chmod(0o600)
    return certfile, keyfile


MODES = ("local", "cluster", "off")


def check_mode(environ: dict[str, str] | None = None) -> str:
    env: Any = os.environ if environ is None else environ
    mode = str(env.get("RETCON_WEBHOOK", "local"))
    if mode not in MODES:
        raise ValueError(f"RETCON_WEBHOOK must be local, cluster or off, not {mode!r}")
    return mode


def configure(settings: kopf.OperatorSettings, environ: dict[str, str] | None = None) -> str:
    """Set up kopf's admission server as the environment says; returns the mode."""
    env: Any = os.environ if environ is None else environ
    mode = str(env.get("RETCON_WEBHOOK", "local"))
    port = int(env.get("RETCON_WEBHOOK_PORT", "0") or 0) or None
    if mode in ("local", "off"):
        folder = Path(tempfile.mkdtemp(prefix="retcon-webhook-"))
        certfile, keyfile = build_self_signed(folder, ["127.0.0.1", "localhost"])
        settings.admission.server = kopf.WebhookServer(
            addr="127.0.0.1",
            host="127.0.0.1",
            port=port,
            certfile=certfile,
            pkeyfile=keyfile,
            cafile=certfile,
        )
        settings.admission.managed = CONFIGURATION_NAME if mode == "local" else None
    elif mode == "cluster":
        folder = Path(env.get("RETCON_WEBHOOK_CERT_DIR", "/etc/retcon/webhook"))
        settings.admission.server = kopf.WebhookServer(
            addr="0.0.0.0",  # noqa: S104 - in a pod, the Service reaches us on the pod IP
            port=port or 9443,
            certfile=folder / "tls.crt",
            pkeyfile=folder / "tls.key",
        )
    else:
        raise ValueError(f"RETCON_WEBHOOK must be local, cluster or off, not {mode!r}")
    return mode
