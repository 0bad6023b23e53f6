"""The install guide, run for real: the store server under nginx with TLS, a scanner and a
staff board through the proxy.

Everything here follows docs/operations.md with the files it ships: the shipped nginx site
(deploy/nginx/bulle.conf, with only the host name, certificate paths, listening ports and
upstream port changed, as the guide says), the documented admin commands, the settings file
with relative paths and a master key file, and a real `beacon-scanner run` whose server_url
is the proxy's https:// address and which trusts the shop's certificate through
SSL_CERT_FILE. Forwarded addresses: sign-ins through nginx from two loopback addresses are
limited per client address (trusted_proxies), not as one proxy address. The proof that the
long poll goes through: the customer enrolls after the scanner got its first allowlist, so
the scanner only passes their identifier once the allowlist's long poll has brought it
through nginx, and only then does the board's greeting card arrive over the proxied
WebSocket.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from store_server.eid import beacon_time, compute_eid

pytestmark = pytest.mark.proxy

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "deploy" / "nginx" / "bulle.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PASSWORD = "correct horse battery"
EDDYSTONE_UUID = "0000feaa-0000-1000-8000-00805f9b34fb"
# Each wait below is for a condition; this bounds it on a loaded 2-core machine.
READY_WITHIN_S = 30.0
# Starts of nginx on freshly chosen ports before giving up (see start_shop).
NGINX_TRIES = 3
# Failed sign-ins an address may make before it is refused (store_server.throttle).
LOGIN_TRIES = 5
# The status of a failed sign-in: the sign-in page again, with its error.
LOGIN_FAILED = 401
# The greeting card: the allowlist long poll, then presence (a few seconds of sightings).
CARD_WITHIN_S = 60.0
# The scanner's heartbeat interval here: /readyz turns 200 at its first heartbeat.
HEARTBEAT_S = 1.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, made with `cryptography`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bulle test store")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "fullchain.pem", folder / "privkey.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def site_config(https_port: int, http_port: int, upstream_port: int, cert: Path, key: Path) -> str:
    """The shipped site with the changes the guide asks for (and loopback test ports)."""
    text = SITE.read_text("utf-8")
    replacements = {
        "server 127.0.0.1:8080;": f"server 127.0.0.1:{upstream_port};",
        "/etc/ssl/bulle/fullchain.pem": str(cert),
        "/etc/ssl/bulle/privkey.pem": str(key),
        "server_name store.example;": "server_name localhost;",
        "listen 443 ssl http2;": f"listen 127.0.0.1:{https_port} ssl http2;",
        "listen 80;": f"listen 127.0.0.1:{http_port};",
    }
    for old, new in replacements.items():
        assert old in text, f"deploy/nginx/bulle.conf no longer has {old!r}"
        text = text.replace(old, new)
    # No IPv6 listeners in the test (the machine may have no ::1).
    return "\n".join(line for line in text.splitlines() if "listen [::]" not in line)


def nginx_main_config(prefix: Path, site: Path) -> str:
    """What Debian's /etc/nginx/nginx.conf provides around a site, in the test's folder."""
    temp = {name: prefix / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for folder in temp.values():
        folder.mkdir(exist_ok=True)
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (
        f"{user}worker_processes 1;\npid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'error.log'} info;\nevents {{ worker_connections 64; }}\n"
        "http {\n"
        f"  access_log {prefix / 'access.log'};\n"
        f"  client_body_temp_path {temp['body']};\n  proxy_temp_path {temp['proxy']};\n"
        f"  fastcgi_temp_path {temp['fastcgi']};\n  uwsgi_temp_path {temp['uwsgi']};\n"
        f"  scgi_temp_path {temp['scgi']};\n"
        f"  include {site};\n"
        "}\n"
    )


def run_cli(*args: str, stdin: str | None = None) -> str:
    """A documented admin command; fails the test with its stderr if it fails."""
    result = subprocess.run(
        [sys.executable, "-m", "store_server", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@dataclass
class Shop:
    etc: Path
    config: Path
    server_port: int
    https_port: int
    http_port: int
    cert: Path
    scanner_secret: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


async def wait_for(probe: Any, what: str, limit_s: float = READY_WITHIN_S) -> Any:
    deadline = time.monotonic() + limit_s
    while True:
        with contextlib.suppress(aiohttp.ClientError, OSError):
            value = await probe()
            if value:
                return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {limit_s} s waiting for {what}")
        await asyncio.sleep(0.1)


def _start(args: list[str], log: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=out, **kwargs)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in reversed(processes):
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if process.stdin is not None:
            process.stdin.close()


def write_settings(config: Path, https_port: int) -> None:
    """The guide's settings file (the port comes from `serve --port 0` in the test)."""
    config.write_text(
        "\n".join(
            [
                'host = "127.0.0.1"',
                'db_path = "data/store.sqlite"',
                'store_file = "store.toml"',
                'master_key_file = "master_key"',
                f'public_origin = "https://127.0.0.1:{https_port}"',
                'log_format = "json"',
                'trusted_proxies = ["127.0.0.1"]',
                "",
            ]
        ),
        "utf-8",
    )


