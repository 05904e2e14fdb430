from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RefreshType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REFRESH_TYPE_UNSPECIFIED: _ClassVar[RefreshType]
    REFRESH_TYPE_ONLY_LAST: _ClassVar[RefreshType]
    REFRESH_TYPE_HISTORICAL: _ClassVar[RefreshType]

class RefreshStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REFRESH_STATUS_UNSPECIFIED: _ClassVar[RefreshStatus]
    REFRESH_STATUS_PENDING: _ClassVar[RefreshStatus]
    REFRESH_STATUS_SUCCEEDED: _ClassVar[RefreshStatus]
    REFRESH_STATUS_FAILED: _ClassVar[RefreshStatus]
    REFRESH_STATUS_REJECTED: _ClassVar[RefreshStatus]
    REFRESH_STATUS_TIMED_OUT: _ClassVar[RefreshStatus]
REFRESH_TYPE_UNSPECIFIED: RefreshType
REFRESH_TYPE_ONLY_LAST: RefreshType
REFRESH_TYPE_HISTORICAL: RefreshType
REFRESH_STATUS_UNSPECIFIED: RefreshStatus
REFRESH_STATUS_PENDING: RefreshStatus
REFRESH_STATUS_SUCCEEDED: RefreshStatus
REFRESH_STATUS_FAILED: RefreshStatus
REFRESH_STATUS_REJECTED: RefreshStatus
REFRESH_STATUS_TIMED_OUT: RefreshStatus

class RequestRefreshRequest(_message.Message):
    __slots__ = ("link_token", "refresh_type", "idempotency_key", "keep_link_token")
    LINK_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REFRESH_TYPE_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    KEEP_LINK_TOKEN_FIELD_NUMBER: _ClassVar[int]
    link_token: str
    refresh_type: RefreshType
    idempotency_key: str
    keep_link_token: bool
    def __init__(self, link_token: _Optional[str] = ..., refresh_type: _Optional[_Union[RefreshType, str]] = ..., idempotency_key: _Optional[str] = ..., keep_link_token: bool = ...) -> None: ...

class RequestRefreshResponse(_message.Message):
    __slots__ = ("refresh_intent", "joined_existing")
    REFRESH_INTENT_FIELD_NUMBER: _ClassVar[int]
    JOINED_EXISTING_FIELD_NUMBER: _ClassVar[int]
    refresh_intent: RefreshIntent
    joined_existing: bool
    def __init__(self, refresh_intent: _Optional[_Union[RefreshIntent, _Mapping]] = ..., joined_existing: bool = ...) -> None: ...

class GetRefreshRequest(_message.Message):
    __slots__ = ("refresh_intent_id",)
    REFRESH_INTENT_ID_FIELD_NUMBER: _ClassVar[int]
    refresh_intent_id: str
    def __init__(self, refresh_intent_id: _Optional[str] = ...) -> None: ...

class GetRefreshResponse(_message.Message):
    __slots__ = ("refresh_intent",)
    REFRESH_INTENT_FIELD_NUMBER: _ClassVar[int]
    refresh_intent: RefreshIntent
    def __init__(self, refresh_intent: _Optional[_Union[RefreshIntent, _Mapping]] = ...) -> None: ...

