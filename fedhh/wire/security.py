"""Transport security shared by the coordinator and the party agent: bearer tokens bound to an
identity, TLS credentials and channel set-up, and the server interceptor that refuses every call
without a valid token (except health checking) and every call its role may not make.

Tokens file (JSON)::

    {"tokens": [{"sha256": "<hex of the token>", "role": "party", "name": "party-0"},
                {"sha256": "...", "role": "analyst", "name": "alice"}]}

Only hashes are stored; ``fedhh coordinator add-token`` creates a token, writes it (mode 600) to a
file for its holder and appends its hash. Roles: ``party`` (the name is the party id the token is
bound to), ``analyst`` (its own runs), ``admin`` (an analyst who sees and cancels every run) and
``device`` (kept for old tokens files; user devices now hold per-user credentials,
:mod:`fedhh.clients.credentials`, and a device token can call nothing at the coordinator).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import re
import socket
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Self

import grpc

from fedhh.errors import ConnectionProblem, ParameterError, TransportError

ROLES = ("party", "analyst", "admin", "device")
ANALYST_ROLES = ("analyst", "admin")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)
log = logging.getLogger("fedhh.security")


@dataclass(frozen=True)
class Identity:
    """Who a valid token belongs to."""

    role: str
    name: str


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ParameterError(
            f"{kind} {name!r} is not valid: 1-64 characters of letters, digits, '.', '_', '-'"
        )
    return name


class Authenticator(Protocol):
    """Who the bearer token of a call's metadata belongs to (None: nobody)."""

    def identity_of(self, metadata: Sequence[Any] | None) -> Identity | None: ...


def bearer_token(metadata: Sequence[Any] | None) -> str:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :].strip()
    return ""


# --- server side ---------------------------------------------------------------------------------
def _deny_handler(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str, method: str):
    def deny(_request: Any, context: grpc.ServicerContext) -> Any:
        log.warning("refused %s from %s: %s %s", method, context.peer(), code.name, message)
        context.abort(code, message)

    kw = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny, **kw)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny, **kw)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny, **kw)
    return grpc.unary_unary_rpc_method_handler(deny, **kw)


class AuthInterceptor(grpc.ServerInterceptor):
    """Every method needs a valid bearer token except the ``open`` ones (health checking);
    ``roles`` maps a method prefix (``/fedhh.v1.PartyService/``) to the roles allowed to call
    it. A method no prefix lists is refused (PERMISSION_DENIED) whoever calls it."""

    def __init__(
        self,
        store: Authenticator,
        roles: Mapping[str, str | Sequence[str]],
        open_prefixes: Sequence[str] = OPEN_METHOD_PREFIXES,
    ) -> None:
        self.store = store
        self.roles = {k: (v,) if isinstance(v, str) else tuple(v) for k, v in roles.items()}
        self.open = tuple(open_prefixes)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        handler = continuation(handler_call_details)
        if handler is None or method.startswith(self.open):
            return handler
        ident = self.store.identity_of(handler_call_details.invocation_metadata)
        if ident is None:
            return _deny_handler(
                handler, grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token", method
            )
        allowed = next((r for p, r in self.roles.items() if method.startswith(p)), ())
        if ident.role not in allowed:
            need = " or ".join(allowed) if allowed else "no"
            return _deny_handler(
                handler,
                grpc.StatusCode.PERMISSION_DENIED,
                f"a {ident.role} token may not call {method} (needs {need} token)",
                method,
            )
        return handler


def identity(store: Authenticator, context: grpc.ServicerContext) -> Identity:
    """The caller's identity (the interceptor has already checked the token)."""
    ident = store.identity_of(context.invocation_metadata())
    if ident is None:  # pragma: no cover - the interceptor refuses these first
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")
    assert ident is not None
    return ident


