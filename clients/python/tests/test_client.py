"""The client's calls, typed errors, connection options and watch options against the real
server."""

import subprocess
from datetime import timedelta

import pytest

import fintoc_refresh_client as frc
from fintoc_refresh_client import pb

from conftest import Collector, free_port, post_ok, wait_for

TOKEN = "pytest_token_0123456789abcdef"


def first(watch):
    """The first event of a watch (or the exception it raises), then close it."""
    try:
        return next(iter(watch))
    finally:
        watch.close()


def test_typed_errors(servers):
    server = servers.serve()
    with frc.Client(server.grpc) as client:
        with pytest.raises(frc.NotFoundError) as e:
            client.get_refresh("ri_unknown")
        assert e.value.code.name == "NOT_FOUND" and "ri_unknown" in e.value.message
        with pytest.raises(frc.NotFoundError):
            client.get_link("link_unknown")
        with pytest.raises(frc.InvalidArgumentError):
            client.request_refresh("")

        # Movements need LINK_TOKEN_KEYS on the server.
        with pytest.raises(frc.MovementsDisabledError) as e:
            client.register_link("link_whatever_token")
        assert e.value.reason == "MOVEMENTS_DISABLED"
        assert isinstance(e.value, frc.FailedPreconditionError)
        with pytest.raises(frc.MovementsDisabledError):
            first(client.watch(all=True, include_movements=True))

        # Definitive answers end a watch at once, without retrying.
        too_many = client.watch(account_ids=[f"acc_{i}" for i in range(1001)])
        with pytest.raises(frc.InvalidArgumentError):
            first(too_many)
        assert too_many.reconnects == 0
        unknown = client.watch(refresh_intent_id="ri_unknown")
        with pytest.raises(frc.NotFoundError):
            first(unknown)
        assert unknown.reconnects == 0
        with pytest.raises(frc.OutOfRangeError) as e:
            first(client.watch(all=True, after=10**12))
        assert not isinstance(e.value, frc.CursorExpiredError)

        with pytest.raises(ValueError):
            client.watch()
        with pytest.raises(ValueError):
            client.watch(link_id="link_a", all=True)


def test_feed_from_a_stored_cursor_with_statuses_and_heartbeats(servers):
    """A feed started from now begins with a heartbeat (its cursor); `statuses` filters the
    results while heartbeats still move the cursor; a new watch from the stored cursor
    delivers only what came after."""
    server = servers.serve(args=["--heartbeat-interval", "200ms"])
    with frc.Client(server.grpc) as client:
        watch = client.watch(all=True, statuses=["FAILED"], heartbeats=True)
        opening = next(watch)
        assert isinstance(opening, frc.Heartbeat) and watch.cursor == opening.sequence == 0
        collector = Collector(watch)
        collector.start()
        for i, status in enumerate(["succeeded", "failed", "succeeded", "failed"], 1):
            post_ok(server.http, f"evt_status_{i}", "acc_status", status)
        collector.wait_results(2)
        wait_for("a heartbeat past the last result", lambda: watch.cursor >= 4)
        collector.finish(settle=0.5)
        assert collector.event_ids() == ["evt_status_2", "evt_status_4"]
        assert all(e.result.status == pb.REFRESH_STATUS_FAILED for e in collector.results())
        assert any(isinstance(e, frc.Heartbeat) for e in collector.events)
        stored = watch.cursor

        post_ok(server.http, "evt_status_5", "acc_status", "failed")
        post_ok(server.http, "evt_status_6", "acc_status", "succeeded")
        again = Collector(client.watch(account_id="acc_status", after=stored))
        again.start()
        again.wait_results(2)
        again.finish(settle=0.5)
        assert again.event_ids() == ["evt_status_5", "evt_status_6"]
        assert [e.sequence for e in again.results()] == [5, 6]


