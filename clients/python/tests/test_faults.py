"""Watch against faults: each test counts every result delivered exactly once, in order."""

import re
import signal
import sqlite3
import threading
import time
import urllib.request

import pytest

import fintoc_refresh_client as frc

from conftest import (
    LINK_TOKEN_KEYS,
    Collector,
    Poster,
    assert_exactly_once_in_order,
    free_port,
    post_ok,
    wait_for,
)


def events(prefix, n, accounts=("acc_fault_1", "acc_fault_2", "acc_fault_3")):
    return [(f"evt_{prefix}_{i:03d}", accounts[i % len(accounts)]) for i in range(1, n + 1)]


def test_server_restarted_mid_stream(servers):
    """SIGTERM the server while results flow and start it again on the same file and ports:
    the watch resumes from its cursor; results keep being posted (retried while it is down)."""
    grpc_port, http_port = free_port(), free_port()
    server = servers.serve(grpc_port=grpc_port, http_port=http_port)
    planned = events("restart", 40)
    with frc.Client(server.grpc) as client:
        collector = Collector(client.watch(all=True, after=0))
        collector.start()
        poster = Poster(lambda: [server.http], planned, interval=0.05)
        poster.start()
        collector.wait_results(10)
        server.stop(signal.SIGTERM)  # mid-stream: the poster is still going
        time.sleep(0.5)
        server.start()
        collector.wait_results(25)
        server.stop(signal.SIGTERM)
        server.start()
        poster.join(60)
        assert poster.posted == [e for e, _ in planned], poster.error
        collector.wait_results(len(planned))
        collector.finish()
        assert collector.watch.reconnects >= 2
    assert_exactly_once_in_order(collector, [e for e, _ in planned])


