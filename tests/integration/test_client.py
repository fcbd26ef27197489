"""`gatosd.client` against a real `gatosd` subprocess, and the CLI routed through it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gatosd.client import (
    AsyncClient,
    BadSignature,
    Client,
    DaemonNotRunning,
    GatosError,
    InvalidName,
    InvalidNamespace,
    RequestTimeout,
    UlidReused,
    Unauthorized,
    UnknownType,
)
from gatosd.node import Node
from ledger_core import (
    ZERO_OID,
    Event,
    SigningKey,
    format_timestamp_ms,
    journal_ref,
    read_range,
    sign_event,
    ulid_ms,
)
from policy import issue_grant
from tests.integration.conftest import BIN, gatos

pytestmark = pytest.mark.integration

READY_TIMEOUT = 15.0
ULID_A = "01JBZ00000000000000000000A"
ULID_B = "01JBZ00000000000000000000B"


@dataclass
class Daemon:
    """A running `gatosd` subprocess and what it announced on its ready line."""

    repo: Path
    proc: subprocess.Popen[bytes]
    ready: dict[str, Any]
    log: Path

    def stop(self) -> int:
        """SIGTERM, then the exit status (a clean shutdown is 0)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("gatosd did not stop within 10s of SIGTERM") from None


def start_daemon(repo: Path, *args: str) -> Daemon:
    """Start `gatosd` on `repo` and wait for its `{"ready": true}` line on stderr."""
    log = repo.parent / f"{repo.name}-gatosd.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([str(BIN / "gatosd"), "--repo", str(repo), *args],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        for line in log.read_bytes().splitlines():
            if line.startswith(b"{"):
                ready = json.loads(line)
                if ready.get("ready"):
                    return Daemon(repo, proc, ready, log)
        if proc.poll() is not None:
            raise AssertionError(f"gatosd exited {proc.returncode}: {log.read_text()}")
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"gatosd not ready within {READY_TIMEOUT}s: {log.read_text()}")


def make_node(path: Path) -> Path:
    """A node owned by user:a, with a second trusted actor user:carol (keys on disk)."""
    node, _ = Node.init(str(path), "user:a", discover=False)
    node.new_key("user:carol")  # and a grant: deny by default, a key alone allows nothing
    issue_grant(node.policy, node.signing_key("user:a"), issuer="user:a", subject="user:carol",
                caps=["*:append"], exp=None)
    return path


def carol_key(repo: Path) -> SigningKey:
    """The private key a client holds for user:carol (read here from the node's keystore)."""
    return Node.open(str(repo)).repo.keys.load("user:carol")


