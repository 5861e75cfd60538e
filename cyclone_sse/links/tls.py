"""Client TLS for the links to Redis and RabbitMQ: whom to trust, who we are."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import ssl


@dataclass
class ClientTls:
    """The files of a link's TLS: the CA certificates to trust (PEM; empty: the
    system's) and the client certificate and key to present (PEM; empty: none)."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    @classmethod
    def from_settings(cls, settings: Any, link: str) -> ClientTls:
        """From ``--<link>-ca-file``, ``--<link>-cert-file`` and ``--<link>-key-file``."""
        return cls(getattr(settings, f"{link}_ca_file"), getattr(settings, f"{link}_cert_file"),
                   getattr(settings, f"{link}_key_file"))

    def check(self, link: str) -> None:
        """``ValueError`` naming the option when a file cannot be read or a key has no
        certificate."""
        for suffix, path in (("ca-file", self.ca_file), ("cert-file", self.cert_file),
                             ("key-file", self.key_file)):
            if path:
                try:
                    with open(path, "rb"):
                        pass
                except OSError as exc:
                    raise ValueError(f"--{link}-{suffix}={path}: {exc.strerror}") from None
        if self.key_file and not self.cert_file:
            raise ValueError(f"--{link}-key-file needs --{link}-cert-file")

    def options(self, host: str) -> Any:
        """TLS options checking the server's certificate against ``host``."""
        trust = None
        if self.ca_file:
            with open(self.ca_file, "rb") as handle:
                trust = ssl.trustRootFromCertificates(
                    [ssl.Certificate.loadPEM(pem) for pem in _pem_blocks(handle.read())])
        client = None
        if self.cert_file:
            with open(self.cert_file, "rb") as cert, \
                    open(self.key_file or self.cert_file, "rb") as key:
                client = ssl.PrivateCertificate.loadPEM(cert.read() + b"\n" + key.read())
        return ssl.optionsForClientTLS(host, trustRoot=trust, clientCertificate=client)


def check_link_options(settings: Any, link: str, parse_url: Callable[[str], object]) -> None:
    """A broker's start-up check of ``--<link>-url`` and its TLS files."""
    url = getattr(settings, f"{link}_url")
    if url:
        try:
            parse_url(url)
        except ValueError as exc:
            raise ValueError(f"--{link}-url: {exc}") from None
    ClientTls.from_settings(settings, link).check(link)


def _pem_blocks(data: bytes) -> list[bytes]:
    marker = b"-----BEGIN CERTIFICATE-----"
    return [marker + part for part in data.split(marker)[1:]]
