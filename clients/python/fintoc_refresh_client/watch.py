"""``Watch``: follow a refresh intent or a feed of results, resuming from a cursor.

The rules (the same as the Rust client's ``Watcher`` and ``fintoc-refresh watch``):

* Every message the server sends carries a ``sequence``, a safe cursor: heartbeats too.
  ``Watch.cursor`` is the last one received (or the ``after=`` given, or ``None`` before
  the first message of a feed started "from now").
* The stream is reopened with ``after_sequence = cursor`` — nothing missed, nothing
  repeated — after UNAVAILABLE, transport errors, the INTERNAL/UNKNOWN a proxy reports
  when it loses a backend (and CANCELLED/DEADLINE_EXCEEDED/ABORTED/RESOURCE_EXHAUSTED not
  caused by this client), and when a stream ends on purpose (``STREAM_MAX_AGE``, server
  shutdown, a clean end of a feed). Reconnects wait a jittered exponential backoff, 100 ms
  doubling to 5 s, reset by any message; the end of a stream by age reconnects at once.
  With several addresses each reconnect moves to the next one.
* Definitive answers end the iteration by raising the typed exception:
  INVALID_ARGUMENT, NOT_FOUND, UNAUTHENTICATED, PERMISSION_DENIED, FAILED_PRECONDITION,
  OUT_OF_RANGE other than CURSOR_EXPIRED, UNIMPLEMENTED …
* OUT_OF_RANGE with reason CURSOR_EXPIRED (the cursor, or ``start_time``, is older than
  the retained log): for a feed, re-sync — a ``link_id`` target reads ``GetLink``; account,
  selection and ``all`` targets read every page of ``ListLinks`` (kept to the target's
  Links and accounts) — yield one :class:`Resync` with those Link states, then watch after
  its ``as_of_sequence`` (for ``ListLinks`` the first page's). An intent target raises
  :class:`~fintoc_refresh_client.CursorExpiredError` instead.
* An intent target's iteration ends (``StopIteration``) after its
  :class:`RefreshCompleted`; feeds never end on their own.
"""

import random
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import grpc
from google.protobuf import timestamp_pb2

from ._proto import refresh_pb2 as pb
from .errors import (
    CURSOR_EXPIRED,
    STREAM_MAX_AGE,
    FintocRefreshError,
    NotFoundError,
    UnavailableError,
    from_rpc_error,
)

__all__ = [
    "Watch",
    "Event",
    "AccountResult",
    "RefreshCompleted",
    "MovementsChanged",
    "MovementsUnavailable",
    "Heartbeat",
    "Resync",
]

BACKOFF_START = 0.1
BACKOFF_MAX = 5.0

# Codes after which the stream is reopened from the cursor.
_TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


# -- events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """Something a :class:`Watch` yields. ``sequence`` is the cursor it leaves the watch at:
    store it once you have handled the event and resume with ``after=`` it."""

    sequence: int


@dataclass(frozen=True)
class AccountResult(Event):
    """One account's result (``result``: the protobuf ``AccountResult``)."""

    result: pb.AccountResult


@dataclass(frozen=True)
class RefreshCompleted(Event):
    """The intent reached its final status (``intent``: the protobuf ``RefreshIntent``);
    the last event of an intent watch."""

    intent: pb.RefreshIntent


@dataclass(frozen=True)
class MovementsChanged(Event):
    """Movements of one account (``include_movements``): the protobuf ``MovementsChanged``."""

    movements: pb.MovementsChanged


@dataclass(frozen=True)
class MovementsUnavailable(Event):
    """An account's movements could not be pushed: the protobuf ``MovementsUnavailable``."""

    unavailable: pb.MovementsUnavailable


@dataclass(frozen=True)
class Heartbeat(Event):
    """Only yielded with ``heartbeats=True``; otherwise heartbeats just move the cursor."""

    server_time: datetime


@dataclass(frozen=True)
class Resync(Event):
    """The cursor had expired (``oldest_sequence`` is the oldest sequence the server still
    had): instead of the results missed, the current state of the target's Links.

    ``links`` holds ``LinkState`` protobufs: for Links targeted by id, the whole state; for
    accounts targeted by id, their Link's state with ``accounts`` kept to those targeted;
    for ``all``, every Link. Each ``AccountState`` has ``last_result``/``last_sequence``.
    ``sequence`` is the ``as_of_sequence`` the states include every result up to; the watch
    continues after it (with ``ListLinks`` a result may then repeat what a state showed:
    compare sequences)."""

    links: List[pb.LinkState] = field(default_factory=list)
    oldest_sequence: int = 0


# -- what to watch ----------------------------------------------------------------------------


