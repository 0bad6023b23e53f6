"""The board hub with real WebSocket connections: a slow board is dropped, others keep up.
On both engines (the boards' sessions and snapshots are read from the database)."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest

from tests.server.conftest import Harness, wait_until

# The PostgreSQL variants run in CI's own step (pytest -m pg_step), outside the default
# run's time budget: neither privacy- nor security-critical (README, Testing).
pytestmark = pytest.mark.own_pg_step

PASSWORD = "correct horse battery"
# Big enough messages to fill the kernel buffers of a board that stopped reading quickly.
PADDING = "x" * 16_384
# Safety bound: the slow board must be dropped long before this many messages.
MAX_MESSAGES = 5_000


@pytest.fixture
def server(engine_server: Harness) -> Harness:
    return engine_server


async def _cookie(server: Harness, username: str) -> str:
    await server.add_staff(username, PASSWORD)
    return (await server.session_cookie(username))["Cookie"]


async def _stalled_board(server: Harness, cookie: str) -> asyncio.StreamWriter:
    """A board that completes the WebSocket handshake and then never reads again."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.client.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    writer.write(
        (
            "GET /ws/board HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{server.client.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"Cookie: {cookie}\r\n\r\n"
        ).encode()
    )
    status = await asyncio.wait_for(reader.readline(), 5)
    assert status.startswith(b"HTTP/1.1 101"), status
    return writer


async def test_slow_board_is_dropped_without_delaying_others(server: Harness) -> None:
    hub = server.service.hub
    fast_cookie = await _cookie(server, "fast")
    slow_cookie = await _cookie(server, "slow")
    async with aiohttp.ClientSession() as session:
        fast = await session.ws_connect(
            f"http://127.0.0.1:{server.client.port}/ws/board", headers={"Cookie": fast_cookie}
        )
        assert (await fast.receive_json(timeout=5))["type"] == "snapshot"
        stalled = await _stalled_board(server, slow_cookie)
        await wait_until(lambda: len(hub) == 2)
        received: list[int] = []

        async def read_fast() -> None:
            while True:
                msg = await fast.receive_json(timeout=10)
                received.append(msg["n"])

        reader = asyncio.create_task(read_fast())
        sent = 0
        while len(hub) == 2 and sent < MAX_MESSAGES:
            for _ in range(20):
                hub.publish({"type": "noise", "n": sent, "pad": PADDING})
                sent += 1
            await asyncio.sleep(0.005)
        assert len(hub) == 1, "the stalled board was never dropped"
        # The slow board never held the others back: the fast one was served while the stalled
        # one was still connected (a hub that waited on each board would have sent it nothing).
        received_while_stalled = len(received)
        assert received_while_stalled > 0
        assert sent < MAX_MESSAGES
        # The fast board got every message, in order, and is still connected.
        await wait_until(lambda: len(received) == sent)
        assert received == list(range(sent))
        assert not fast.closed
        hub.publish({"type": "noise", "n": sent, "pad": ""})
        await wait_until(lambda: len(received) == sent + 1)
        reader.cancel()
        stalled.close()
        await fast.close()


async def test_disconnect_all_cuts_boards(server: Harness) -> None:
    cookie = await _cookie(server, "cut")
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(
            f"http://127.0.0.1:{server.client.port}/ws/board", headers={"Cookie": cookie}
        )
        assert (await ws.receive_json(timeout=5))["type"] == "snapshot"
        await wait_until(lambda: len(server.service.hub) == 1)
        assert server.service.hub.disconnect_all() == 1
        msg = await ws.receive(timeout=5)
        assert msg.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.ERROR,
        )
        await wait_until(lambda: len(server.service.hub) == 0)
