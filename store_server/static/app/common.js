// Customer app, shared helpers: the app token, calls to the public customer API, messages.
// The token lives in localStorage because this is a web page; a native app keeps it in the
// operating system's keystore (Android Keystore, iOS Keychain).
"use strict";
(function () {
  const TOKEN_KEY = "bulle_app_token";
  const root = document.querySelector(".app");
  const t = JSON.parse(document.getElementById("app-strings").textContent);
  const statusNode = document.getElementById("app-status");

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function token() { return localStorage.getItem(TOKEN_KEY); }

  function setToken(value) { localStorage.setItem(TOKEN_KEY, value); }

  function forget() {
    Object.keys(localStorage).filter(function (k) { return k.indexOf("bulle_app_") === 0; })
      .forEach(function (k) { localStorage.removeItem(k); });
  }

  function load(key, fallback) {
    try {
      const raw = localStorage.getItem("bulle_app_" + key);
      return raw === null ? fallback : JSON.parse(raw);
    } catch (e) { return fallback; }
  }

  function save(key, value) { localStorage.setItem("bulle_app_" + key, JSON.stringify(value)); }

  // One call to the customer API; resolves to {status, data} and never throws on HTTP errors.
  async function api(method, path, body) {
    const headers = { "Accept": "application/json" };
    const tok = token();
    if (tok) headers["Authorization"] = "Bearer " + tok;
    const init = { method: method, headers: headers, credentials: "omit" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(path, init);
    let data = null;
    const type = resp.headers.get("Content-Type") || "";
    if (type.indexOf("application/json") === 0) data = await resp.json();
    if (resp.status === 401 && tok) {
      forget(); // the account is gone (erased elsewhere) or the token was revoked
    }
    return { status: resp.status, ok: resp.ok, data: data };
  }

  function say(text, kind) {
    statusNode.textContent = text;
    statusNode.className = "app-status " + (kind || "");
  }

  // The API's error messages are English sentences for developers: the page says what to do
  // in its own language instead, and keeps the code for the tests (data-code).
  function fail(result) {
    const code = result.data && result.data.error ? result.data.error.code : String(result.status);
    if (result.status === 401) {
      document.getElementById("needs-enroll").hidden = false;
      say(t.app_not_enrolled, "error");
    } else {
      say(result.status === 429 ? t.app_error_rate : t.app_error, "error");
    }
    statusNode.dataset.code = code;
  }

  // Pages other than home need an enrolled app: otherwise show the link to enroll.
  function requireToken() {
    if (token()) return true;
    document.getElementById("needs-enroll").hidden = false;
    return false;
  }

  // Today's date (YYYY-MM-DD) in the store's time zone, for "not today".
  function storeToday() {
    const zone = root.dataset.timezone || undefined;
    const parts = new Intl.DateTimeFormat("en-CA", {
      timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit",
    }).formatToParts(new Date());
    const get = function (type) { return parts.find(function (p) { return p.type === type; }).value; };
    return get("year") + "-" + get("month") + "-" + get("day");
  }

  const LOCALE = root.dataset.lang === "en" ? "en-CA" : "fr-CA";
  const ZONE = root.dataset.timezone || undefined;

  // A Unix time as a local date and time ("2 décembre 2026, 14 h 05"), in the store's zone.
  function when(seconds) {
    return new Date(seconds * 1000).toLocaleString(LOCALE, {
      timeZone: ZONE, dateStyle: "long", timeStyle: "short",
    });
  }

  function day(seconds) {
    return new Date(seconds * 1000).toLocaleDateString(LOCALE, { timeZone: ZONE, dateStyle: "long" });
  }

  function clock(seconds) {
    return new Date(seconds * 1000).toLocaleTimeString(LOCALE, { timeZone: ZONE, timeStyle: "short" });
  }

  // "{name} ..." templates of the page's strings.
  function fill(template, values) {
    return template.replace(/\{(\w+)\}/g, function (all, key) {
      return values[key] === undefined || values[key] === null ? "—" : String(values[key]);
    });
  }

  // The tab of this page stays in sight in the one-row navigation of a phone.
  const current = document.querySelector(".app-nav [aria-current='page']");
  if (current && current.scrollIntoView) current.scrollIntoView({ block: "nearest", inline: "center" });

  window.BulleApp = {
    t: t, lang: root.dataset.lang, el: el, api: api, say: say, fail: fail, token: token,
    setToken: setToken, forget: forget, load: load, save: save, requireToken: requireToken,
    storeToday: storeToday, when: when, day: day, clock: clock, fill: fill,
  };
})();