def test_bearer_token(servers):
    server = servers.serve(env={"GRPC_BEARER_TOKENS": f"{TOKEN},another_token_0123456789"})
    with frc.Client(server.grpc) as anonymous:
        with pytest.raises(frc.UnauthenticatedError):
            anonymous.get_refresh("ri_x")
        watch = anonymous.watch(all=True)
        with pytest.raises(frc.UnauthenticatedError):
            first(watch)
        assert watch.reconnects == 0
    with frc.Client(server.grpc, token="wrong_token_0123456789abc") as wrong:
        with pytest.raises(frc.UnauthenticatedError):
            wrong.get_refresh("ri_x")
    with frc.Client(server.grpc, token=TOKEN) as client:
        with pytest.raises(frc.NotFoundError):  # past the token check
            client.get_refresh("ri_x")
        collector = Collector(client.watch(all=True, after=0))
        collector.start()
        post_ok(server.http, "evt_token_1", "acc_token")
        collector.wait_results(1)
        collector.finish(settle=0.3)
        assert collector.event_ids() == ["evt_token_1"]


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def certs(tmp_path):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, by openssl."""
    d = str(tmp_path)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=pytest CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    for name, usage, san in [("server", "serverAuth", "IP:127.0.0.1,DNS:localhost"),
                             ("client", "clientAuth", "DNS:pytest-client")]:
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)
        with open(f"{d}/{name}.ext", "w") as f:
            f.write(f"subjectAltName={san}\nextendedKeyUsage={usage}\n"
                    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
                 "-extfile", f"{name}.ext", cwd=d)
    return {k: f"{d}/{k}" for k in ["ca.pem", "server.pem", "server.key", "client.pem", "client.key"]}


def test_tls_and_mutual_tls(servers, certs):
    tls_args = ["--grpc-tls-cert", certs["server.pem"], "--grpc-tls-key", certs["server.key"]]
    debug = {"RUST_LOG": "info,fintoc_refresh::tls=debug"}
    server = servers.serve(args=tls_args, env=debug)
    with frc.Client(server.grpc, tls=frc.TLS(ca=certs["ca.pem"])) as client:
        with pytest.raises(frc.NotFoundError):
            client.get_refresh("ri_x")
        with open(certs["ca.pem"], "rb") as f:
            ca_bytes = f.read()
    with frc.Client(server.grpc, tls=frc.TLS(ca=ca_bytes), timeout=3) as client:
        with pytest.raises(frc.NotFoundError):
            client.get_refresh("ri_x")
    with frc.Client(server.grpc, timeout=3) as plaintext:
        with pytest.raises(frc.FintocRefreshError):
            plaintext.get_refresh("ri_x")

    mutual = servers.serve(args=tls_args + ["--grpc-client-ca", certs["ca.pem"]],
                           database_url=str(certs["ca.pem"]).replace("ca.pem", "mtls.db"))
    with frc.Client(mutual.grpc, tls=frc.TLS(ca=certs["ca.pem"]), timeout=3) as no_cert:
        with pytest.raises(frc.UnavailableError):
            no_cert.get_refresh("ri_x")
    tls = frc.TLS(ca=certs["ca.pem"], cert=certs["client.pem"], key=certs["client.key"])
    with frc.Client(mutual.grpc, tls=tls) as client:
        with pytest.raises(frc.NotFoundError):
            client.get_refresh("ri_x")
        collector = Collector(client.watch(all=True, after=0))
        collector.start()
        post_ok(mutual.http, "evt_mtls_1", "acc_mtls")
        collector.wait_results(1)
        collector.finish(settle=0.3)
        assert collector.event_ids() == ["evt_mtls_1"]
    with pytest.raises(ValueError):
        frc.TLS(ca=certs["ca.pem"], cert=certs["client.pem"]).credentials()


def test_unary_calls_fail_over_to_the_next_address(servers):
    server = servers.serve()
    dead = f"127.0.0.1:{free_port()}"
    with frc.Client([dead, server.grpc], timeout=5) as client:
        with pytest.raises(frc.NotFoundError):
            client.get_refresh("ri_x")
        assert client.current_target == server.grpc
    with frc.Client([dead], timeout=5) as client:
        with pytest.raises(frc.UnavailableError):
            client.get_refresh("ri_x")


def test_intent_watch_ends_after_refresh_completed_then_cooldown_and_hold(servers):
    """`serve --simulate`: a refresh of the all-succeed demo Link, watched by intent with its
    movements, ends the iteration by itself after refresh_completed; asking again is a
    cooldown (typed, with the time left); the rejected demo Link is then held."""
    server = servers.serve(args=["--simulate"])
    wait_for("demo tokens", lambda: sum(l.startswith("demo ") for l in server.lines) >= 4)
    tokens = dict(
        (l.split()[1], l.split("link_token=")[1]) for l in server.lines if l.startswith("demo ")
    )
    with frc.Client(server.grpc) as client:
        response = client.request_refresh(tokens["all-succeed"], keep_link_token=True)
        intent = response.refresh_intent
        assert not response.joined_existing and len(intent.accounts) == 3
        watch = client.watch(refresh_intent_id=intent.id, include_movements=True)
        events = list(watch)  # ends by itself
        kinds = [type(e).__name__ for e in events]
        assert kinds[-1] == "RefreshCompleted" and kinds.count("RefreshCompleted") == 1, kinds
        results = [e for e in events if isinstance(e, frc.AccountResult)]
        assert sorted(r.result.account_id for r in results) == sorted(
            a.account_id for a in intent.accounts
        )
        movements = [e for e in events if isinstance(e, frc.MovementsChanged)]
        # new_movements 3, 0 and 12: two accounts get their movements, each ending complete.
        assert len({m.movements.account_id for m in movements}) == 2, kinds
        assert sum(m.movements.complete for m in movements) == 2
        done = events[-1]
        assert done.intent.status == pb.REFRESH_STATUS_SUCCEEDED
        assert done.sequence == watch.cursor == max(e.sequence for e in events)
        assert [e.sequence for e in events[:-1]] == sorted({e.sequence for e in events[:-1]})
        assert client.get_refresh(intent.id).status == pb.REFRESH_STATUS_SUCCEEDED

        with pytest.raises(frc.CooldownError) as e:
            client.request_refresh(tokens["all-succeed"])
        assert e.value.refresh_intent_id == intent.id
        assert timedelta(minutes=4) < e.value.retry_after <= timedelta(minutes=5)

        rejected = client.request_refresh(tokens["rejected"]).refresh_intent
        final = list(client.watch(refresh_intent_id=rejected.id))[-1]
        assert isinstance(final, frc.RefreshCompleted)
        assert final.intent.status == pb.REFRESH_STATUS_REJECTED
        with pytest.raises(frc.CredentialsRejectedError) as e:
            client.request_refresh(tokens["rejected"])
        assert e.value.reason == "CREDENTIALS_REJECTED"
        link = client.get_link(rejected.link_id).link
        assert not link.only_last.allowed and link.only_last.reason == "CREDENTIALS_REJECTED"
