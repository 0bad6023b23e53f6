"""A small checker: does a page speak one language, without raw codes?

`COLLECT_JS` gathers, in a real browser, every visible piece of text of a page (text nodes,
the title, accessible names in aria-label/title/placeholder/alt) with the language it is
marked with (the nearest `lang` attribute). Text inside `translate="no"` (identifiers the
person typed or must copy: user names, SKUs, scanner ids, hashes, codes) is left out.
`problems` then flags, in the text marked with the page's own language:

- words of the other language (word lists of words that exist in one language only);
- raw codes: snake_case or `kind:code` identifiers, Unix times, JSON, `null`/`undefined`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

COLLECT_JS = """
() => {
  const out = [];
  const langOf = (node) => {
    const holder = node.closest("[lang]");
    return holder ? holder.getAttribute("lang").slice(0, 2) : "";
  };
  const skipped = (el) => el.closest("[translate='no'], script, style, template, noscript");
  const visible = (el) => el.checkVisibility ? el.checkVisibility() : el.offsetParent !== null;
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  let node;
  while ((node = walker.nextNode())) {
    const el = node.parentElement;
    const text = node.textContent.trim();
    if (!text || !el || skipped(el) || !visible(el)) continue;
    out.push([langOf(el), text]);
  }
  document.querySelectorAll("[aria-label], [title], [placeholder], [alt]").forEach((el) => {
    if (skipped(el) || !visible(el)) return;
    for (const name of ["aria-label", "title", "placeholder", "alt"]) {
      const value = el.getAttribute(name);
      if (!value) continue;
      // The language links are titled in their own language ("Français", "English").
      const lang = el.hasAttribute("lang") ? el.getAttribute("lang") : langOf(el);
      out.push([lang.slice(0, 2), value]);
    }
  });
  out.push([document.documentElement.lang, document.title]);
  // Identifiers shown untranslated may be repeated in accessible names ("Revoke s-parts").
  const ids = new Set();
  document.querySelectorAll("[translate='no']").forEach((el) => {
    const text = el.textContent.trim();
    if (text) ids.add(text);
  });
  return {lang: document.documentElement.lang, segments: out, identifiers: Array.from(ids)};
}
"""


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words that exist in English and not in French (the loanwords a French page may use, such as
# stock, code, version, zone, date, menu, message, action, article, are left out).
ENGLISH_ONLY = _words(
    """
    the and of to is are was not must be been negative error found denied consent given greeting
    grant granted withdraw withdrawn shown view viewed audit sign signed save saved yes none
    line count aisle scanner scanners item items customer customers staff board manager account
    accounts password user with without for from this that your you my here today hello welcome
    pickup state active revoked stale never register registered seen dropped outbox frames
    entrance parts checkout shop store greeted brought dismissed dismiss nothing something went
    wrong try again done ongoing created erased erase download data list name names first last
    title when quiet hours start end preview what will see give check checked powered off
    missing simulated replay adapter offset interior access log chain entries intact verified
    time subject purpose channel app web website enabled disabled disable enable role import
    imported choose whole number empty
    """
)

# Words that exist in French and not in English.
FRENCH_ONLY = _words(
    """
    le la les des du et est sont pas vous votre vos mon ma mes accord accords erreur allée donné
    donnée être aujourd hui bonjour une sur avec pour dans connexion capteur capteurs tableau
    accueil gestion journal oui non aucun aucune rien depuis salué clientèle compte données mot
    passe utilisateur quantité référence enregistrer enregistré réessayez entrée caisse pièces
    accessoires retrait ici je suis là quand heures début gérant gérante révoquer désactiver
    réactiver importer fichier ligne nom prénom titre forme langue liste visite visites carte
    cartes montrée affichée ignorée effacé déconnecter trames vues retenues perdues jamais actif
    silencieux révoqué calibrage empreinte texte finalité heure chaîne vérifiée entrées intactes
    consultation
    """
)

_CODE_PATTERNS = (
    (re.compile(r"\b[a-z]+_[a-z0-9_]+\b"), "snake_case code"),
    (re.compile(r"\b[a-z]+:[a-z_]+\b"), "kind:code"),
    (re.compile(r"\b1[6-9]\d{8}(?:\.\d+)?\b"), "Unix time"),
    (re.compile(r'[{}]|":'), "JSON"),
    (re.compile(r"\b(?:null|undefined|NaN|true|false)\b|\[object"), "raw value"),
)
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?")


def problems(
    page_lang: str, segments: list[list[str]], identifiers: Sequence[str] = ()
) -> list[str]:
    """What is wrong with a page whose language is `page_lang` (empty when it is clean).

    `identifiers` (shown untranslated elsewhere on the page) are taken out of the text first.
    """
    foreign = ENGLISH_ONLY if page_lang == "fr" else FRENCH_ONLY
    longest_first = sorted(identifiers, key=len, reverse=True)
    found: list[str] = []
    for lang, original in segments:
        if lang and lang != page_lang:
            continue  # marked as another language on purpose (a greeting, a language name)
        text = original
        for identifier in longest_first:
            text = text.replace(identifier, " ")
        for pattern, what in _CODE_PATTERNS:
            match = pattern.search(text)
            if match:
                found.append(f"{what} {match.group(0)!r} in {text!r}")
        for word in _WORD.findall(text):
            for part in re.split(r"['’]", word.lower()):
                if part in foreign:
                    found.append(
                        f"{'English' if page_lang == 'fr' else 'French'} {part!r} in {text!r}"
                    )
    return found
