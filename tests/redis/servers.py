"""The Redis Cluster and Redis Sentinel setups the tests need, on loopback ports.

Import it (the fixtures in ``tests/redis/conftest.py`` do) or run it (``.ci/run`` does)::

    python tests/redis/servers.py start|stop|status [cluster] [sentinel] [unix]

* ``cluster``: three masters without replicas on 127.0.0.1:7101, 7102 and 7103, each holding
  a third of the 16384 slots. A :class:`ClusterSetup` of one or two masters on other ports is
  formed the same way (the benchmarks start such clusters of their own).
* ``sentinel``: a primary on 127.0.0.1:7201 and its replica on 7202, both writing each command
  to their append-only file before answering (``appendfsync always``), watched by three
  sentinels on 7211, 7212 and 7213 under the service name ``sagaprimary`` (quorum 2, down after
  1 s, failover timeout 5 s).
* ``unix``: one server listening on the unix socket ``<setup dir>/redis.sock`` (and on
  127.0.0.1:7221, by which its process is known).

Every server is a ``redis-server`` started with ``--daemonize yes --pidfile``; its config, data,
log and pidfile are under ``$SAGA_TEST_REDIS_SERVERS/<setup>/`` (default
``<temp dir>/saga-redis-servers``; a setup made with ``under=DIR``: ``DIR/<setup>/``). Servers
are stopped by the PID in their pidfile (SIGTERM, then SIGKILL), never by name. :func:`start`
reuses a setup that is up and healthy and otherwise starts it afresh; a port held by any other
program is an error.

Failing over without losing what was acknowledged: Redis replicates asynchronously, so a bare
``SENTINEL FAILOVER`` under load drops writes the primary acknowledged in the last instant
before the replica was promoted, and writes the old primary keeps acknowledging until the
sentinels make it follow the new one, some 11 s later. Two things close that:
:meth:`SentinelSetup.switch_primary` pauses writes on the primary until the replica has them
all (as Redis's own ``FAILOVER`` command does), and the first primary is configured to refuse
writes once it has no replica (``min-replicas-to-write 1``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis

#: The environment variable naming the directory of the setups' files.
ROOT_ENV = "SAGA_TEST_REDIS_SERVERS"
#: Held by a test session while it uses the setups, and by this script's start and stop: the
#: ports are the same whatever the directory, so it is one file for the whole machine.
PORTS_LOCK = Path(tempfile.gettempdir()) / "saga-redis-servers.ports.lock"
HOST = "127.0.0.1"
CLUSTER_PORTS = (7101, 7102, 7103)
PRIMARY_PORT, REPLICA_PORT = 7201, 7202
SENTINEL_PORTS = (7211, 7212, 7213)
UNIX_SOCKET_SERVER_PORT = 7221
SERVICE_NAME = "sagaprimary"
CLUSTER_SLOTS = 16384

# How long a setup may take to get healthy, and a server to exit after SIGTERM.
READY_TIMEOUT_SECONDS = 30.0
# How long to wait for another test session to finish with the setups (a whole CI run).
PORTS_WAIT_SECONDS = 1200.0
STOP_TIMEOUT_SECONDS = 10.0
# The longest writes stay paused during a switch, should this process die before unpausing.
SWITCH_PAUSE_MILLISECONDS = 10_000
_POLL_SECONDS = 0.05


class ServerSetupError(RuntimeError):
    """Raised when a setup cannot start or switch its primary; the message says why (a
    program missing, a port held by another program, a server that never got ready) and
    where the servers' logs are."""


def root() -> Path:
    """The directory of every setup's files: ``$SAGA_TEST_REDIS_SERVERS`` or
    ``<temp dir>/saga-redis-servers``."""
    return Path(os.environ.get(ROOT_ENV) or Path(tempfile.gettempdir()) / "saga-redis-servers")


# --- talking to a server ---------------------------------------------------------------------


