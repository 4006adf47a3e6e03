"""The suite changes nothing it does not own on the shared servers: a test that flushes
scripts or data, reconfigures or stops Redis does it to a redis-server of its own."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Redis commands whose effect reaches past a test's own keys.
SERVER_WIDE = re.compile(
    r"script_flush|flushdb|flushall|config_set|\.shutdown\(|debug_sleep|client_kill"
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