@pytest.fixture(scope="module")
def short_dir() -> Iterator[Path]:
    """A short folder under /tmp: unix socket paths are limited to 107 bytes."""
    folder = Path(tempfile.mkdtemp(prefix="gc-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def fresh(short_dir: Path) -> Path:
    """A fresh node of this test, no daemon."""
    return make_node(Path(tempfile.mkdtemp(dir=short_dir)) / "n")


@pytest.fixture(scope="module")
def daemon(short_dir: Path) -> Iterator[Daemon]:
    """One node and its daemon, shared by the tests of this module (each uses its own ns)."""
    running = start_daemon(make_node(short_dir / "shared"))
    yield running
    assert running.stop() == 0, running.log.read_text()


@pytest.fixture
def own_daemon(fresh: Path) -> Iterator[Daemon]:
    """A daemon of this test alone (for tests that count or stop)."""
    running = start_daemon(fresh, "--ping-interval", "0.1")
    yield running
    assert running.stop() == 0, running.log.read_text()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def expected_cid(key: SigningKey, actor: str, ulid: str, payload: Any) -> tuple[str, str]:
    """Event-CID and signature of the envelope the client must build, computed here."""
    event = Event.from_value({"type": "t", "ulid": ulid, "actor": actor, "payload": payload,
                              "policy_root": ZERO_OID, "ts": format_timestamp_ms(ulid_ms(ulid))})
    signed = sign_event(event, key)
    return signed.cid, signed.signature_text


# -- hello, ping, appends ----------------------------------------------------------------


def test_sync_hello_and_ping(daemon: Daemon) -> None:
    """hello names the node and the ledger methods; ping gets its pong."""
    with Client.for_repo(str(daemon.repo)) as client:
        hello = client.hello()
        assert hello["server"] == "gatosd" and hello["node"]["actor"] == "user:a"
        assert {"append_event", "journal.read", "verify", "status"} <= set(hello["methods"])
        assert 0 <= client.ping() < 5


def test_async_hello_and_ping(daemon: Daemon) -> None:
    """The async client gets the same hello and pongs, also several pings at once."""
    async def main() -> None:
        async with await AsyncClient.for_repo(str(daemon.repo)) as client:
            hello = await client.hello()
            assert hello["node"]["repo"] == daemon.ready["repo"]
            rtts = await asyncio.gather(*(client.ping() for _ in range(5)))
            assert all(0 <= rtt < 5 for rtt in rtts)

    run(main())


def test_node_signed_append_sync_and_async(daemon: Daemon) -> None:
    """Without a key the daemon signs as the node actor; the commit is the journal head."""
    with Client.connect_unix(daemon.ready["socket"]) as client:
        first = client.append_event("signed-by-node", "t", {"n": 1})
        assert first["actor"] == "user:a" and first["duplicate"] is False
        assert first["ref"] == journal_ref("signed-by-node", "user:a")

    async def main() -> dict[str, Any]:
        async with await AsyncClient.connect_unix(daemon.ready["socket"]) as client:
            return await client.append_event("signed-by-node", "t", {"n": 2}, caps=["x"])

    second = run(main())
    with Client.for_repo(str(daemon.repo)) as client:
        assert client.journal_head("signed-by-node", "user:a")["head"] == second["commit"]


def test_client_signed_append_has_the_locally_computed_cid(daemon: Daemon) -> None:
    """A locally signed event lands with the CID and signature computed here, both clients."""
    key = carol_key(daemon.repo)
    want_a = expected_cid(key, "user:carol", ULID_A, {"v": "a"})
    want_b = expected_cid(key, "user:carol", ULID_B, {"v": "b"})
    with Client.for_repo(str(daemon.repo)) as client:
        out = client.append_event("by-client", "t", {"v": "a"}, actor="user:carol", ulid=ULID_A,
                                  signing_key=key)
        assert out["event_cid"] == want_a[0] and out["actor"] == "user:carol"

    async def main() -> dict[str, Any]:
        async with await AsyncClient.for_repo(str(daemon.repo)) as client:
            return await client.append_event("by-client", "t", {"v": "b"}, actor="carol",
                                             ulid=ULID_B, signing_key=key)

    assert run(main())["event_cid"] == want_b[0]
    with Client.for_repo(str(daemon.repo)) as client:
        entries = client.journal_read("by-client", "user:carol")["entries"]
    assert [(e["event_cid"], e["sig"]) for e in entries] == [want_a, want_b]


def test_client_signed_append_defaults_to_fresh_ulid_and_node_actor(daemon: Daemon) -> None:
    """With only a key, the ULID is new, ts comes from it and the actor is the node's."""
    key = Node.open(str(daemon.repo)).repo.keys.load("user:a")
    with Client.for_repo(str(daemon.repo)) as client:
        out = client.append_event("by-client-default", "t", 7, signing_key=key)
        entry = client.journal_read("by-client-default", "user:a")["entries"][0]
    assert out["actor"] == "user:a" and entry["ulid"] == out["ulid"]
    assert entry["ts"] == format_timestamp_ms(ulid_ms(out["ulid"]))
    assert entry["policy_root"] == ZERO_OID


def test_same_ulid_same_content_is_a_duplicate(daemon: Daemon) -> None:
    """Re-sending an event (client- or node-signed) returns the first commit, duplicate true."""
    key = carol_key(daemon.repo)
    with Client.for_repo(str(daemon.repo)) as client:
        a = client.append_event("dup", "t", {"x": 1}, actor="user:carol", ulid=ULID_A,
                                signing_key=key)
        b = client.append_event("dup", "t", {"x": 1}, actor="user:carol", ulid=ULID_A,
                                signing_key=key)
        c = client.append_event("dup", "t", {"x": 1}, ulid=ULID_B)
        d = client.append_event("dup", "t", {"x": 1}, ulid=ULID_B)
    assert (a["duplicate"], b["duplicate"], b["commit"]) == (False, True, a["commit"])
    assert (c["duplicate"], d["duplicate"], d["commit"]) == (False, True, c["commit"])


def test_reused_ulid_raises_ulid_reused(daemon: Daemon) -> None:
    """The same ULID with another payload is the ULID_REUSED class, in both clients."""
    with Client.for_repo(str(daemon.repo)) as client:
        client.append_event("reuse", "t", {"v": 1}, ulid=ULID_A)
        with pytest.raises(UlidReused) as caught:
            client.append_event("reuse", "t", {"v": 2}, ulid=ULID_A)
        assert caught.value.code == "ULID_REUSED" and caught.value.reason
        assert isinstance(caught.value, GatosError)
        client.ping()  # the connection lives on after an error frame

    async def main() -> None:
        async with await AsyncClient.for_repo(str(daemon.repo)) as client:
            with pytest.raises(UlidReused):
                await client.append_event("reuse", "t", {"v": 3}, ulid=ULID_A)

    run(main())


def test_invalid_namespace_raises_invalid_ns(daemon: Daemon) -> None:
    """A bad ns is INVALID_NS, which is also an InvalidName, and nothing is written."""
    with Client.for_repo(str(daemon.repo)) as client:
        with pytest.raises(InvalidNamespace) as caught:
            client.append_event("..", "t", 1)
        assert caught.value.code == "INVALID_NS" and isinstance(caught.value, InvalidName)

    async def main() -> None:
        async with await AsyncClient.for_repo(str(daemon.repo)) as client:
            with pytest.raises(InvalidNamespace):
                await client.journal_read("-bad", "user:a")

    run(main())


def test_bad_signature_raises_bad_signature(daemon: Daemon) -> None:
    """An event signed with a key that is not the actor's is the BAD_SIGNATURE class."""
    stranger = SigningKey(os.urandom(32))
    with Client.for_repo(str(daemon.repo)) as client:
        with pytest.raises(BadSignature) as caught:
            client.append_event("forged", "t", 1, actor="user:carol", signing_key=stranger)
        assert caught.value.code == "BAD_SIGNATURE"
        assert client.journal_head("forged", "user:carol")["head"] is None


def test_unknown_method_via_generic_request(daemon: Daemon) -> None:
    """`request` sends any method; an unknown one is the UNKNOWN_TYPE class."""
    with Client.for_repo(str(daemon.repo)) as client:
        assert client.request("status")["pid"] == daemon.proc.pid
        with pytest.raises(UnknownType):
            client.request("no.such.method", x=1)


# -- pipelining and streaming -------------------------------------------------------------


def test_fifty_concurrent_async_appends_on_one_connection(daemon: Daemon) -> None:
    """50 appends pipelined on one connection each get their own reply; verify passes."""
    async def main() -> list[dict[str, Any]]:
        async with await AsyncClient.for_repo(str(daemon.repo)) as client:
            return await asyncio.gather(*(client.append_event("pipelined", "t", {"i": i})
                                          for i in range(50)))

    results = run(main())
    assert len({r["commit"] for r in results}) == 50 and not any(r["duplicate"] for r in results)
    with Client.for_repo(str(daemon.repo)) as client:
        entries = client.journal_read("pipelined", "user:a")["entries"]
    by_ulid = {e["ulid"]: e["payload"]["i"] for e in entries}
    assert [by_ulid[r["ulid"]] for r in results] == list(range(50))  # each reply is its own
    verify = gatos(daemon.repo, "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_journal_read_of_many_events_joins_partial_frames_in_order(daemon: Daemon) -> None:
    """700 events come back in journal order across partial frames; stream shows them."""
    async def main() -> None:
        async with await AsyncClient.for_repo(str(daemon.repo)) as client:
            gate = asyncio.Semaphore(128)  # under the daemon's 256 in flight per connection

            async def add(i: int) -> None:
                async with gate:
                    await client.append_event("many", "t", {"i": i})

            await asyncio.gather(*(add(i) for i in range(700)))
            frames = [f async for f in client.stream("journal.read", ns="many", actor="user:a")]
            assert sum(1 for f in frames if f.get("partial")) >= 2 and frames[-1]["ok"] is True
            assert (await client.journal_read("many", "user:a"))["count"] == 700

    run(main())
    node = Node.open(str(daemon.repo))
    ref = journal_ref("many", "user:a")
    want = [e.commit for e in read_range(node.repo.objects, node.repo.refs.get(ref))]
    with Client.for_repo(str(daemon.repo)) as client:
        read = client.journal_read("many", "user:a")
        assert read["count"] == 700 and [e["commit"] for e in read["entries"]] == want
        assert [e["commit"] for e in client.journal_read("many", "user:a", limit=5)["entries"]] \
            == want[:5]
        assert [e["commit"] for e in client.journal_read("many", "user:a", last=300)["entries"]] \
            == want[-300:]


# -- transports ----------------------------------------------------------------------------


def test_spawn_stdio_end_to_end(fresh: Path) -> None:
    """A spawned `gatosd --stdio` serves both clients and exits 0 when they close."""
    with Client.spawn_stdio(str(fresh)) as client:
        assert client.hello()["node"]["actor"] == "user:a"
        out = client.append_event("stdio", "t", {"sync": True})
        assert client.journal_read("stdio", "user:a")["entries"][0]["commit"] == out["commit"]
    assert client.returncode == 0

    async def main() -> AsyncClient:
        client = await AsyncClient.spawn_stdio(str(fresh))
        async with client:
            await client.append_event("stdio", "t", {"sync": False})
            assert (await client.verify())["events"] == 2
            assert await client.ping() >= 0
        return client

    assert run(main()).returncode == 0


def test_spawn_stdio_beside_a_running_daemon_says_why(own_daemon: Daemon) -> None:
    """A second daemon cannot serve the repository; the error names ALREADY_RUNNING."""
    with Client.spawn_stdio(str(own_daemon.repo), timeout=10) as client, \
            pytest.raises(GatosError, match="ALREADY_RUNNING"):
        client.hello()


def test_tcp_with_the_right_token_and_a_wrong_one(fresh: Path) -> None:
    """TCP needs the daemon's token: right one works, a wrong one is UNAUTHORIZED."""
    token_file = fresh.parent / f"{fresh.name}.token"
    token_file.write_text("s3cret-token-of-this-test\n")
    running = start_daemon(fresh, "--listen", "127.0.0.1:0", "--token-file", str(token_file))
    try:
        host, _, port = running.ready["listen"].rpartition(":")
        with Client.connect_tcp(host, int(port), "s3cret-token-of-this-test") as client:
            assert client.append_event("tcp", "t", 1)["duplicate"] is False
        with pytest.raises(Unauthorized):
            Client.connect_tcp(host, int(port), "not-the-token-at-all")

        async def main() -> None:
            client = await AsyncClient.connect_tcp(host, int(port), "s3cret-token-of-this-test")
            async with client:
                assert (await client.status())["pid"] == running.proc.pid
            with pytest.raises(Unauthorized) as caught:
                await AsyncClient.connect_tcp(host, int(port), "not-the-token-at-all")
            assert caught.value.code == "UNAUTHORIZED"

        run(main())
        with Client.for_repo(str(fresh), token="s3cret-token-of-this-test") as client:
            assert client.verify()["valid"] is True
    finally:
        assert running.stop() == 0, running.log.read_text()


def test_for_repo_without_a_daemon_raises_daemon_not_running(fresh: Path) -> None:
    """No gatosd.json (or a dead socket) is DaemonNotRunning, for both clients."""
    with pytest.raises(DaemonNotRunning):
        Client.for_repo(str(fresh))
    with pytest.raises(DaemonNotRunning):
        run(AsyncClient.for_repo(str(fresh)))
    state = fresh / ".git" / "gatos" / "gatosd.json"
    state.write_text(json.dumps({"pid": 1, "socket": str(fresh / ".git" / "gatos" / "none.sock")}))
    with pytest.raises(DaemonNotRunning, match="does not answer"):
        Client.for_repo(str(fresh))
    state.unlink()


def test_daemon_pings_are_answered_and_idle_sync_client_reconnects(own_daemon: Daemon) -> None:
    """Async answers pings and stays connected; an idle sync client is hung up on and reconnects."""
    async def main() -> None:
        async with await AsyncClient.for_repo(str(own_daemon.repo)) as client:
            await client.hello()
            await asyncio.sleep(0.45)  # 4 ping intervals: unanswered, the daemon would hang up
            assert (await client.status())["connections"] == 1

    run(main())
    with Client.for_repo(str(own_daemon.repo)) as client:
        client.hello()
        time.sleep(0.45)  # nobody reads: the daemon pings, waits an interval, hangs up
        assert client.status()["pid"] == own_daemon.proc.pid


def test_request_timeout_is_typed(short_dir: Path) -> None:
    """A daemon that never answers gives RequestTimeout, a GatosError and a TimeoutError."""
    path = str(short_dir / "mute.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen()  # connections complete in the backlog; nobody ever reads or answers
    try:
        with Client.connect_unix(path, timeout=0.2) as client:
            with pytest.raises(RequestTimeout) as caught:
                client.hello()
            assert isinstance(caught.value, TimeoutError) and caught.value.code == "TIMEOUT"

        async def main() -> None:
            async with await AsyncClient.connect_unix(path, timeout=0.2) as client:
                with pytest.raises(RequestTimeout):
                    await client.request("hello")
                with pytest.raises(RequestTimeout):
                    await client.ping()

        run(main())
    finally:
        server.close()
        os.unlink(path)


# -- the CLI, with and without the daemon ---------------------------------------------------


def cli(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = gatos(repo, *args)
    assert result.returncode in (0, 1, 2), result.stderr
    return result


@dataclass
class CliPair:
    """Two copies of one node: `with_daemon` has a running gatosd, `in_process` none."""

    with_daemon: Path
    in_process: Path
    daemon: Daemon

    def both(self, *args: str) -> tuple[tuple[int, str, str], tuple[int, str, str]]:
        """Run one command on both repositories at once; (status, stdout, stderr) of each."""
        with ThreadPoolExecutor(2) as pool:
            left, right = pool.map(lambda repo: cli(repo, *args), (self.with_daemon, self.in_process))
        return (left.returncode, left.stdout, left.stderr), (right.returncode, right.stdout, right.stderr)


@pytest.fixture(scope="module")
def pair(short_dir: Path) -> Iterator[CliPair]:
    """The same node twice (same keys, so even commit ids must match), one with a daemon."""
    with_daemon = make_node(short_dir / "cli-d")
    in_process = short_dir / "cli-p"
    shutil.copytree(with_daemon, in_process)
    running = start_daemon(with_daemon)
    yield CliPair(with_daemon, in_process, running)
    assert running.stop() == 0, running.log.read_text()


def test_cli_event_add_is_the_same_through_the_daemon(pair: CliPair) -> None:
    """event add prints the same bytes (and errors) through the daemon as in-process."""
    for args in (["--ulid", ULID_A, "--payload", '{"b":1,"a":[1,2]}'],
                 ["--ulid", ULID_B, "--payload", '"two"', "--actor", "user:carol", "--caps", "x,y"],
                 ["--ulid", ULID_A, "--payload", '{"b":1,"a":[1,2]}']):  # a duplicate
        left, right = pair.both("event", "add", "--ns", "cli", "--type", "t.x", *args)
        assert left == right and left[0] == 0, left
    assert json.loads(left[1])["duplicate"] is True
    with Client.for_repo(str(pair.with_daemon)) as client:
        assert client.status()["events"] == 2  # two new events through the daemon; the third was a replay
    for args, code in ((["--ulid", ULID_A, "--payload", "3"], "ULID_REUSED"),
                       (["--payload", "not json"], "BAD_ENCODING"),
                       (["--ns", "..", "--payload", "1"], "INVALID_NS")):
        left, right = pair.both("event", "add", "--ns", "cli", "--type", "t", *args)
        assert left == right and left[0] == 2 and left[2].startswith(f"gatos: {code}: "), left


def test_cli_log_and_verify_are_the_same_through_the_daemon(pair: CliPair) -> None:
    """log (all forms) and verify print the same bytes through the daemon as in-process."""
    for args in (["log", "--ns", "cli", "--json"], ["log", "--ns", "cli"],
                 ["log", "--ns", "cli", "--limit", "1", "--json"],
                 ["log", "--ns", "cli", "--actor", "carol"], ["log", "--ns=-x"],
                 ["verify"], ["verify", "--json"]):
        left, right = pair.both(*args)
        assert left == right, args


def test_cli_no_daemon_works_in_process(pair: CliPair) -> None:
    """--no-daemon (before or after the command) never touches the running daemon."""
    with Client.for_repo(str(pair.with_daemon)) as client:
        before = client.status()["events"]
    forced = cli(pair.with_daemon, "event", "add", "--ns", "forced", "--type", "t", "--payload", "5",
                 "--no-daemon")
    assert forced.returncode == 0, forced.stderr
    assert cli(pair.with_daemon, "--no-daemon", "verify").returncode == 0
    with Client.for_repo(str(pair.with_daemon)) as client:
        assert client.status()["events"] == before


def test_cli_status_running_and_not_running(own_daemon: Daemon, short_dir: Path) -> None:
    """`gatos status` shows the daemon's status frame, or running false; exit 0 both ways."""
    up = cli(own_daemon.repo, "status", "--json")
    info = json.loads(up.stdout)
    assert up.returncode == 0 and info["running"] is True
    assert info["pid"] == own_daemon.proc.pid and info["socket"] == own_daemon.ready["socket"]
    assert {"uptime_s", "connections", "queued", "batches", "events"} <= info.keys()
    text = cli(own_daemon.repo, "status")
    assert text.returncode == 0 and f"pid {own_daemon.proc.pid}" in text.stdout
    assert own_daemon.stop() == 0
    down = cli(own_daemon.repo, "status", "--json")
    assert down.returncode == 0 and json.loads(down.stdout)["running"] is False
    text = cli(own_daemon.repo, "status")
    assert text.returncode == 0 and "not running" in text.stdout
    nowhere = cli(short_dir / "no-such-repo", "status", "--json")
    assert nowhere.returncode == 0 and json.loads(nowhere.stdout)["running"] is False
