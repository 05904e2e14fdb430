"""Python client for fintoc-refresh.

    from fintoc_refresh_client import Client

    client = Client("127.0.0.1:50051")
    intent = client.request_refresh("link_…_token").refresh_intent
    for event in client.watch(refresh_intent_id=intent.id):
        print(event)          # AccountResult … then RefreshCompleted, then the loop ends

The generated protobuf messages and stubs are ``fintoc_refresh_client.pb`` and
``fintoc_refresh_client.pb_grpc``. See the package README for the resume and re-sync rules.
"""

from ._proto import refresh_pb2 as pb
from ._proto import refresh_pb2_grpc as pb_grpc
from .client import TLS, Client
from .errors import (
    CooldownError,
    CredentialsRejectedError,
    CursorExpiredError,
    FailedPreconditionError,
    FintocRefreshError,
    InvalidArgumentError,
    LinkInactiveError,
    MovementsDisabledError,
    NotFoundError,
    OutOfRangeError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    from_rpc_error,
)
from .watch import (
    AccountResult,
    Event,
    Heartbeat,
    MovementsChanged,
    MovementsUnavailable,
    RefreshCompleted,
    Resync,
    Watch,
)

__version__ = "0.1.0"

__all__ = [
    "pb",
    "pb_grpc",
    "Client",
    "TLS",
    "Watch",
    "Event",
    "AccountResult",
    "RefreshCompleted",
    "MovementsChanged",
    "MovementsUnavailable",
    "Heartbeat",
    "Resync",
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
    "from_rpc_error",
]
