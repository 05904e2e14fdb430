"""Runs the real fintoc-refresh server binary (from FINTOC_REFRESH_BIN) for the tests.

Nothing is built here: CI (and you) build it first, e.g. `cargo build --bin fintoc-refresh`,
then `FINTOC_REFRESH_BIN=target/debug/fintoc-refresh pytest`. Without it every test fails
saying so; none is skipped.

Results are injected as Fintoc would send them: signed `account.refresh_intent.*` webhooks
POSTed to the server's intake. An account nobody asked about becomes an unsolicited result,
which reaches account, selection and `all` feeds.
"""

import base64
import hashlib
import hmac
import itertools
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone

import pytest

import fintoc_refresh_client as frc

WEBHOOK_SECRET = "whsec_pytest_0123456789"
API_KEY = "sk_test_pytest_0123456789"
LINK_TOKEN_KEYS = "k1:" + base64.b64encode(bytes(range(32))).decode()
PG_ADMIN = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def server_bin():
    path = os.environ.get("FINTOC_REFRESH_BIN", "")
    if not path:
        pytest.fail(
            "FINTOC_REFRESH_BIN is not set: build the server (cargo build --bin fintoc-refresh) "
            "and run FINTOC_REFRESH_BIN=target/debug/fintoc-refresh pytest",
            pytrace=False,
        )
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"FINTOC_REFRESH_BIN={path!r} is not an executable file", pytrace=False)
    return os.path.abspath(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, predicate, timeout=20.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Process:
    """One `fintoc-refresh` process; stdout's announcement parsed, stderr kept in a file."""

    _names = itertools.count(1)

    def __init__(self, argv, env, log_dir, name):
        self.argv, self.env, self.log_dir, self.name = argv, env, log_dir, name
        self.proc = None
        self.lines = []
        self.starts = 0

    def start(self, announce="listening", timeout=60.0):
        self.starts += 1
        self.lines = []
        log = open(os.path.join(self.log_dir, f"{self.name}.{self.starts}.log"), "wb")
        self.log_path = log.name
        env = dict(os.environ, **self.env)
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=log, env=env, stdin=subprocess.DEVNULL
        )
        log.close()
        got = threading.Event()

        def read(stream, lines):
            for raw in stream:
                lines.append(raw.decode().rstrip("\n"))
                got.set()

        threading.Thread(target=read, args=(self.proc.stdout, self.lines), daemon=True).start()
        deadline = time.monotonic() + timeout
        while not any(line.startswith(announce) for line in self.lines):
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited ({self.proc.returncode}) before announcing:\n{self.log()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not announce in {timeout}s:\n{self.log()}")
            got.wait(0.05)
            got.clear()
        fields = dict(
            part.split("=", 1)
            for part in next(l for l in self.lines if l.startswith(announce)).split()[1:]
        )
        self.grpc, self.http = fields.get("grpc"), fields.get("http")
        return self

    def log(self, tail=4000):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-tail:]
        except OSError:
            return ""

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=20.0):
        if not self.running:
            return
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.name} did not stop within {timeout}s on {sig!r}")
        if sig == signal.SIGTERM:
            assert code == 0, f"{self.name} exited {code} on SIGTERM:\n{self.log()}"

    def kill(self):
        self.stop(signal.SIGKILL)


class Servers:
    """Starts servers (and simulators) for one test and stops every one at its end."""

    def __init__(self, bin_path, tmp_path):
        self.bin, self.tmp = bin_path, str(tmp_path)
        self.procs = []

    def serve(
        self,
        *,
        database_url=None,
        grpc_port=0,
        http_port=0,
        args=(),
        env=None,
        fintoc_api_url="http://127.0.0.1:9",
        start=True,
    ):
        database_url = database_url or os.path.join(self.tmp, "refresh.db")
        argv = [
            self.bin,
            "serve",
            "--grpc-addr",
            f"127.0.0.1:{grpc_port}",
            "--http-addr",
            f"127.0.0.1:{http_port}",
            "--database-url",
            database_url,
            "--fintoc-api-url",
            fintoc_api_url,
            "--shutdown-grace",
            "5s",
            *args,
        ]
        penv = {"FINTOC_SECRET_KEY": API_KEY, "FINTOC_WEBHOOK_SECRET": WEBHOOK_SECRET}
        penv.update(env or {})
        proc = Process(argv, penv, self.tmp, f"serve{len(self.procs) + 1}")
        self.procs.append(proc)
        return proc.start() if start else proc

    def simulate(self):
        """The Fintoc simulator alone (delivering no webhooks: the tests post their own)."""
        argv = [self.bin, "simulate", "--addr", "127.0.0.1:0"]
        proc = Process(argv, {"FINTOC_SECRET_KEY": API_KEY}, self.tmp, "simulator")
        self.procs.append(proc)
        proc.start()
        return proc

    def stop_all(self):
        for proc in self.procs:
            if proc.running:
                proc.proc.kill()
                proc.proc.wait()


