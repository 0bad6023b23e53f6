"""Legacy static iBeacon ids served to scanners: who holds which id, and what changed when.

Pure state (no I/O). The service decides which customers are due a static id (store setting,
active consent, the customer's preference) and reads their ids; this module keeps the
id <-> customer maps and the versioned change history the allowlist deltas are built from.
Versions are the allowlist versions of the EID resolver, passed in by the caller.
"""

from __future__ import annotations

import secrets
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from store_server.resolver import HISTORY_VERSIONS

# Static entries are re-sent with every allowlist answer; a scanner that loses the server
# keeps them this long (ten long polls), then drops them like an expired EID.
STATIC_ID_TTL_S = 300.0
# iBeacon major and minor are 16-bit fields.
IBEACON_PART_LIMIT = 2**16


class StaticIds:
    """The static ids currently served, and (version, added, removed) per change for deltas."""

    __slots__ = ("_customer_of", "_history", "_id_of")

    def __init__(self, history_versions: int = HISTORY_VERSIONS) -> None:
        self._customer_of: dict[str, str] = {}
        self._id_of: dict[str, str] = {}
        self._history: deque[tuple[int, tuple[str, ...], tuple[str, ...]]] = deque(
            maxlen=history_versions
        )

    def __len__(self) -> int:
        return len(self._customer_of)

    @property
    def customer_of(self) -> Mapping[str, str]:
        """Static id -> customer id (read-only view; the ingest hot loop looks ids up here)."""
        return self._customer_of

    def customers(self) -> list[str]:
        """The customers that currently have a static id served."""
        return list(self._id_of)

    def update(
        self,
        customer_ids: Iterable[str],
        wanted: Mapping[str, str],
        next_version: Callable[[], int],
    ) -> bool:
        """Serve exactly ``wanted`` (customer -> static id) for these customers; True if changed.

        A customer of ``customer_ids`` absent from ``wanted`` loses their id. On a change,
        ``next_version()`` is called once for the allowlist version the change is recorded at.
        """
        added: list[str] = []
        removed: list[str] = []
        for customer_id in dict.fromkeys(customer_ids):
            old = self._id_of.get(customer_id)
            new = wanted.get(customer_id)
            if old == new:
                continue
            if old is not None:
                del self._id_of[customer_id]
                self._customer_of.pop(old, None)
                removed.append(old)
            if new is not None:
                self._id_of[customer_id] = new
                self._customer_of[new] = customer_id
                added.append(new)
        if not added and not removed:
            return False
        self._history.append((next_version(), tuple(added), tuple(removed)))
        return True

    def entries(self, now: float) -> list[dict[str, Any]]:
        """Every served id as an allowlist entry, valid for STATIC_ID_TTL_S from ``now``."""
        return [
            {"id_type": "ibeacon", "id": static_id, "not_after": now + STATIC_ID_TTL_S}
            for static_id in self._customer_of
        ]

    def removed_since(self, version: int) -> list[str]:
        """The ids removed after allowlist ``version`` and not served again since."""
        removed: dict[str, None] = {}
        for at, _added, gone in self._history:
            if at > version:
                removed.update(dict.fromkeys(gone))
        return [static_id for static_id in removed if static_id not in self._customer_of]


def new_ibeacon_id() -> str:
    """A random static iBeacon id, ``<uuid>:<major>:<minor>`` (the scanner's allowlist form)."""
    return (
        f"{uuid.uuid4()}:{secrets.randbelow(IBEACON_PART_LIMIT)}"
        f":{secrets.randbelow(IBEACON_PART_LIMIT)}"
    )
