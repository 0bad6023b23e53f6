"""The live board hub: fan-out of card events to every connected staff board.

Each board has a bounded send queue drained by its own task; a board that cannot keep up
(its queue is full) is disconnected rather than slowing the others down, and resyncs from a
snapshot when it reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSCloseCode, web

logger = logging.getLogger(__name__)

# Queue bound per board: a burst of a few hundred card events is absorbed; more means the
# board is stuck, and it is dropped (it resyncs on reconnect).
BOARD_QUEUE_SIZE = 256
# A board that does not answer a ping within this time is considered gone.
BOARD_HEARTBEAT_S = 20.0


class _Board:
    __slots__ = ("queue", "sender", "session", "transport", "username", "ws")

    def __init__(
        self,
        ws: web.WebSocketResponse,
        username: str,
        transport: asyncio.Transport | None,
        session: str | None,
    ) -> None:
        self.ws = ws
        self.username = username
        self.transport = transport
        self.session = session
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(BOARD_QUEUE_SIZE)
        self.sender: asyncio.Task[None] | None = None


class BoardHub:
    def __init__(self) -> None:
        self._boards: set[_Board] = set()
        self._closing: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._boards)

    def max_queue_depth(self) -> int:
        """Messages waiting for the slowest board (for the metrics)."""
        return max((board.queue.qsize() for board in self._boards), default=0)

    def usernames(self) -> set[str]:
        """Who is looking at a board right now (for the access log)."""
        return {board.username for board in self._boards}

    def sessions(self) -> set[str]:
        """The sessions (as stored: their hash) that boards are open under."""
        return {board.session for board in self._boards if board.session is not None}

    def end_sessions(self, ended: set[str] | None = None, *, username: str | None = None) -> int:
        """Close at once every board of the `ended` sessions or of `username`: a board never
        outlives its session (sign-out, disabled account, expiry). Returns how many."""
        boards = [
            board
            for board in self._boards
            if (ended is not None and board.session in ended)
            or (username is not None and board.username == username)
        ]
        for board in boards:
            self._boards.discard(board)  # no event reaches it from now on
            if board.sender is not None:
                board.sender.cancel()
            task = asyncio.create_task(
                _close(board.ws, WSCloseCode.POLICY_VIOLATION, b"session ended")
            )
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return len(boards)

    def publish(self, message: dict[str, Any]) -> None:
        """Queue `message` for every board (never blocks; slow boards are dropped)."""
        for board in list(self._boards):
            try:
                board.queue.put_nowait(message)
            except asyncio.QueueFull:
                logger.warning("dropping a board of user %s: it is not keeping up", board.username)
                self._drop(board)

    def _drop(self, board: _Board) -> None:
        """Disconnect a board at once: its sender may be stuck on a full socket buffer."""
        self._boards.discard(board)
        if board.sender is not None:
            board.sender.cancel()
        if board.transport is not None:
            board.transport.abort()  # no close handshake: the peer is not reading anyway
        else:
            board.queue = asyncio.Queue(1)
            board.queue.put_nowait(None)

    def disconnect_all(self) -> int:
        """Cut every board's connection without a goodbye (operations, tests of resync)."""
        boards = list(self._boards)
        for board in boards:
            self._drop(board)
        return len(boards)

    async def serve(
        self,
        ws: web.WebSocketResponse,
        username: str,
        snapshot: Callable[[], Awaitable[dict[str, Any]]],
        on_message: Callable[[dict[str, Any]], Awaitable[None]],
        transport: asyncio.Transport | None = None,
        session: str | None = None,
    ) -> None:
        """Serve one board until it disconnects: snapshot first, then live events.

        `transport` (the request's) lets the hub cut a board that stopped reading; `session`
        (its stored hash) lets it close the board when that session ends.
        """
        board = _Board(ws, username, transport, session)
        self._boards.add(board)  # before the snapshot: no event is lost in between
        sender = board.sender = asyncio.create_task(self._send_loop(board))
        try:
            await board.queue.put(await snapshot())
            async for msg in ws:
                if msg.type == web.WSMsgType.TEXT:
                    try:
                        data = msg.json()
                    except ValueError:
                        continue
                    if isinstance(data, dict) and board in self._boards:
                        await on_message(data)
        finally:
            self._boards.discard(board)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    async def _send_loop(self, board: _Board) -> None:
        while True:
            message = await board.queue.get()
            if message is None or board.ws.closed:
                await board.ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"too slow")
                return
            try:
                await board.ws.send_json(message)
            except (ConnectionResetError, RuntimeError):
                return

    async def close_all(self) -> None:
        """Close every board with 1001 (going away), for a graceful shutdown."""
        boards = list(self._boards)
        self._boards.clear()
        for board in boards:
            with contextlib.suppress(Exception):
                await board.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")


async def _close(ws: web.WebSocketResponse, code: int, message: bytes) -> None:
    """Close a board's socket; a peer already gone is nothing to report."""
    with contextlib.suppress(Exception):
        await ws.close(code=code, message=message)
