"""The watch's reconnect decisions for answers the real server does not give on demand (a
proxy's INTERNAL/UNKNOWN when it loses a backend), with a scripted stub: which codes are
retried, and that each retry resumes after the cursor. No server needed."""

import grpc
import pytest

import fintoc_refresh_client as frc
from fintoc_refresh_client import pb
from fintoc_refresh_client.watch import WatchSpec


class Failure(grpc.RpcError, grpc.Call):
    def __init__(self, code, details="scripted"):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details

    def trailing_metadata(self):
        return ()

    def initial_metadata(self):
        return ()

    def is_active(self):
        return False

    def time_remaining(self):
        return None

    def cancel(self):
        return False

    def add_callback(self, callback):
        return False


class Stream:
    """One scripted stream: its messages, then `end` (None: a clean end) raised."""

    def __init__(self, messages, end):
        self.messages, self.end = messages, end

    def __iter__(self):
        yield from self.messages
        if self.end is not None:
            raise self.end

    def cancel(self):
        pass


class ScriptedClient:
    def __init__(self, script):
        self.script, self.requests, self._metadata = list(script), [], ()

    def _stub(self):
        client = self

        class Stub:
            def WatchRefresh(self, request, metadata=()):
                client.requests.append(request)
                step = client.script.pop(0)
                if isinstance(step, Failure):
                    raise step
                return step

        return 0, Stub()

    def _rotate(self, after=None):
        pass


def result(seq, event_id):
    return pb.WatchRefreshResponse(
        sequence=seq, account_result=pb.AccountResult(account_id="acc_1", event_id=event_id)
    )


def heartbeat(seq):
    return pb.WatchRefreshResponse(sequence=seq, heartbeat=pb.Heartbeat())


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
     grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED],
)
def test_transient_codes_resume_after_the_cursor(code):
    client = ScriptedClient(
        [
            Stream([heartbeat(0), result(1, "e1")], Failure(code)),
            Failure(grpc.StatusCode.UNAVAILABLE),  # the reconnect itself fails once
            Stream([heartbeat(5)], None),  # a clean end of a feed: resume too
            Stream([result(6, "e6")], Failure(grpc.StatusCode.NOT_FOUND, "gone")),
        ]
    )
    watch = frc.Watch(client, WatchSpec.build(all=True))
    got = []
    with pytest.raises(frc.NotFoundError):
        for event in watch:
            got.append((event.sequence, event.result.event_id))
    assert got == [(1, "e1"), (6, "e6")]
    sent = [r.after_sequence if r.HasField("after_sequence") else None for r in client.requests]
    assert sent == [None, 1, 1, 5]
    assert watch.cursor == 6 and watch.reconnects == 3


@pytest.mark.parametrize(
    "code, error",
    [(grpc.StatusCode.INVALID_ARGUMENT, frc.InvalidArgumentError),
     (grpc.StatusCode.UNAUTHENTICATED, frc.UnauthenticatedError),
     (grpc.StatusCode.PERMISSION_DENIED, frc.PermissionDeniedError),
     (grpc.StatusCode.FAILED_PRECONDITION, frc.FailedPreconditionError)],
)
def test_definitive_codes_end_the_watch(code, error):
    client = ScriptedClient([Stream([result(3, "e3")], Failure(code))])
    watch = frc.Watch(client, WatchSpec.build(link_id="link_1"), after=2)
    assert next(watch).sequence == 3
    with pytest.raises(error):
        next(watch)
    assert watch.cursor == 3 and watch.reconnects == 0


def test_max_failures_gives_up_with_the_last_error():
    client = ScriptedClient([Failure(grpc.StatusCode.UNAVAILABLE, "down")] * 3)
    watch = frc.Watch(client, WatchSpec.build(account_id="acc_1"), max_failures=2)
    with pytest.raises(frc.UnavailableError, match="down"):
        next(watch)
    assert len(client.requests) == 3


def test_spec_requests():
    spec = WatchSpec.build(link_ids=["l1", "l1"], statuses=["failed", pb.REFRESH_STATUS_REJECTED])
    assert spec.kind == "link"
    request = spec.request(7)
    assert request.link_id == "l1" and request.after_sequence == 7
    assert list(request.statuses) == [pb.REFRESH_STATUS_FAILED, pb.REFRESH_STATUS_REJECTED]
    both = WatchSpec.build(link_ids=["l1"], account_ids=["a1"], include_movements=True)
    request = both.request(None)
    assert request.WhichOneof("target") == "selection" and request.include_movements
    assert not request.HasField("after_sequence")
    import datetime

    timed = WatchSpec.build(all=True, start_time=datetime.datetime(2026, 1, 1))
    assert timed.request(None).HasField("start_time")
    assert not timed.request(3).HasField("start_time")  # a cursor wins once there is one
    with pytest.raises(ValueError):
        WatchSpec.build(refresh_intent_id="ri_1", start_time=datetime.datetime(2026, 1, 1))
