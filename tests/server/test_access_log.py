"""The access log: without the scanners' successful routine, without the phones' addresses."""

from __future__ import annotations

import logging

import pytest

from tests.server.conftest import Harness, batch_body


@pytest.fixture
def server(engine_server: Harness) -> Harness:
    """Every test of this module runs on SQLite and on PostgreSQL (tests/pg.py)."""
    return engine_server


def _logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]


async def test_successful_scanner_requests_are_not_access_logged(
    server: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    scanner = await server.add_scanner("s-entrance")
    resp = await server.signed(
        scanner, "POST", "/api/scanner/v1/batches", batch_body(scanner.scanner_id)
    )
    assert resp.status == 200
    resp = await server.signed(scanner, "GET", "/api/scanner/v1/allowlist")
    assert resp.status == 200
    unsigned = await server.client.post("/api/scanner/v1/batches", data=b"{}")
    assert unsigned.status == 401
    texts = await server.client.get("/api/v1/consent-texts")
    assert texts.status == 200
    page = await server.client.get("/app/consents?lang=en")
    assert page.status == 200
    login = await server.client.get("/login")
    assert login.status == 200
    lines = _logged(caplog)
    # The refused scanner request and the others are logged; the two successful scanner
    # requests are not.
    assert len(lines) == 4
    assert '"POST /api/scanner/v1/batches HTTP/1.1" 401' in lines[0]
    assert '"GET /api/v1/consent-texts HTTP/1.1" 200' in lines[1]
    # The route as declared: no query string, no path a client typed.
    assert '"GET /app/{page} HTTP/1.1" 200' in lines[2]
    assert '"GET /login HTTP/1.1" 200' in lines[3]
    # A phone's requests carry neither its address nor its user agent; staff pages carry the
    # address only (a user agent or referer is text a client chose).
    for line in lines:
        assert "aiohttp/" not in line
        assert "lang=en" not in line
    for line in lines[1:3]:
        assert "127.0.0.1" not in line
    for line in (lines[0], lines[3]):
        assert line.startswith("127.0.0.1 ")