def bind_port(
    server: grpc.Server,
    address: str,
    *,
    tls_cert: Path | None,
    tls_key: Path | None,
    insecure: bool,
    check_free: bool = True,
) -> int:
    """Listen on ``address`` with TLS (cert + key) or, only with ``insecure``, in plaintext.
    Everything that can go wrong (a malformed address, a port out of range or in use, an address
    not on this machine, unreadable or mismatched certificate and key) is a ParameterError with
    one clear line, checked before grpcio tries (and logs its own error lines). ``check_free``
    False: a port other processes of this service listen on too (SO_REUSEPORT)."""
    host, port = split_address(address)
    if check_free or not port:
        check_bindable(host, port)
    if insecure:
        if tls_cert or tls_key:
            raise ParameterError("--insecure and --tls-cert/--tls-key exclude each other")
        bound = _add_port(server.add_insecure_port, address)
    else:
        if not (tls_cert and tls_key):
            raise ParameterError(
                "TLS needs --tls-cert and --tls-key (plaintext only with an explicit --insecure)"
            )
        check_tls_files(Path(tls_cert), Path(tls_key))
        creds = grpc.ssl_server_credentials(
            [(Path(tls_key).read_bytes(), Path(tls_cert).read_bytes())]
        )
        bound = _add_port(lambda a: server.add_secure_port(a, creds), address)
    if bound == 0 or (port and bound != port):
        raise ParameterError(f"cannot listen on {address}")
    return bound


def _add_port(add: Callable[[str], int], address: str) -> int:
    try:
        return add(address)
    except RuntimeError:
        raise ParameterError(f"cannot listen on {address}") from None


def split_address(address: str) -> tuple[str, int]:
    """(host, port) of ``HOST:PORT`` (``[v6]:PORT`` for IPv6), the port in 0..65535."""
    host, sep, port = str(address).rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit():
        raise ParameterError(f"bad address {address!r}: expected HOST:PORT")
    if not 0 <= int(port) <= 65535:
        raise ParameterError(f"bad address {address!r}: port {port} is not in 0..65535")
    return host, int(port)


def check_bindable(host: str, port: int) -> None:
    """Refuse an address this machine cannot listen on (unknown host, port in use)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise ParameterError(f"cannot listen on {host}:{port}: unknown host ({exc})") from None
    for family, kind, proto, _, addr in infos[:1]:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(addr)
            except OSError as exc:
                why = "port in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
                raise ParameterError(f"cannot listen on {host}:{port}: {why}") from None


def check_tls_files(cert: Path, key: Path) -> None:
    """The certificate and private key parse and belong together (else one clear error)."""
    for what, path in (("certificate", cert), ("private key", key)):
        if not path.is_file():
            raise ParameterError(f"TLS {what} {path} does not exist")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except ssl.SSLError as exc:
        raise ParameterError(
            f"TLS certificate {cert} and key {key} do not load as a pair "
            f"(swapped, not PEM, or not matching): {exc.reason or exc}"
        ) from None


# --- client side ---------------------------------------------------------------------------------
class _TokenInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, token: str) -> None:
        self._md = ("authorization", f"Bearer {token}")

    def _details(self, details: Any) -> Any:
        md = [*(details.metadata or ()), self._md]
        return _CallDetails(
            details.method, details.timeout, md, details.credentials, details.wait_for_ready
        )

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None


def open_channel(
    target: str,
    *,
    token: str | None,
    ca_cert: Path | None = None,
    insecure: bool = False,
    max_message_bytes: int = 16 << 20,
) -> grpc.Channel:
    """A channel to ``target`` with TLS (server verified against ``ca_cert``, or the system roots)
    or, only with ``insecure``, in plaintext; every call carries ``token`` as a bearer token."""
    options = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
    ]
    if insecure:
        channel = grpc.insecure_channel(target, options=options)
    else:
        root = Path(ca_cert).read_bytes() if ca_cert else None
        channel = grpc.secure_channel(
            target, grpc.ssl_channel_credentials(root_certificates=root), options=options
        )
    if token:
        channel = grpc.intercept_channel(channel, _TokenInterceptor(token))
    return channel


def _handshake(host: str, port: int, ctx: ssl.SSLContext, timeout: float) -> dict[str, Any]:
    with socket.create_connection((host, port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            return dict(tls.getpeercert() or {})


def tls_problem(target: str, ca_cert: Path | None, timeout: float = 5.0) -> str:
    """Why a TLS handshake with ``target`` fails, in one sentence naming what to fix: the
    certificate chain not trusted by ``ca_cert`` (or the system roots), an expired certificate,
    a certificate that does not name the dialled host (its names listed), or a server that
    speaks no TLS. "" when it succeeds, or when the server cannot be reached to tell. OpenSSL
    does the checks (hostname included); a second handshake without the hostname check reads
    the certificate's names."""
    host, port = split_address(target)

    def context(check_hostname: bool) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(ca_cert) if ca_cert else None)
        ctx.check_hostname = check_hostname
        return ctx

    try:
        _handshake(host, port, context(check_hostname=True), timeout)
        return ""
    except ssl.SSLCertVerificationError as exc:
        why = exc.verify_message or str(exc)
        if "mismatch" not in why:
            if "expired" in why:
                return f"the certificate of {target} has expired ({why})"
            return f"the certificate of {target} is not trusted with this CA ({why})"
    except ssl.SSLError as exc:
        if exc.reason == "WRONG_VERSION_NUMBER":
            return f"{target} does not speak TLS (a plaintext server): dial it with --insecure"
        return ""
    except OSError:
        return ""
    try:
        alt: Any = _handshake(host, port, context(check_hostname=False), timeout)
    except (OSError, ssl.SSLError):
        return ""
    names = [str(value) for kind, value in alt.get("subjectAltName", ()) if kind in NAME_KINDS]
    return (
        f"the certificate of {target} is for {', '.join(names) or 'no host at all'}, not "
        f"{host}: dial one of those names, or give the coordinator a certificate for {host}"
    )