def install(tmp_path: Path) -> tuple[Path, Path, Path, str]:
    """The guide's first steps in a folder: keys, settings, admin commands (as processes)."""
    etc = tmp_path / "etc"
    etc.mkdir()
    shutil.copy(ROOT / "seeds" / "store.toml", etc / "store.toml")
    (etc / "master_key").write_text(os.urandom(32).hex() + "\n", "utf-8")
    (etc / "master_key").chmod(0o640)
    cert, key = make_certificate(etc)
    config = etc / "server.toml"
    write_settings(config, 443)
    run_cli(
        "user",
        "add",
        "alice",
        "--role",
        "manager",
        "--password-stdin",
        "--config",
        str(config),
        stdin=PASSWORD + "\n",
    )
    out = run_cli("scanner", "add", "s-entrance", "--config", str(config))
    secret = out.rsplit(": ", 1)[1].strip()
    run_cli("stock", "import", str(ROOT / "seeds" / "catalog.csv"), "--config", str(config))
    return config, cert, key, secret


def _server_port(process: subprocess.Popen[bytes], log: Path) -> int:
    """The port the server bound (`serve --port 0`), from its own "Running on" line."""
    deadline = time.monotonic() + READY_WITHIN_S
    while time.monotonic() < deadline:
        match = re.search(rb"Running on http://127\.0\.0\.1:(\d+)", log.read_bytes())
        if match:
            return int(match.group(1))
        assert process.poll() is None, f"the server exited: see {log}"
        time.sleep(0.05)
    pytest.fail(f"the server did not start within {READY_WITHIN_S} s: see {log}")


def _nginx_up(process: subprocess.Popen[bytes], url: str, context: ssl.SSLContext) -> bool:
    """True once our nginx answers (through our server); False if it exited (its port was
    taken between choosing and binding it: the caller tries other ports)."""
    deadline = time.monotonic() + READY_WITHIN_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(url, context=context, timeout=5) as resp,
        ):
            if resp.status == 200:
                return True
        time.sleep(0.1)
    pytest.fail(f"nginx did not answer {url} within {READY_WITHIN_S} s")


def start_shop(tmp_path: Path) -> Shop:
    """Install, then the server on a port the OS picks and nginx in front of it. nginx cannot
    take port 0: if a port chosen for it is taken by another program meanwhile, nginx exits
    and the server and nginx start again on other ports (3 tries)."""
    config, cert, key, secret = install(tmp_path)
    nginx_dir = tmp_path / "nginx"
    nginx_dir.mkdir()
    for _ in range(NGINX_TRIES):
        https_port, http_port = free_port(), free_port()
        write_settings(config, https_port)
        log = tmp_path / "server.log"
        log.write_bytes(b"")
        server = _start(
            [sys.executable, "-m", "store_server", "serve", "--config", str(config), "--port", "0"],
            log,
        )
        shop = Shop(config.parent, config, 0, https_port, http_port, cert, secret, [server])
        try:
            shop.server_port = _server_port(server, log)
            site = nginx_dir / "bulle.conf"
            site.write_text(
                site_config(https_port, http_port, shop.server_port, cert, key), "utf-8"
            )
            main = nginx_dir / "nginx.conf"
            main.write_text(nginx_main_config(nginx_dir, site), "utf-8")
            check = subprocess.run(
                [NGINX, "-t", "-p", str(nginx_dir), "-c", str(main)],
                capture_output=True,
                text=True,
                check=False,
            )
            assert check.returncode == 0, check.stderr
            nginx = _start(
                [NGINX, "-p", str(nginx_dir), "-c", str(main), "-g", "daemon off;"],
                nginx_dir / "stdout.log",
            )
            shop.processes.append(nginx)
            if _nginx_up(nginx, f"{shop.origin}/healthz", shop.ssl_context()):
                return shop
        except BaseException:
            _stop(shop.processes)
            raise
        _stop(shop.processes)
    pytest.fail(f"nginx could not bind its ports in {NGINX_TRIES} tries: see {nginx_dir}")


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    shop = start_shop(tmp_path)
    try:
        yield shop
    finally:
        _stop(shop.processes)


