"""Pure tests of the greeting / stock-check policy (store_server.policy)."""

from __future__ import annotations

from datetime import datetime, time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from store_server.consent import Purpose
from store_server.errors import ValidationError
from store_server.policy import (
    GREETING_COOLDOWN_S,
    MAX_NAME_LENGTH,
    CustomerSnapshot,
    Preferences,
    Trigger,
    VisitState,
    WishItem,
    decide,
    validate_name,
)

NOW = 1_763_800_000.0
# A weekday afternoon, store-local.
LOCAL = datetime(2025, 11, 22, 14, 30)

GASKET = WishItem("GAS-GASKET-58", "Joint de groupe 58 mm", "Group head gasket 58 mm", 12, "3")
SCREEN_OUT = WishItem("SHW-SCREEN-58", "Douchette 58 mm", "Shower screen 58 mm", 0, "3")
NOT_STOCKED = WishItem("MIL-BURR-64", "Meules 64 mm", "Burrs 64 mm", None, None)

SYLVIE = Preferences(display_name="Sylvie", name_form="first_name", language="fr")
MADAME = Preferences(display_name="Bédard", title="Madame", name_form="title_last_name")


def snap(
    purposes: set[Purpose],
    prefs: Preferences = SYLVIE,
    wishlist: tuple[WishItem, ...] = (),
) -> CustomerSnapshot:
    return CustomerSnapshot("c_test", frozenset(purposes), prefs, wishlist, "PK7XQ2")


ARRIVED = Trigger("arrived", NOW, "entrance")
CHECK_IN = Trigger("check_in", NOW, "entrance")


def test_no_purpose_records_nothing() -> None:
    assert decide(ARRIVED, snap(set()), VisitState(), local=LOCAL, now=NOW) is None
    assert (
        decide(CHECK_IN, snap(set(), wishlist=(GASKET,)), VisitState(), local=LOCAL, now=NOW)
        is None
    )


@pytest.mark.parametrize(
    ("prefs", "text", "named"),
    [
        (SYLVIE, "Bonjour Sylvie", True),
        (MADAME, "Bonjour Madame Bédard", True),
        (Preferences(display_name="Sylvie", name_form="no_name"), "Bonjour", False),
        (Preferences(display_name="Sylvie", name_form="no_name", language="en"), "Hello", False),
        (
            Preferences(display_name="Sylvie", name_form="first_name", language="en"),
            "Hello Sylvie",
            True,
        ),
        (Preferences(name_form="first_name"), "Bonjour", False),  # no name typed: none shown
    ],
)
def test_greeting_only_uses_chosen_name_form(prefs: Preferences, text: str, named: bool) -> None:
    d = decide(ARRIVED, snap({"greeting"}, prefs, (GASKET,)), VisitState(), local=LOCAL, now=NOW)
    assert d is not None
    assert d.greeting is not None
    assert d.greeting.text == text
    assert d.greeting.named is named
    assert d.greeting.language == prefs.language
    assert d.stock is None  # wishlist present but no stock_check consent
    assert d.message is None
    assert "greeting:consented" in d.reasons
    assert "stock:no_consent" in d.reasons
    assert d.outcome == "greeting"


def test_stock_only_shows_pickup_code_never_a_name() -> None:
    d = decide(
        ARRIVED,
        snap({"stock_check"}, SYLVIE, (GASKET, SCREEN_OUT, NOT_STOCKED)),
        VisitState(),
        local=LOCAL,
        now=NOW,
    )
    assert d is not None
    assert d.greeting is None
    assert d.stock is not None
    assert d.stock.name is None
    assert d.stock.pickup_code == "PK7XQ2"
    assert [(s.sku, s.count, s.aisle) for s in d.stock.items] == [("GAS-GASKET-58", 12, "3")]
    assert d.stock.items[0].name_fr == "Joint de groupe 58 mm"
    assert d.stock.items[0].name_en == "Group head gasket 58 mm"
    assert d.message is not None
    assert d.message.lines_fr == (
        "Joint de groupe 58 mm : en stock ici, allée 3",
        "Douchette 58 mm : pas en stock ici pour le moment",
        "Meules 64 mm : pas en stock ici pour le moment",
    )
    assert d.message.lines_en == (
        "Group head gasket 58 mm: in stock here, aisle 3",
        "Shower screen 58 mm: not in stock here right now",
        "Burrs 64 mm: not in stock here right now",
    )
    assert "greeting:no_consent" in d.reasons
    assert d.outcome == "stock+message"