def _status_number(status: Union[int, str]) -> int:
    if isinstance(status, int):
        return status
    name = status.upper()
    if not name.startswith("REFRESH_STATUS_"):
        name = "REFRESH_STATUS_" + name
    return pb.RefreshStatus.Value(name)


def _timestamp(value) -> Optional[timestamp_pb2.Timestamp]:
    if value is None or isinstance(value, timestamp_pb2.Timestamp):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        ts = timestamp_pb2.Timestamp()
        ts.FromDatetime(value.astimezone(timezone.utc))
        return ts
    raise TypeError("start_time: give a datetime or a google.protobuf.Timestamp")


def _distinct(ids: Sequence[str]) -> List[str]:
    seen: List[str] = []
    for i in ids:
        if i not in seen:
            seen.append(i)
    return seen


@dataclass(frozen=True)
class WatchSpec:
    """What every (re)connection of one watch asks for; only the cursor changes."""

    kind: str  # "intent", "link", "account", "selection", "all"
    refresh_intent_id: str = ""
    link_ids: Tuple[str, ...] = ()
    account_ids: Tuple[str, ...] = ()
    start_time: Optional[timestamp_pb2.Timestamp] = None
    statuses: Tuple[int, ...] = ()
    include_movements: bool = False

    @staticmethod
    def build(
        *,
        refresh_intent_id=None,
        link_id=None,
        account_id=None,
        link_ids=(),
        account_ids=(),
        all=False,
        start_time=None,
        statuses=(),
        include_movements=False,
    ) -> "WatchSpec":
        if isinstance(link_ids, str) or isinstance(account_ids, str):
            raise TypeError("link_ids / account_ids: give a list of ids, not one string")
        links = _distinct(([link_id] if link_id else []) + list(link_ids))
        accounts = _distinct(([account_id] if account_id else []) + list(account_ids))
        given = sum([bool(refresh_intent_id), bool(links or accounts), bool(all)])
        if given != 1:
            raise ValueError(
                "watch: give exactly one target: refresh_intent_id, link_id / link_ids / "
                "account_id / account_ids, or all=True"
            )
        common = dict(
            start_time=_timestamp(start_time),
            statuses=tuple(_status_number(s) for s in statuses),
            include_movements=bool(include_movements),
        )
        if refresh_intent_id:
            if start_time is not None:
                raise ValueError("watch: start_time is for feeds, not an intent")
            return WatchSpec("intent", refresh_intent_id=refresh_intent_id, **common)
        if all:
            return WatchSpec("all", **common)
        if len(links) == 1 and not accounts:
            return WatchSpec("link", link_ids=tuple(links), **common)
        if len(accounts) == 1 and not links:
            return WatchSpec("account", account_ids=tuple(accounts), **common)
        return WatchSpec(
            "selection", link_ids=tuple(links), account_ids=tuple(accounts), **common
        )

    def request(self, cursor: Optional[int]) -> pb.WatchRefreshRequest:
        """The request resuming after `cursor` (None: no message yet). start_time goes only
        while there is no cursor (the server refuses both)."""
        request = pb.WatchRefreshRequest(
            statuses=list(self.statuses), include_movements=self.include_movements
        )
        if self.kind == "intent":
            request.refresh_intent_id = self.refresh_intent_id
        elif self.kind == "link":
            request.link_id = self.link_ids[0]
        elif self.kind == "account":
            request.account_id = self.account_ids[0]
        elif self.kind == "all":
            request.selection.all = True
        else:
            request.selection.link_ids.extend(self.link_ids)
            request.selection.account_ids.extend(self.account_ids)
        if cursor is not None:
            request.after_sequence = cursor
        elif self.start_time is not None:
            request.start_time.CopyFrom(self.start_time)
        return request

    def keep(self, link: pb.LinkState) -> Optional[pb.LinkState]:
        """`link` as far as this target covers it (None: not at all)."""
        if self.kind == "all" or link.link_id in self.link_ids:
            return link
        wanted = [a for a in link.accounts if a.account_id in self.account_ids]
        if not wanted:
            return None
        narrowed = pb.LinkState()
        narrowed.CopyFrom(link)
        del narrowed.accounts[:]
        narrowed.accounts.extend(wanted)
        return narrowed


# -- the iterator -----------------------------------------------------------------------------


