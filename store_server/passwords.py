"""Staff passwords: argon2id hashing, the common-password blocklist, verification off the loop.

Hashing and verifying are CPU work (argon2id with argon2-cffi's defaults: 64 MiB, several
lanes). They never run on the event loop nor on the database thread, where a burst of
sign-ins would stall scanner batches: `PasswordVerifier` runs them on its own small thread
pool, with a bounded queue in front of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from store_server.errors import RateLimitedError, ValidationError

# 12 characters: the shortest password NIST SP 800-63B lets an operator require without
# composition rules, long enough against offline guessing with argon2id.
MIN_PASSWORD_LENGTH = 12
# zxcvbn score 3 = at least 10^8 guesses: common passwords (its list of leaked passwords),
# keyboard walks, sequences, repeats and the user's own name score lower and are refused
# (the blocklist NIST SP 800-63B asks for).
MIN_PASSWORD_SCORE = 3
# zxcvbn only looks at this many characters; longer passwords are judged on their start
# (its matching is quadratic in the length).
ZXCVBN_MAX_CHARS = 100
# Context words a password must not be built on.
CONTEXT_WORDS = ("bulle", "store", "magasin", "staff", "manager")
# One hash at a time: argon2id already uses several threads (lanes) and 64 MiB; one more at
# once would take the cores the event loop and the database thread need for ingestion.
HASH_WORKERS = 1
# The hashing thread runs this much nicer than the server (Linux: per thread; argon2's lane
# threads inherit it), so that the event loop and the database thread get the CPU first: a
# burst of sign-ins then delays a scanner batch by milliseconds, not by the hashes' CPU time.
HASH_NICE_INCREMENT = 10
# The nicest value there is.
MAX_NICE = 19
# Sign-ins waiting for the hasher beyond this are answered 429 at once instead of queueing
# (each waiting one holds a connection; the per-address limit keeps honest users far below).
HASH_QUEUE_MAX = 32

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """A hash of a random password, verified when the user does not exist, so that the answer
    takes as long as for a real user (no user enumeration by timing).

    Made on first use, not at import: one argon2id hash takes 64 MiB for a moment, which a
    command that never checks a password need not pay.
    """
    return _hasher.hash(secrets.token_urlsafe(16))


def check_new_password(password: str, username: str) -> None:
    """Refuse (ValidationError on `password`) a short, common or guessable password."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError(
            f"password must have at least {MIN_PASSWORD_LENGTH} characters",
            field="password",
            reason="password_short",
        )
    # Imported here: its word lists take about a second to load, which the server's start-up
    # and the commands that never add an account need not pay.
    from zxcvbn import zxcvbn

    result = zxcvbn(password[:ZXCVBN_MAX_CHARS], user_inputs=[username, *CONTEXT_WORDS])
    if int(result["score"]) < MIN_PASSWORD_SCORE:
        raise ValidationError(
            "password is too common or too easy to guess (a common password, a sequence,"
            " a repeat or the user name); a few unrelated words make a good one",
            field="password",
        )


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether `password` matches; a missing hash (unknown user) costs as much and is False."""
    try:
        _hasher.verify(_dummy_hash() if password_hash is None else password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
    return password_hash is not None


def _lower_priority() -> None:
    """Lower the calling thread's CPU priority (best effort: not every OS has per-thread
    nice values; where it is refused the pool still bounds the hashes' concurrency)."""
    with contextlib.suppress(OSError, AttributeError):
        thread = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(current + HASH_NICE_INCREMENT, MAX_NICE))


class PasswordVerifier:
    """argon2id verification on a dedicated thread pool, with bounded concurrency and queue."""

    def __init__(self, workers: int = HASH_WORKERS, queue_max: int = HASH_QUEUE_MAX) -> None:
        self._executor = ThreadPoolExecutor(
            workers, thread_name_prefix="argon2", initializer=_lower_priority
        )
        self._queue_max = queue_max
        self._pending = 0

    @property
    def pending(self) -> int:
        """Verifications queued or running."""
        return self._pending

    async def verify(self, password_hash: str | None, password: str) -> bool:
        if self._pending >= self._queue_max:
            raise RateLimitedError("too many sign-ins at once; try again in a moment")
        self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._executor, verify_password, password_hash, password
            )
        finally:
            self._pending -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