def ask(port: int, *command: str) -> Any:
    """Send one command to 127.0.0.1:``port`` on a fresh connection; return the reply."""
    client = redis.Redis(
        host=HOST, port=port, socket_timeout=2.0, socket_connect_timeout=2.0, decode_responses=True
    )
    try:
        return client.execute_command(*command)  # type: ignore[no-untyped-call]
    finally:
        client.close()


def fields(reply: str | dict[str, Any]) -> dict[str, str]:
    """An ``INFO`` or ``CLUSTER INFO`` reply as text by name: its ``name:value`` lines, or
    the dict redis-py made of ``INFO``."""
    if isinstance(reply, dict):
        return {name: str(value) for name, value in reply.items()}
    pairs = (line.split(":", 1) for line in reply.splitlines() if ":" in line)
    return {name: value.strip() for name, value in pairs}


def pairs(reply: list[Any] | dict[str, Any]) -> dict[str, Any]:
    """A ``SENTINEL MASTER`` or ``REPLICAS`` entry by name (flat, or made a dict by redis-py)."""
    return reply if isinstance(reply, dict) else dict(zip(reply[::2], reply[1::2], strict=True))


def _port_taken(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait(what: str, problem: Callable[[], str | None], where: Path) -> None:
    """Poll ``problem`` until it returns None, for at most READY_TIMEOUT_SECONDS."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while True:
        try:
            found = problem()
        except (redis.RedisError, OSError) as exc:
            found = f"{type(exc).__name__}: {exc}"
        if found is None:
            return
        if time.monotonic() > deadline:
            raise ServerSetupError(
                f"{what} not ready after {READY_TIMEOUT_SECONDS:g}s ({found}); the servers' "
                f"logs are in {where}"
            )
        time.sleep(_POLL_SECONDS)


# --- the setups ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Setup:
    """Servers started and stopped together; a subclass says how each is configured, how
    they are formed into one system and when that system is healthy."""

    name: str
    ports: tuple[int, ...]
    under: Path | None = None
    """The directory its files and lock go in; None: :func:`root`."""

    def base(self) -> Path:
        """The directory of this setup's directory and lock file."""
        return root() if self.under is None else self.under

    def directory(self) -> Path:
        """Where this setup's configs, data, logs and pidfiles are."""
        return self.base() / self.name

    def pidfile(self, port: int) -> Path:
        return self.directory() / f"{port}.pid"

    def config(self, port: int) -> list[str]:
        """Config file lines of the server on ``port``, besides its ``dir`` and ``logfile``."""
        raise NotImplementedError

    def launch(self) -> None:
        """Start every server (none runs) and form them into one system."""
        raise NotImplementedError

    def problem(self) -> str | None:
        """What is wrong with the running system, or None when tests can use it."""
        raise NotImplementedError

    def clean(self) -> None:
        """Delete every key (the setup is healthy)."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def start_servers(self, *ports: int, sentinel: bool = False) -> None:
        """Write each server's config, start it daemonized and wait until it answers."""
        directory = self.directory()
        for port in ports:
            (directory / str(port)).mkdir(parents=True, exist_ok=True)
            conf = directory / f"{port}.conf"
            lines = [f"dir {directory / str(port)}", f"logfile {directory / f'{port}.log'}"]
            conf.write_text("\n".join([*lines, *self.config(port)]) + "\n")
            command = ["redis-server", str(conf), *(["--sentinel"] if sentinel else [])]
            command += ["--daemonize", "yes", "--pidfile", str(self.pidfile(port))]
            command += ["--bind", HOST, "--port", str(port)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise ServerSetupError(
                    f"redis-server on port {port} did not start (exit {done.returncode}): "
                    f"{(done.stderr or done.stdout).strip()}; see {directory}/{port}.log"
                )
        for port in ports:
            _wait(f"the server on port {port}", functools.partial(_pong, port), directory)


def _pong(port: int) -> str | None:
    reply = ask(port, "PING")
    return None if reply in (True, "PONG") else f"PING answered {reply!r}"


@dataclasses.dataclass(frozen=True)
class ClusterSetup(Setup):
    """Cluster masters without replicas, one or more, each holding an equal run of the slots
    (the first master the lowest)."""

    def config(self, port: int) -> list[str]:
        return [
            "cluster-enabled yes",
            "cluster-config-file nodes.conf",  # in the node's own data directory
            "cluster-node-timeout 5000",
            # A master alone would name its address as '' to clients (a node learns its
            # address from the first node that meets it): every node names this one.
            f"cluster-announce-ip {HOST}",
            "appendonly no",
            'save ""',
        ]

    def slots(self, port: int) -> tuple[int, int]:
        """The first and last slot of the master on ``port``."""
        index, count = self.ports.index(port), len(self.ports)
        return index * CLUSTER_SLOTS // count, (index + 1) * CLUSTER_SLOTS // count - 1

    def launch(self) -> None:
        # By hand rather than with `redis-cli --cluster create`, which wants three masters at
        # least: the same steps for any number.
        self.start_servers(*self.ports)
        for epoch, port in enumerate(self.ports, start=1):
            first, last = self.slots(port)
            ask(port, "CLUSTER", "ADDSLOTSRANGE", str(first), str(last))
            # Distinct epochs from the start, so no two masters claim their slots with the same
            # one and have to settle it after meeting (what `redis-cli --cluster create` does).
            ask(port, "CLUSTER", "SET-CONFIG-EPOCH", str(epoch))
        for port in self.ports[1:]:  # the others learn of each other by gossip
            ask(self.ports[0], "CLUSTER", "MEET", HOST, str(port))
        _wait("the Redis Cluster", self.problem, self.directory())

    def problem(self) -> str | None:
        size = str(len(self.ports))
        expected = {
            "cluster_state": "ok",
            "cluster_slots_assigned": str(CLUSTER_SLOTS),
            "cluster_slots_ok": str(CLUSTER_SLOTS),
            "cluster_known_nodes": size,
            "cluster_size": size,
        }
        for port in self.ports:
            info = fields(ask(port, "CLUSTER", "INFO"))
            for name, value in expected.items():
                if info.get(name) != value:
                    return f"node {port}: {name} is {info.get(name)!r}, not {value!r}"
        return None

    def clean(self) -> None:
        for port in self.ports:
            ask(port, "FLUSHALL")

    def describe(self) -> str:
        return f"Redis Cluster on {HOST}:{self.ports[0]}-{self.ports[-1]}"


@dataclasses.dataclass(frozen=True)
class SentinelSetup(Setup):
    """A primary, its replica and the sentinels watching them."""

    primary: int = PRIMARY_PORT
    replica: int = REPLICA_PORT
    sentinels: tuple[int, ...] = SENTINEL_PORTS

    def config(self, port: int) -> list[str]:
        if port in self.sentinels:
            return [
                f"sentinel monitor {SERVICE_NAME} {HOST} {self.primary} 2",
                f"sentinel down-after-milliseconds {SERVICE_NAME} 1000",
                f"sentinel failover-timeout {SERVICE_NAME} 5000",
                f"sentinel parallel-syncs {SERVICE_NAME} 1",
            ]
        # The replica's first sync needs no wait for other replicas to join it.
        lines = ["appendonly yes", "appendfsync always", 'save ""', "repl-diskless-sync-delay 0"]
        if port == self.primary:
            # Refuse writes once the replica is gone, as it is at once when it is promoted
            # (see the module's docstring). Only here: the replica, once promoted, is alone
            # until the old primary follows it, and must take writes meanwhile.
            return [*lines, "min-replicas-to-write 1"]
        return [*lines, f"replicaof {HOST} {self.primary}"]

    def launch(self) -> None:
        self.start_servers(self.primary, self.replica)
        # The sentinels learn of the replica from the primary's INFO: start them after it.
        _wait("the replica", lambda: self._replication_problem(self.primary), self.directory())
        self.start_servers(*self.sentinels, sentinel=True)
        _wait("the Sentinel setup", self.problem, self.directory())

    def primary_port(self, sentinel: int | None = None) -> int:
        """The port of the primary a sentinel names (7201, or 7202 after a failover)."""
        port = self.sentinels[0] if sentinel is None else sentinel
        return int(ask(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE_NAME)[1])

    def _other(self, port: int) -> int:
        return self.replica if port == self.primary else self.primary

    def _replication_problem(self, primary: int) -> str | None:
        replica = self._other(primary)
        leader = fields(ask(primary, "INFO", "replication"))
        if (leader.get("role"), leader.get("connected_slaves")) != ("master", "1"):
            return f"{primary} is not a primary with one replica"
        follower = fields(ask(replica, "INFO", "replication"))
        if (follower.get("master_port"), follower.get("master_link_status")) != (
            str(primary),
            "up",
        ):
            return f"{replica} does not follow {primary}"
        return None

    def problem(self) -> str | None:
        named = set()
        for port in self.sentinels:
            master = pairs(ask(port, "SENTINEL", "MASTER", SERVICE_NAME))
            named.add(int(master["port"]))
            if master["flags"] != "master":
                return f"sentinel {port} sees the primary as {master['flags']!r}"
            if int(master["num-other-sentinels"]) != len(self.sentinels) - 1:
                return f"sentinel {port} knows {master['num-other-sentinels']} other sentinels"
            replicas = [pairs(r) for r in ask(port, "SENTINEL", "REPLICAS", SERVICE_NAME)]
            if [r["flags"] for r in replicas] != ["slave"]:
                return f"sentinel {port} sees the replicas as {[r['flags'] for r in replicas]}"
        if len(named) != 1 or not named <= {self.primary, self.replica}:
            return f"the sentinels name the primaries {sorted(named)}"
        return self._replication_problem(named.pop())

    def clean(self) -> None:
        ask(self.primary_port(), "FLUSHALL")

    def describe(self) -> str:
        return (
            f"Redis Sentinel setup (primary {HOST}:{self.primary}, replica {self.replica}, "
            f"sentinels {', '.join(map(str, self.sentinels))}, service {SERVICE_NAME!r})"
        )

    def switch_primary(self) -> int:
        """Fail over to the replica with ``SENTINEL FAILOVER``, losing no acknowledged write;
        return the new primary's port once every sentinel names it.

        Writes to the primary are paused (clients wait) until the replica has received them
        all; the pause ends once the replica has been promoted and left the old primary,
        which from then on refuses writes. Blocks for about a second.

        Raises:
            ServerSetupError: the setup is not healthy, or the switch did not finish.
        """
        found = self.problem()
        if found is not None:
            raise ServerSetupError(f"cannot fail over the {self.describe()}: {found}")
        old = self.primary_port()
        new = self._other(old)
        ask(old, "CLIENT", "PAUSE", str(SWITCH_PAUSE_MILLISECONDS), "WRITE")
        try:
            _wait("the replica's copy", lambda: self._lag(old, new), self.directory())
            ask(self.sentinels[0], "SENTINEL", "FAILOVER", SERVICE_NAME)

            def replica_left() -> str | None:
                count = fields(ask(old, "INFO", "replication")).get("connected_slaves")
                return None if count == "0" else f"{old} still has {count} replica(s)"

            _wait("the promotion", replica_left, self.directory())
        finally:
            ask(old, "CLIENT", "UNPAUSE")

        def all_name_new() -> str | None:
            named = {self.primary_port(port) for port in self.sentinels}
            return None if named == {new} else f"the sentinels name {sorted(named)}"

        _wait("the sentinels' switch", all_name_new, self.directory())
        return new

    def _lag(self, primary: int, replica: int) -> str | None:
        written = fields(ask(primary, "INFO", "replication"))["master_repl_offset"]
        received = fields(ask(replica, "INFO", "replication"))["slave_repl_offset"]
        return None if written == received else f"replica at {received} of {written}"


@dataclasses.dataclass(frozen=True)
class UnixSocketSetup(Setup):
    """One server that also listens on a unix socket (``unix://`` URLs); its TCP port is
    how the setup's processes are told apart, as in the other setups."""

    def socket_path(self) -> Path:
        return self.directory() / "redis.sock"

    def config(self, port: int) -> list[str]:
        return [f"unixsocket {self.socket_path()}", "unixsocketperm 700", 'save ""']

    def launch(self) -> None:
        self.start_servers(*self.ports)
        _wait("the unix socket", self.problem, self.directory())

    def problem(self) -> str | None:
        try:
            with redis.Redis(unix_socket_path=str(self.socket_path()), socket_timeout=2) as client:
                return None if client.ping() else "PING over the socket failed"
        except (redis.RedisError, OSError) as exc:
            return f"the socket {self.socket_path()} does not answer ({exc})"

    def clean(self) -> None:
        for port in self.ports:
            ask(port, "FLUSHALL")

    def describe(self) -> str:
        return f"Redis on the unix socket {self.socket_path()} (and {HOST}:{self.ports[0]})"


CLUSTER = ClusterSetup("cluster", CLUSTER_PORTS)
SENTINEL = SentinelSetup("sentinel", (PRIMARY_PORT, REPLICA_PORT, *SENTINEL_PORTS))
UNIX = UnixSocketSetup("unix", (UNIX_SOCKET_SERVER_PORT,))
SETUPS = {setup.name: setup for setup in (CLUSTER, SENTINEL, UNIX)}


# --- processes -------------------------------------------------------------------------------


def missing_programs() -> list[str]:
    """The Redis programs the setups need that are not on PATH."""
    return [name for name in ("redis-server",) if shutil.which(name) is None]


@contextlib.contextmanager
def _locked(setup: Setup) -> Iterator[None]:
    """Hold the setup's lock file, so that two test runs do not start it over each other."""
    setup.base().mkdir(parents=True, exist_ok=True)
    with open(setup.base() / f"{setup.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def ports_held(on_wait: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Hold the setups' ports for the block (:data:`PORTS_LOCK`), so that no other test
    session restarts, fails over or stops the servers meanwhile; wait while another holds
    them, calling ``on_wait`` once. Not re-entrant: take it once per process.

    Raises:
        ServerSetupError: another session held them for PORTS_WAIT_SECONDS.
    """
    with open(PORTS_LOCK, "a") as lock:
        deadline = time.monotonic() + PORTS_WAIT_SECONDS
        waiting = False
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ServerSetupError(
                        f"another test session has used the Redis setups' ports for "
                        f"{PORTS_WAIT_SECONDS:g}s (it holds {PORTS_LOCK})"
                    ) from None
                if not waiting:
                    waiting = True
                    on_wait()
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _pid_of(setup: Setup, port: int) -> int | None:
    """The PID in the server's pidfile, if that process runs and is ours to signal."""
    try:
        pid = int(setup.pidfile(port).read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):  # no pidfile, no such process, or another user's
        return None
    return pid


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs; an exited daemon not yet reaped by its adoptive parent is gone."""
    try:
        os.kill(pid, 0)
        # /proc/<pid>/stat is "pid (name) state ...": the name may hold spaces.
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except ProcessLookupError:
        return False
    except OSError:  # no /proc: os.kill's answer stands
        return True


def _is_redis_on(pid: int, port: int) -> bool:
    """Whether ``pid`` is a Redis server on ``port``: a stale pidfile may name a PID since
    given to another program. (Where there is no /proc, the pidfile is trusted.)"""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    except OSError:
        return False
    return b"redis-server" in title and f":{port}".encode() in title


def _ours(setup: Setup, port: int) -> bool:
    """Whether the server answering on ``port`` is the process our pidfile names."""
    pid = _pid_of(setup, port)
    if pid is None:
        return False
    try:
        return fields(ask(port, "INFO", "server")).get("process_id") == str(pid)
    except (redis.RedisError, OSError):
        return False


def _stop_pid(pid: int) -> None:
    """SIGTERM ``pid``, wait for it to exit, then SIGKILL it if it has not."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while _alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            return
        time.sleep(_POLL_SECONDS)


def _stop_unlocked(setup: Setup) -> list[int]:
    stopped = []
    # Sentinels first, so that none of them fails over a primary that is being stopped.
    for port in reversed(setup.ports):
        pid = _pid_of(setup, port)
        if pid is not None and _is_redis_on(pid, port):
            _stop_pid(pid)
            stopped.append(port)
        setup.pidfile(port).unlink(missing_ok=True)
    return stopped


# --- the life of a setup ---------------------------------------------------------------------


def status(setup: Setup) -> str | None:
    """What keeps ``setup`` from being used as it runs now, or None when every server is the
    process its pidfile names and they form a healthy system."""
    strangers = [port for port in setup.ports if not _ours(setup, port)]
    if strangers:
        return f"not running on port(s) {', '.join(map(str, strangers))}"
    try:
        return setup.problem()
    except (redis.RedisError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"


def start(setup: Setup) -> bool:
    """Start ``setup``, or reuse it when it is up and healthy; return whether this call
    started it (whoever started it stops it).

    Raises:
        ServerSetupError: redis-server is not on PATH, a port of the setup is
            held by a program that is not the setup's own server, or the setup did not get
            healthy (the message names the directory of the logs).
    """
    with _locked(setup):
        if status(setup) is None:
            return False
        missing = missing_programs()
        if missing:
            raise ServerSetupError(f"{' and '.join(missing)} not found on PATH: install Redis 7")
        _stop_unlocked(setup)
        held = [port for port in setup.ports if _port_taken(port)]
        if held:
            raise ServerSetupError(
                f"the {setup.describe()} needs port(s) {', '.join(map(str, held))} of {HOST}, "
                f"held by another program (not a server whose pidfile is in "
                f"{setup.directory()}): stop that program"
            )
        shutil.rmtree(setup.directory(), ignore_errors=True)
        try:
            setup.launch()
        except BaseException:
            _stop_unlocked(setup)
            raise
        return True


def stop(setup: Setup) -> list[int]:
    """Stop every server of ``setup`` by the PID in its pidfile; return the ports stopped."""
    with _locked(setup):
        return _stop_unlocked(setup)


def reset(setup: Setup) -> None:
    """Bring ``setup`` back to how :func:`start` leaves it: healthy, no keys, and for the
    Sentinel setup the primary on 7201. One that is not healthy, or whose primary moved, is
    started afresh: quicker and surer than failing back, since after a failover the old
    primary follows the new one only some 11 s later.

    Raises:
        ServerSetupError: as :func:`start`.
    """
    with _locked(setup):
        healthy = status(setup) is None
        if healthy and isinstance(setup, SentinelSetup):
            healthy = setup.primary_port() == setup.primary
        if healthy:
            setup.clean()
            return
        _stop_unlocked(setup)
    start(setup)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python tests/redis/servers.py",
        description="Start, stop or check the Redis Cluster, Sentinel and unix-socket setups "
        "of the tests "
        f"(files under ${ROOT_ENV}, default {root()}).",
    )
    parser.add_argument("action", choices=("start", "stop", "status"))
    parser.add_argument(
        "setups", nargs="*", metavar="SETUP", help="cluster, sentinel, unix (default: all)"
    )
    arguments = parser.parse_args(argv)
    unknown = sorted(set(arguments.setups) - SETUPS.keys())
    if unknown:
        parser.error(f"unknown setup(s) {', '.join(unknown)}: choose from {', '.join(SETUPS)}")
    chosen = [SETUPS[name] for name in arguments.setups] or list(SETUPS.values())
    if arguments.action == "status":
        found = {setup: status(setup) for setup in chosen}
        for setup, problem in found.items():
            print(f"{setup.describe()}: {problem or 'healthy'}")
        return 1 if any(found.values()) else 0

    def waiting() -> None:
        print(f"waiting for another test session to finish with the setups ({PORTS_LOCK})")

    try:
        with ports_held(waiting):
            for setup in chosen:
                if arguments.action == "start":
                    started = start(setup)
                    print(f"{setup.describe()}: {'started' if started else 'already running'}")
                else:
                    ports = stop(setup)
                    print(f"{setup.name}: stopped {', '.join(map(str, ports)) or 'nothing'}")
    except ServerSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
