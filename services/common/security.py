"""Transport security and access control of every service (docs/security.md).

- TLS: a service with --tls-cert/--tls-key serves TLS; with --tls-client-ca too it requires every
  caller to present a client certificate signed by that CA (mTLS): without one, or with one of
  another CA, the TLS handshake fails and no RPC reaches the service (the caller sees UNAVAILABLE;
  grpcio can ask for a client certificate only by requiring it). Probes without a certificate
  use --health-port. The peer's name is its certificate's common name; --peer-roles gives names
  roles ("internal" for every verified peer, "gateway": may store custom directions for the
  clients it forwards, "admin": may publish packs); a method needing a role the peer lacks is
  PERMISSION_DENIED.
- Bearer tokens (the gateway's --tokens-file): metadata `authorization: Bearer <token>`, checked
  against the tokens file (services/common/tokens.py); UNAUTHENTICATED without or with an unknown
  token, PERMISSION_DENIED without the role the method needs (Service.access).
- The gateway forwards the authenticated client to the directions service in metadata
  (x-facedit-client, -roles, -quota), which trusts it only from a peer with the "gateway" (or
  "admin") role, or when it checks no callers at all (plaintext on loopback); custom directions
  are owned by that client (services/directions/owners.py).
- Health (grpc.health.v1) needs no token (nor, on --health-port, TLS); reflection needs what every
  other RPC needs (--reflection auth), nothing (open) or is not served (off).
- Plaintext only on loopback: a service asked to listen elsewhere without TLS and caller checks,
  or a gateway calling internal services elsewhere without TLS, refuses to start unless --insecure.

Tokens are never logged: refusals log the method, the code, the peer address and the reason.
"""
from __future__ import annotations

import collections
import contextvars
import dataclasses
import ipaddress
import logging
from pathlib import Path

import grpc

from services.common.errors import PermissionDenied, Unauthenticated
from services.common.interceptors import WrappingInterceptor
from services.common.logs import log
from services.common.tokens import ROLES, Client, TokenStore

HEALTH_PREFIX = "/grpc.health.v1.Health/"
REFLECTION_PREFIX = "/grpc.reflection."
FORWARD_CLIENT, FORWARD_ROLES, FORWARD_QUOTA = "x-facedit-client", "x-facedit-roles", "x-facedit-quota"
PEER_ROLES = ("internal", "gateway", "admin")
DEFAULT_PEER_ROLES = "gateway=gateway;admin=admin"
REFLECTION_MODES = ("auth", "open", "off")

_caller: contextvars.ContextVar[Client | None] = contextvars.ContextVar("facedit_caller", default=None)
_client: contextvars.ContextVar[Client | None] = contextvars.ContextVar("facedit_client", default=None)


def caller() -> Client | None:
    """Who called this RPC: a token client, a certificate peer, or None when this service checks no one."""
    return _caller.get()


def client() -> Client | None:
    """The client on whose behalf this RPC runs: the token client that called, or the client a trusted
    gateway forwarded; None when nobody was authenticated."""
    return _client.get()


def forward_metadata() -> tuple[tuple[str, str], ...]:
    """Metadata naming this RPC's client, for a call the gateway makes on its behalf (empty: no client)."""
    c = _client.get()
    if c is None:
        return ()
    return ((FORWARD_CLIENT, c.name), (FORWARD_ROLES, ",".join(sorted(c.roles))),
            (FORWARD_QUOTA, "none" if c.quota is None else str(c.quota)))


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise SystemExit(f"{what} {path}: {err.strerror or err}") from None


