"""Sign-in throttling (pure, explicit time) and the client address behind trusted proxies.

Two rules, both counting attempts still being checked (in flight) as well as recent
failures, so that they hold however many attempts arrive at once:

- per client address: LOGIN_MAX_FAILURES failures within LOGIN_WINDOW_S refuse further
  attempts from that address (429) for the rest of the window, whatever the user name;
- per account: never a lock-out (anyone who knows a user name could lock its owner out);
  past LOGIN_MAX_FAILURES failures from anywhere, each attempt on the account waits a
  back-off that doubles with every further failure, up to LOGIN_BACKOFF_MAX_S. The right
  password still signs in, a little later; guessing from many addresses is slowed down.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

# Five failed sign-ins per address within 15 minutes: enough for typos, far too few for
# guessing.
LOGIN_MAX_FAILURES = 5
LOGIN_WINDOW_S = 15 * 60
# First back-off on an account past LOGIN_MAX_FAILURES failures, doubled at each further one.
LOGIN_BACKOFF_BASE_S = 0.5
# Longest back-off: slow enough against guessing from many addresses, short enough that the
# account's owner still signs in.
LOGIN_BACKOFF_MAX_S = 8.0
# Keys remembered at most (addresses and accounts): a flood of distinct addresses cannot grow
# the table without bound; the oldest idle keys are forgotten first.
MAX_TRACKED_KEYS = 100_000

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(slots=True)
class _Counter:
    failures: deque[float] = field(default_factory=deque)
    in_flight: int = 0

    def recent(self, now: float, window_s: float) -> int:
        while self.failures and now - self.failures[0] > window_s:
            self.failures.popleft()
        return len(self.failures) + self.in_flight


@dataclass(frozen=True, slots=True)
class Attempt:
    """A sign-in being checked: pass it back to `SignInThrottle.end`."""

    account: str
    address: str
    delay_s: float


class SignInThrottle:
    def __init__(
        self,
        max_failures: int = LOGIN_MAX_FAILURES,
        window_s: float = LOGIN_WINDOW_S,
        backoff_base_s: float = LOGIN_BACKOFF_BASE_S,
        backoff_max_s: float = LOGIN_BACKOFF_MAX_S,
    ) -> None:
        self._max = max_failures
        self._window = window_s
        self._base = backoff_base_s
        self._cap = backoff_max_s
        self._counters: dict[str, _Counter] = {}

    def _counter(self, key: str) -> _Counter:
        counter = self._counters.pop(key, None) or _Counter()
        self._counters[key] = counter  # most recently used last
        while len(self._counters) > MAX_TRACKED_KEYS:
            oldest = next(iter(self._counters))
            if self._counters[oldest].in_flight:
                break
            del self._counters[oldest]
        return counter

    def begin(self, account: str, address: str, now: float) -> Attempt | None:
        """Start an attempt, or None when the address is refused (429)."""
        by_address = self._counter(f"addr:{address}")
        if by_address.recent(now, self._window) >= self._max:
            return None
        by_account = self._counter(f"user:{account}")
        excess = by_account.recent(now, self._window) - self._max
        delay = 0.0 if excess < 0 else min(self._base * 2.0 ** min(excess, 32), self._cap)
        by_address.in_flight += 1
        by_account.in_flight += 1
        return Attempt(account, address, delay)

    def end(self, attempt: Attempt, failed: bool, now: float) -> None:
        """Finish an attempt; a failure counts against its address and its account."""
        for key in (f"addr:{attempt.address}", f"user:{attempt.account}"):
            counter = self._counter(key)
            counter.in_flight = max(0, counter.in_flight - 1)
            if failed:
                counter.failures.append(now)


def parse_networks(values: Iterable[str]) -> tuple[IpNetwork, ...]:
    """Proxy addresses or networks ("10.0.0.5", "10.0.0.0/24", "::1"); ValueError if invalid."""
    return tuple(ipaddress.ip_network(value.strip(), strict=False) for value in values)


def client_address(
    peer: str | None, forwarded_for: Iterable[str], trusted: tuple[IpNetwork, ...]
) -> str:
    """The address of the client: the TCP peer, unless the peer is a trusted proxy.

    Behind trusted proxies, X-Forwarded-For is read from the right (each proxy appends the
    address it received the request from) and the first address that is not a trusted proxy
    is the client. Anything the client itself put at the left is never believed.
    """
    address = peer or "unknown"
    if not trusted or not _is_trusted(address, trusted):
        return address
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        if not hop:
            continue
        if not _is_trusted(hop, trusted):
            return _normal(hop)
        address = hop
    return address


def _is_trusted(address: str, trusted: tuple[IpNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def _normal(address: str) -> str:
    """A parsed address in canonical form; anything else as an opaque, bounded key."""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return "invalid:" + address[:64]