def scanner_config(shop: Shop, folder: Path) -> Path:
    """The scanner's settings as the guide writes them: no secret (the unit passes it); a
    short heartbeat interval, so that the test does not wait 15 s for the first one."""
    path = folder / "scanner.toml"
    path.write_text(
        "\n".join(
            [
                'scanner_id = "s-entrance"',
                'store_id = "demo-store"',
                f'server_url = "{shop.origin}"',
                'backend = "simulated"',
                f'outbox_path = "{folder / "outbox.sqlite"}"',
                "allowlist_wait_s = 20.0",
                # The test waits for the first heartbeat through the proxy: it comes one
                # interval after the start (15 s by default).
                f"heartbeat_interval_s = {HEARTBEAT_S}",
                'log_format = "json"',
                "",
            ]
        ),
        "utf-8",
    )
    secret = folder / "secret"
    secret.write_text(shop.scanner_secret + "\n", "utf-8")
    secret.chmod(0o600)
    return path


def scanner_env(shop: Shop, folder: Path) -> dict[str, str]:
    """What the scanner's unit sets: the secret's copy, plus the shop's certificate."""
    return {
        **os.environ,
        "BULLE_SCANNER_SECRET_FILE": str(folder / "secret"),
        "SSL_CERT_FILE": str(shop.cert),
        "PYTHONUNBUFFERED": "1",
    }


