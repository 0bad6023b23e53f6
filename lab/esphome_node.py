"""A fake ESPHome Bluetooth proxy that speaks ESPHome's real native API on a local port.

No ESP32 is needed to exercise the scanner's ESPHome backend: ``FakeNode`` is the device side
of the protocol, built from the client library's own pieces (``aioesphomeapi``): its protobuf
message classes and message-type table, its plaintext and noise frame writers, its noise cipher
wrappers and backend. The responder half of the noise handshake (Noise_NNpsk0_25519_ChaChaPoly
_SHA256, the PSK being the node's API encryption key) comes from ``noiseprotocol``, which
``aioesphomeapi`` itself uses for the initiator. What the node does:

- answers the hello, device info (with or without the Bluetooth proxy feature flags), pings and
  disconnect requests;
- on a wrong key, answers the handshake as firmware does ("Handshake MAC failure");
- records raw-advertisement subscriptions and pushes ``BluetoothLERawAdvertisementsResponse``
  batches to the subscribed clients (``send_adverts``);
- can be dropped (listener and connections closed, as a power cut) and brought back on the same
  port (``stop`` then ``start``).

Used by the tests, the benchmark and anyone trying the backend without hardware.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from aioesphomeapi import api_pb2
from aioesphomeapi._frame_helper.noise import make_noise_packets
from aioesphomeapi._frame_helper.noise_encryption import (
    ESPHOME_NOISE_BACKEND,
    NOISE_PROTOCOL_NAME,
    DecryptCipher,
    EncryptCipher,
    decode_noise_psk,
)
from aioesphomeapi._frame_helper.packets import make_plain_text_packets
from aioesphomeapi.core import MESSAGE_TYPE_TO_PROTO
from aioesphomeapi.model import BluetoothProxyFeature, BluetoothProxySubscriptionFlag
from cryptography.exceptions import InvalidTag
from noise.connection import NoiseConnection

from scanner.ad_structures import encode_ad_structures
from scanner.records import AdvertRecord

logger = logging.getLogger(__name__)

# Message class -> type id, the reverse of the library's table.
TYPE_OF: Final[dict[type[Any], int]] = {cls: n for n, cls in MESSAGE_TYPE_TO_PROTO.items()}
# The noise prologue both sides mix in (ESPHome's api_noise_frame_helper).
NOISE_PROLOGUE: Final = b"NoiseAPIInit\x00\x00"
# What firmware answers when the client's handshake was made with another key.
MAC_FAILURE: Final = b"Handshake MAC failure"
# The API version the fake node reports: recent enough for raw advertisements (1.9+).
API_VERSION: Final = (1, 12)
# Feature flags of a stock `bluetooth_proxy:` node with raw advertisements.
PROXY_FLAGS: Final = int(
    BluetoothProxyFeature.PASSIVE_SCAN
    | BluetoothProxyFeature.ACTIVE_CONNECTIONS
    | BluetoothProxyFeature.RAW_ADVERTISEMENTS
)
# Firmware batches raw advertisements; 16 per message is ESPHome's own batch size.
ADVERTS_PER_MESSAGE: Final = 16
# Bytes queued on a connection beyond which the node drops new advertisements instead of
# queueing them, as firmware does when its TCP send buffer is full (a slow client).
SEND_BUFFER_LIMIT: Final = 256 * 1024
# Largest plaintext varint this node reads (a 32-bit value needs 5 bytes).
_VARINT_MAX_BYTES: Final = 5


@dataclass(frozen=True, slots=True)
class RawAdvert:
    """One advertisement as the node's radio heard it."""

    address: int
    rssi: int
    data: bytes
    address_type: int = 1  # random: what phones use


def raw_advert(record: AdvertRecord) -> RawAdvert:
    """The raw form of a JSON-lines record (seeds/captures), as a proxy would forward it."""
    address = int(record.address.replace(":", ""), 16)
    data = encode_ad_structures(
        record.manufacturer_data,
        record.service_data,
        local_name=record.local_name,
        tx_power=record.tx_power,
    )
    return RawAdvert(address=address, rssi=record.rssi, data=data)


