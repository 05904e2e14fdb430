"""Typed exceptions for the service's answers.

Every RPC error becomes a :class:`FintocRefreshError` (or a subclass) carrying the gRPC
``code``, the server's ``message`` and, when the server attached a ``google.rpc.ErrorInfo``
(domain ``fintoc-refresh``), its ``reason`` and ``metadata``; a ``google.rpc.RetryInfo``
becomes ``retry_after`` (a :class:`datetime.timedelta`).

====================================  =====================  ==============================
exception                             gRPC code              ErrorInfo reason
====================================  =====================  ==============================
:class:`InvalidArgumentError`         INVALID_ARGUMENT
:class:`NotFoundError`                NOT_FOUND
:class:`CooldownError`                RESOURCE_EXHAUSTED     REFRESH_COOLDOWN (+ RetryInfo)
:class:`ResourceExhaustedError`       RESOURCE_EXHAUSTED     (other: e.g. too many streams)
:class:`CredentialsRejectedError`     FAILED_PRECONDITION    CREDENTIALS_REJECTED
:class:`LinkInactiveError`            FAILED_PRECONDITION    LINK_INACTIVE / LINK_WITHOUT_ACCOUNTS
:class:`MovementsDisabledError`       FAILED_PRECONDITION    MOVEMENTS_DISABLED
:class:`FailedPreconditionError`      FAILED_PRECONDITION    (other)
:class:`CursorExpiredError`           OUT_OF_RANGE           CURSOR_EXPIRED (oldest_sequence)
:class:`OutOfRangeError`              OUT_OF_RANGE           (other: CURSOR_AHEAD …)
:class:`UnauthenticatedError`         UNAUTHENTICATED
:class:`PermissionDeniedError`        PERMISSION_DENIED
:class:`UnavailableError`             UNAVAILABLE            (STREAM_MAX_AGE on streams)
:class:`FintocRefreshError`           anything else (INTERNAL, UNKNOWN …)
====================================  =====================  ==============================
"""

from datetime import timedelta
from typing import Dict, Optional

import grpc

DOMAIN = "fintoc-refresh"

REFRESH_COOLDOWN = "REFRESH_COOLDOWN"
CREDENTIALS_REJECTED = "CREDENTIALS_REJECTED"
LINK_INACTIVE = "LINK_INACTIVE"
LINK_WITHOUT_ACCOUNTS = "LINK_WITHOUT_ACCOUNTS"
MOVEMENTS_DISABLED = "MOVEMENTS_DISABLED"
CURSOR_EXPIRED = "CURSOR_EXPIRED"
STREAM_MAX_AGE = "STREAM_MAX_AGE"

__all__ = [
    "FintocRefreshError",
    "InvalidArgumentError",
    "NotFoundError",
    "ResourceExhaustedError",
    "CooldownError",
    "FailedPreconditionError",
    "CredentialsRejectedError",
    "LinkInactiveError",
    "MovementsDisabledError",
    "OutOfRangeError",
    "CursorExpiredError",
    "UnauthenticatedError",
    "PermissionDeniedError",
    "UnavailableError",
]