NAME_KINDS = ("DNS", "IP Address")
_TLS_FAILURE_WORDS = ("handshake failed", "certificate", "verification check failed")
_CLOSED_WORDS = ("socket closed", "connection reset")


def connection_problem(
    target: str, details: str, *, ca_cert: Path | None, insecure: bool, timeout: float = 5.0
) -> str:
    """Why a call to ``target`` that failed with ``details`` will fail however often it is
    retried, in one sentence naming what to fix; "" when a retry may succeed (the peer away,
    restarting, overloaded). Over TLS: what :func:`tls_problem` finds when the details say the
    handshake failed. In plaintext (``insecure``): a peer that closed the connection and speaks
    TLS. The peer is probed only when the details point there."""
    text = details.lower()
    if not insecure:
        if not any(w in text for w in _TLS_FAILURE_WORDS):
            return ""
        return tls_problem(target, ca_cert, timeout) or (
            f"the TLS handshake with {target} failed ({details}): check --ca-cert"
        )
    if not any(w in text for w in _CLOSED_WORDS):
        return ""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        _handshake(*split_address(target), ctx, timeout)
    except (OSError, ssl.SSLError):
        return ""
    return f"{target} speaks TLS, not plaintext: give its CA with --ca-cert instead of --insecure"


class ServiceClient:
    """A client of one gRPC service (``stub``: its generated stub class), closable as a context
    manager; the analyst's and the devices' clients derive from it. ``channel``: share an open
    channel (not closed by :meth:`close`) instead of opening one."""

    stub: Any = None
    _auth: tuple[tuple[str, str], ...] = ()  # metadata sent with every call (a device's credential)

    def __init__(
        self,
        target: str,
        *,
        token: str | None,
        ca_cert: Path | None = None,
        insecure: bool = False,
        timeout: float = 10.0,
        channel: grpc.Channel | None = None,
    ) -> None:
        self._owns = channel is None
        self._target, self._ca_cert, self._insecure = target, ca_cert, insecure
        self._channel = channel or open_channel(
            target, token=token, ca_cert=ca_cert, insecure=insecure
        )
        self._stub = type(self).stub(self._channel)
        self.timeout = timeout

    def _call(self, method: str, request: Any) -> Any:
        """One call of the service; a refusal raises :class:`TransportError` with the status
        name as ``code`` and the server's message, a connection no retry can fix (a certificate,
        TLS on one side only) :class:`ConnectionProblem` saying what to fix."""
        try:
            return getattr(self._stub, method)(
                request, timeout=self.timeout, metadata=self._auth or None
            )
        except grpc.RpcError as exc:
            details = exc.details() or ""
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                why = connection_problem(
                    self._target, details, ca_cert=self._ca_cert, insecure=self._insecure
                )
                if why:
                    raise ConnectionProblem(why) from None
            raise TransportError(exc.code().name, details) from None

    def close(self) -> None:
        if self._owns:
            self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
