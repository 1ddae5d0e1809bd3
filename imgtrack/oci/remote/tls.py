"""The TLS context every connection to a registry uses: verified, from the system trust store or a CA file."""

from __future__ import annotations

import socket
import ssl
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from imgtrack.errors import RegistryError


class _TrustOnFirstHandshake(ssl.SSLContext):
    """A client context that loads the system trust store when its first TLS connection starts.

    Loading the store costs ~17 ms on every run; a command that only talks plain HTTP to a loopback
    registry never needs it. Every handshake goes through `wrap_socket` or `wrap_bio`, so none can
    start before the store is loaded."""

    _trust_loaded = False
    _trust_lock = threading.Lock()

    def _load_trust(self) -> None:
        if not self._trust_loaded:
            with self._trust_lock:
                if not self._trust_loaded:
                    self.load_default_certs(ssl.Purpose.SERVER_AUTH)
                    self._trust_loaded = True

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        self._load_trust()
        return super().wrap_socket(*args, **kwargs)

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        self._load_trust()
        return super().wrap_bio(*args, **kwargs)


def client_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """Certificates and host names verified. With `ca_file`, that CA alone is trusted (loaded now, so a
    bad file is reported before anything is sent); without it, the system trust store (where an operator
    adds a company CA; not certifi's bundle, which costs 50 ms more to load), loaded on first use."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT) if ca_file else _TrustOnFirstHandshake(ssl.PROTOCOL_TLS_CLIENT)
    if sys.version_info >= (3, 13):  # what ssl.create_default_context() sets there
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN | ssl.VERIFY_X509_STRICT
    if ca_file is None:
        return context
    try:
        context.load_verify_locations(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise RegistryError(f"--ca-file {ca_file} cannot be loaded ({exc}); pass a PEM CA certificate") from None
    return context


def speaks_tls(registry: str, timeout: float) -> bool | None:
    """Whether the server at `host[:port]` (port 443 by default) answers a TLS handshake: True; answers it
    in plain HTTP: False; neither (refused, reset, silent): None, for a real request to explain.

    Nothing but a ClientHello is sent, and nothing is trusted from the answer: it only picks the scheme
    for a loopback registry, and every request after it verifies the certificate as usual. Unlike a
    first request over https, it needs no trust store: a plain-HTTP registry never loads one."""
    parts = urlsplit(f"//{registry}")
    if parts.hostname is None:
        return None
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((parts.hostname, parts.port or 443), timeout=timeout) as sock:
            with probe.wrap_socket(sock, server_hostname=parts.hostname):
                return True
    except ssl.SSLError as exc:
        return False if exc.reason == "WRONG_VERSION_NUMBER" else None
    except (OSError, ValueError):
        return None
