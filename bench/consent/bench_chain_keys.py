"""Benchmark: the chain's key flow at scale (docs/privacy.md, chain mode).

Usage: .venv/bin/python bench/consent/bench_chain_keys.py [--customers 100000] [--json]

On a fresh SQLite file, ``--customers`` customers with a chain-wide consent and an identity
key wrapped under the master key (a single shop joining a chain). Measured, in CPU seconds of
this process (``time.process_time``: the machine is shared, wall time would mostly measure the
neighbours), with the wall time beside:

- the key authority's first run: open every identity key, adopt it under the authority's
  key, compute and store the temporary keys for now and the next period;
- a second run at the same instant (nothing missing: the steady state between periods);
- a run one period later (one new temporary key per customer);
- a chain store server's load of every consenting customer from temporary keys (read,
  unwrap, EIDs built) against the single shop's load from identity keys;
- one RSA-OAEP opening of a key sealed at enrollment (the authority's cost per customer who
  enrolled through a store server, paid once), over a few hundred keys.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from store_server.eid import new_identity_key  # noqa: E402
from store_server.identity_load import (  # noqa: E402
    identity_aad,
    read_identities,
    read_temporary_keys,
)
from store_server.keyseal import (  # noqa: E402
    chain_keys,
    generate_authority_key,
    load_private_key,
    seal,
    unseal,
)
from store_server.keywrap import wrap_key  # noqa: E402
from store_server.resolver import EidResolver  # noqa: E402
from store_server.services.authority import plan_run  # noqa: E402
from store_server.storage import keys  # noqa: E402
from store_server.storage.database import connect, immediate  # noqa: E402
from store_server.tempkeys import SLOT_SECONDS  # noqa: E402

T = TypeVar("T")

DEFAULT_CUSTOMERS = 100_000
"""A large chain's consenting members, as in the issue's benchmark."""

SEALED_SAMPLE = 200
"""Sealed keys opened to time one RSA-OAEP opening (a few hundred give a steady mean)."""

SKEW = 1
"""The server's default ``skew_windows``."""

ROTATION_EXPONENT = 9
"""The server's default ``rotation_exponent``."""


def timed(fn: Callable[[], T]) -> tuple[T, float, float]:
    """(result, CPU seconds, wall seconds)."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = fn()
    return result, time.process_time() - cpu, time.perf_counter() - wall


def populate(db: Any, master: bytes, count: int, now: float) -> list[str]:
    ids = [f"c_{i:024x}" for i in range(count)]
    text = "0" * 64
    with immediate(db):
        db.execute(
            "INSERT INTO consent_texts (hash, purpose, version, text_fr, text_en)"
            " VALUES (?, 'greeting', 1, 'Bonjour', 'Hello')",
            [text],
        )
        db.conn.executemany(
            "INSERT INTO customers (id, token_hash, created_at, pickup_code) VALUES (?, ?, ?, ?)",
            [(cid, secrets.token_hex(8), now, "ABC234") for cid in ids],
        )
        db.conn.executemany(
            "INSERT INTO identities (customer_id, key_wrapped, k, clock_offset_s, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            [
                (
                    cid,
                    wrap_key(master, new_identity_key(), identity_aad(cid)),
                    ROTATION_EXPONENT,
                    float(secrets.randbelow(2**20)),
                    now,
                )
                for cid in ids
            ],
        )
        db.conn.executemany(
            "INSERT INTO consents (customer_id, purpose, scope, text_hash, granted_at,"
            " expires_at, store_id) VALUES (?, 'greeting', 'chain', ?, ?, ?, 's1')",
            [(cid, text, now - 1, now + 365 * 86400) for cid in ids],
        )
    return ids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=DEFAULT_CUSTOMERS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    master = secrets.token_bytes(32)
    private_pem, public_pem = generate_authority_key()
    chain = chain_keys(master, public_pem, private_pem)
    private = load_private_key(private_pem)
    now = time.time()
    figures: dict[str, Any] = {"customers": args.customers}
    with tempfile.TemporaryDirectory() as folder:
        db = connect(Path(folder) / "chain.sqlite")
        ids = populate(db, master, args.customers, now)

        def authority_run(at: float) -> tuple[int, int]:
            identities = keys.identities_for_authority(db, at)
            plan = plan_run(
                identities,
                private_key=private,
                master_key=master,
                tk_key=chain.tk_key,
                now=at,
                skew=SKEW,
            )
            return keys.record_authority_run(db, plan.adopted, plan.temporary_keys, at)

        def run_authority(name: str, at: float) -> None:
            (adopted, written), cpu, wall = timed(lambda: authority_run(at))
            figures[name] = {"cpu_s": cpu, "wall_s": wall, "adopted": adopted, "written": written}

        run_authority("authority_first_run", now)
        run_authority("authority_steady_run", now)

        def store_load_from_temporary_keys() -> int:
            resolver = EidResolver(skew_windows=SKEW)
            loaded = read_temporary_keys(db, chain.tk_key, ids, now, scan=True)
            resolver.upsert_many(loaded.records, now)
            return len(resolver.entries(now))

        def shop_load_from_identity_keys() -> int:
            # The identities are the authority's now: time the single shop's path on a copy
            # wrapped under the master key (the same work as before chain mode).
            resolver = EidResolver(skew_windows=SKEW)
            loaded = read_identities(db, chain_own_as_master, ids, scan=True)
            resolver.upsert_many(loaded.records, now)
            return len(resolver.entries(now))

        from store_server.keyseal import authority_wrap_key

        chain_own_as_master = authority_wrap_key(private)  # same AES-GCM wrap, other key
        for name, load in (
            ("store_load_temporary_keys", store_load_from_temporary_keys),
            ("shop_load_identity_keys", shop_load_from_identity_keys),
        ):
            entries, cpu, wall = timed(load)
            figures[name] = {"cpu_s": cpu, "wall_s": wall, "allowlist_entries": entries}

        # Last: the next period's run purges the keys of the current one.
        run_authority("authority_next_period_run", now + SLOT_SECONDS)
        sealed = [
            (f"c_{i}", seal(chain.public_key, new_identity_key(), identity_aad(f"c_{i}")))
            for i in range(SEALED_SAMPLE)
        ]
        _, cpu, wall = timed(lambda: [unseal(private, blob, identity_aad(c)) for c, blob in sealed])
        figures["rsa_oaep_open_ms"] = {
            "cpu": 1000 * cpu / SEALED_SAMPLE,
            "wall": 1000 * wall / SEALED_SAMPLE,
        }
        figures["load_average"] = list(__import__("os").getloadavg())
        db.conn.close()
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for name, value in figures.items():
            print(f"{name}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
