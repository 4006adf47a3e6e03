"""A private Redis Sentinel group: a master, two replicas and three Sentinels on free ports.

Used by tests/brokers/test_sentinel.py and benchmarks/sentinel_bench.py. Failover is made
quick (the master is called down after 1 s without answers) so a test can SIGKILL the
master and wait for a replica's promotion in a few seconds; the other replica then follows
the new master, so `?wait_replicas=1` can still be met.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import redis

from tests.support.redis_support import RedisServer, free_port

SERVICE = "mymaster"


class SentinelGroup:
    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir
        (data_dir / "master").mkdir()
        self.master = RedisServer(data_dir / "master", "--appendonly", "no")
        self.replicas: list[RedisServer] = []
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    def url(self, db: int = 0, **options: object) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        query = "&".join(f"{k}={v}" for k, v in options.items())
        return f"redis+sentinel://{hosts}/{SERVICE}/{db}" + (f"?{query}" if query else "")

    def start(self) -> None:
        self.master.start()
        for n in range(2):
            (self.dir / f"replica{n}").mkdir()
            replica = RedisServer(
                self.dir / f"replica{n}", "--appendonly", "no",
                "--replicaof", "127.0.0.1", str(self.master.port),
            )  # fmt: skip
            replica.start()
            self.replicas.append(replica)
        for port in self.sentinel_ports:
            conf = self.dir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 3000\n"
            )
            self.sentinels.append(
                subprocess.Popen(
                    ["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL
                )
            )
        # Ready for a failover once both replicas are in sync and every Sentinel knows
        # them and the two others.
        self.wait(lambda: all(self._synced(r.port) for r in self.replicas), 30)
        self.wait(lambda: all(self._knows_all(port) for port in self.sentinel_ports), 30)

    @staticmethod
    def _synced(port: int) -> bool:
        with redis.Redis(port=port, socket_timeout=1) as r:
            info = r.info("replication")
        return info.get("master_link_status") == "up" and not info.get("master_sync_in_progress")

    def _knows_all(self, port: int) -> bool:
        try:
            with redis.Redis(port=port, socket_timeout=1) as s:
                return (
                    len(s.execute_command("SENTINEL", "REPLICAS", SERVICE)) == 2
                    and len(s.execute_command("SENTINEL", "SENTINELS", SERVICE)) == 2
                )
        except redis.RedisError:
            return False

    def master_port(self) -> int:
        with redis.Redis(port=self.sentinel_ports[0], socket_timeout=1) as s:
            _, port = s.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        return int(port)

    def kill_master(self, lag: float = 0.0) -> None:
        """SIGKILL the master; returns once the Sentinels name a replica master. With
        `lag`, the replicas are paused (SIGSTOP) that long first, so they fall behind as
        a replica on a slow link or disk does, and resumed after the kill."""
        if lag:
            for r in self.replicas:
                assert r.proc is not None
                r.proc.send_signal(signal.SIGSTOP)
            time.sleep(lag)
        self.master.stop(signal.SIGKILL)
        for r in self.replicas:
            if lag and r.proc is not None:
                r.proc.send_signal(signal.SIGCONT)
        replicas = {r.port for r in self.replicas}
        self.wait(lambda: self.master_port() in replicas, 30)

    @staticmethod
    def wait(check: object, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not check():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise RuntimeError("the Sentinel group did not get there in time")
            time.sleep(0.1)

    def stop(self) -> None:
        for proc in self.sentinels:
            proc.kill()
            proc.wait()
        for server in (self.master, *self.replicas):
            server.stop(signal.SIGKILL)
