// The greeting staff will see, computed from the same rules as store_server/policy.py
// (shown_name and greeting_text); tests/test_customer_app.py checks both agree.
"use strict";
(function () {
  const GREETING_WORD = { fr: "Bonjour", en: "Hello" };

  // Names are stored with runs of white space collapsed (policy.validate_name).
  function tidy(value) {
    return (value || "").split(/\s+/).filter(Boolean).join(" ");
  }

  // The name staff may see, in the form the customer chose, or null (policy.shown_name).
  function shownName(prefs) {
    const name = tidy(prefs.display_name);
    const title = tidy(prefs.title);
    if (prefs.name_form === "first_name" && name) return name;
    if (prefs.name_form === "title_last_name" && name) return title ? title + " " + name : name;
    return null;
  }

  // The greeting card's text and whether it carries a name (policy.greeting_text).
  function greeting(prefs) {
    const word = GREETING_WORD[prefs.language] || GREETING_WORD.fr;
    const name = shownName(prefs);
    return { text: name ? word + " " + name : word, named: name !== null };
  }

  window.BullePreview = { shownName: shownName, greeting: greeting };
})();
