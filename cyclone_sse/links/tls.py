"""Client TLS for the links to Redis and RabbitMQ: whom to trust, who we are."""

from __future__ import annotations

from typing import Any

from twisted.internet import ssl


def client_tls(host: str, ca_file: str = "", cert_file: str = "",
               key_file: str = "") -> Any:
    """TLS options checking the server's certificate against ``host``: signed by a CA
    of ``ca_file`` (PEM) when given, else by one the system trusts; ``cert_file`` and
    ``key_file`` (PEM), when given, are the client certificate to present."""
    trust = None
    if ca_file:
        with open(ca_file, "rb") as handle:
            trust = ssl.trustRootFromCertificates(
                [ssl.Certificate.loadPEM(pem) for pem in _pem_blocks(handle.read())])
    client = None
    if cert_file:
        with open(cert_file, "rb") as cert, open(key_file or cert_file, "rb") as key:
            client = ssl.PrivateCertificate.loadPEM(cert.read() + b"\n" + key.read())
    return ssl.optionsForClientTLS(host, trustRoot=trust, clientCertificate=client)


def check_files(option: str, ca_file: str, cert_file: str, key_file: str) -> None:
    """``ValueError`` naming the option when a file is missing or a key has no
    certificate."""
    for suffix, path in (("ca-file", ca_file), ("cert-file", cert_file),
                         ("key-file", key_file)):
        if path:
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise ValueError(f"--{option}-{suffix}={path}: {exc.strerror}") from None
    if key_file and not cert_file:
        raise ValueError(f"--{option}-key-file needs --{option}-cert-file")


def _pem_blocks(data: bytes) -> list[bytes]:
    marker = b"-----BEGIN CERTIFICATE-----"
    return [marker + part for part in data.split(marker)[1:]]
