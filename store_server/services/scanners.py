"""The scanner gateway: signed requests, registrations, heartbeats, the allowlist long poll,
calibration, and the batch ingest entry point.

A batch's windows are resolved, its id committed with the batches arriving meanwhile (one
transaction, one fsync: ``storage.batch_log``), and only then observed by the presence
engine; the events it makes go to the board.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from store_server.box_beacons import ID_TYPE as STORE_BEACON
from store_server.box_beacons import BoxBeacons
from store_server.checkin_proof import beacon_settings
from store_server.errors import (
    AuthenticationError,
    ForbiddenError,
    NotFoundError,
    UnavailableError,
    ValidationError,
)
from store_server.ingest import Batch, Heartbeat, Window
from store_server.keywrap import scanner_aad, unwrap_key, wrap_key
from store_server.presence import PresenceEvent
from store_server.resolver import AllowlistItem
from store_server.services.board import Board
from store_server.services.consent_feed import is_unavailable
from store_server.services.coordinator import Coordinator
from store_server.signing import NonceStore, SignedHeaders, verify
from store_server.storage import scanners
from store_server.storage.batch_log import BatchLog

# A window older than this when it reaches the server (outbox backlog) is counted but does
# not drive presence: greeting someone who left an hour ago would be wrong.
TAKES_BOX_BEACONS: Final = True
"""Said in every allowlist answer: this server takes `store_beacon` windows (a box sends them
only to a server that says so; earlier releases refuse a batch holding one)."""

STALE_WINDOW_S = 30.0
# Calibration offsets beyond 30 dB mean a broken antenna or a wrong placement, not a
# calibration: refuse them.
MAX_CALIBRATION_DB = 30.0
# Longest allowed long poll for the allowlist (seconds).
MAX_ALLOWLIST_WAIT_S = 30.0
# Entries of a full allowlist encoded at a time: at 100,000 consenting customers the list of
# 300,000 entry objects took the server from 135 MB to 275 MB for one scanner's request.
FULL_LIST_PART = 5000


class ScannerGateway:
    """Everything a scanner talks to, and the manager's scanner pages."""

    def __init__(self, coordinator: Coordinator, board: Board) -> None:
        self._c = coordinator
        self._board = board
        self.config = coordinator.config
        self.db = coordinator.db
        self.clock = coordinator.clock
        self.store_id = coordinator.store_id
        self.resolver = coordinator.resolver
        self.engine = coordinator.engine
        self._nonces = NonceStore(2 * self.config.signature_tolerance_s)
        # Scanner registrations last read (secret unwrapped), by scanner id.
        self._registrations: dict[str, ScannerRegistration] = {}
        self._batches = BatchLog(self.db)
        self.frames_resolved = 0
        self.frames_unresolved = 0
        self.long_polls_waiting = 0  # allowlist long polls held open (for the metrics)
        # Boxes hearing each other's store beacon (calibration), when the store has its key.
        beacon = beacon_settings(self.config)
        self.box_beacons = (
            BoxBeacons(
                beacon.key,
                beacon.chain_uuid,
                beacon.major,
                [spec.id for spec in coordinator.floor.scanners],
            )
            if beacon is not None
            else None
        )
        # Store beacon windows since start, by outcome (the metrics; never their values).
        self.box_beacon_windows: Counter[str] = Counter()

    @property
    def pending_batches(self) -> int:
        """Batch ids waiting for the next group commit."""
        return self._batches.pending

    async def close(self) -> None:
        """Let the batch ids being committed be answered."""
        await self._batches.close()

    def wrap_scanner_secret(self, scanner_id: str, secret: str) -> bytes:
        return wrap_key(self._c.master_key, secret.encode(), scanner_aad(scanner_id))

    async def authenticate_scanner(
        self, signed: SignedHeaders, method: str, path_qs: str, body: bytes
    ) -> str:
        """Verify a signed request; return the scanner's store id."""
        # Read the registration on every request: a revocation made by another process
        # (`store-server scanner revoke`) takes effect at the scanner's next request.
        row = await self.db.read(lambda db: scanners.scanner_row(db, signed.scanner_id))
        return self._verify_with(
            self._registration(signed.scanner_id, row), signed, method, path_qs, body
        )

    async def authenticate_batch(
        self, signed: SignedHeaders, method: str, path_qs: str, body: bytes
    ) -> ScannerRegistration:
        """:meth:`authenticate_scanner` for a batch, whose registration is re-read later.

        The signature is checked with the secret of the registration last read for this
        scanner (reading it first if there is none, or if that secret does not verify: it may
        have been replaced). The registration itself is checked again by :meth:`ingest`, in
        the transaction that records the batch: a scanner revoked or re-registered by another
        process meanwhile has its batch refused there, before anything of it is kept. So a
        revocation still takes effect at the scanner's next request, without a database round
        trip per batch before that transaction.
        """
        known = self._registrations.get(signed.scanner_id)
        if known is not None:
            try:
                self._verify_with(known, signed, method, path_qs, body)
            except AuthenticationError as exc:
                if exc.code != "bad_signature":
                    raise
            else:
                return known
        row = await self.db.read(lambda db: scanners.scanner_row(db, signed.scanner_id))
        known = self._registration(signed.scanner_id, row)
        self._verify_with(known, signed, method, path_qs, body)
        return known

    def _registration(self, scanner_id: str, row: dict[str, Any] | None) -> ScannerRegistration:
        """The usable registration of a scanner row (cached); AuthenticationError if none."""
        if row is None or row["revoked_at"] is not None:
            self._registrations.pop(scanner_id, None)
            raise AuthenticationError("unknown or revoked scanner", code="unknown_scanner")
        if str(row["store_id"]) != self.store_id:
            # Registered for another store (a database shared by a chain's servers): this
            # server neither takes its batches nor shows it this store's allowlist.
            raise ForbiddenError("this scanner is registered for another store", code="wrong_store")
        wrapped = bytes(row["secret_wrapped"])
        known = self._registrations.get(scanner_id)
        if known is None or known.secret_wrapped != wrapped:
            plain = unwrap_key(self._c.master_key, wrapped, scanner_aad(scanner_id))
            known = ScannerRegistration(scanner_id, str(row["store_id"]), wrapped, plain.decode())
            self._registrations[scanner_id] = known
        return known

    def _verify_with(
        self,
        registration: ScannerRegistration,
        signed: SignedHeaders,
        method: str,
        path_qs: str,
        body: bytes,
    ) -> str:
        verify(
            signed,
            secret=registration.secret,
            method=method,
            path_qs=path_qs,
            body=body,
            now=self.clock(),
            tolerance_s=self.config.signature_tolerance_s,
            nonces=self._nonces,
        )
        return registration.store_id

    async def ingest(
        self,
        scanner_id: str,
        store_id: str,
        batch: Batch,
        *,
        registration: ScannerRegistration | None = None,
    ) -> dict[str, Any]:
        """Resolve, record and observe one batch; answer once its id is durably recorded.

        Each window's identifier is resolved (at the window's end, or now if later); a
        window that resolves to nobody is counted and dropped. The fresh resolved windows
        are grouped by time, each subject's first window of a time kept. The batch id is
        committed (with other batches arriving meanwhile: one transaction, one fsync) before
        anything reaches the engine; a batch id already committed is answered as a duplicate
        and not observed again. With ``registration`` (from :meth:`authenticate_batch`), that
        transaction also checks that it is still the scanner's registration, and the batch
        is refused if not.
        """
        if batch.store_id != store_id or batch.scanner_id != scanner_id:
            raise ForbiddenError(
                "this scanner is not registered for that store", code="wrong_store"
            )
        now = self.clock()
        accepted = len(batch.windows)
        resolved = 0
        # Window time -> subject -> (rssi median, count): the fresh windows to observe.
        by_time: dict[float, dict[str, tuple[float, int]]] = {}
        # Every fresh window's end, resolved or not: the box listened then, and a customer it
        # did not hear is evidence too (the engine's misses).
        closed: set[float] = set()
        # Other boxes' store beacons this box heard: never a customer, never observed, and
        # left out of `closed` too: the engine sees nothing of them (the times a box listened
        # stay those of its customers' windows, as before boxes heard each other).
        boxes_heard: list[Window] = []
        for window in batch.windows:
            if window.id_type == STORE_BEACON:
                boxes_heard.append(window)
                continue
            t = min(window.end, now)
            if now - t <= STALE_WINDOW_S:
                closed.add(t)
            subject = self._resolve(window.id_type, window.id, t)
            if subject is None:
                continue
            resolved += 1
            if now - t <= STALE_WINDOW_S:
                by_time.setdefault(t, {}).setdefault(subject, (window.rssi_median, window.count))
        removals = self.resolver.removals  # subjects named in `by_time` are all held now
        expected = registration.secret_wrapped if registration is not None else None
        try:
            inserted, previous = await self._batches.record(
                scanner_id, batch.batch_id, accepted, now, expected
            )
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            # Not durably stored: the scanner keeps the batch in its outbox and sends it again.
            raise UnavailableError(
                "the database is out of reach; send this batch again later",
                code="database_unavailable",
            ) from None
        if previous < 0:
            self._registrations.pop(scanner_id, None)
            raise AuthenticationError("unknown or revoked scanner", code="unknown_scanner")
        if not inserted:
            return {"batch_id": batch.batch_id, "accepted": previous, "duplicate": True}
        self.frames_unresolved += accepted - resolved - len(boxes_heard)
        self.frames_resolved += resolved
        if boxes_heard:
            self._boxes_heard(scanner_id, boxes_heard, now)
        calibration = self._c.calibration
        if calibration.listening:  # the calibration phone, or a customer who just checked in
            for t, windows in sorted(by_time.items()):
                calibration.observe(
                    scanner_id,
                    list(windows),
                    t,
                    [v[0] for v in windows.values()],
                    [v[1] for v in windows.values()],
                )
        # Withdrawn or erased while the batch id was being committed: the engine must not hold
        # anything about them again (forget() ran already). Checked only if anyone left.
        recheck = self.resolver.removals != removals
        events: list[PresenceEvent] = []
        for t in sorted(closed):
            windows = by_time.get(t, {})
            subjects = [s for s in windows if not recheck or s in self.resolver]
            if not subjects:
                self.engine.box_listened(scanner_id, t)
                continue
            # Observe, then decide the arrivals these windows make at once (at the windows'
            # time), rather than at the next tick up to 1 s later.
            taken = self.engine.observe_many(
                scanner_id,
                subjects,
                [t] * len(subjects),
                [windows[s][0] for s in subjects],
                [windows[s][1] for s in subjects],
            )
            if taken:
                events.extend(self.engine.decide_arrivals(taken, t))
        if events:
            await self._board.handle_events(events)
        return {"batch_id": batch.batch_id, "accepted": accepted, "duplicate": False}

    def _boxes_heard(self, listener: str, windows: Sequence[Window], now: float) -> None:
        """Store beacon windows: each matched to the box that broadcast it (the store beacon
        key, the window's slot or the previous one) and given to online calibration with the
        distance between the two boxes. A box's own beacon, another store's and an unknown
        minor are dropped and only counted (nothing of their values is logged)."""
        counts = self.box_beacon_windows
        matcher = self.box_beacons
        if matcher is None:
            counts["no_key"] += len(windows)
            return
        calibration = self._c.calibration
        reference = self.engine.settings.reference_rssi_dbm
        for window in windows:
            t = min(window.end, now)
            heard = matcher.speaker(window.id, t)
            if heard.box_id is None:
                counts[heard.outcome] += 1
            elif heard.box_id == listener:
                counts["own"] += 1
            else:
                power = window.tx_power if window.tx_power is not None else reference
                used = calibration.box_heard(listener, heard.box_id, t, window.rssi_median, power)
                counts["sample" if used else "not_sample"] += 1

    def _resolve(self, id_type: str, ident: str, t: float) -> str | None:
        """The consenting customer behind a window's identifier at ``t``, or None."""
        if id_type == "eid":
            return self.resolver.resolve(bytes.fromhex(ident), t)
        if self.config.legacy_ibeacon:
            # Legacy static ids (when the store offers them): their holders are in the resolver.
            subject = self._c.static.customer_of.get(ident)
            if subject is not None and subject in self.resolver:
                return subject
        return None

    async def heartbeat(self, scanner_id: str, store_id: str, body: Heartbeat) -> dict[str, Any]:
        if body.store_id != store_id or body.scanner_id != scanner_id:
            raise ForbiddenError(
                "this scanner is not registered for that store", code="wrong_store"
            )
        now = self.clock()
        payload = {f: getattr(body, f) for f in body.__struct_fields__}
        await self.db.write(lambda db: scanners.record_heartbeat(db, scanner_id, payload, now))
        return {"ok": True, "server_time": now}

    async def allowlist(self, since: int | None, wait_s: float) -> dict[str, Any]:
        if not self._c.consent_fresh():
            # Fail closed (chain mode): no allowlist from a view of consents that may be out
            # of date; the scanner keeps its current one until its entries expire.
            raise UnavailableError(
                "this server's view of consents is out of date; try again later",
                code="consent_view_stale",
            )
        wait_s = max(0.0, min(wait_s, MAX_ALLOWLIST_WAIT_S))
        if since is not None and since == self.resolver.version and wait_s > 0:
            # asyncio.timeout cancels this task itself: wait_for around Condition.wait would
            # cancel an inner task and, on shutdown, leave the lock released twice.
            self.long_polls_waiting += 1
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait_s), self._c.allowlist_changed:
                        await self._c.allowlist_changed.wait_for(
                            lambda: self.resolver.version != since or self._c.closing
                        )
            finally:
                self.long_polls_waiting -= 1
            if not self._c.consent_fresh():
                raise UnavailableError(
                    "this server's view of consents is out of date; try again later",
                    code="consent_view_stale",
                )
        now = self.clock()
        version = self.resolver.version
        delta = self.resolver.changes_since(since) if since is not None else None
        static = self._c.static.entries(now)
        if since is not None and since == version:
            return {
                "version": version,
                "full": False,
                "entries": static,
                "removed": [],
                "box_beacons": TAKES_BOX_BEACONS,
            }
        if delta is not None and since is not None:
            return {
                "version": delta.version,
                "full": False,
                "entries": [_wire_entry(item) for item in delta.added] + static,
                "removed": [eid.hex() for eid in delta.removed]
                + self._c.static.removed_since(since),
                "box_beacons": TAKES_BOX_BEACONS,
            }
        return {
            "version": version,
            "full": True,
            "entries": _encoded_entries(self.resolver.iter_entries(now), static),
            "removed": [],
            "box_beacons": TAKES_BOX_BEACONS,
        }

    # -- manager pages -------------------------------------------------------------------

    async def scanner_rows(self) -> list[dict[str, Any]]:
        """Registered scanners with their last heartbeat (never their secrets)."""
        store_id = self.store_id
        return await self.db.read(lambda db: scanners.scanner_rows(db, store_id))

    async def register_scanner(self, scanner_id: str, *, replace: bool = False) -> str:
        """Register a scanner for this store; its new secret, shown once. An active
        registration of that id is replaced only with ``replace`` (ConflictError otherwise)."""
        secret = secrets.token_urlsafe(32)
        wrapped = self.wrap_scanner_secret(scanner_id, secret)
        now, store_id = self.clock(), self.store_id
        await self.db.write(
            lambda db: scanners.add_scanner(db, scanner_id, store_id, wrapped, now, replace=replace)
        )
        return secret

    async def revoke_scanner(self, scanner_id: str) -> None:
        now = self.clock()
        store_id = self.store_id
        await self.db.write(lambda db: scanners.revoke_scanner(db, scanner_id, now, store_id))

    def calibration(self) -> dict[str, float]:
        """The RSSI offset applied to each scanner of the floor, in dB."""
        return self.engine.calibration()

    async def set_calibration(self, scanner_id: str, rssi_offset_db: float, username: str) -> None:
        """Store a manager's calibration offset and apply it to the engine at once."""
        if scanner_id not in self.engine.calibration():
            raise NotFoundError(f"no scanner {scanner_id!r} on this store's floor")
        if not -MAX_CALIBRATION_DB <= rssi_offset_db <= MAX_CALIBRATION_DB:
            raise ValidationError(
                f"between -{MAX_CALIBRATION_DB:g} and {MAX_CALIBRATION_DB:g} dB",
                field="rssi_offset_db",
                reason="range",
            )
        now = self.clock()
        await self.db.write(
            lambda db: scanners.set_calibration(db, scanner_id, rssi_offset_db, username, now)
        )
        self.engine.set_calibration(scanner_id, rssi_offset_db)


@dataclass(frozen=True, slots=True)
class ScannerRegistration:
    """A scanner's registration as last read: its store and its secret (wrapped and plain)."""

    scanner_id: str
    store_id: str
    secret_wrapped: bytes = field(repr=False)
    secret: str = field(repr=False)


def _wire_entry(item: AllowlistItem) -> dict[str, Any]:
    return {"id_type": "eid", "id": item.eid.hex(), "not_after": item.not_after}


def _encoded_entries(items: Iterable[AllowlistItem], more: list[dict[str, Any]]) -> msgspec.Raw:
    """The entries of a full allowlist as one encoded JSON array, FULL_LIST_PART at a time:
    the same array as a list of entry objects, without holding them all at once."""
    out = bytearray(b"[")
    part: list[dict[str, Any]] = []

    def flush() -> None:
        if part:
            if len(out) > 1:
                out.extend(b",")
            out.extend(msgspec.json.encode(part)[1:-1])  # the objects, without [ and ]
            part.clear()

    for item in items:
        part.append(_wire_entry(item))
        if len(part) >= FULL_LIST_PART:
            flush()
    part.extend(more)
    flush()
    out.extend(b"]")
    return msgspec.Raw(out)