@dataclasses.dataclass(frozen=True)
class ChannelSecurity:
    """TLS of channels to other services: the CA that signed their certificates, and this service's
    client certificate and key for mTLS (None: TLS without a client certificate). server_name
    overrides the name checked in their certificates (default: the host of the address)."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca, "CA certificate"),
            private_key=_read(self.key, "client key") if self.key else None,
            certificate_chain=_read(self.cert, "client certificate") if self.cert else None)

    def channel(self, address: str, options: list | tuple = ()) -> grpc.Channel:
        opts = list(options) + ([("grpc.ssl_target_name_override", self.server_name)] if self.server_name else [])
        return grpc.secure_channel(address, self.credentials(), opts)


def _stamps(files: list[Path]) -> tuple:
    out = []
    for f in files:
        try:
            st = Path(f).stat()  # follows the symbolic links of a mounted secret
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append(None)
    return tuple(out)


def channel(address: str, tls: ChannelSecurity | None, options: list | tuple = ()) -> grpc.Channel:
    return tls.channel(address, options) if tls is not None else grpc.insecure_channel(address, options)


@dataclasses.dataclass
class Security:
    """One service's transport security and caller checks (from its flags: `from_args`).

    cert/key: its TLS certificate; client_ca: verify callers' certificates (mTLS); tokens: bearer
    tokens (the gateway); peer_roles: certificate common name -> roles; reflection: auth | open | off;
    insecure: allow plaintext or unchecked callers beyond loopback; internal: TLS of the channels to
    the internal services (the gateway); trust_forwarded: read the client a gateway forwards (directions);
    health_port: a plaintext port serving only grpc.health.v1 (probes that cannot do TLS), 0 = none."""

    cert: Path | None = None
    key: Path | None = None
    client_ca: Path | None = None
    tokens: TokenStore | None = None
    peer_roles: dict[str, frozenset[str]] = dataclasses.field(default_factory=dict)
    reflection: str = "auth"
    insecure: bool = False
    internal: ChannelSecurity | None = None
    trust_forwarded: bool = False
    health_port: int = 0

    @property
    def tls(self) -> bool:
        return self.cert is not None

    @property
    def checks_callers(self) -> bool:
        return self.client_ca is not None or self.tokens is not None

    def server_credentials(self) -> grpc.ServerCredentials:
        """TLS credentials that follow their files: each new connection's handshake checks whether the
        certificate, key or client CA changed (a rotated Kubernetes secret) and then uses the new ones;
        files that cannot be read keep the ones read before. With a client CA the handshake requires a
        certificate it signed (grpcio cannot ask for an optional one)."""
        files = [p for p in (self.key, self.cert, self.client_ca) if p is not None]

        def configuration():
            pair = (_read(self.key, "TLS key"), _read(self.cert, "TLS certificate"))
            ca = _read(self.client_ca, "client CA certificate") if self.client_ca else None
            return grpc.ssl_server_certificate_configuration([pair], root_certificates=ca)

        seen = [_stamps(files)]

        def fetch():
            try:
                stamps = _stamps(files)
                if stamps == seen[0]:
                    return None
                changed = configuration()
                seen[0] = stamps
                return changed
            except BaseException:  # noqa: BLE001 - half-written files: try again at the next handshake
                return None

        return grpc.dynamic_ssl_server_credentials(configuration(), fetch,
                                                   require_client_authentication=self.client_ca is not None)

    def check_listen(self, service: str, host: str) -> None:
        """Refuse (SystemExit) to listen beyond loopback without TLS or without caller checks, unless insecure."""
        if self.insecure or is_loopback(host):
            return
        if not self.tls:
            raise SystemExit(f"{service}: refusing to listen on {host} without TLS: give --tls-cert and --tls-key "
                             f"(FACEDIT_TLS_CERT, FACEDIT_TLS_KEY), or --insecure (FACEDIT_INSECURE=1) to serve "
                             f"plaintext anyway (docs/security.md)")
        if not self.checks_callers:
            how = ("--tokens-file (FACEDIT_TOKENS_FILE)" if service == "gateway"
                   else "--tls-client-ca (FACEDIT_TLS_CLIENT_CA): callers need a certificate of the internal CA")
            raise SystemExit(f"{service}: refusing to listen on {host} without checking callers: give {how}, or "
                             f"--insecure to let anyone call (docs/security.md)")

    def check_downstream(self, service: str, addresses: list[str]) -> None:
        """Refuse (SystemExit) plaintext channels to internal services beyond loopback, unless insecure."""
        if self.internal is not None or self.insecure:
            return
        remote = [a for a in addresses if not is_loopback(a.rsplit(":", 1)[0])]
        if remote:
            raise SystemExit(f"{service}: refusing plaintext calls to {remote}: give --internal-ca, --internal-cert "
                             f"and --internal-key (mTLS to the internal services), or --insecure (docs/security.md)")


def parse_peer_roles(text: str) -> dict[str, frozenset[str]]:
    """'gateway=gateway;ops=admin+gateway' -> {common name: roles}."""
    out: dict[str, frozenset[str]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, sep, roles = part.partition("=")
        wanted = frozenset(r.strip() for r in roles.split("+") if r.strip())
        if not sep or not name.strip() or not wanted or not wanted <= set(PEER_ROLES):
            raise SystemExit(f"--peer-roles {text!r}: expected name=role[+role];... with roles of {PEER_ROLES}")
        out[name.strip()] = wanted
    return out


def from_args(args, service: str, logger: logging.Logger | None = None, trust_forwarded: bool = False) -> Security:
    """A service's Security from its flags (services/common/config.py adds them); refuses (SystemExit)
    what check_listen and check_downstream refuse, before the service loads its models."""
    def path(name: str) -> Path | None:
        value = getattr(args, name, None)
        return Path(value) if value else None

    cert, key = path("tls_cert"), path("tls_key")
    if (cert is None) != (key is None):
        raise SystemExit("give both --tls-cert and --tls-key, or neither")
    client_ca = path("tls_client_ca")
    if client_ca is not None and cert is None:
        raise SystemExit("--tls-client-ca (mTLS) needs TLS: give --tls-cert and --tls-key too")
    internal = None
    ca, icert, ikey = path("internal_ca"), path("internal_cert"), path("internal_key")
    if (icert is None) != (ikey is None):
        raise SystemExit("give both --internal-cert and --internal-key, or neither")
    if icert is not None and ca is None:
        raise SystemExit("--internal-cert needs --internal-ca (the CA of the internal services' certificates)")
    if ca is not None:
        internal = ChannelSecurity(ca, icert, ikey, getattr(args, "internal_server_name", None) or None)
    tokens = None
    if getattr(args, "tokens_file", None):
        from services.common.tokens import TokensFileError
        try:
            tokens = TokenStore(args.tokens_file, logger)
        except TokensFileError as err:
            raise SystemExit(str(err)) from None
    reflection = getattr(args, "reflection", "auth")
    if reflection not in REFLECTION_MODES:
        raise SystemExit(f"--reflection {reflection!r}: one of {REFLECTION_MODES}")
    security = Security(cert=cert, key=key, client_ca=client_ca, tokens=tokens,
                        peer_roles=parse_peer_roles(getattr(args, "peer_roles", DEFAULT_PEER_ROLES)),
                        reflection=reflection, insecure=bool(getattr(args, "insecure", False)), internal=internal,
                        trust_forwarded=trust_forwarded, health_port=int(getattr(args, "health_port", 0) or 0))
    security.check_listen(service, getattr(args, "host", "127.0.0.1"))
    for name in (cert, key, client_ca, *(() if internal is None else (internal.ca, internal.cert, internal.key))):
        if name is not None:
            _read(name, "security file")  # a missing or unreadable file stops the start here
    return security


def _peer_name(context) -> str | None:
    """The common name of the caller's verified client certificate, or None."""
    auth = context.auth_context() or {}
    names = auth.get("x509_common_name") or []
    return names[0].decode(errors="replace") if names else None