class _Connection(asyncio.Protocol):
    """The device side of one API connection."""

    def __init__(self, node: FakeNode) -> None:
        self.node = node
        self.transport: asyncio.Transport | None = None
        self.subscribed = False
        self._buffer = b""
        self._noise: Any = None
        self._encrypt: EncryptCipher | None = None
        self._decrypt: DecryptCipher | None = None
        self._hello_seen = False

    # -- transport ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.node.connections.add(self)
        self.node.connects += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.node.connections.discard(self)
        self.transport = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self.node.psk is None:
            self._read_plaintext()
        else:
            self._read_noise()

    # -- plaintext framing: 0x00, varint length, varint type, payload --------------------
    def _varint(self, pos: int) -> tuple[int, int] | None:
        value = 0
        for i in range(_VARINT_MAX_BYTES):
            if pos + i >= len(self._buffer):
                return None
            byte = self._buffer[pos + i]
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                return value, pos + i + 1
        self.close()
        return None

    def _read_plaintext(self) -> None:
        while self._buffer and self.transport is not None:
            if self._buffer[0] != 0x00:
                # A noise hello at a plaintext node: firmware answers with the plaintext marker
                # and a reason, at least 3 bytes so that the client reads it, then hangs up.
                self.transport.write(b"\x00Bad indicator byte")
                self.close()
                return
            length = self._varint(1)
            if length is None:
                return
            kind = self._varint(length[1])
            if kind is None:
                return
            end = kind[1] + length[0]
            if len(self._buffer) < end:
                return
            payload, self._buffer = self._buffer[kind[1] : end], self._buffer[end:]
            self._handle(kind[0], payload)

    # -- noise framing: 0x01, length (BE16), frame ------------------------------------------
    def _read_noise(self) -> None:
        while len(self._buffer) >= 3 and self.transport is not None:
            if self._buffer[0] != 0x01:
                # A plaintext client at an encrypted node: a noise frame rejecting it.
                self._write_noise_frame(b"\x01Bad indicator byte")
                self.close()
                return
            end = 3 + ((self._buffer[1] << 8) | self._buffer[2])
            if len(self._buffer) < end:
                return
            frame, self._buffer = self._buffer[3:end], self._buffer[end:]
            if not self._hello_seen:
                self._hello_seen = True
                self._write_noise_frame(
                    b"\x01" + self.node.name.encode() + b"\0" + self.node.mac.encode() + b"\0"
                )
            elif self._decrypt is None:
                self._handshake(frame)
            else:
                plain = self._decrypt.decrypt(frame)
                kind, size = (plain[0] << 8) | plain[1], (plain[2] << 8) | plain[3]
                self._handle(kind, plain[4 : 4 + size])

    def _write_noise_frame(self, frame: bytes) -> None:
        assert self.transport is not None
        self.transport.write(bytes((0x01, len(frame) >> 8, len(frame) & 0xFF)) + frame)

    def _handshake(self, frame: bytes) -> None:
        assert self.node.psk is not None
        proto = NoiseConnection.from_name(NOISE_PROTOCOL_NAME, backend=ESPHOME_NOISE_BACKEND)
        proto.set_as_responder()
        proto.set_psks(decode_noise_psk(self.node.psk))
        proto.set_prologue(NOISE_PROLOGUE)
        proto.start_handshake()
        try:
            if not frame or frame[0] != 0x00:
                raise ValueError("not a handshake frame")
            proto.read_message(frame[1:])
        except (InvalidTag, ValueError):
            self.node.handshake_failures += 1
            self._write_noise_frame(b"\x01" + MAC_FAILURE)
            self.close()
            return
        self._write_noise_frame(b"\x00" + bytes(proto.write_message()))
        state = proto.noise_protocol
        self._encrypt = EncryptCipher(state.cipher_state_encrypt)
        self._decrypt = DecryptCipher(state.cipher_state_decrypt)
        self._noise = proto

    # -- messages -------------------------------------------------------------------------
    def send(self, messages: Iterable[Any]) -> None:
        if self.transport is None:
            return
        packets = [(TYPE_OF[type(m)], m.SerializeToString()) for m in messages]
        if self.node.psk is None:
            self.transport.writelines(make_plain_text_packets(packets))
        else:
            assert self._encrypt is not None
            self.transport.writelines(make_noise_packets(packets, self._encrypt))

    def _handle(self, kind: int, payload: bytes) -> None:
        cls = MESSAGE_TYPE_TO_PROTO.get(kind)
        if cls is None:
            return
        msg = cls()
        msg.ParseFromString(payload)
        node = self.node
        if cls is api_pb2.HelloRequest:
            self.send(
                [
                    api_pb2.HelloResponse(
                        api_version_major=API_VERSION[0],
                        api_version_minor=API_VERSION[1],
                        server_info="bulle fake node",
                        name=node.name,
                    )
                ]
            )
        elif cls is api_pb2.DeviceInfoRequest:
            self.send(
                [
                    api_pb2.DeviceInfoResponse(
                        name=node.name,
                        mac_address=node.mac,
                        bluetooth_mac_address=node.mac,
                        esphome_version="2025.11.0",
                        model="esp32dev",
                        bluetooth_proxy_feature_flags=PROXY_FLAGS if node.bluetooth_proxy else 0,
                        api_encryption_supported=node.psk is not None,
                    )
                ]
            )
        elif cls is api_pb2.PingRequest:
            self.send([api_pb2.PingResponse()])
        elif cls is api_pb2.DisconnectRequest:
            self.send([api_pb2.DisconnectResponse()])
            self.close()
        elif cls is api_pb2.SubscribeBluetoothLEAdvertisementsRequest:
            raw = int(BluetoothProxySubscriptionFlag.RAW_ADVERTISEMENTS)
            self.subscribed = node.bluetooth_proxy and bool(msg.flags & raw)
            if self.subscribed:
                node.subscribed.set()
        elif cls is api_pb2.UnsubscribeBluetoothLEAdvertisementsRequest:
            self.subscribed = False