def start_scanner(config: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`beacon-scanner run` as its unit runs it, fed simulated adverts on stdin."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "scanner", "run", "--config", str(config)],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


class Board:
    """A manager's board over the proxy: HTTPS sign-in, then the WebSocket."""

    def __init__(self, shop: Shop) -> None:
        self.shop = shop
        self.messages: list[dict[str, Any]] = []
        self.session = aiohttp.ClientSession(
            shop.origin,
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            connector=aiohttp.TCPConnector(ssl=shop.ssl_context()),
        )
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        async with self.session.post(
            "/login",
            data={"username": "alice", "password": PASSWORD},
            headers={"Origin": self.shop.origin},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 303, await resp.text()
            assert "__Host-bulle_session" in resp.cookies
            assert "Secure" in resp.headers["Set-Cookie"]
        ws = await self.session.ws_connect("/ws/board", origin=self.shop.origin)
        self._task = asyncio.create_task(self._listen(ws))

    async def _listen(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            self.messages.append(json.loads(msg.data))

    def cards(self) -> list[dict[str, Any]]:
        found = []
        for message in self.messages:
            if message.get("type") == "card":
                found.append(message["card"])
            elif message.get("type") == "snapshot":
                found.extend(message.get("cards", []))
        return found

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.session.close()


async def test_board_and_scanner_through_nginx(shop: Shop, tmp_path: Path) -> None:
    ssl_context = shop.ssl_context()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context)) as http:
        # Plain HTTP is sent to HTTPS.
        async with http.get(
            f"http://127.0.0.1:{shop.http_port}/board", allow_redirects=False
        ) as resp:
            assert resp.status == 301
            assert resp.headers["Location"] == "https://127.0.0.1/board"
        async with http.get(f"{shop.origin}/readyz") as resp:
            # Registered scanner not heard from yet: not ready, through the proxy too.
            assert resp.status == 503
            assert (await resp.json())["checks"]["scanners"]["ok"] is False

    # Forwarded client addresses: two clients behind nginx, from two loopback addresses. The
    # first one's failed sign-ins refuse it (per-address limit) but not the second one, so the
    # server sees each client's own address; an X-Forwarded-For the client made up is not
    # believed (nginx appends the address it saw, the server reads from the right).
    first = [await _sign_in(shop, "127.0.0.2", f"nobody{i}") for i in range(LOGIN_TRIES + 1)]
    assert first[:LOGIN_TRIES] == [LOGIN_FAILED] * LOGIN_TRIES, first
    assert first[LOGIN_TRIES] == 429, first
    assert await _sign_in(shop, "127.0.0.3", "someone") == LOGIN_FAILED

    # The scanner's own check, through the proxy.
    scanner_dir = tmp_path / "scanner"
    scanner_dir.mkdir()
    config = scanner_config(shop, scanner_dir)
    env = scanner_env(shop, scanner_dir)
    check = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "scanner", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert "OK   server reachable" in check.stdout, check.stdout + check.stderr
    assert "OK   credentials accepted: scanner s-entrance" in check.stdout

    board = Board(shop)
    try:
        await board.open()
        await wait_for(
            _async(lambda: any(m.get("type") == "snapshot" for m in board.messages)),
            "the board's snapshot over the proxied WebSocket",
        )

        scanner = start_scanner(config, env, tmp_path / "scanner.log")
        shop.processes.append(scanner)
        async with aiohttp.ClientSession(
            shop.origin, connector=aiohttp.TCPConnector(ssl=ssl_context)
        ) as http:

            async def scanner_seen() -> bool:
                async with http.get("/readyz") as resp:
                    return resp.status == 200

            # The scanner's heartbeat went through: it has its first allowlist by now.
            await wait_for(
                scanner_seen, "the scanner's first contact through the proxy", CARD_WITHIN_S
            )
            customer = await _enroll_with_greeting(http)

        # Phone adverts heard by the scanner: only once the long poll brought the new EID
        # through nginx does the scanner pass them on.
        assert scanner.stdin is not None
        deadline = time.monotonic() + CARD_WITHIN_S
        while not board.cards():
            assert scanner.poll() is None, (tmp_path / "scanner.log").read_text()
            if time.monotonic() > deadline:
                pytest.fail(
                    "no greeting card through the proxy; scanner log:\n"
                    + (tmp_path / "scanner.log").read_text()[-3000:]
                )
            scanner.stdin.write(_advert(customer).encode())
            scanner.stdin.flush()
            await asyncio.sleep(0.25)
        card = board.cards()[0]
        assert card["kind"] == "greeting"
    finally:
        await board.close()

    # Both programs' logs are JSON lines (log_format = "json").
    for log in ("server.log", "scanner.log"):
        log_lines = (tmp_path / log).read_text().splitlines()
        entries = [json.loads(line) for line in log_lines if line.startswith("{")]
        assert entries, log_lines[:5]
        assert {"ts", "level", "logger", "message"} <= set(entries[0])


async def _sign_in(shop: Shop, local_address: str, username: str) -> int:
    """A failed sign-in through nginx from ``local_address``; the answer's status."""
    connector = aiohttp.TCPConnector(ssl=shop.ssl_context(), local_addr=(local_address, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.post(
            f"{shop.origin}/login",
            data={"username": username, "password": "not the password"},
            headers={"Origin": shop.origin, "X-Forwarded-For": "203.0.113.9"},
            allow_redirects=False,
        ) as resp,
    ):
        return resp.status


def _async(predicate: Any) -> Any:
    async def probe() -> bool:
        return bool(predicate())

    return probe


@dataclass
class Customer:
    identity_key: bytes
    k: int
    clock_offset_s: float


async def _enroll_with_greeting(http: aiohttp.ClientSession) -> Customer:
    async with http.get("/api/v1/consent-texts") as resp:
        texts = {t["purpose"]: t["hash"] for t in (await resp.json())["texts"]}
    async with http.post("/api/v1/enroll", json={"language": "en"}) as resp:
        assert resp.status == 201, await resp.text()
        enrolled = await resp.json()
    headers = {"Authorization": f"Bearer {enrolled['token']}"}
    body = {"purpose": "greeting", "text_hash": texts["greeting"], "channel": "app"}
    async with http.post("/api/v1/consents", json=body, headers=headers) as resp:
        assert resp.status == 201, await resp.text()
    return Customer(
        bytes.fromhex(enrolled["identity_key"]),
        enrolled["rotation_exponent"],
        enrolled["beacon_time"] - time.time(),
    )


def _advert(customer: Customer) -> str:
    eid = compute_eid(
        customer.identity_key, customer.k, beacon_time(time.time(), customer.clock_offset_s)
    )
    frame = bytes([0x30, 0xEC]) + eid  # EID frame, -20 dBm at 0 m
    record = {
        "address": "4C:11:22:33:44:55",
        "rssi": -55,
        "service_data": {EDDYSTONE_UUID: frame.hex()},
    }
    return json.dumps(record) + "\n"


def test_long_poll_timeout_is_above_the_servers_longest_wait() -> None:
    from store_server.services.scanners import MAX_ALLOWLIST_WAIT_S

    text = SITE.read_text("utf-8")
    match = re.search(r"proxy_read_timeout (\d+)s;", text)
    assert match is not None
    assert int(match.group(1)) > MAX_ALLOWLIST_WAIT_S + 20  # the board's ping interval too
    assert "proxy_set_header Upgrade $http_upgrade;" in text
    assert "X-Forwarded-For $proxy_add_x_forwarded_for" in text