@pytest.fixture
def servers(server_bin, tmp_path):
    s = Servers(server_bin, tmp_path)
    yield s
    s.stop_all()


@pytest.fixture
def postgres_db():
    """A fresh PostgreSQL database for one test, dropped at its end."""
    name = f"fintoc_refresh_pytest_{uuid.uuid4().hex[:12]}"
    run = lambda sql: subprocess.run(  # noqa: E731
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", PG_ADMIN, "-c", sql],
        check=True,
        capture_output=True,
    )
    try:
        run(f"CREATE DATABASE {name}")
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.fail(f"cannot create a PostgreSQL test database at {PG_ADMIN}: {e}", pytrace=False)
    base = PG_ADMIN.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# -- webhooks -------------------------------------------------------------------------------


def _rfc3339(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_body(event_id, account_id, status="succeeded"):
    now = _rfc3339(datetime.now(timezone.utc))
    return json.dumps(
        {
            "id": event_id,
            "type": f"account.refresh_intent.{status}",
            "mode": "test",
            "created_at": now,
            "data": {
                "object": "refresh_intent",
                "refreshed_object": "account",
                "refreshed_object_id": account_id,
                "status": status,
                "public_error": None if status == "succeeded" else "The bank did not answer",
                "created_at": now,
                "type": "only_last",
                "new_movements": 0,
            },
            "object": "event",
        }
    ).encode()


def post_event(http_addr, event_id, account_id, status="succeeded", timeout=10.0):
    """POSTs one signed event; returns the HTTP status (raises on connection errors)."""
    body = event_body(event_id, account_id, status)
    t = int(time.time())
    sig = hmac.new(WEBHOOK_SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(
        f"http://{http_addr}/webhooks/fintoc",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "Fintoc-Signature": f"t={t},v1={sig}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def post_ok(http_addr, event_id, account_id, status="succeeded"):
    code = post_event(http_addr, event_id, account_id, status)
    assert 200 <= code < 300, f"webhook {event_id} answered {code}"


class Poster(threading.Thread):
    """Posts events one after another, each retried (same event id: the server stores it
    once) until some address answers 2xx, so the committed order is the posting order.
    `addresses()` gives the HTTP addresses to try, re-read on every attempt."""

    def __init__(self, addresses, events, interval=0.05):
        super().__init__(daemon=True)
        self.addresses, self.events, self.interval = addresses, list(events), interval
        self.posted = []
        self.error = None
        self._halt = threading.Event()

    def run(self):
        try:
            for event_id, account_id in self.events:
                attempt = 0
                while not self._halt.is_set():
                    addrs = self.addresses()
                    addr = addrs[attempt % len(addrs)] if addrs else None
                    attempt += 1
                    try:
                        if addr and 200 <= post_event(addr, event_id, account_id, timeout=3) < 300:
                            break
                    except OSError:
                        pass
                    time.sleep(0.1)
                else:
                    return
                self.posted.append(event_id)
                time.sleep(self.interval)
        except BaseException as e:  # reported by the test
            self.error = e

    def stop(self):
        self._halt.set()


class Collector(threading.Thread):
    """Iterates a Watch in a thread, keeping every event it yields."""

    def __init__(self, watch):
        super().__init__(daemon=True)
        self.watch = watch
        self.events = []
        self.error = None

    def run(self):
        try:
            for event in self.watch:
                self.events.append(event)
        except BaseException as e:
            self.error = e

    def results(self):
        return [e for e in self.events if isinstance(e, frc.AccountResult)]

    def event_ids(self):
        return [e.result.event_id for e in self.results()]

    def wait_results(self, n, timeout=30.0):
        wait_for(
            f"{n} results (have {len(self.results())}: {self.event_ids()}; error {self.error!r})",
            lambda: len(self.results()) >= n or self.error is not None,
            timeout,
        )
        if self.error is not None:
            raise self.error

    def finish(self, settle=1.0):
        """Waits `settle` seconds for anything extra (a duplicate), then closes the watch."""
        time.sleep(settle)
        self.watch.close()
        self.join(10)
        assert not self.is_alive(), "the watch did not stop on close()"
        if self.error is not None:
            raise self.error


def assert_exactly_once_in_order(collector, expected):
    got = collector.event_ids()
    assert got == list(expected), (
        f"delivered {len(got)}, expected {len(expected)}\n"
        f"missing: {sorted(set(expected) - set(got))}\n"
        f"repeated: {sorted({e for e in got if got.count(e) > 1})}\n"
        f"got: {got}"
    )
    seqs = [e.sequence for e in collector.results()]
    assert seqs == sorted(set(seqs)), f"sequences not strictly increasing: {seqs}"
