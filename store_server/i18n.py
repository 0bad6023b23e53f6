"""UI strings in French and English (pure)."""

from __future__ import annotations

from collections.abc import Mapping

LANGUAGES = ("fr", "en")
DEFAULT_LANGUAGE = "fr"

STRINGS: Mapping[str, Mapping[str, str]] = {
    "fr": {
        "app_name": "Bulle",
        "board_title": "Tableau de l'accueil",
        "login_title": "Connexion du personnel",
        "username": "Nom d'utilisateur",
        "password": "Mot de passe",
        "login": "Se connecter",
        "logout": "Se déconnecter",
        "bad_login": "Nom d'utilisateur ou mot de passe incorrect.",
        "throttled": "Trop d'essais. Réessayez dans quelques minutes.",
        "empty_board": "Personne à accueillir pour le moment.",
        "connected": "En direct",
        "reconnecting": "Reconnexion…",
        "greeted": "Salué·e",
        "brought": "Article apporté",
        "dismiss": "Ignorer",
        "pickup_code": "Code de retrait",
        "aisle": "allée",
        "in_stock": "en stock",
        "stock_card": "Vérification de stock",
        "greeting_card": "Accueil",
        "no_name": "Client·e qui souhaite être salué·e",
        "since": "depuis",
        "language": "Langue",
        "signed_in_as": "Connecté·e :",
    },
    "en": {
        "app_name": "Bulle",
        "board_title": "Front desk board",
        "login_title": "Staff sign-in",
        "username": "User name",
        "password": "Password",
        "login": "Sign in",
        "logout": "Sign out",
        "bad_login": "Wrong user name or password.",
        "throttled": "Too many attempts. Try again in a few minutes.",
        "empty_board": "Nobody to greet right now.",
        "connected": "Live",
        "reconnecting": "Reconnecting…",
        "greeted": "Greeted",
        "brought": "Item brought",
        "dismiss": "Dismiss",
        "pickup_code": "Pickup code",
        "aisle": "aisle",
        "in_stock": "in stock",
        "stock_card": "Stock check",
        "greeting_card": "Greeting",
        "no_name": "Customer who asked to be greeted",
        "since": "for",
        "language": "Language",
        "signed_in_as": "Signed in:",
    },
}


def pick_language(query_lang: str | None, cookie_lang: str | None, accept: str | None) -> str:
    """The query parameter wins, then the cookie, then the browser's first known language."""
    for candidate in (query_lang, cookie_lang):
        if candidate in LANGUAGES:
            return candidate
    for part in (accept or "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGUAGES:
            return code
    return DEFAULT_LANGUAGE
