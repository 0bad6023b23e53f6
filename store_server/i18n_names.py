"""Names of the codes stored in the database, and form errors, in French and English (pure).

The database keeps short codes (``greeting``, ``grant``, ``shown``, ``line 3, count``); pages
show their names in the page's language. A code without a name is shown as a generic word of
the page's language, never as the raw code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

# Code kind -> code -> name, per language. Kinds: purpose, consent_action, channel,
# access_action, scope, via, adapter (a scanner's Bluetooth adapter state).
NAMES: Mapping[str, Mapping[str, Mapping[str, str]]] = {
    "fr": {
        "purpose": {"greeting": "Accueil par le personnel", "stock_check": "Vérification de stock"},
        "consent_action": {
            "grant": "accord donné",
            "renew": "accord renouvelé",
            "withdraw": "accord retiré",
            "erase": "compte effacé",
        },
        "channel": {"app": "application", "web": "site web", "in_store": "en boutique"},
        "access_action": {
            "shown": "carte affichée au tableau",
            "greeted": "client·e salué·e",
            "brought": "article apporté",
            "dismissed": "carte ignorée",
            "audit_view": "consultation du journal des accès",
        },
        "scope": {"store": "cette boutique", "chain": "toutes les boutiques de l'enseigne"},
        "via": {
            "beacon": "détectée par les capteurs",
            "check_in": "« Je suis là » touché dans l'application, sans preuve",
            "beacon_proof": "« Je suis là » avec preuve de présence (balise de la boutique)",
        },
        "adapter": {
            "powered": "allumé",
            "off": "éteint",
            "missing": "absent",
            "simulated": "simulé",
            "replay": "relecture",
        },
    },
    "en": {
        "purpose": {"greeting": "Greeting by staff", "stock_check": "Stock check"},
        "consent_action": {
            "grant": "consent given",
            "renew": "consent renewed",
            "withdraw": "consent withdrawn",
            "erase": "account erased",
        },
        "channel": {"app": "app", "web": "website", "in_store": "in store"},
        "access_action": {
            "shown": "card shown on the board",
            "greeted": "customer greeted",
            "brought": "item brought",
            "dismissed": "card dismissed",
            "audit_view": "access log viewed",
        },
        "scope": {"store": "this shop", "chain": "every shop of the chain"},
        "via": {
            "beacon": "detected by the scanners",
            "check_in": "“I'm here” tapped in the app, without proof",
            "beacon_proof": "“I'm here” with a proof of presence (the shop's beacon)",
        },
        "adapter": {
            "powered": "powered on",
            "off": "off",
            "missing": "missing",
            "simulated": "simulated",
            "replay": "replay",
        },
    },
}

# What a code without a name is shown as.
UNKNOWN_NAME = {"fr": "autre", "en": "other"}


def name_of(lang: str, kind: str, code: str | None) -> str:
    """The name of ``code`` in ``lang`` ("—" for no code, a generic word for an unknown one)."""
    if code is None or code == "":
        return "—"
    return NAMES[lang].get(kind, {}).get(code, UNKNOWN_NAME[lang])


# Form errors. The server's messages are English sentences meant for logs and the API; a page
# shows the reason in its own language instead, by the error's reason key.
REASONS: Mapping[str, Mapping[str, str]] = {
    "fr": {
        "negative": "le nombre ne peut pas être négatif.",
        "whole_number": "entrez un nombre entier.",
        "number": "entrez un nombre.",
        "empty": "ce champ ne peut pas être vide.",
        "username_chars": "lettres, chiffres, « . », « - » et « _ » seulement (64 au plus).",
        "identifier": "lettres, chiffres, « - » et « _ » seulement (64 au plus).",
        "password_short": "12 caractères au moins.",
        "role": "choisissez « personnel » ou « gérant·e ».",
        "choose_file": "choisissez un fichier CSV.",
        "not_utf8": "le fichier n'est pas du texte UTF-8.",
        "header": "la première ligne doit être l'en-tête indiqué ci-dessus.",
        "too_many_rows": "le fichier a trop de lignes.",
        "exists": "ce nom est déjà utilisé.",
        "registered": (
            "ce capteur est déjà enregistré : cochez « remplacer son secret » pour lui en "
            "donner un nouveau (l'ancien cessera de fonctionner)."
        ),
        "self_disable": "vous ne pouvez pas désactiver votre propre compte.",
        "range": "entrez une valeur entre -30 et 30 dB.",
        "other": "valeur refusée.",
    },
    "en": {
        "negative": "the number cannot be negative.",
        "whole_number": "enter a whole number.",
        "number": "enter a number.",
        "empty": "this field cannot be empty.",
        "username_chars": "letters, digits, “.”, “-” and “_” only (64 at most).",
        "identifier": "letters, digits, “-” and “_” only (64 at most).",
        "password_short": "12 characters or more.",
        "role": "choose “staff” or “manager”.",
        "choose_file": "choose a CSV file.",
        "not_utf8": "the file is not UTF-8 text.",
        "header": "the first line must be the header shown above.",
        "too_many_rows": "the file has too many lines.",
        "exists": "this name is already taken.",
        "registered": (
            'this scanner is already registered: tick "replace its secret" to give it a new '
            "one (the old one will stop working)."
        ),
        "self_disable": "you cannot disable your own account.",
        "range": "enter a value between -30 and 30 dB.",
        "other": "value refused.",
    },
}

# Column names of the stock CSV, as a manager reads them.
COLUMNS: Mapping[str, Mapping[str, str]] = {
    "fr": {
        "sku": "référence",
        "name_fr": "nom français",
        "name_en": "nom anglais",
        "count": "quantité",
        "aisle": "allée",
    },
    "en": {
        "sku": "SKU",
        "name_fr": "French name",
        "name_en": "English name",
        "count": "count",
        "aisle": "aisle",
    },
}
_LINE = {"fr": "Ligne {line}", "en": "Line {line}"}
_LINE_FIELD = re.compile(r"line (\d+)(?:, (\w+))?(?:, column (\d+))?")


@dataclass(frozen=True, slots=True)
class FieldError:
    """A form error as a page shows it: the form field it belongs to and the sentence."""

    field: str
    text: str


def field_error(lang: str, field: str | None, reason: str | None, default_field: str) -> FieldError:
    """The error of a form, in ``lang``, attached to ``field`` (or ``default_field``):
    ``reason`` is the error's key in REASONS (``StoreServerError.reason``; unknown or None:
    "other").

    A stock file's ``line N, column`` is kept (the manager must find the line) and shown in
    the page's language; the error belongs to the file field.
    """
    reasons = REASONS[lang]
    text = reasons.get(reason or "other", reasons["other"])
    match = _LINE_FIELD.fullmatch(field or "")
    if match is None:
        return FieldError(field or default_field, _capitalize(text))
    where = _LINE[lang].format(line=match.group(1))
    column = match.group(2)
    if column:
        where += f", {COLUMNS[lang].get(column, column)}"
    sep = " : " if lang == "fr" else ": "
    return FieldError(default_field, where + sep + text)


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


# The customer's "My data" page: labels, and the names of the codes it shows (sent to the page
# as JSON; the export keeps the codes).
RECORDS: Mapping[str, Mapping[str, str]] = {
    "fr": {
        "customer_id": "Numéro de client",
        "created_at": "Compte créé le",
        "display_name": "Nom à utiliser",
        "title": "Titre",
        "name_form": "Forme du nom",
        "language": "Langue de l'accueil",
        "greet_mode": "Quand me saluer",
        "quiet_hours": "Heures tranquilles",
        "not_today": "Pas aujourd'hui",
        "pickup_code": "Code de retrait",
        "ibeacon_id": "Identifiant iBeacon fixe (suivable)",
        "identity": "Clé remise le {date} ; l'identifiant diffusé change toutes les {minutes} min.",
        "consent": (
            "{purpose} : accord donné le {granted}, valable jusqu'au {expires} ({scope}) ; {state}."
        ),
        "consent_active": "en vigueur",
        "consent_inactive": "plus en vigueur",
        "history": "{date} : {action}, {purpose}, par {channel}.",
        "wish": "{name}, ajouté le {date}",
        "visit": "Visite du {date}, de {from} à {to} : {zone}, {via}.",
        "visit_open": "en cours",
        "decision": "{date} : {outcome} ; motifs : {reasons}.",
        "card_greeting": "{date} : carte d'accueil « {text} » montrée au personnel ; {state}.",
        "card_stock": (
            "{date} : carte de vérification de stock (code de retrait {code}) montrée au "
            "personnel : {items} ; {state}."
        ),
        "item": "{name} ({count} en stock, allée {aisle})",
        "access": "{date} : {user}, {action}.",
        "language_fr": "français",
        "language_en": "anglais",
        "outcome_greeting": "carte d'accueil",
        "outcome_stock": "carte de stock",
        "outcome_message": "message à l'application",
        "outcome_nothing": "rien",
        "state_open": "encore affichée",
        "state_greeted": "client·e salué·e",
        "state_brought": "article apporté",
        "state_dismissed": "ignorée",
        "state_retracted": "retirée du tableau",
        "state_by": "{state} par {user} le {date}",
        "reason_not_today": "« pas aujourd'hui » demandé",
        "reason_greeting:already_this_visit": "déjà salué·e pendant cette visite",
        "reason_greeting:cooldown": "salué·e il y a moins de quatre heures",
        "reason_greeting:waits_for_check_in": "accueil après « Je suis là » seulement",
        "reason_greeting:quiet_hours": "heures tranquilles",
        "reason_greeting:consented": "accueil accepté",
        "reason_greeting:no_consent": "pas d'accord pour l'accueil",
        "reason_stock:already_this_visit": "stock déjà vérifié pendant cette visite",
        "reason_stock:empty_wishlist": "liste vide",
        "reason_stock:consented": "vérification de stock acceptée",
        "reason_stock:nothing_in_stock": "rien de la liste en stock",
        "reason_stock:no_consent": "pas d'accord pour le stock",
    },
    "en": {
        "customer_id": "Customer number",
        "created_at": "Account created on",
        "display_name": "Name to use",
        "title": "Title",
        "name_form": "Name form",
        "language": "Greeting language",
        "greet_mode": "When to greet me",
        "quiet_hours": "Quiet hours",
        "not_today": "Not today",
        "pickup_code": "Pickup code",
        "ibeacon_id": "Static iBeacon id (trackable)",
        "identity": "Key issued on {date}; the broadcast identifier changes every {minutes} min.",
        "consent": (
            "{purpose}: consent given on {granted}, valid until {expires} ({scope}); {state}."
        ),
        "consent_active": "in force",
        "consent_inactive": "no longer in force",
        "history": "{date}: {action}, {purpose}, through the {channel}.",
        "wish": "{name}, added on {date}",
        "visit": "Visit on {date}, from {from} to {to}: {zone}, {via}.",
        "visit_open": "ongoing",
        "decision": "{date}: {outcome}; reasons: {reasons}.",
        "card_greeting": "{date}: greeting card “{text}” shown to staff; {state}.",
        "card_stock": (
            "{date}: stock check card (pickup code {code}) shown to staff: {items}; {state}."
        ),
        "item": "{name} ({count} in stock, aisle {aisle})",
        "access": "{date}: {user}, {action}.",
        "language_fr": "French",
        "language_en": "English",
        "outcome_greeting": "greeting card",
        "outcome_stock": "stock card",
        "outcome_message": "message to the app",
        "outcome_nothing": "nothing",
        "state_open": "still on the board",
        "state_greeted": "customer greeted",
        "state_brought": "item brought",
        "state_dismissed": "dismissed",
        "state_retracted": "taken off the board",
        "state_by": "{state} by {user} on {date}",
        "reason_not_today": "“not today” asked",
        "reason_greeting:already_this_visit": "already greeted during this visit",
        "reason_greeting:cooldown": "greeted less than four hours ago",
        "reason_greeting:waits_for_check_in": "greeting only after “I'm here”",
        "reason_greeting:quiet_hours": "quiet hours",
        "reason_greeting:consented": "greeting accepted",
        "reason_greeting:no_consent": "no consent to greeting",
        "reason_stock:already_this_visit": "stock already checked during this visit",
        "reason_stock:empty_wishlist": "empty list",
        "reason_stock:consented": "stock check accepted",
        "reason_stock:nothing_in_stock": "nothing of the list in stock",
        "reason_stock:no_consent": "no consent to stock checks",
    },
}
