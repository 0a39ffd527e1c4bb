"""Real servers the scale-out tests start on loopback ports of their own: PgBouncer (transaction
pooling, in front of the local PostgreSQL) and a Redis Cluster of three masters. Both are torn down
by their ``stop``; the caller turns a missing binary into a skip or, in CI, a failure."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(200):
        port = random.randint(20000, 45000)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def _wait_listening(port: int, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout_s} s")


@dataclass
class PgBouncer:
    """Debian's ``pgbouncer`` in transaction pooling mode, forwarding every database name to
    PostgreSQL at ``pg_host:pg_port`` with at most ``pool_size`` server connections per
    database."""

    pg_host: str = "127.0.0.1"
    pg_port: int = 5432
    pool_size: int = 2
    port: int = 0
    folder: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> PgBouncer:
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not os.path.exists(binary):
            raise FileNotFoundError("pgbouncer is not installed (apt-get install pgbouncer)")
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="stoplist-pgbouncer-"))
        (self.folder / "users.txt").write_text('"postgres" ""\n')
        (self.folder / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={self.pg_host} port={self.pg_port}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {self.folder / 'users.txt'}\n"
            f"pool_mode = transaction\ndefault_pool_size = {self.pool_size}\n"
            "max_client_conn = 500\nignore_startup_parameters = extra_float_digits\n"
        )
        command = [binary, str(self.folder / "pgbouncer.ini")]
        if os.geteuid() == 0:  # pgbouncer refuses to run as root
            self.folder.chmod(0o755)
            for f in self.folder.iterdir():
                f.chmod(0o644)
            command[1:1] = ["-u", "postgres"]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_listening(self.port, "pgbouncer")
        return self

    def url(self, database: str, user: str = "postgres") -> str:
        return f"postgresql+asyncpg://{user}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class RedisClusterServers:
    """A Redis Cluster of ``masters`` masters (and ``replicas`` each) on free loopback ports, no persistence,
    built with ``redis-cli --cluster create``."""

    masters: int = 3
    replicas: int = 0  # per master
    node_timeout_ms: int = 1000
    ports: list[int] = field(default_factory=list)
    folder: Path | None = None

    def start(self) -> RedisClusterServers:
        for binary in ("redis-server", "redis-cli"):
            if shutil.which(binary) is None:
                raise FileNotFoundError(f"{binary} is not installed")
        self.folder = Path(tempfile.mkdtemp(prefix="stoplist-redis-cluster-"))
        self.ports = [free_cluster_port() for _ in range(self.masters * (1 + self.replicas))]
        for port in self.ports:
            self.start_node(port)
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        self.wait_ok()
        self._wait(
            lambda: all(
                "master_link_status:up" in self.cli(p, "info", "replication")
                for p in self.ports
                if not self.cli(p, "role").startswith("master")
            ),
            "the replicas did not sync",
        )
        return self

    def _wait(self, done: Callable[[], bool], failure: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                raise RuntimeError(failure)
            time.sleep(0.1)

    def wait_failed_over(self, victim: int) -> None:
        """Until a live node's slot map no longer names ``victim`` and the cluster is ok."""
        live = next(p for p in self.ports if p != victim)
        self._wait(
            lambda: (
                str(victim) not in self.cli(live, "cluster", "slots").split()
                and "cluster_state:ok" in self.cli(live, "cluster", "info")
            ),
            f"no replica took over the slots of {victim}",
        )

    def start_node(self, port: int) -> None:
        assert self.folder is not None
        subprocess.run(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(self.folder / f"nodes-{port}.conf"),
                "--cluster-node-timeout",
                str(self.node_timeout_ms),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
                "--daemonize",
                "yes",
                "--pidfile",
                str(self.folder / f"{port}.pid"),
            ],
            check=True,
            capture_output=True,
            timeout=10,
        )
        _wait_listening(port, "redis-server")

    def cli(self, port: int, *args: str) -> str:
        return subprocess.run(
            ["redis-cli", "-p", str(port), *args],
            check=True,
            capture_output=True,
            timeout=10,
            text=True,
        ).stdout

    def wait_ok(self, timeout_s: float = 20.0, skip: tuple[int, ...] = ()) -> None:
        """Until every live node (all but ``skip``) reports ``cluster_state:ok``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            live = [p for p in self.ports if p not in skip]
            if all("cluster_state:ok" in self.cli(p, "cluster", "info") for p in live):
                return
            time.sleep(0.1)
        raise RuntimeError("the Redis Cluster did not become ok")

    def master_ports(self) -> list[int]:
        return [p for p in self.ports if self.cli(p, "role").startswith("master")]

    def kill(self, port: int) -> None:
        """SIGKILL the node: its keys are gone (no persistence), its slots unserved."""
        assert self.folder is not None
        pid = int((self.folder / f"{port}.pid").read_text())
        os.kill(pid, 9)
        (self.folder / f"{port}.pid").unlink()

    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def stop(self) -> None:
        if self.folder is None:
            return
        for port in self.ports:
            pidfile = self.folder / f"{port}.pid"
            if pidfile.exists():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pidfile.read_text()), 15)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = None
