"""Greeting and stock-check policy (pure): what to show, to whom, and why.

Given a trigger (an arrival seen by the presence engine, or an explicit check-in), the
customer's consents and preferences at that instant, and what already happened in this
visit, `decide` returns the cards and app message to emit with the reasons. It returns None
when the customer has no active consent at all: nothing may be recorded about them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Literal

from store_server.consent import Purpose
from store_server.errors import ValidationError

NameForm = Literal["first_name", "title_last_name", "no_name"]
Language = Literal["fr", "en"]
GreetMode = Literal["on_arrival", "after_check_in"]
TriggerKind = Literal["arrived", "check_in"]

# Someone who steps out and back in within four hours is not greeted a second time.
GREETING_COOLDOWN_S = 4 * 3600
# Names are what the customer typed; letters, spaces, apostrophes, hyphens and dots only,
# so a card can never carry markup or a message to staff.
_NAME_RE = re.compile(r"^[^\W\d_]+(?:[ '’.-][^\W\d_]+)*\.?$")
# Long enough for "Marie-Ève Saint-Laurent-Beauchemin", short enough for a tablet card.
MAX_NAME_LENGTH = 40
_GREETING_WORD = {"fr": "Bonjour", "en": "Hello"}


@dataclass(frozen=True, slots=True)
class Preferences:
    display_name: str | None = None
    title: str | None = None
    name_form: NameForm = "no_name"
    language: Language = "fr"
    greet_mode: GreetMode = "on_arrival"
    quiet_start: time | None = None
    quiet_end: time | None = None
    not_today: str | None = None  # ISO date (store-local) on which the customer said "not today"


@dataclass(frozen=True, slots=True)
class WishItem:
    sku: str
    name_fr: str
    name_en: str
    count: int | None  # None: not stocked at this store
    aisle: str | None


@dataclass(frozen=True, slots=True)
class CustomerSnapshot:
    customer_id: str
    purposes: frozenset[Purpose]
    preferences: Preferences
    wishlist: tuple[WishItem, ...]
    pickup_code: str


@dataclass(frozen=True, slots=True)
class VisitState:
    greeted: bool = False
    stock_shown: bool = False
    last_greeted_at: float | None = None
    checked_in: bool = False


@dataclass(frozen=True, slots=True)
class Trigger:
    kind: TriggerKind
    t: float
    zone: str | None


@dataclass(frozen=True, slots=True)
class GreetingCard:
    text: str
    language: Language
    named: bool


@dataclass(frozen=True, slots=True)
class StockLine:
    sku: str
    name_fr: str
    name_en: str
    count: int
    aisle: str | None


@dataclass(frozen=True, slots=True)
class StockCard:
    pickup_code: str
    name: str | None  # only with greeting consent and a name form that shows one
    language: Language
    items: tuple[StockLine, ...]


@dataclass(frozen=True, slots=True)
class AppMessage:
    lines_fr: tuple[str, ...]
    lines_en: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Decision:
    greeting: GreetingCard | None = None
    stock: StockCard | None = None
    message: AppMessage | None = None
    reasons: tuple[str, ...] = field(default=())

    @property
    def outcome(self) -> str:
        parts = [
            name
            for name, value in (
                ("greeting", self.greeting),
                ("stock", self.stock),
                ("message", self.message),
            )
            if value is not None
        ]
        return "+".join(parts) or "nothing"


def validate_name(value: str, field_name: str = "display_name") -> str:
    """Normalise and check a customer-chosen name or title (ValidationError names the field)."""
    name = " ".join(value.split())
    if not name:
        raise ValidationError("must not be empty", field=field_name)
    if len(name) > MAX_NAME_LENGTH:
        raise ValidationError(f"at most {MAX_NAME_LENGTH} characters", field=field_name)
    if not _NAME_RE.match(name):
        raise ValidationError(
            "letters, spaces, apostrophes, hyphens and dots only", field=field_name
        )
    return name


def shown_name(prefs: Preferences) -> str | None:
    """The name staff may see, in the form the customer chose, or None."""
    if prefs.name_form == "first_name" and prefs.display_name:
        return prefs.display_name
    if prefs.name_form == "title_last_name" and prefs.display_name:
        return f"{prefs.title} {prefs.display_name}" if prefs.title else prefs.display_name
    return None


def greeting_text(prefs: Preferences) -> str:
    word = _GREETING_WORD[prefs.language]
    name = shown_name(prefs)
    return f"{word} {name}" if name else word


def in_quiet_hours(prefs: Preferences, local: datetime) -> bool:
    if prefs.quiet_start is None or prefs.quiet_end is None:
        return False
    now = local.time()
    if prefs.quiet_start <= prefs.quiet_end:
        return prefs.quiet_start <= now < prefs.quiet_end
    return now >= prefs.quiet_start or now < prefs.quiet_end  # spans midnight


def _stock_lines(customer: CustomerSnapshot) -> tuple[tuple[StockLine, ...], AppMessage]:
    lines: list[StockLine] = []
    fr: list[str] = []
    en: list[str] = []
    for item in customer.wishlist:
        if item.count:
            # Both names: staff read the card in the board's language, not the customer's.
            lines.append(StockLine(item.sku, item.name_fr, item.name_en, item.count, item.aisle))
            fr.append(f"{item.name_fr} : en stock ici, allée {item.aisle}")
            en.append(f"{item.name_en}: in stock here, aisle {item.aisle}")
        else:
            fr.append(f"{item.name_fr} : pas en stock ici pour le moment")
            en.append(f"{item.name_en}: not in stock here right now")
    return tuple(lines), AppMessage(tuple(fr), tuple(en))


def decide(
    trigger: Trigger,
    customer: CustomerSnapshot,
    visit: VisitState,
    *,
    local: datetime,
    now: float,
) -> Decision | None:
    """Decide the cards and message for `trigger`; None when nothing may be recorded."""
    purposes = customer.purposes
    if not purposes:
        return None
    prefs = customer.preferences
    reasons: list[str] = []
    greeting: GreetingCard | None = None
    stock: StockCard | None = None
    message: AppMessage | None = None
    paused = prefs.not_today == local.date().isoformat()
    if paused:
        reasons.append("not_today")
    if "greeting" in purposes and not paused:
        if visit.greeted:
            reasons.append("greeting:already_this_visit")
        elif (
            visit.last_greeted_at is not None and now - visit.last_greeted_at < GREETING_COOLDOWN_S
        ):
            reasons.append("greeting:cooldown")
        elif prefs.greet_mode == "after_check_in" and trigger.kind != "check_in":
            reasons.append("greeting:waits_for_check_in")
        elif in_quiet_hours(prefs, local):
            reasons.append("greeting:quiet_hours")
        else:
            greeting = GreetingCard(
                greeting_text(prefs), prefs.language, shown_name(prefs) is not None
            )
            reasons.append("greeting:consented")
    elif "greeting" not in purposes:
        reasons.append("greeting:no_consent")
    if "stock_check" in purposes and not paused:
        if visit.stock_shown:
            reasons.append("stock:already_this_visit")
        elif not customer.wishlist:
            reasons.append("stock:empty_wishlist")
        else:
            lines, message = _stock_lines(customer)
            if lines:
                name = shown_name(prefs) if "greeting" in purposes else None
                stock = StockCard(customer.pickup_code, name, prefs.language, lines)
                reasons.append("stock:consented")
            else:
                reasons.append("stock:nothing_in_stock")
    elif "stock_check" not in purposes:
        reasons.append("stock:no_consent")
    return Decision(greeting, stock, message, tuple(reasons))
