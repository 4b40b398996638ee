"""Where and how to reach the gateway: address, TLS, bearer token, channel options."""
from __future__ import annotations

import dataclasses
import ipaddress
import os
from pathlib import Path

import grpc

DEFAULT_ADDRESS = "127.0.0.1:50050"
DEFAULT_TIMEOUT_S = 30.0
# A call that asks for a faithful inversion (fidelity "faithful") optimises each face for seconds (2-5 s
# per face on a 2-core CPU, more while the encoder is busy with other faces): its default deadline.
DEFAULT_FAITHFUL_TIMEOUT_S = 120.0
MAX_MESSAGE_BYTES = 64 << 20  # the gateway's own cap on gRPC messages


def budget_s(timeout_s: float | None, default_s: float | None, faithful_default_s: float | None,
             faithful: bool) -> float | None:
    """A call's deadline in seconds (None: none): its own timeout_s when given, else the client's
    default; for a faithful call the longer of the client's default and its faithful default."""
    if timeout_s is not None:
        return timeout_s
    if not faithful:
        return default_s
    if default_s is None or faithful_default_s is None:
        return None
    return max(default_s, faithful_default_s)


def version() -> str:
    """This package's version (its wheel's metadata), "0+unknown" when run from source."""
    from importlib import metadata

    try:
        return metadata.version("facedit-client")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8, ::1, localhost and unix sockets: a token may travel there in plaintext."""
    if address.startswith(("unix:", "unix-abstract:")):
        return True
    target = address.split("///", 1)[-1]  # dns:///host:port
    host = target.rsplit(":", 1)[0] if target.count(":") == 1 or target.startswith("[") else target
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclasses.dataclass(frozen=True)
class Connection:
    """address: "host:port" of the gateway; token: sent as `authorization: Bearer <token>` with every
    call; tls: TLS with the system's CAs; tls_ca: PEM file of the CA that signed the gateway's
    certificate (implies TLS); tls_server_name: the name to check in the certificate instead of the
    address's host. A token is never sent in plaintext beyond loopback (ValueError)."""

    address: str = DEFAULT_ADDRESS
    token: str | None = None
    tls: bool = False
    tls_ca: str | os.PathLike | None = None
    tls_server_name: str | None = None

    def __post_init__(self):
        if self.token and not self.secure and not is_loopback(self.address):
            raise ValueError(f"refusing to send a token in plaintext to {self.address}: use TLS "
                             f"(tls=True, or tls_ca=<the CA's PEM file>)")

    @property
    def secure(self) -> bool:
        return bool(self.tls or self.tls_ca)

    def options(self) -> list[tuple[str, object]]:
        options: list[tuple[str, object]] = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.primary_user_agent", f"facedit-client/{version()}"),
            # a restarted gateway is found again within 2 s (gRPC's default waits up to 120 s)
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ]
        if self.tls_server_name:
            options.append(("grpc.ssl_target_name_override", self.tls_server_name))
        return options

    def credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials, or None for plaintext."""
        if not self.secure:
            return None
        root = Path(self.tls_ca).read_bytes() if self.tls_ca else None
        return grpc.ssl_channel_credentials(root_certificates=root)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def channel(self) -> grpc.Channel:
        creds = self.credentials()
        if creds is None:
            return grpc.insecure_channel(self.address, options=self.options())
        return grpc.secure_channel(self.address, creds, options=self.options())

    def aio_channel(self) -> grpc.aio.Channel:
        creds = self.credentials()
        if creds is None:
            return grpc.aio.insecure_channel(self.address, options=self.options())
        return grpc.aio.secure_channel(self.address, creds, options=self.options())
