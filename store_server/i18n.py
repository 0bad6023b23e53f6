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
        # Customer app (reference client served under /app/).
        "app_title": "Mon compte Bulle",
        "app_nav": "Menu du compte",
        "app_home": "Accueil",
        "app_consents": "Mes accords",
        "app_preferences": "Comment me saluer",
        "app_wishlist": "Ma liste",
        "app_my_data": "Mes données",
        "app_enroll_title": "Activer l'application dans cette boutique",
        "app_enroll_intro": (
            "L'application reçoit une clé secrète qui lui permet de diffuser un identifiant "
            "changeant. Rien n'est activé tant que vous n'avez pas donné votre accord."
        ),
        "app_enroll": "Activer",
        "app_enrolled": (
            "Une clé a été remise à cet appareil. Elle reste dans l'application et n'est "
            "jamais affichée."
        ),
        "app_not_enrolled": "Cet appareil n'est pas encore activé.",
        "app_check_in": "Je suis là",
        "app_check_in_help": (
            "Prévient la boutique que vous êtes entré·e, si vous avez donné un accord."
        ),
        "app_checked_in": "C'est noté : la boutique sait que vous êtes là.",
        "app_check_in_no_consent": "Aucun accord actif : la boutique n'a rien enregistré.",
        "app_not_today": "Pas aujourd'hui",
        "app_not_today_help": "Personne ne vous salue et aucun stock n'est vérifié jusqu'à demain.",
        "app_not_today_set": "Compris : pas aujourd'hui.",
        "app_messages": "Messages de la boutique",
        "app_no_messages": "Aucun message.",
        "app_purpose_greeting": "Être salué·e à mon arrivée",
        "app_purpose_stock_check": "Vérifier le stock de ma liste",
        "app_consent_intro": (
            "Lisez le texte exact. Rien n'est coché d'avance ; vous pouvez retirer votre "
            "accord d'un seul geste."
        ),
        "app_consent_version": "Version du texte",
        "app_consent_hash": "Empreinte du texte",
        "app_consent_agree": "J'ai lu ce texte et je donne mon accord",
        "app_grant": "Donner mon accord",
        "app_withdraw": "Retirer mon accord",
        "app_consent_active": "Accord donné",
        "app_consent_none": "Pas d'accord",
        "app_withdrawn": "Accord retiré. La boutique ne vous reconnaît plus.",
        "app_display_name": "Nom à utiliser",
        "app_display_name_help": "Prénom, ou nom de famille avec la forme « titre et nom ».",
        "app_title_field": "Titre (Madame, Monsieur, Mx…)",
        "app_name_form": "Forme du nom",
        "app_form_first_name": "Mon prénom",
        "app_form_title_last_name": "Titre et nom",
        "app_form_no_name": "Aucun nom",
        "app_greet_language": "Langue de l'accueil",
        "app_greet_mode": "Quand me saluer",
        "app_mode_on_arrival": "Dès mon arrivée",
        "app_mode_after_check_in": "Seulement après « Je suis là »",
        "app_quiet_hours": "Heures tranquilles (aucun accueil)",
        "app_quiet_start": "Début",
        "app_quiet_end": "Fin",
        "app_preview": "Ce que verra le personnel",
        "app_save": "Enregistrer",
        "app_saved": "Enregistré.",
        "app_stock_here": "en stock ici",
        "app_not_stocked": "pas en stock ici",
        "app_export": "Télécharger mes données (JSON)",
        "app_erase": "Effacer mon compte",
        "app_erase_confirm": "Oui, tout effacer définitivement",
        "app_erase_warning": (
            "Vos accords, préférences, liste, visites et la clé de l'application seront "
            "effacés. La preuve anonymisée des accords est conservée."
        ),
        "app_erased": "Votre compte a été effacé.",
        "app_my_data_intro": "Tout ce que la boutique conserve sur vous.",
        "app_my_data_unavailable": (
            "Ces données ne sont pas disponibles sur ce serveur pour le moment."
        ),
        "app_empty": "(rien)",
        "app_error": "Quelque chose n'a pas fonctionné :",
        "app_yes": "oui",
        "app_no": "non",
        "app_rec_generated_at": "Extrait le",
        "app_rec_store_id": "Boutique",
        "app_rec_profile": "Profil et préférences",
        "app_rec_identity": "Identité de l'application",
        "app_rec_consents": "Accords",
        "app_rec_consent_history": "Historique des accords (preuve)",
        "app_rec_wishlist": "Liste",
        "app_rec_visits": "Visites",
        "app_rec_decisions": "Décisions",
        "app_rec_cards": "Cartes montrées au personnel",
        "app_rec_messages": "Messages",
        "app_rec_access_log": "Journal d'accès du personnel",
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
        # Customer app (reference client served under /app/).
        "app_title": "My Bulle account",
        "app_nav": "Account menu",
        "app_home": "Home",
        "app_consents": "My consents",
        "app_preferences": "How to greet me",
        "app_wishlist": "My list",
        "app_my_data": "My data",
        "app_enroll_title": "Turn on the app for this shop",
        "app_enroll_intro": (
            "The app receives a secret key that lets it broadcast a changing identifier. "
            "Nothing is turned on until you give your consent."
        ),
        "app_enroll": "Turn on",
        "app_enrolled": "A key was issued to this device. It stays in the app and is never shown.",
        "app_not_enrolled": "This device is not turned on yet.",
        "app_check_in": "I'm here",
        "app_check_in_help": "Tells the shop you came in, if you gave a consent.",
        "app_checked_in": "Done: the shop knows you are here.",
        "app_check_in_no_consent": "No active consent: the shop recorded nothing.",
        "app_not_today": "Not today",
        "app_not_today_help": "Nobody greets you and no stock is checked until tomorrow.",
        "app_not_today_set": "Understood: not today.",
        "app_messages": "Messages from the shop",
        "app_no_messages": "No messages.",
        "app_purpose_greeting": "Be greeted when I come in",
        "app_purpose_stock_check": "Check the stock of my list",
        "app_consent_intro": (
            "Read the exact text. Nothing is ticked in advance; you can withdraw in one tap."
        ),
        "app_consent_version": "Text version",
        "app_consent_hash": "Text fingerprint",
        "app_consent_agree": "I have read this text and I agree",
        "app_grant": "Give my consent",
        "app_withdraw": "Withdraw my consent",
        "app_consent_active": "Consent given",
        "app_consent_none": "No consent",
        "app_withdrawn": "Consent withdrawn. The shop no longer recognises you.",
        "app_display_name": "Name to use",
        "app_display_name_help": "First name, or last name with the “title and name” form.",
        "app_title_field": "Title (Madame, Mr, Mx…)",
        "app_name_form": "Name form",
        "app_form_first_name": "My first name",
        "app_form_title_last_name": "Title and name",
        "app_form_no_name": "No name",
        "app_greet_language": "Greeting language",
        "app_greet_mode": "When to greet me",
        "app_mode_on_arrival": "As soon as I arrive",
        "app_mode_after_check_in": "Only after “I'm here”",
        "app_quiet_hours": "Quiet hours (no greeting)",
        "app_quiet_start": "Start",
        "app_quiet_end": "End",
        "app_preview": "What staff will see",
        "app_save": "Save",
        "app_saved": "Saved.",
        "app_stock_here": "in stock here",
        "app_not_stocked": "not in stock here",
        "app_export": "Download my data (JSON)",
        "app_erase": "Erase my account",
        "app_erase_confirm": "Yes, erase everything for good",
        "app_erase_warning": (
            "Your consents, preferences, list, visits and the app's key will be erased. The "
            "pseudonymous proof of consent is kept."
        ),
        "app_erased": "Your account was erased.",
        "app_my_data_intro": "Everything the shop holds about you.",
        "app_my_data_unavailable": "This data is not available on this server yet.",
        "app_empty": "(nothing)",
        "app_error": "Something went wrong:",
        "app_yes": "yes",
        "app_no": "no",
        "app_rec_generated_at": "Extracted on",
        "app_rec_store_id": "Shop",
        "app_rec_profile": "Profile and preferences",
        "app_rec_identity": "App identity",
        "app_rec_consents": "Consents",
        "app_rec_consent_history": "Consent history (proof)",
        "app_rec_wishlist": "List",
        "app_rec_visits": "Visits",
        "app_rec_decisions": "Decisions",
        "app_rec_cards": "Cards shown to staff",
        "app_rec_messages": "Messages",
        "app_rec_access_log": "Staff access log",
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
