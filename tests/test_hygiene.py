"""The suite changes nothing it does not own on the shared servers: a test that flushes
scripts or data, reconfigures or stops Redis does it to a redis-server of its own."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Redis commands whose effect reaches past a test's own keys.
SERVER_WIDE = re.compile(
    r"script_flush|flushdb|flushall|config_set|\.shutdown\((?!socket\.SHUT_)|debug_sleep"
    r"|client_kill"
    r"|['\"](SCRIPT|FLUSHDB|FLUSHALL|CONFIG|SHUTDOWN|DEBUG)['\"]"
)
#: What a file uses to start a private server (see tests/support/redis_support.py).
PRIVATE = re.compile(r"RedisServer|redis_server|private_redis|['\"]redis-server['\"]")


def test_server_wide_commands_only_touch_private_servers() -> None:
    offenders = []
    for path in sorted([*ROOT.glob("tests/**/*.py"), *ROOT.glob("benchmarks/**/*.py")]):
        if path.name == Path(__file__).name:
            continue
        text = path.read_text()
        if SERVER_WIDE.search(text) and not PRIVATE.search(text):
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"server-wide Redis commands without a private server: {offenders}"


#: rabbitmqctl commands that restart or retune the server they reach.
RABBIT_WIDE = re.compile(
    r"rabbitmqctl['\"]?[(,]\s*(?:['\"]-q['\"],\s*)?"
    r"['\"](?:stop_app|start_app|stop|reset|force_reset|eval|close_all_connections"
    r"|set_vm_memory_high_watermark|set_disk_free_limit)['\"]"
)


def test_rabbitmq_is_restarted_and_retuned_only_on_private_nodes() -> None:
    """The machine's RabbitMQ is shared: a test that restarts or retunes one does it to a
    private node (tests/support/rabbit_node_support.py) through the node's `ctl`."""
    offenders = []
    for path in sorted([*ROOT.glob("tests/**/*.py"), *ROOT.glob("benchmarks/**/*.py")]):
        if path.name != Path(__file__).name and RABBIT_WIDE.search(path.read_text()):
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"the shared RabbitMQ restarted or retuned: {offenders}"