class FakeNode:
    """An ESPHome node on ``host``: ``await start()``, ``send_adverts(...)``, ``await stop()``."""

    def __init__(
        self,
        name: str,
        *,
        psk: str | None = None,
        bluetooth_proxy: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        mac: str = "AA:BB:CC:00:00:01",
    ) -> None:
        self.name = name
        self.psk = psk
        self.bluetooth_proxy = bluetooth_proxy
        self.host = host
        self.port = port
        self.mac = mac
        self.connections: set[_Connection] = set()
        self.connects = 0
        self.handshake_failures = 0
        self.adverts_sent = 0
        # Advertisements not sent to a client whose connection was backed up.
        self.adverts_dropped = 0
        # Set whenever a client subscribes to raw advertisements.
        self.subscribed = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen (on the same port as before after a ``stop``)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and cut every connection (a power cut: no goodbye)."""
        self.subscribed.clear()
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        self.connections.clear()

    @property
    def subscribers(self) -> int:
        return sum(1 for c in self.connections if c.subscribed)

    def send_adverts(self, adverts: Sequence[RawAdvert]) -> int:
        """Push ``adverts`` to every subscribed client; the number of clients reached."""
        messages = [
            api_pb2.BluetoothLERawAdvertisementsResponse(
                advertisements=[
                    api_pb2.BluetoothLERawAdvertisement(
                        address=a.address, rssi=a.rssi, address_type=a.address_type, data=a.data
                    )
                    for a in adverts[i : i + ADVERTS_PER_MESSAGE]
                ]
            )
            for i in range(0, len(adverts), ADVERTS_PER_MESSAGE)
        ]
        reached = 0
        for conn in list(self.connections):
            if not conn.subscribed or conn.transport is None:
                continue
            if conn.transport.get_write_buffer_size() > SEND_BUFFER_LIMIT:
                self.adverts_dropped += len(adverts)
                continue
            conn.send(messages)
            reached += 1
            self.adverts_sent += len(adverts)
        return reached
