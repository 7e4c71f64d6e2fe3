"""A throwaway certificate authority for TLS tests: :func:`make_tls_files` (re-exported by
``tests.support.redis_servers``, whose servers take the result)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TLSFiles:
    """A CA and a server certificate for 127.0.0.1/localhost, made by :func:`make_tls_files`."""

    ca: Path
    cert: Path
    key: Path

    def server_args(self) -> list[str]:
        """redis-server options for TLS on every port (clients, replication, cluster bus)."""
        return [
            "--tls-cert-file", str(self.cert), "--tls-key-file", str(self.key),
            "--tls-ca-cert-file", str(self.ca), "--tls-auth-clients", "no",
            "--tls-replication", "yes", "--tls-cluster", "yes",
        ]  # fmt: skip


def make_tls_files(directory: str | Path, name: str = "ca") -> TLSFiles:
    """A fresh CA (``<name>.crt``) and a server certificate it signed, made with ``openssl``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ca, ca_key = d / f"{name}.crt", d / f"{name}.key"
    cert, key, csr = d / f"{name}-server.crt", d / f"{name}-server.key", d / f"{name}.csr"
    ext = d / f"{name}.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
        f"/CN=taskiq-abort test CA {name}", "-keyout", str(ca_key), "-out", str(ca))  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", str(key), "-out", str(csr))  # fmt: skip
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert))  # fmt: skip
    key.chmod(0o644)
    return TLSFiles(ca, cert, key)
