"""The connection to fintoc-refresh and its unary calls."""

import threading
from dataclasses import dataclass
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import grpc

from ._proto import refresh_pb2 as pb
from ._proto import refresh_pb2_grpc as pb_grpc
from .errors import FintocRefreshError, from_rpc_error

__all__ = ["Client", "TLS"]

# Reconnect quickly after a restart: gRPC's own defaults (1 s growing to 120 s) would keep a
# channel in TRANSIENT_FAILURE long after the server is back, failing every retry fast.
_CHANNEL_OPTIONS = [
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 5000),
    ("grpc.enable_retries", 0),
    ("grpc.keepalive_time_ms", 60000),
    ("grpc.keepalive_timeout_ms", 20000),
]


def _read(value: Union[None, str, bytes]) -> Optional[bytes]:
    """PEM given as bytes, as PEM text, or as a file path."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    if "-----BEGIN" in value:
        return value.encode()
    with open(value, "rb") as f:
        return f.read()


@dataclass(frozen=True)
class TLS:
    """TLS settings. Each of ``ca``, ``cert`` and ``key`` is a PEM file path, PEM text, or
    PEM bytes.

    Attributes:
        ca: the CA to trust for the server's certificate (``None``: the system's roots).
        cert: a client certificate chain for mutual TLS (with ``key``).
        key: the private key of ``cert``.
        server_name: the name to check the server's certificate against, when it differs
            from the host in the target (e.g. targets given as IP addresses).
    """

    ca: Union[None, str, bytes] = None
    cert: Union[None, str, bytes] = None
    key: Union[None, str, bytes] = None
    server_name: Optional[str] = None

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.cert is None) != (self.key is None):
            raise ValueError("TLS: give both cert and key for mutual TLS, or neither")
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca),
            private_key=_read(self.key),
            certificate_chain=_read(self.cert),
        )


class Client:
    """A client of fintoc-refresh's ``RefreshService``.

    Args:
        target: where the service is: ``"host:port"``, a gRPC target such as
            ``"dns:///refresh.internal:50051"`` or ``"ipv4:10.0.0.5:50051,10.0.0.6:50051"``
            (every address is used, gRPC's round_robin), or a list of ``"host:port"`` of
            several replicas. With a list, calls
            go to one address at a time; a call that finds it UNAVAILABLE moves on to the
            next (see the methods), and a :class:`~fintoc_refresh_client.Watch` moves to the
            next on every reconnect, so a dead replica is left at once.
        tls: :class:`TLS` settings; ``None`` connects in plaintext.
        token: a bearer token, sent as ``authorization: Bearer <token>`` on every call.
        timeout: deadline in seconds of each unary call (streams have none).
        options: extra gRPC channel options, added to the client's own.

    Usable as a context manager; :meth:`close` closes the channels.
    """

    def __init__(
        self,
        target: Union[str, Sequence[str]],
        *,
        tls: Optional[TLS] = None,
        token: Optional[str] = None,
        timeout: Optional[float] = 30.0,
        options: Iterable[Tuple[str, object]] = (),
    ):
        targets = [target] if isinstance(target, str) else list(target)
        if not targets or any(not isinstance(t, str) or not t.strip() for t in targets):
            raise ValueError("Client: give a target 'host:port' or a non-empty list of them")
        self._targets: List[str] = [t.strip() for t in targets]
        self._tls = tls
        self._options = list(_CHANNEL_OPTIONS) + list(options)
        given = {name for name, _ in self._options}
        if "grpc.default_authority" not in given:
            # gRPC would send "a:1,b:2" as the :authority of an `ipv4:a:1,b:2` target, which
            # servers refuse (RST_STREAM PROTOCOL_ERROR): name the first address instead.
            for t in self._targets:
                if t.startswith(("ipv4:", "ipv6:")) and "," in t:
                    self._options.append(("grpc.default_authority", t[5:].split(",")[0]))
                    break
        if tls is not None and tls.server_name:
            self._options.append(("grpc.ssl_target_name_override", tls.server_name))
        token = (token or "").strip()
        self._metadata: Tuple[Tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        self.timeout = timeout
        self._lock = threading.Lock()
        self._channels: List[Optional[grpc.Channel]] = [None] * len(self._targets)
        self._index = 0
        self._closed = False

    # -- connection ------------------------------------------------------------------------

    @property
    def targets(self) -> List[str]:
        return list(self._targets)

    @property
    def current_target(self) -> str:
        return self._targets[self._index]

    def _channel(self, index: int) -> grpc.Channel:
        with self._lock:
            if self._closed:
                raise ValueError("Client is closed")
            channel = self._channels[index]
            if channel is None:
                target = self._targets[index]
                if self._tls is None:
                    channel = grpc.insecure_channel(target, options=self._options)
                else:
                    channel = grpc.secure_channel(
                        target, self._tls.credentials(), options=self._options
                    )
                self._channels[index] = channel
            return channel

    def _stub(self) -> Tuple[int, pb_grpc.RefreshServiceStub]:
        index = self._index
        return index, pb_grpc.RefreshServiceStub(self._channel(index))

    def _rotate(self, after: Optional[int] = None) -> None:
        """Moves to the next address (only if still on `after`, when given)."""
        with self._lock:
            if after is None or self._index == after:
                self._index = (self._index + 1) % len(self._targets)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            channels, self._channels = self._channels, [None] * len(self._targets)
        for channel in channels:
            if channel is not None:
                channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method: str, request, *, failover: bool = True):
        """One unary call. On UNAVAILABLE with several addresses it tries each other address
        once (when `failover`), then raises the last error, typed."""
        attempts = len(self._targets) if failover else 1
        for attempt in range(attempts):
            index, stub = self._stub()
            try:
                return getattr(stub, method)(
                    request, timeout=self.timeout, metadata=self._metadata
                )
            except grpc.RpcError as e:
                error = from_rpc_error(e)
                if error.code != grpc.StatusCode.UNAVAILABLE:
                    raise error from None
                self._rotate(index)
                if attempt + 1 == attempts:
                    raise error from None
        raise AssertionError("unreachable")

    # -- RPCs ----------------------------------------------------------------------------

    def request_refresh(
        self,
        link_token: str,
        *,
        historical: bool = False,
        idempotency_key: str = "",
        keep_link_token: bool = False,
    ) -> pb.RequestRefreshResponse:
        """Creates (or joins) a refresh of one Link: ``RequestRefresh``.

        Raises :class:`~fintoc_refresh_client.CooldownError` (with ``retry_after`` and
        ``refresh_intent_id``), :class:`~fintoc_refresh_client.CredentialsRejectedError`,
        :class:`~fintoc_refresh_client.NotFoundError` (unknown token),
        :class:`~fintoc_refresh_client.MovementsDisabledError` (``keep_link_token`` on a
        server without LINK_TOKEN_KEYS) … With several addresses, an UNAVAILABLE answer is
        retried on the next address only when an ``idempotency_key`` makes that safe.
        """
        request = pb.RequestRefreshRequest(
            link_token=link_token,
            refresh_type=pb.REFRESH_TYPE_HISTORICAL if historical else pb.REFRESH_TYPE_ONLY_LAST,
            idempotency_key=idempotency_key,
            keep_link_token=keep_link_token,
        )
        return self._call("RequestRefresh", request, failover=bool(idempotency_key))

    def get_refresh(self, refresh_intent_id: str) -> pb.RefreshIntent:
        """The current state of one refresh intent (``NotFoundError`` if unknown)."""
        response = self._call(
            "GetRefresh", pb.GetRefreshRequest(refresh_intent_id=refresh_intent_id)
        )
        return response.refresh_intent

    def get_link(self, link_id: str) -> pb.GetLinkResponse:
        """A Link's state and the ``as_of_sequence`` it includes (``NotFoundError``)."""
        return self._call("GetLink", pb.GetLinkRequest(link_id=link_id))

    def list_links_pages(self, page_size: int = 0) -> Iterator[pb.ListLinksResponse]:
        """Every page of ``ListLinks``, in order."""
        token = ""
        while True:
            page = self._call(
                "ListLinks", pb.ListLinksRequest(page_size=page_size, page_token=token)
            )
            yield page
            token = page.next_page_token
            if not token:
                return

    def list_links(self, page_size: int = 0) -> Iterator[pb.LinkState]:
        """Every known Link's state, ordered by id (all pages)."""
        for page in self.list_links_pages(page_size):
            yield from page.links

    def register_link(self, link_token: str) -> pb.LinkState:
        """Keeps a Link's token sealed without refreshing it (``MovementsDisabledError``
        without LINK_TOKEN_KEYS on the server)."""
        response = self._call("RegisterLink", pb.RegisterLinkRequest(link_token=link_token))
        return response.link

    def forget_link(self, link_id: str) -> None:
        """Drops a Link's kept token and stored movements (``NotFoundError``)."""
        self._call("ForgetLink", pb.ForgetLinkRequest(link_id=link_id))

    def list_movements(self, account_id: str, page_size: int = 0) -> Iterator[pb.Movement]:
        """An account's stored movements, newest ``post_date`` first (all pages)."""
        token = ""
        while True:
            page = self._call(
                "ListMovements",
                pb.ListMovementsRequest(
                    account_id=account_id, page_size=page_size, page_token=token
                ),
            )
            yield from page.movements
            token = page.next_page_token
            if not token:
                return

    def watch(
        self,
        *,
        refresh_intent_id: Optional[str] = None,
        link_id: Optional[str] = None,
        account_id: Optional[str] = None,
        link_ids: Sequence[str] = (),
        account_ids: Sequence[str] = (),
        all: bool = False,
        after: Optional[int] = None,
        start_time=None,
        statuses: Sequence[int] = (),
        include_movements: bool = False,
        heartbeats: bool = False,
        max_failures: Optional[int] = None,
    ) -> "Watch":
        """Follows an intent or a feed; see :class:`~fintoc_refresh_client.Watch`.

        Give exactly one target: ``refresh_intent_id``; ``link_id``; ``account_id``;
        ``link_ids`` and/or ``account_ids`` (one selection); or ``all=True``.
        """
        from .watch import Watch, WatchSpec

        spec = WatchSpec.build(
            refresh_intent_id=refresh_intent_id,
            link_id=link_id,
            account_id=account_id,
            link_ids=link_ids,
            account_ids=account_ids,
            all=all,
            start_time=start_time,
            statuses=statuses,
            include_movements=include_movements,
        )
        return Watch(
            self, spec, after=after, heartbeats=heartbeats, max_failures=max_failures
        )