class RefreshIntent(_message.Message):
    __slots__ = ("id", "link_id", "refresh_type", "status", "accounts", "mfa_widget_token", "created_at", "completed_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    LINK_ID_FIELD_NUMBER: _ClassVar[int]
    REFRESH_TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    MFA_WIDGET_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    link_id: str
    refresh_type: RefreshType
    status: RefreshStatus
    accounts: _containers.RepeatedCompositeFieldContainer[AccountResult]
    mfa_widget_token: str
    created_at: _timestamp_pb2.Timestamp
    completed_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., link_id: _Optional[str] = ..., refresh_type: _Optional[_Union[RefreshType, str]] = ..., status: _Optional[_Union[RefreshStatus, str]] = ..., accounts: _Optional[_Iterable[_Union[AccountResult, _Mapping]]] = ..., mfa_widget_token: _Optional[str] = ..., created_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., completed_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AccountResult(_message.Message):
    __slots__ = ("account_id", "link_id", "refresh_intent_id", "status", "new_movements", "public_error", "event_id", "occurred_at")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    LINK_ID_FIELD_NUMBER: _ClassVar[int]
    REFRESH_INTENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    NEW_MOVEMENTS_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_ERROR_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    link_id: str
    refresh_intent_id: str
    status: RefreshStatus
    new_movements: int
    public_error: str
    event_id: str
    occurred_at: _timestamp_pb2.Timestamp
    def __init__(self, account_id: _Optional[str] = ..., link_id: _Optional[str] = ..., refresh_intent_id: _Optional[str] = ..., status: _Optional[_Union[RefreshStatus, str]] = ..., new_movements: _Optional[int] = ..., public_error: _Optional[str] = ..., event_id: _Optional[str] = ..., occurred_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class WatchRefreshRequest(_message.Message):
    __slots__ = ("refresh_intent_id", "link_id", "account_id", "selection", "after_sequence", "start_time", "statuses", "include_movements")
    REFRESH_INTENT_ID_FIELD_NUMBER: _ClassVar[int]
    LINK_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_MOVEMENTS_FIELD_NUMBER: _ClassVar[int]
    refresh_intent_id: str
    link_id: str
    account_id: str
    selection: Selection
    after_sequence: int
    start_time: _timestamp_pb2.Timestamp
    statuses: _containers.RepeatedScalarFieldContainer[RefreshStatus]
    include_movements: bool
    def __init__(self, refresh_intent_id: _Optional[str] = ..., link_id: _Optional[str] = ..., account_id: _Optional[str] = ..., selection: _Optional[_Union[Selection, _Mapping]] = ..., after_sequence: _Optional[int] = ..., start_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., statuses: _Optional[_Iterable[_Union[RefreshStatus, str]]] = ..., include_movements: bool = ...) -> None: ...

class Selection(_message.Message):
    __slots__ = ("link_ids", "account_ids", "all")
    LINK_IDS_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_IDS_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    link_ids: _containers.RepeatedScalarFieldContainer[str]
    account_ids: _containers.RepeatedScalarFieldContainer[str]
    all: bool
    def __init__(self, link_ids: _Optional[_Iterable[str]] = ..., account_ids: _Optional[_Iterable[str]] = ..., all: bool = ...) -> None: ...

class WatchRefreshResponse(_message.Message):
    __slots__ = ("sequence", "account_result", "refresh_completed", "heartbeat", "movements", "movements_unavailable")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_RESULT_FIELD_NUMBER: _ClassVar[int]
    REFRESH_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    MOVEMENTS_FIELD_NUMBER: _ClassVar[int]
    MOVEMENTS_UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    account_result: AccountResult
    refresh_completed: RefreshIntent
    heartbeat: Heartbeat
    movements: MovementsChanged
    movements_unavailable: MovementsUnavailable
    def __init__(self, sequence: _Optional[int] = ..., account_result: _Optional[_Union[AccountResult, _Mapping]] = ..., refresh_completed: _Optional[_Union[RefreshIntent, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., movements: _Optional[_Union[MovementsChanged, _Mapping]] = ..., movements_unavailable: _Optional[_Union[MovementsUnavailable, _Mapping]] = ...) -> None: ...

class MovementsChanged(_message.Message):
    __slots__ = ("account_id", "link_id", "refresh_intent_id", "event_id", "added", "modified", "removed_ids", "complete")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    LINK_ID_FIELD_NUMBER: _ClassVar[int]
    REFRESH_INTENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    MODIFIED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_IDS_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    link_id: str
    refresh_intent_id: str
    event_id: str
    added: _containers.RepeatedCompositeFieldContainer[Movement]
    modified: _containers.RepeatedCompositeFieldContainer[Movement]
    removed_ids: _containers.RepeatedScalarFieldContainer[str]
    complete: bool
    def __init__(self, account_id: _Optional[str] = ..., link_id: _Optional[str] = ..., refresh_intent_id: _Optional[str] = ..., event_id: _Optional[str] = ..., added: _Optional[_Iterable[_Union[Movement, _Mapping]]] = ..., modified: _Optional[_Iterable[_Union[Movement, _Mapping]]] = ..., removed_ids: _Optional[_Iterable[str]] = ..., complete: bool = ...) -> None: ...

class MovementsUnavailable(_message.Message):
    __slots__ = ("account_id", "link_id", "event_id", "reason", "message")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    LINK_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    link_id: str
    event_id: str
    reason: str
    message: str
    def __init__(self, account_id: _Optional[str] = ..., link_id: _Optional[str] = ..., event_id: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class Movement(_message.Message):
    __slots__ = ("id", "amount", "currency", "description", "post_date", "transaction_date", "type", "status", "pending", "reference_id", "comment", "sender_account", "recipient_account")
    ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    POST_DATE_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_DATE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_ID_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    SENDER_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    id: str
    amount: int
    currency: str
    description: str
    post_date: str
    transaction_date: str
    type: str
    status: str
    pending: bool
    reference_id: str
    comment: str
    sender_account: TransferAccount
    recipient_account: TransferAccount
    def __init__(self, id: _Optional[str] = ..., amount: _Optional[int] = ..., currency: _Optional[str] = ..., description: _Optional[str] = ..., post_date: _Optional[str] = ..., transaction_date: _Optional[str] = ..., type: _Optional[str] = ..., status: _Optional[str] = ..., pending: bool = ..., reference_id: _Optional[str] = ..., comment: _Optional[str] = ..., sender_account: _Optional[_Union[TransferAccount, _Mapping]] = ..., recipient_account: _Optional[_Union[TransferAccount, _Mapping]] = ...) -> None: ...

class TransferAccount(_message.Message):
    __slots__ = ("holder_id", "holder_name", "number", "institution_id", "institution_name")
    HOLDER_ID_FIELD_NUMBER: _ClassVar[int]
    HOLDER_NAME_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    INSTITUTION_ID_FIELD_NUMBER: _ClassVar[int]
    INSTITUTION_NAME_FIELD_NUMBER: _ClassVar[int]
    holder_id: str
    holder_name: str
    number: str
    institution_id: str
    institution_name: str
    def __init__(self, holder_id: _Optional[str] = ..., holder_name: _Optional[str] = ..., number: _Optional[str] = ..., institution_id: _Optional[str] = ..., institution_name: _Optional[str] = ...) -> None: ...

class RegisterLinkRequest(_message.Message):
    __slots__ = ("link_token",)
    LINK_TOKEN_FIELD_NUMBER: _ClassVar[int]
    link_token: str
    def __init__(self, link_token: _Optional[str] = ...) -> None: ...

class RegisterLinkResponse(_message.Message):
    __slots__ = ("link",)
    LINK_FIELD_NUMBER: _ClassVar[int]
    link: LinkState
    def __init__(self, link: _Optional[_Union[LinkState, _Mapping]] = ...) -> None: ...

class ForgetLinkRequest(_message.Message):
    __slots__ = ("link_id",)
    LINK_ID_FIELD_NUMBER: _ClassVar[int]
    link_id: str
    def __init__(self, link_id: _Optional[str] = ...) -> None: ...

class ForgetLinkResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListMovementsRequest(_message.Message):
    __slots__ = ("account_id", "page_size", "page_token")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    page_size: int
    page_token: str
    def __init__(self, account_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListMovementsResponse(_message.Message):
    __slots__ = ("movements", "next_page_token", "as_of_sequence")
    MOVEMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    AS_OF_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    movements: _containers.RepeatedCompositeFieldContainer[Movement]
    next_page_token: str
    as_of_sequence: int
    def __init__(self, movements: _Optional[_Iterable[_Union[Movement, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., as_of_sequence: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("server_time",)
    SERVER_TIME_FIELD_NUMBER: _ClassVar[int]
    server_time: _timestamp_pb2.Timestamp
    def __init__(self, server_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetLinkRequest(_message.Message):
    __slots__ = ("link_id",)
    LINK_ID_FIELD_NUMBER: _ClassVar[int]
    link_id: str
    def __init__(self, link_id: _Optional[str] = ...) -> None: ...

class GetLinkResponse(_message.Message):
    __slots__ = ("link", "as_of_sequence")
    LINK_FIELD_NUMBER: _ClassVar[int]
    AS_OF_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    link: LinkState
    as_of_sequence: int
    def __init__(self, link: _Optional[_Union[LinkState, _Mapping]] = ..., as_of_sequence: _Optional[int] = ...) -> None: ...

class ListLinksRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListLinksResponse(_message.Message):
    __slots__ = ("links", "next_page_token", "as_of_sequence")
    LINKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    AS_OF_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    links: _containers.RepeatedCompositeFieldContainer[LinkState]
    next_page_token: str
    as_of_sequence: int
    def __init__(self, links: _Optional[_Iterable[_Union[LinkState, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., as_of_sequence: _Optional[int] = ...) -> None: ...

class LinkState(_message.Message):
    __slots__ = ("link_id", "accounts", "pending_intent", "only_last", "historical", "link_token_kept")
    LINK_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    PENDING_INTENT_FIELD_NUMBER: _ClassVar[int]
    ONLY_LAST_FIELD_NUMBER: _ClassVar[int]
    HISTORICAL_FIELD_NUMBER: _ClassVar[int]
    LINK_TOKEN_KEPT_FIELD_NUMBER: _ClassVar[int]
    link_id: str
    accounts: _containers.RepeatedCompositeFieldContainer[AccountState]
    pending_intent: RefreshIntent
    only_last: Eligibility
    historical: Eligibility
    link_token_kept: bool
    def __init__(self, link_id: _Optional[str] = ..., accounts: _Optional[_Iterable[_Union[AccountState, _Mapping]]] = ..., pending_intent: _Optional[_Union[RefreshIntent, _Mapping]] = ..., only_last: _Optional[_Union[Eligibility, _Mapping]] = ..., historical: _Optional[_Union[Eligibility, _Mapping]] = ..., link_token_kept: bool = ...) -> None: ...

class AccountState(_message.Message):
    __slots__ = ("account_id", "last_result", "last_sequence")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_RESULT_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    last_result: AccountResult
    last_sequence: int
    def __init__(self, account_id: _Optional[str] = ..., last_result: _Optional[_Union[AccountResult, _Mapping]] = ..., last_sequence: _Optional[int] = ...) -> None: ...

class Eligibility(_message.Message):
    __slots__ = ("allowed", "next_allowed_at", "reason")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    NEXT_ALLOWED_AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    next_allowed_at: _timestamp_pb2.Timestamp
    reason: str
    def __init__(self, allowed: bool = ..., next_allowed_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...
