"""Online calibration: each box's radio samples and its latest fit (``calibration_online``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from store_server.calibration import MAX_SAMPLES
from store_server.calibration_online import LearnedFit, Sample
from store_server.storage.database import Handle, executemany, immediate, rows

__all__ = ["fits", "record", "reset", "samples"]


def record(db: Handle, new: Sequence[Sample], learned: Sequence[LearnedFit]) -> None:
    """Store new samples (keeping the latest MAX_SAMPLES of each box) and new fits, at once."""
    with immediate(db):
        _add_samples(db, new)
        _save_fits(db, learned)


def _add_samples(db: Handle, new: Sequence[Sample]) -> None:
    if new:
        executemany(
            db,
            "INSERT INTO calibration_samples"
            " (scanner_id, distance_m, walls_db, rssi_dbm, source, at) VALUES (?, ?, ?, ?, ?, ?)",
            [(s.box_id, s.distance_m, s.walls_db, s.rssi_dbm, s.source, s.at) for s in new],
        )
    for box in sorted({s.box_id for s in new}):
        db.execute(
            "DELETE FROM calibration_samples WHERE scanner_id = ? AND id <= ("
            " SELECT id FROM calibration_samples WHERE scanner_id = ?"
            " ORDER BY id DESC LIMIT 1 OFFSET ?)",
            [box, box, MAX_SAMPLES],
        )


def _in(boxes: Sequence[str]) -> str:
    """Placeholders for the boxes (only ``?`` marks reach the SQL text)."""
    return ", ".join("?" for _ in boxes) or "NULL"


def samples(db: Handle, boxes: Sequence[str]) -> list[Sample]:
    """The stored samples of these boxes (a store's: a chain's database holds others'),
    oldest first."""
    return [
        Sample(
            str(r["scanner_id"]),
            float(r["distance_m"]),
            float(r["walls_db"]),
            float(r["rssi_dbm"]),
            float(r["at"]),
            r["source"],
        )
        for r in rows(
            db,
            "SELECT scanner_id, distance_m, walls_db, rssi_dbm, source, at"  # noqa: S608
            f" FROM calibration_samples WHERE scanner_id IN ({_in(boxes)}) ORDER BY id",
            list(boxes),
        )
    ]


def _save_fits(db: Handle, learned: Sequence[LearnedFit]) -> None:
    if learned:
        executemany(
            db,
            "INSERT INTO calibration_fits (scanner_id, rssi_offset_db, path_loss_exponent,"
            " samples, places, residual_db, usable, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(scanner_id) DO UPDATE SET rssi_offset_db = excluded.rssi_offset_db,"
            " path_loss_exponent = excluded.path_loss_exponent, samples = excluded.samples,"
            " places = excluded.places, residual_db = excluded.residual_db,"
            " usable = excluded.usable, updated_at = excluded.updated_at",
            [
                (
                    f.box_id,
                    f.rssi_offset_db,
                    f.path_loss_exponent,
                    f.samples,
                    f.places,
                    f.residual_db,
                    int(f.usable),
                    f.updated_at,
                )
                for f in learned
            ],
        )


def fits(db: Handle, boxes: Sequence[str]) -> dict[str, LearnedFit]:
    """The latest fit of each of these boxes."""
    found: list[dict[str, Any]] = rows(
        db,
        f"SELECT * FROM calibration_fits WHERE scanner_id IN ({_in(boxes)})"  # noqa: S608
        " ORDER BY scanner_id",
        list(boxes),
    )
    return {
        str(r["scanner_id"]): LearnedFit(
            str(r["scanner_id"]),
            float(r["rssi_offset_db"]),
            float(r["path_loss_exponent"]),
            int(r["samples"]),
            int(r["places"]),
            float(r["residual_db"]),
            bool(r["usable"]),
            float(r["updated_at"]),
        )
        for r in found
    }


def reset(db: Handle, boxes: Sequence[str]) -> None:
    """Forget the samples and the fits of these boxes (never another store's)."""
    with immediate(db):
        for table in ("calibration_samples", "calibration_fits"):
            db.execute(
                f"DELETE FROM {table} WHERE scanner_id IN ({_in(boxes)})",  # noqa: S608
                list(boxes),
            )