class FintocRefreshError(Exception):
    """An error answer of the service (or of the transport).

    Attributes:
        code: the :class:`grpc.StatusCode`.
        message: the server's message (meant for a person).
        reason: the ``google.rpc.ErrorInfo`` reason, ``""`` when none was attached.
        metadata: the ErrorInfo metadata (``{}`` when none).
        retry_after: the ``google.rpc.RetryInfo`` delay, ``None`` when none was attached.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
        metadata: Optional[Dict[str, str]] = None,
        retry_after: Optional[timedelta] = None,
    ):
        super().__init__(f"{code.name}: {message}" + (f" ({reason})" if reason else ""))
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata = dict(metadata or {})
        self.retry_after = retry_after


class InvalidArgumentError(FintocRefreshError):
    """INVALID_ARGUMENT: the request itself is wrong (empty token, bad selection …)."""


class NotFoundError(FintocRefreshError):
    """NOT_FOUND: unknown refresh intent, Link, account or link token."""


class ResourceExhaustedError(FintocRefreshError):
    """RESOURCE_EXHAUSTED without a cooldown reason (e.g. a server-wide stream limit)."""


class CooldownError(ResourceExhaustedError):
    """The Link was refreshed successfully too recently (reason REFRESH_COOLDOWN).

    Attributes:
        retry_after: how long until a new refresh of that type is allowed.
        refresh_intent_id: the intent that started the cooldown ("" when unknown).
    """

    @property
    def refresh_intent_id(self) -> str:
        return self.metadata.get("refresh_intent_id", "")


class FailedPreconditionError(FintocRefreshError):
    """FAILED_PRECONDITION without one of the reasons below."""


class CredentialsRejectedError(FailedPreconditionError):
    """The bank rejected the Link's credentials; it must be reconnected (hold).

    ``retry_after`` is the RetryInfo delay when the server sends one, else ``None``; the
    hold's end is also ``GetLink``'s ``only_last.next_allowed_at``.
    """


class LinkInactiveError(FailedPreconditionError):
    """The Link is inactive (LINK_INACTIVE) or has no accounts (LINK_WITHOUT_ACCOUNTS)."""


class MovementsDisabledError(FailedPreconditionError):
    """Movements were asked of a server without LINK_TOKEN_KEYS (MOVEMENTS_DISABLED)."""


class OutOfRangeError(FintocRefreshError):
    """OUT_OF_RANGE without CURSOR_EXPIRED (e.g. CURSOR_AHEAD: a cursor of another log)."""


class CursorExpiredError(OutOfRangeError):
    """The cursor (or start_time) is older than the retained log (CURSOR_EXPIRED).

    Attributes:
        oldest_sequence: the oldest sequence still retained (0 when not given).
    """

    @property
    def oldest_sequence(self) -> int:
        try:
            return int(self.metadata.get("oldest_sequence", "0"))
        except ValueError:
            return 0


class UnauthenticatedError(FintocRefreshError):
    """UNAUTHENTICATED: missing or wrong bearer token."""


class PermissionDeniedError(FintocRefreshError):
    """PERMISSION_DENIED."""


class UnavailableError(FintocRefreshError):
    """UNAVAILABLE: the server (or every address given) could not be reached."""


_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRangeError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
}

_BY_REASON = {
    (grpc.StatusCode.RESOURCE_EXHAUSTED, REFRESH_COOLDOWN): CooldownError,
    (grpc.StatusCode.FAILED_PRECONDITION, CREDENTIALS_REJECTED): CredentialsRejectedError,
    (grpc.StatusCode.FAILED_PRECONDITION, LINK_INACTIVE): LinkInactiveError,
    (grpc.StatusCode.FAILED_PRECONDITION, LINK_WITHOUT_ACCOUNTS): LinkInactiveError,
    (grpc.StatusCode.FAILED_PRECONDITION, MOVEMENTS_DISABLED): MovementsDisabledError,
    (grpc.StatusCode.OUT_OF_RANGE, CURSOR_EXPIRED): CursorExpiredError,
}


def _details(error: grpc.RpcError):
    """(reason, metadata, retry_after) from the status details, empty when absent."""
    reason, metadata, retry_after = "", {}, None
    try:
        from google.rpc import error_details_pb2
        from grpc_status import rpc_status

        status = rpc_status.from_call(error)
    except Exception:  # no details, or details that do not match the status
        return reason, metadata, retry_after
    if status is None:
        return reason, metadata, retry_after
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.domain in ("", DOMAIN):
                reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after = timedelta(
                seconds=retry.retry_delay.seconds, microseconds=retry.retry_delay.nanos // 1000
            )
    return reason, metadata, retry_after


def from_rpc_error(error: grpc.RpcError) -> FintocRefreshError:
    """The typed exception for a failed call (``error`` is a ``grpc.RpcError`` that is
    also a ``grpc.Call``, as grpcio raises them)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = error.details() if hasattr(error, "details") else str(error)
    code = code or grpc.StatusCode.UNKNOWN
    reason, metadata, retry_after = _details(error)
    cls = _BY_REASON.get((code, reason)) or _BY_CODE.get(code, FintocRefreshError)
    return cls(code, message or "", reason, metadata, retry_after)