def test_stock_card_language_follows_the_customer() -> None:
    prefs = Preferences(language="en")
    d = decide(ARRIVED, snap({"stock_check"}, prefs, (GASKET,)), VisitState(), local=LOCAL, now=NOW)
    assert d is not None
    assert d.stock is not None
    # Item names come in both languages: staff read the board's language.
    assert (d.stock.items[0].name_fr, d.stock.items[0].name_en) == (
        "Joint de groupe 58 mm",
        "Group head gasket 58 mm",
    )
    assert d.stock.language == "en"


def test_stock_nothing_in_stock_sends_message_without_card() -> None:
    d = decide(
        ARRIVED, snap({"stock_check"}, SYLVIE, (SCREEN_OUT,)), VisitState(), local=LOCAL, now=NOW
    )
    assert d is not None
    assert d.stock is None
    assert d.message is not None
    assert "stock:nothing_in_stock" in d.reasons


def test_stock_empty_wishlist() -> None:
    d = decide(ARRIVED, snap({"stock_check"}), VisitState(), local=LOCAL, now=NOW)
    assert d is not None
    assert d.outcome == "nothing"
    assert "stock:empty_wishlist" in d.reasons


def test_both_purposes_stock_card_may_carry_name() -> None:
    d = decide(
        ARRIVED,
        snap({"greeting", "stock_check"}, MADAME, (GASKET,)),
        VisitState(),
        local=LOCAL,
        now=NOW,
    )
    assert d is not None
    assert d.greeting is not None
    assert d.greeting.text == "Bonjour Madame Bédard"
    assert d.stock is not None
    assert d.stock.name == "Madame Bédard"
    assert d.outcome == "greeting+stock+message"


def test_both_purposes_no_name_form_keeps_stock_card_anonymous() -> None:
    prefs = Preferences(display_name="Sylvie", name_form="no_name")
    d = decide(
        ARRIVED,
        snap({"greeting", "stock_check"}, prefs, (GASKET,)),
        VisitState(),
        local=LOCAL,
        now=NOW,
    )
    assert d is not None
    assert d.stock is not None
    assert d.stock.name is None


def test_once_per_visit() -> None:
    customer = snap({"greeting", "stock_check"}, SYLVIE, (GASKET,))
    visit = VisitState(greeted=True, stock_shown=True, last_greeted_at=NOW - 10)
    d = decide(CHECK_IN, customer, visit, local=LOCAL, now=NOW)
    assert d is not None
    assert d.greeting is None
    assert d.stock is None
    assert d.message is None
    assert "greeting:already_this_visit" in d.reasons
    assert "stock:already_this_visit" in d.reasons


@pytest.mark.parametrize(
    ("elapsed", "greeted"),
    [
        (GREETING_COOLDOWN_S - 1, False),
        (GREETING_COOLDOWN_S - 0.001, False),
        (GREETING_COOLDOWN_S, True),
        (GREETING_COOLDOWN_S + 1, True),
    ],
)
def test_cooldown_boundary(elapsed: float, greeted: bool) -> None:
    visit = VisitState(last_greeted_at=NOW - elapsed)
    d = decide(ARRIVED, snap({"greeting"}), visit, local=LOCAL, now=NOW)
    assert d is not None
    assert (d.greeting is not None) is greeted
    assert ("greeting:cooldown" in d.reasons) is (not greeted)


