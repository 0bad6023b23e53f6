"""The framework's ceiling: a bare aiohttp server that only reads and acknowledges batches.

Usage (started by ingest_throughput.py): python bench/load/bare_server.py PORT (0: any free)

Same route and same answer shape as the store server's batch endpoint, none of its work
(no signature check, no validation, no database, no presence engine).
"""

from __future__ import annotations

import sys

from aiohttp import web

MAX_BODY_BYTES = 1024 * 1024
"""The store server's default max_body_bytes, so that both servers read the same bodies."""

ACK = b'{"accepted":0,"duplicate":false}'
"""A fixed acknowledgement: the ceiling does not even parse the batch."""


async def post_batch(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=ACK, content_type="application/json")


def main() -> None:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post("/api/scanner/v1/batches", post_batch)
    app.router.add_get("/api/v1/consent-texts", lambda _: post_batch_ready())
    # Port 0: the OS picks a free one; aiohttp prints it ("Running on http://127.0.0.1:PORT").
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]))


async def post_batch_ready() -> web.Response:
    return web.Response(body=b"{}", content_type="application/json")


if __name__ == "__main__":
    main()
