"""A private Redis Cluster: `masters` redis-servers on free ports, joined with
`redis-cli --cluster create` (which wants 3 or more; fewer are joined by hand), no
replicas. Used by the cluster broker tests and benchmarks/cluster_bench.py; `stop`
SIGKILLs the servers (their data is the test's own).
"""

from __future__ import annotations

import atexit
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tests.support.redis_support import RedisServer, quiet_ports


class RedisCluster:
    def __init__(self, data_dir: Path, masters: int = 3, replicas: int = 0) -> None:
        self.dir = data_dir
        self.replicas = replicas
        self.servers: list[RedisServer] = []
        nodes = masters * (1 + replicas)
        ports = quiet_ports(2 * nodes)  # each node's, and its cluster bus's
        for n in range(nodes):
            node_dir = data_dir / f"node{n}"
            node_dir.mkdir(parents=True)
            options = [
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(node_dir / "nodes.conf"),
                "--cluster-port", str(ports[nodes + n]),
                "--cluster-node-timeout", "2000",
                "--appendonly", "no",  # nothing here restarts a node: no fsync per write
            ]  # fmt: skip
            self.servers.append(RedisServer(node_dir, *options, port=ports[n]))

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
        if len(nodes) >= 3:
            replicas = ["--cluster-replicas", str(self.replicas)]
            subprocess.run(
                ["redis-cli", "--cluster", "create", *nodes, "--cluster-yes", *replicas],
                check=True,
                stdout=subprocess.DEVNULL,
                timeout=60,
            )
        else:  # redis-cli creates 3 masters or more; fewer (a benchmark's 1) by hand
            with redis.Redis(port=self.ports[0]) as first:
                for port in self.ports[1:]:
                    first.execute_command("CLUSTER", "MEET", "127.0.0.1", port)
            per = 16384 // len(nodes)
            for n, port in enumerate(self.ports):
                last = 16383 if n == len(nodes) - 1 else (n + 1) * per - 1
                with redis.Redis(port=port) as node:
                    node.execute_command("CLUSTER", "ADDSLOTSRANGE", n * per, last)
        # Created is not ready: every node must have heard of every slot's owner.
        deadline = time.monotonic() + 30
        while not all(self._ok(port) for port in self.ports):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not come up in time")
            time.sleep(0.1)

    @staticmethod
    def _ok(port: int) -> bool:
        """The node sees every slot served, and if a replica, is in sync with its master
        (one that never synced would not stand in for it in a failover)."""
        with redis.Redis(port=port, socket_timeout=1) as r:
            info = r.execute_command("CLUSTER", "INFO")
            replication = r.info("replication")
        text = info.decode() if isinstance(info, bytes) else str(info)
        synced = replication["role"] == "master" or (
            replication.get("master_link_status") == "up"
            and not replication.get("master_sync_in_progress")
        )
        return "cluster_state:ok" in text and synced

    def move_slot(self, slot: int, to_port: int) -> None:
        """Move `slot`, keys and all, to the node on `to_port`, as a resharding does
        (IMPORTING/MIGRATING, MIGRATE, then SETSLOT NODE on every node)."""
        from_port = self.owner(slot)
        with redis.Redis(port=from_port) as src, redis.Redis(port=to_port) as dst:
            src_id, dst_id = (r.execute_command("CLUSTER", "MYID").decode() for r in (src, dst))
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
            while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                src.execute_command("MIGRATE", "127.0.0.1", to_port, "", 0, 5000, "KEYS", *keys)
        for port in self.ports:
            with redis.Redis(port=port) as node:
                node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)

    def owner(self, slot: int) -> int:
        """The port of the node serving `slot`, as a running node sees it."""
        port = next(s.port for s in self.servers if s.proc is not None)
        with redis.Redis(port=port) as node:
            for first, last, (_, port, *_) , *_ in node.execute_command("CLUSTER", "SLOTS"):
                if first <= slot <= last:
                    return int(port)
        raise LookupError(f"no node serves slot {slot}")

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
        atexit.register(stop_session_cluster)  # also when no fixture stops it
    return _session[0]


def stop_session_cluster() -> None:
    while _session:
        cluster = _session.pop()
        cluster.stop()
        shutil.rmtree(cluster.dir, ignore_errors=True)
