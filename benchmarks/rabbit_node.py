"""A private RabbitMQ node for benchmarks, so the machine's own server is never touched.

Each node has its own name (soloist-<pid>-<name>@localhost), free AMQP and distribution
ports, and data, logs and configuration under a directory of the caller's; nodes that
share `home` share its Erlang cookie (`cookie`), so they can be clustered.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path

SBIN = "/usr/lib/rabbitmq/bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cookie(home: Path) -> None:
    """An Erlang cookie of its own for the nodes under `home`."""
    path = home / ".erlang.cookie"
    path.write_text(secrets.token_hex(16))
    path.chmod(0o600)


class Node:
    """One RabbitMQ node of the private cluster."""

    def __init__(self, home: Path, name: str) -> None:
        self.name = f"soloist-{os.getpid()}-{name}@localhost"
        self.port, self.dist = free_port(), free_port()
        self.dir = home / name
        self.dir.mkdir()
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )
        self.env = {
            **os.environ,
            "HOME": str(home),  # the cookie
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.dir / "pid"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def start(self) -> None:
        out = (self.dir / "server.out").open("ab")
        # A session of its own: the script starts the Erlang VM as a child, and `halt` must
        # be able to end both.
        self.proc = subprocess.Popen(
            [f"{SBIN}/rabbitmq-server"], env=self.env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=self.dir,  # crash dumps land in its directory
        )  # fmt: skip
        out.close()

    def ctl(self, *args: str, timeout: float = 60) -> None:
        subprocess.run([f"{SBIN}/rabbitmqctl", "-n", self.name, *args], env=self.env,
                       check=True, capture_output=True, timeout=timeout)  # fmt: skip

    def wait(self) -> None:
        """Until the node runs (await_startup fails while its Erlang node is not up yet)."""
        deadline = time.monotonic() + 180  # three nodes booting on a loaded 2-core machine
        while True:
            try:
                return self.ctl("await_startup", timeout=max(deadline - time.monotonic(), 1))
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def halt(self) -> None:
        """Stop the node; whatever of its process group is left (a node that never came
        up cannot be asked to stop) is SIGKILLed."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self.ctl("stop", timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