def _bearer(metadata) -> str:
    values = [v for k, v in metadata if k == "authorization"]
    if not values:
        raise Unauthenticated("no credentials: send the metadata 'authorization: Bearer <token>'")
    if len(values) > 1 or not isinstance(values[0], str):
        raise Unauthenticated("send exactly one 'authorization: Bearer <token>'")
    scheme, _, token = values[0].strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the authorization metadata must be 'Bearer <token>'")
    return token.strip()


def _forwarded(metadata) -> Client | None:
    found = {k: v for k, v in metadata if k in (FORWARD_CLIENT, FORWARD_ROLES, FORWARD_QUOTA)}
    if FORWARD_CLIENT not in found:
        return None
    roles = frozenset(r for r in str(found.get(FORWARD_ROLES, "")).split(",") if r)
    quota = str(found.get(FORWARD_QUOTA, "none"))
    if not roles <= set(ROLES) or not (quota == "none" or quota.isdigit()):
        raise PermissionDenied("malformed forwarded client identity")
    return Client(str(found[FORWARD_CLIENT])[:64], roles, None if quota == "none" else int(quota), "forwarded")


class SecurityInterceptor(WrappingInterceptor):
    """Checks every call's credentials (docs at the top of this module); access: full method name ->
    the role it needs ("*": every other method; no entry: any authenticated caller)."""

    def __init__(self, security: Security, access: dict[str, str], service: str, logger: logging.Logger):
        super().__init__()
        self.security, self.access, self.service, self.logger = security, access, service, logger

    def check(self, method: str, context) -> tuple[Client | None, Client | None]:
        """(caller, client) of a call, or Unauthenticated / PermissionDenied."""
        sec = self.security
        if method.startswith(HEALTH_PREFIX):
            return None, None
        reflection = method.startswith(REFLECTION_PREFIX)
        if reflection and sec.reflection == "open":
            return None, None
        metadata = context.invocation_metadata() or ()
        who: Client | None = None
        if sec.client_ca is not None:
            name = _peer_name(context)
            if name is None:  # the handshake requires a verified certificate: only one without a common name
                raise Unauthenticated(f"the {self.service} service accepts only callers with a client certificate "
                                      f"of the internal CA (mTLS) that names them (common name)")
            who = Client(name, frozenset({"internal"}) | sec.peer_roles.get(name, frozenset()), None, "peer")
        if sec.tokens is not None:
            who = sec.tokens.lookup(_bearer(metadata))
            if who is None:
                raise Unauthenticated("unknown bearer token")
        need = None if reflection else self.access.get(method, self.access.get("*"))
        if who is not None and need is not None and not who.has(need):
            kind = "client" if who.kind == "token" else "peer"
            raise PermissionDenied(f"{kind} {who.name} may not call {method.rsplit('/', 1)[-1]}: it needs the role "
                                   f"{need!r} and has {sorted(who.roles)}")
        on_behalf = who if who is not None and who.kind == "token" else None
        if sec.trust_forwarded and (who is None or who.has("gateway")):
            on_behalf = _forwarded(metadata) or on_behalf
        return who, on_behalf

    def _checked(self, method: str, context) -> tuple[contextvars.Token, contextvars.Token]:
        try:
            who, on_behalf = self.check(method, context)
        except (Unauthenticated, PermissionDenied) as err:
            log(self.logger, "call refused", logging.WARNING, method=method, code=err.status, peer=context.peer(),
                error=str(err))
            context.abort(grpc.StatusCode[err.status], str(err))
        return _caller.set(who), _client.set(on_behalf)

    def wrap(self, kind: str, behaviour, method: str):
        return self._wrap(behaviour, method, streams=kind.endswith("_stream"))

    def _wrap(self, behaviour, method: str, streams: bool):
        def unary(request, context):
            tokens = self._checked(method, context)
            try:
                return behaviour(request, context)
            finally:
                _reset(tokens)

        def stream(request, context):
            tokens = self._checked(method, context)
            try:
                yield from behaviour(request, context)
            finally:
                _reset(tokens)
        return stream if streams else unary


def _reset(tokens) -> None:
    try:
        _caller.reset(tokens[0])
        _client.reset(tokens[1])
    except ValueError:  # a stream finished in another context than it started (it should not)
        _caller.set(None)
        _client.set(None)


class _CallDetails(collections.namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials",
                                                            "wait_for_ready", "compression")),
                   grpc.ClientCallDetails):
    pass


class BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                  grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """A client interceptor that sends `authorization: Bearer <token>` with every call."""

    def __init__(self, token: str):
        self._header = ("authorization", f"Bearer {token}")

    def __repr__(self) -> str:  # never shows the token
        return "BearerToken(***)"

    def _details(self, d):
        return _CallDetails(d.method, d.timeout, [*(d.metadata or ()), self._header], d.credentials,
                            d.wait_for_ready, d.compression)

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)