def test_streams_aged_out(servers):
    """--max-stream-age 1s: every stream ends on purpose (STREAM_MAX_AGE) after a heartbeat;
    the watch resumes across several endings without a gap or a repeat."""
    server = servers.serve(args=["--max-stream-age", "1s", "--heartbeat-interval", "200ms"])
    planned = events("aged", 40, accounts=("acc_aged_1", "acc_aged_2"))
    with frc.Client(server.grpc) as client:
        # An account feed and a feed of everything, both started "from now".
        by_account = Collector(client.watch(account_id="acc_aged_1"))
        everything = Collector(client.watch(all=True))
        for c in (by_account, everything):
            c.start()
        wait_for("both feeds started", lambda: None not in (by_account.watch.cursor, everything.watch.cursor))
        poster = Poster(lambda: [server.http], planned, interval=0.1)
        poster.start()
        poster.join(60)
        assert len(poster.posted) == len(planned), poster.error
        everything.wait_results(len(planned))
        by_account.wait_results(len(planned) // 2)
        for c in (by_account, everything):
            c.finish()
        assert everything.watch.reconnects >= 3, everything.watch.reconnects
        assert by_account.watch.reconnects >= 3, by_account.watch.reconnects
    assert_exactly_once_in_order(everything, [e for e, _ in planned])
    assert_exactly_once_in_order(by_account, [e for e, a in planned if a == "acc_aged_1"])


def test_server_down_when_the_client_starts(servers):
    """The watch starts first (with a stored cursor, 0) and retries with backoff until the
    server comes up on that port a second later."""
    grpc_port = free_port()
    server = servers.serve(grpc_port=grpc_port, start=False)
    planned = events("down", 15)
    with frc.Client(f"127.0.0.1:{grpc_port}") as client:
        collector = Collector(client.watch(account_ids=["acc_fault_1", "acc_fault_2", "acc_fault_3"], after=0))
        collector.start()
        time.sleep(1.5)
        assert collector.results() == [] and collector.error is None
        assert collector.watch.reconnects >= 2, "it kept trying while the server was down"
        server.start()
        poster = Poster(lambda: [server.http], planned, interval=0.02)
        poster.start()
        poster.join(60)
        collector.wait_results(len(planned))
        collector.finish()
    assert_exactly_once_in_order(collector, [e for e, _ in planned])


def prune_through(db_path, sequence):
    """What retention does to the log, by hand: the results up to `sequence` removed and the
    horizon (the stored time of the newest pruned result) moved past them."""
    with sqlite3.connect(db_path) as db:
        (stamp,) = db.execute(
            "SELECT max(committed_at_ms) FROM results WHERE sequence <= ?", (sequence,)
        ).fetchone()
        db.execute(
            "UPDATE log_horizon SET pruned_through_ms = max(pruned_through_ms, ?)", (stamp,)
        )
        db.execute("DELETE FROM results WHERE sequence <= ?", (sequence,))
    db.close()


def test_cursor_expired_while_away_resyncs_then_misses_nothing(servers, tmp_path):
    """Two consumers store their cursors and go away; results go on; retention prunes past
    their cursors. Back, each gets one Resync with the Link states (GetLink for a link_id
    target, ListLinks kept to the selection otherwise), then every later result once."""
    sim = servers.simulate()
    db = str(tmp_path / "resync.db")
    grpc_port, http_port = free_port(), free_port()
    serve = lambda: servers.serve(  # noqa: E731
        database_url=db,
        grpc_port=grpc_port,
        http_port=http_port,
        fintoc_api_url=f"http://{sim.http}",
        env={"LINK_TOKEN_KEYS": LINK_TOKEN_KEYS},
    )
    server = serve()
    client = frc.Client(server.grpc)
    link1 = client.register_link("link_demoAllSucceed_token_sim0001")
    link2 = client.register_link("link_demoOneFails_token_sim0002")
    a = [acc.account_id for acc in link1.accounts]
    b = [acc.account_id for acc in link2.accounts]
    assert len(a) == 3 and len(b) == 3

    def watches(after1=None, after2=None):
        w1 = client.watch(link_id=link1.link_id, after=after1)
        w2 = client.watch(account_ids=[a[0]], link_ids=[link2.link_id], after=after2)
        return Collector(w1), Collector(w2)

    c1, c2 = watches(0, 0)
    for c in (c1, c2):
        c.start()
    for event_id, account in [("evt_r1", a[0]), ("evt_r2", a[1]), ("evt_r3", a[2]), ("evt_r4", b[0])]:
        post_ok(server.http, event_id, account)
    c1.wait_results(3)
    c2.wait_results(2)
    for c in (c1, c2):
        c.finish(settle=0.3)
    assert c1.event_ids() == ["evt_r1", "evt_r2", "evt_r3"]
    assert c2.event_ids() == ["evt_r1", "evt_r4"]
    cursor1, cursor2 = c1.watch.cursor, c2.watch.cursor  # what the consumers stored
    assert cursor1 >= 3 and cursor2 >= 4

    # Away: results go on, then retention removes everything through sequence 7.
    for event_id, account in [("evt_r5", a[0]), ("evt_r6", a[1]), ("evt_r7", b[0]), ("evt_r8", a[0])]:
        post_ok(server.http, event_id, account)
    server.stop()
    prune_through(db, 7)
    server = serve()

    c1, c2 = watches(cursor1, cursor2)
    for c in (c1, c2):
        c.start()
    wait_for("both re-synced", lambda: c1.watch.resyncs == 1 and c2.watch.resyncs == 1 or c1.error or c2.error)
    assert c1.error is None and c2.error is None, (c1.error, c2.error)
    for event_id, account in [("evt_r9", a[1]), ("evt_r10", b[0]), ("evt_r11", a[0])]:
        post_ok(server.http, event_id, account)
    c1.wait_results(2)
    c2.wait_results(2)
    for c in (c1, c2):
        c.finish()
    client.close()

    # Link target: one Resync first (GetLink), then r9 and r11, each once.
    resync1 = c1.events[0]
    assert isinstance(resync1, frc.Resync), c1.events
    assert resync1.sequence == 8 and resync1.oldest_sequence == 8
    [state] = resync1.links
    assert state.link_id == link1.link_id
    last = {acc.account_id: (acc.last_sequence, acc.last_result.event_id) for acc in state.accounts}
    assert last == {a[0]: (8, "evt_r8"), a[1]: (0, ""), a[2]: (0, "")}
    assert c1.event_ids() == ["evt_r9", "evt_r11"]
    assert [type(e) for e in c1.events] == [frc.Resync, frc.AccountResult, frc.AccountResult]

    # Selection (account a0 + link2): ListLinks kept to it, then r10 and r11, each once.
    resync2 = c2.events[0]
    assert isinstance(resync2, frc.Resync), c2.events
    assert resync2.sequence == 8
    states = {s.link_id: s for s in resync2.links}
    assert set(states) == {link1.link_id, link2.link_id}
    assert [acc.account_id for acc in states[link1.link_id].accounts] == [a[0]]
    assert states[link1.link_id].accounts[0].last_sequence == 8
    assert sorted(acc.account_id for acc in states[link2.link_id].accounts) == sorted(b)
    assert all(acc.last_sequence == 0 for acc in states[link2.link_id].accounts)
    assert c2.event_ids() == ["evt_r10", "evt_r11"]
    assert [type(e) for e in c2.events] == [frc.Resync, frc.AccountResult, frc.AccountResult]


def stream_holder(replicas):
    """The live replica serving the one open watch stream, by its metrics."""

    def open_streams(replica):
        with urllib.request.urlopen(f"http://{replica.http}/metrics", timeout=5) as response:
            text = response.read().decode()
        match = re.search(r"^fintoc_refresh_watch_streams (\d+)", text, re.M)
        assert match, "no fintoc_refresh_watch_streams in /metrics"
        return int(match.group(1))

    holders = []

    def found():
        holders[:] = [r for r in replicas if r.running and open_streams(r) > 0]
        return len(holders) == 1

    wait_for("exactly one replica holding the stream", found, timeout=10)
    return holders[0]


@pytest.mark.parametrize("addressing", ["list", "ipv4-target"])
def test_replica_killed(servers, postgres_db, addressing):
    """Three replicas on one PostgreSQL database, the client given all three (a list: the
    client's own rotation; or one `ipv4:` target: gRPC's round_robin). Twice, the replica the
    stream is on (its /metrics shows the open stream) is SIGKILLed while results keep being
    posted to a live replica; nothing is missed or repeated."""
    replicas = [
        servers.serve(database_url=postgres_db, args=["--heartbeat-interval", "500ms"])
        for _ in range(3)
    ]
    addrs = [r.grpc for r in replicas]
    target = addrs if addressing == "list" else "ipv4:" + ",".join(addrs)
    planned = events(f"replica_{addressing}", 60)
    live_http = lambda: [r.http for r in replicas if r.running]  # noqa: E731
    with frc.Client(target) as client:
        collector = Collector(client.watch(all=True, after=0))
        collector.start()
        poster = Poster(live_http, planned, interval=0.05)
        poster.start()
        killed = []
        for threshold in (15, 30):
            collector.wait_results(threshold)
            victim = stream_holder(replicas)
            if addressing == "list":
                assert victim.grpc == client.current_target
            victim.kill()
            killed.append(victim.grpc)
        poster.join(90)
        assert poster.posted == [e for e, _ in planned], poster.error
        collector.wait_results(len(planned), timeout=45)
        collector.finish()
        assert collector.watch.reconnects >= 2
        assert len(killed) == 2 and sum(r.running for r in replicas) == 1
    assert_exactly_once_in_order(collector, [e for e, _ in planned])
