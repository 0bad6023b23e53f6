// Customer app, greeting preferences with a live preview of the staff card.
"use strict";
(function () {
  const A = window.BulleApp;
  const t = A.t;
  const form = document.getElementById("prefs");
  const FIELDS = ["display_name", "title", "quiet_start", "quiet_end"];
  const CHOICES = ["name_form", "language", "greet_mode"];
  const DEFAULTS = { name_form: "no_name", language: A.lang, greet_mode: "on_arrival" };

  function current() {
    const prefs = {};
    FIELDS.forEach(function (f) { prefs[f] = form.elements[f].value.trim(); });
    CHOICES.forEach(function (f) {
      const checked = form.querySelector("input[name=" + f + "]:checked");
      prefs[f] = checked ? checked.value : DEFAULTS[f];
    });
    return prefs;
  }

  function fill(prefs) {
    FIELDS.forEach(function (f) { form.elements[f].value = prefs[f] || ""; });
    CHOICES.forEach(function (f) {
      const value = prefs[f] || DEFAULTS[f];
      const input = form.querySelector("input[name=" + f + "][value=" + value + "]");
      if (input) input.checked = true;
    });
  }

  function preview() {
    const prefs = current();
    const card = window.BullePreview.greeting(prefs);
    const text = document.getElementById("preview-text");
    text.textContent = card.text;
    text.lang = prefs.language;
    document.getElementById("preview-no-name").hidden = card.named;
    const notes = [];
    if (prefs.greet_mode === "after_check_in") notes.push(t.app_mode_after_check_in);
    if (prefs.quiet_start && prefs.quiet_end) {
      notes.push(t.app_quiet_hours + " " + prefs.quiet_start + "–" + prefs.quiet_end);
    }
    const note = document.getElementById("preview-note");
    note.textContent = notes.join(" · ");
    note.hidden = notes.length === 0;
  }

  form.addEventListener("input", preview);
  form.addEventListener("change", preview);

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    const prefs = current();
    const body = { name_form: prefs.name_form, language: prefs.language, greet_mode: prefs.greet_mode };
    // An emptied field is cleared (null); the API refuses an empty string.
    FIELDS.forEach(function (f) { body[f] = prefs[f] ? prefs[f] : null; });
    const result = await A.api("PUT", "/api/v1/preferences", body);
    if (!result.ok) { A.fail(result); return; }
    fill(result.data);
    preview();
    A.say(t.app_saved, "ok");
  });

  async function start() {
    fill({});
    preview();
    if (!A.requireToken()) return;
    const result = await A.api("GET", "/api/v1/preferences");
    if (!result.ok) { A.fail(result); return; }
    fill(result.data);
    preview();
    document.body.dataset.ready = "1";
  }

  start();
})();