class Watch:
    """An iterator of :class:`Event` s that reconnects and resumes on its own (see the
    module's rules). Create it with :meth:`Client.watch`.

    Attributes:
        cursor: the last sequence received (heartbeats included), the ``after=`` given, or
            ``None`` while a feed started "from now" has had no message yet. Read it from the
            thread that iterates, after handling an event, to store it; resume later with
            ``client.watch(..., after=cursor)``.
        reconnects: how many times the stream was reopened (for logs and tests).
        resyncs: how many :class:`Resync` events were yielded.

    ``close()`` (from any thread) ends the iteration; also a context manager.
    """

    def __init__(
        self,
        client,
        spec: WatchSpec,
        *,
        after: Optional[int] = None,
        heartbeats: bool = False,
        max_failures: Optional[int] = None,
    ):
        if after is not None and (not isinstance(after, int) or after < 0):
            raise ValueError("after: a sequence (an int >= 0) or None")
        self._client = client
        self._spec = spec
        self.cursor: Optional[int] = after
        self.reconnects = 0
        self.resyncs = 0
        self._heartbeats = heartbeats
        self._max_failures = max_failures
        self._closed = threading.Event()
        self._call = None
        self._events = self._run()

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        if self._closed.is_set():
            raise StopIteration
        return next(self._events)

    def close(self) -> None:
        """Ends the watch: the open stream is cancelled (the server frees it at once) and the
        iteration stops. Safe from any thread, and more than once."""
        self._closed.set()
        call = self._call
        if call is not None:
            call.cancel()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # The loop: one stream after another until a definitive answer, the intent's completion,
    # or close().
    def _run(self) -> Iterator[Event]:
        failures = 0
        while not self._closed.is_set():
            index, stub = self._client._stub()
            error: Optional[FintocRefreshError] = None
            try:
                call = stub.WatchRefresh(
                    self._spec.request(self.cursor), metadata=self._client._metadata
                )
                self._call = call
                if self._closed.is_set():
                    call.cancel()
                for msg in call:
                    failures = 0
                    if self.cursor is None or msg.sequence > self.cursor:
                        self.cursor = msg.sequence
                    event = self._event(msg)
                    if event is not None:
                        yield event
                    if msg.WhichOneof("event") == "refresh_completed":
                        self.close()
                        return
            except grpc.RpcError as e:
                if self._closed.is_set():
                    return
                error = from_rpc_error(e)
            finally:
                self._call = None
            if self._closed.is_set():
                return
            if error is None:
                # A clean end without completion: the server (or a proxy) let go; resume.
                error = UnavailableError(grpc.StatusCode.UNAVAILABLE, "the stream ended")
            elif error.reason == CURSOR_EXPIRED and error.code == grpc.StatusCode.OUT_OF_RANGE:
                if self._spec.kind == "intent":
                    raise error
                try:
                    resync = self._resync(error.oldest_sequence)
                except FintocRefreshError as e:
                    if e.code not in _TRANSIENT:
                        raise
                    error = e
                else:
                    self.cursor = resync.sequence
                    self.resyncs += 1
                    failures = 0
                    yield resync
                    continue
            elif error.code not in _TRANSIENT:
                raise error
            self.reconnects += 1
            self._client._rotate(index)
            if error.reason == STREAM_MAX_AGE:
                continue  # ended on purpose after a heartbeat: resume at once
            failures += 1
            if self._max_failures is not None and failures > self._max_failures:
                raise error
            delay = min(BACKOFF_MAX, BACKOFF_START * (2 ** (failures - 1)))
            self._closed.wait(random.uniform(delay / 2, delay))

    def _event(self, msg: pb.WatchRefreshResponse) -> Optional[Event]:
        kind = msg.WhichOneof("event")
        seq = msg.sequence
        if kind == "account_result":
            return AccountResult(seq, msg.account_result)
        if kind == "refresh_completed":
            return RefreshCompleted(seq, msg.refresh_completed)
        if kind == "movements":
            return MovementsChanged(seq, msg.movements)
        if kind == "movements_unavailable":
            return MovementsUnavailable(seq, msg.movements_unavailable)
        if kind == "heartbeat" and self._heartbeats:
            return Heartbeat(seq, msg.heartbeat.server_time.ToDatetime(tzinfo=timezone.utc))
        return None  # a heartbeat (only moves the cursor), or an event this client predates

    def _resync(self, oldest: int) -> Resync:
        """The target's Link states and the sequence they are as of (GetLink for one Link;
        every page of ListLinks otherwise)."""
        client = self._client
        if self._spec.kind == "link":
            try:
                response = client.get_link(self._spec.link_ids[0])
            except NotFoundError:
                # A Link nobody has seen yet: no state, but a sequence to watch after.
                first = next(client.list_links_pages(page_size=1))
                return Resync(first.as_of_sequence, [], oldest)
            return Resync(response.as_of_sequence, [response.link], oldest)
        links: List[pb.LinkState] = []
        as_of: Optional[int] = None
        for page in client.list_links_pages(page_size=500):
            if as_of is None:
                as_of = page.as_of_sequence  # the FIRST page's, as the proto says
            for link in page.links:
                kept = self._spec.keep(link)
                if kept is not None:
                    links.append(kept)
        if as_of is None:
            raise FintocRefreshError(grpc.StatusCode.INTERNAL, "ListLinks returned no page")
        return Resync(as_of, links, oldest)
