"""A TCP proxy that holds every byte back a set time each way: added latency without netem.

    python benchmarks/delay_proxy.py LISTEN_HOST:PORT TARGET_HOST:PORT --rtt-file PATH

Each connection accepted on LISTEN is joined to a new one to TARGET. Whatever one side
sends is forwarded to the other half the added round-trip time later (read from
`--rtt-file`, in milliseconds, at start and again on SIGHUP, so a running fleet can be
moved from one delay to the next without reconnecting). Bytes keep their order; the
proxy never merges writes beyond what TCP does. `tc qdisc ... netem` would do this in
the kernel, but not every kernel has it (CONFIG_NET_SCH_NETEM); this runs anywhere.
benchmarks/hosts_bench.py places it on the broker host, in front of the broker's port.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
from pathlib import Path


class Delay:
    """The one-way delay in seconds: half the round trip read from `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seconds = 0.0
        self.reload()

    def reload(self) -> None:
        self.seconds = float(self.path.read_text().strip() or 0) / 2000


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: Delay) -> None:
    """Forward reader to writer, each chunk sent `delay` after it arrived."""
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def send() -> None:
        while True:
            due, data = await chunks.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                writer.close()
                return
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(send())
    try:
        while True:
            data = await reader.read(65536)
            chunks.put_nowait((loop.time() + delay.seconds, data))
            if not data:
                break
        await sender
    except (ConnectionError, OSError):
        sender.cancel()
        writer.close()


async def serve(listen: tuple[str, int], target: tuple[str, int], delay: Delay) -> None:
    async def join(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.close()
            return
        for w in (writer, up_writer):
            w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(_pump(reader, up_writer, delay), _pump(up_reader, writer, delay))

    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, delay.reload)
    server = await asyncio.start_server(join, *listen, backlog=1024)
    async with server:
        await server.serve_forever()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("listen", type=_address)
    parser.add_argument("target", type=_address)
    parser.add_argument("--rtt-file", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.listen, args.target, Delay(args.rtt_file)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