def test_after_check_in_waits_for_check_in() -> None:
    prefs = Preferences(display_name="Sylvie", name_form="first_name", greet_mode="after_check_in")
    customer = snap({"greeting"}, prefs)
    d = decide(ARRIVED, customer, VisitState(), local=LOCAL, now=NOW)
    assert d is not None
    assert d.greeting is None
    assert "greeting:waits_for_check_in" in d.reasons
    d = decide(CHECK_IN, customer, VisitState(), local=LOCAL, now=NOW)
    assert d is not None
    assert d.greeting is not None
    assert d.greeting.text == "Bonjour Sylvie"


@pytest.mark.parametrize(
    ("start", "end", "at", "quiet"),
    [
        (time(12, 0), time(14, 0), time(13, 0), True),
        (time(12, 0), time(14, 0), time(12, 0), True),  # start is inclusive
        (time(12, 0), time(14, 0), time(14, 0), False),  # end is exclusive
        (time(12, 0), time(14, 0), time(11, 59), False),
        (time(22, 0), time(7, 0), time(23, 30), True),  # spans midnight
        (time(22, 0), time(7, 0), time(0, 0), True),
        (time(22, 0), time(7, 0), time(6, 59), True),
        (time(22, 0), time(7, 0), time(7, 0), False),
        (time(22, 0), time(7, 0), time(14, 0), False),
    ],
)
def test_quiet_hours(start: time, end: time, at: time, quiet: bool) -> None:
    prefs = Preferences(
        display_name="Sylvie", name_form="first_name", quiet_start=start, quiet_end=end
    )
    local = datetime.combine(LOCAL.date(), at)
    d = decide(ARRIVED, snap({"greeting"}, prefs), VisitState(), local=local, now=NOW)
    assert d is not None
    assert (d.greeting is None) is quiet
    assert ("greeting:quiet_hours" in d.reasons) is quiet


def test_not_today_pauses_both_purposes_only_today() -> None:
    prefs = Preferences(display_name="Sylvie", name_form="first_name", not_today="2025-11-22")
    customer = snap({"greeting", "stock_check"}, prefs, (GASKET,))
    d = decide(ARRIVED, customer, VisitState(), local=LOCAL, now=NOW)
    assert d is not None  # consenting: the decision is recorded with its reason
    assert d.outcome == "nothing"
    assert "not_today" in d.reasons
    tomorrow = datetime(2025, 11, 23, 14, 30)
    d = decide(ARRIVED, customer, VisitState(), local=tomorrow, now=NOW + 86400)
    assert d is not None
    assert d.greeting is not None
    assert d.stock is not None


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Marie-Ève", "Marie-Ève"),
        ("O'Neil", "O'Neil"),
        ("  Sylvie   Bédard ", "Sylvie Bédard"),
        ("Mme.", "Mme."),
        ("Zoë", "Zoë"),
    ],
)
def test_validate_name_accepts(raw: str, clean: str) -> None:
    assert validate_name(raw) == clean


