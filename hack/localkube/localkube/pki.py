"""Certificates and kubeconfigs for the local control plane, made with plain openssl.

One CA signs the apiserver's serving certificate and every client certificate;
the apiserver trusts that CA for client authentication, so a client
certificate's CN is the user name and each O is a group. A separate RSA key
pair signs and verifies ServiceAccount tokens.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import yaml

from localkube.errors import LocalkubeError

SERVING_SANS = (
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
    "IP:127.0.0.1",
    "IP:10.0.0.1",
)
DAYS = "3650"


def _openssl(*args: str, cwd: Path) -> None:
    if shutil.which("openssl") is None:
        raise LocalkubeError("openssl not found on PATH: install it (Debian: apt-get install openssl)")
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LocalkubeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def ensure_pki(pki: Path) -> None:
    """Create the CA, serving cert, admin cert and ServiceAccount keys once."""
    pki.mkdir(parents=True, exist_ok=True)
    pki.chmod(0o700)
    if not (pki / "ca.crt").exists():
        _openssl("genrsa", "-out", "ca.key", "2048", cwd=pki)
        _openssl(
            "req", "-x509", "-new", "-nodes", "-key", "ca.key", "-sha256", "-days", DAYS,
            "-subj", "/CN=localkube-ca", "-out", "ca.crt", cwd=pki,
        )  # fmt: skip
    if not (pki / "apiserver.crt").exists():
        _sign(pki, "apiserver", "/CN=kube-apiserver", sans=SERVING_SANS, usage="serverAuth")
    if not (pki / "admin.crt").exists():
        _sign(pki, "admin", "/O=system:masters/CN=localkube-admin", usage="clientAuth")
    if not (pki / "sa.key").exists():
        _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
        _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def _sign(
    pki: Path, name: str, subject: str, *, usage: str, sans: tuple[str, ...] = (), out: Path | None = None
) -> None:
    out = out or pki
    out.mkdir(parents=True, exist_ok=True)
    key, csr, crt, ext = (out / f"{name}.{suffix}" for suffix in ("key", "csr", "crt", "ext"))
    lines = ["basicConstraints=CA:FALSE", "keyUsage=digitalSignature,keyEncipherment"]
    lines.append(f"extendedKeyUsage={usage}")
    if sans:
        lines.append("subjectAltName=" + ",".join(sans))
    ext.write_text("\n".join(lines) + "\n")
    _openssl("genrsa", "-out", str(key), "2048", cwd=pki)
    _openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr), cwd=pki)
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", DAYS, "-sha256", "-extfile", str(ext), "-out", str(crt), cwd=pki,
    )  # fmt: skip
    csr.unlink()
    ext.unlink()
    key.chmod(0o600)


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, *, server: str, ca: Path, cert: Path, key: Path, user: str) -> None:
    """A self-contained kubeconfig (data embedded), so it can be copied anywhere."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "localkube", "cluster": {"server": server, "certificate-authority-data": _b64(ca)}}
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": _b64(cert), "client-key-data": _b64(key)},
            }
        ],
        "contexts": [{"name": "localkube", "context": {"cluster": "localkube", "user": user}}],
        "current-context": "localkube",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


def user_kubeconfig(pki: Path, users: Path, *, name: str, groups: tuple[str, ...], server: str) -> Path:
    """A kubeconfig for a client-certificate user (CN=name, O=each group)."""
    if not name or "/" in name or name.startswith("."):
        raise LocalkubeError(f"invalid user name {name!r}: use letters, digits, '-', ':' or '.'")
    subject = "".join(f"/O={group}" for group in groups) + f"/CN={name}"
    slug = name.replace(":", "_")
    folder = users / slug
    _sign(pki, slug, subject, usage="clientAuth", out=folder)
    path = folder / "kubeconfig"
    write_kubeconfig(
        path,
        server=server,
        ca=pki / "ca.crt",
        cert=folder / f"{slug}.crt",
        key=folder / f"{slug}.key",
        user=name,
    )
    return path
