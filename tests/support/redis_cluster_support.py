"""A private Redis Cluster: `masters` redis-servers on free ports, joined with
`redis-cli --cluster create`, no replicas. Used by the cluster broker tests and
benchmarks/cluster_bench.py; `stop` SIGKILLs the servers (their data is the test's own).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tests.support.redis_support import RedisServer


class RedisCluster:
    def __init__(self, data_dir: Path, masters: int = 3) -> None:
        self.dir = data_dir
        self.servers: list[RedisServer] = []
        for n in range(masters):
            node_dir = data_dir / f"node{n}"
            node_dir.mkdir(parents=True)
            options = [
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(node_dir / "nodes.conf"),
                "--cluster-node-timeout", "2000",
                "--appendonly", "no",  # nothing here restarts a node: no fsync per write
            ]  # fmt: skip
            self.servers.append(RedisServer(node_dir, *options))

    @property
    def ports(self) -> list[int]:
        return [s.port for s in self.servers]

    def url(self, **options: object) -> str:
        """A redis+cluster:// URL naming every node (any one would do: the client asks it
        for the others)."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.ports)
        query = "&".join(f"{k}={v}" for k, v in options.items())
        return f"redis+cluster://{hosts}/" + (f"?{query}" if query else "")

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        for server in self.servers:
            server.start()
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *nodes, "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=60,
        )
        # Created is not ready: every node must have heard of every slot's owner.
        deadline = time.monotonic() + 30
        while not all(self._ok(port) for port in self.ports):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not come up in time")
            time.sleep(0.1)

    @staticmethod
    def _ok(port: int) -> bool:
        with redis.Redis(port=port, socket_timeout=1) as r:
            info = r.execute_command("CLUSTER", "INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
        return "cluster_state:ok" in text

    def stop(self) -> None:
        for server in self.servers:
            server.stop(signal.SIGKILL)


_session: list[RedisCluster] = []


def running_cluster() -> RedisCluster:
    """A 3-master cluster shared by the test session (the broker matrix's `redis-cluster`),
    started on first use and stopped when the session ends (`stop_session_cluster`)."""
    if not _session:
        cluster = RedisCluster(Path(tempfile.mkdtemp(prefix="soloist-cluster-")))
        cluster.start()
        _session.append(cluster)
    return _session[0]


def stop_session_cluster() -> None:
    while _session:
        cluster = _session.pop()
        cluster.stop()
        shutil.rmtree(cluster.dir, ignore_errors=True)