@pytest.mark.parametrize(
    "raw",
    ["R2D2", "Sylvie2", "<b>Sylvie</b>", "Sylvie <b>", "", "   ", "a_b", "Anne;DROP", "-Anne"],
)
def test_validate_name_refuses(raw: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_name(raw, "title")
    assert info.value.field == "title"


def test_validate_name_too_long_names_field() -> None:
    validate_name("A" * MAX_NAME_LENGTH)
    with pytest.raises(ValidationError) as info:
        validate_name("A" * (MAX_NAME_LENGTH + 1))
    assert info.value.field == "display_name"
    assert str(MAX_NAME_LENGTH) in info.value.message


# -- properties ----------------------------------------------------------------------------

names = st.text(alphabet=st.characters(categories=["Lu", "Ll"]), min_size=1, max_size=12)
prefs_strategy = st.builds(
    Preferences,
    display_name=st.one_of(st.none(), names),
    title=st.one_of(st.none(), names),
    name_form=st.sampled_from(["first_name", "title_last_name", "no_name"]),
    language=st.sampled_from(["fr", "en"]),
    greet_mode=st.sampled_from(["on_arrival", "after_check_in"]),
    quiet_start=st.one_of(st.none(), st.times()),
    quiet_end=st.one_of(st.none(), st.times()),
    not_today=st.one_of(st.none(), st.just("2025-11-22")),
)
items_strategy = st.lists(
    st.builds(
        WishItem,
        sku=st.sampled_from(["A", "B", "C"]),
        name_fr=st.just("article"),
        name_en=st.just("item"),
        count=st.one_of(st.none(), st.integers(0, 20)),
        aisle=st.one_of(st.none(), st.just("3")),
    ),
    max_size=4,
).map(tuple)
visits = st.builds(
    VisitState,
    greeted=st.booleans(),
    stock_shown=st.booleans(),
    last_greeted_at=st.one_of(st.none(), st.floats(NOW - 10 * 3600, NOW)),
    checked_in=st.booleans(),
)
triggers = st.builds(
    Trigger,
    kind=st.sampled_from(["arrived", "check_in"]),
    t=st.just(NOW),
    zone=st.none(),
)
local_times = st.datetimes(
    min_value=datetime(2025, 11, 21), max_value=datetime(2025, 11, 23, 23, 59)
)


@given(
    purposes=st.sampled_from([frozenset(), frozenset({"stock_check"})]),
    prefs=prefs_strategy,
    wishlist=items_strategy,
    visit=visits,
    trigger=triggers,
    local=local_times,
)
def test_without_greeting_consent_no_name_ever_reaches_staff(
    purposes: frozenset[Purpose],
    prefs: Preferences,
    wishlist: tuple[WishItem, ...],
    visit: VisitState,
    trigger: Trigger,
    local: datetime,
) -> None:
    customer = CustomerSnapshot("c_x", purposes, prefs, wishlist, "PK7XQ2")
    d = decide(trigger, customer, visit, local=local, now=NOW)
    if not purposes:
        assert d is None
        return
    assert d is not None
    assert d.greeting is None
    if d.stock is not None:
        assert d.stock.name is None
        for name in (prefs.display_name, prefs.title):
            if name:
                assert all(name not in (line.name_fr, line.name_en) for line in d.stock.items)


@given(
    purposes=st.sampled_from([frozenset({"greeting"}), frozenset({"greeting", "stock_check"})]),
    prefs=prefs_strategy,
    wishlist=items_strategy,
    visit=visits,
    trigger=triggers,
    local=local_times,
)
def test_greeting_shows_name_only_in_chosen_form(
    purposes: frozenset[Purpose],
    prefs: Preferences,
    wishlist: tuple[WishItem, ...],
    visit: VisitState,
    trigger: Trigger,
    local: datetime,
) -> None:
    customer = CustomerSnapshot("c_x", purposes, prefs, wishlist, "PK7XQ2")
    d = decide(trigger, customer, visit, local=local, now=NOW)
    assert d is not None
    if visit.greeted:
        assert d.greeting is None
    if d.greeting is not None:
        word = "Bonjour" if prefs.language == "fr" else "Hello"
        assert d.greeting.text.startswith(word)
        if prefs.name_form == "no_name":
            assert d.greeting.text == word
            assert not d.greeting.named
        expected = {
            "no_name": word,
            "first_name": f"{word} {prefs.display_name}" if prefs.display_name else word,
            "title_last_name": (
                " ".join(p for p in (word, prefs.title, prefs.display_name) if p)
                if prefs.display_name
                else word
            ),
        }[prefs.name_form]
        assert d.greeting.text == expected
        assert d.greeting.named is (expected != word)
