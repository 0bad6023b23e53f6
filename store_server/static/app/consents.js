// Customer app, consents: per purpose, the exact versioned text, nothing pre-ticked,
// grant with the hash of the text shown, withdraw in one tap.
"use strict";
(function () {
  const A = window.BulleApp;
  const t = A.t;
  const box = document.getElementById("consents");
  // Purposes whose consent this app gave and has not withdrawn (from the server's answers).
  let active = A.load("consents", {});

  function render(texts) {
    box.replaceChildren();
    texts.forEach(function (text) {
      const purpose = text.purpose;
      const section = A.el("section", "panel consent");
      section.dataset.purpose = purpose;
      const titleId = "consent-title-" + purpose;
      section.setAttribute("aria-labelledby", titleId);
      const title = A.el("h2", "", t["app_purpose_" + purpose] || t.names.purpose[purpose] || purpose);
      title.id = titleId;
      section.appendChild(title);
      const state = A.el("p", "state " + (active[purpose] ? "on" : "off"),
        active[purpose] ? t.app_consent_active + " · " + A.when(active[purpose]) : t.app_consent_none);
      section.appendChild(state);
      const quote = A.el("blockquote", "consent-text", A.lang === "en" ? text.text_en : text.text_fr);
      quote.lang = A.lang;
      section.appendChild(quote);
      const meta = A.el("p", "meta");
      meta.appendChild(A.el("span", "", t.app_consent_version + " " + text.version + " · " + t.app_consent_hash + " "));
      meta.appendChild(A.el("code", "hash", text.hash));
      section.appendChild(meta);
      if (active[purpose]) {
        const withdraw = A.el("button", "withdraw", t.app_withdraw);
        withdraw.type = "button";
        withdraw.addEventListener("click", function () { doWithdraw(purpose); });
        section.appendChild(withdraw);
      } else {
        const label = A.el("label", "choice");
        const check = document.createElement("input");
        check.type = "checkbox";
        check.checked = false; // never pre-ticked
        label.appendChild(check);
        label.appendChild(document.createTextNode(" " + t.app_consent_agree));
        section.appendChild(label);
        const grant = A.el("button", "primary grant", t.app_grant);
        grant.type = "button";
        grant.disabled = true;
        check.addEventListener("change", function () { grant.disabled = !check.checked; });
        // A chain's shop: the consent counts here only, unless the customer ticks the box.
        let everyShop = null;
        if (t.chain) {
          const wide = A.el("label", "agree");
          everyShop = document.createElement("input");
          everyShop.type = "checkbox";
          everyShop.checked = false; // never pre-ticked
          wide.appendChild(everyShop);
          wide.appendChild(document.createTextNode(" " + t.app_consent_every_shop));
          section.appendChild(wide);
        }
        grant.addEventListener("click", function () {
          doGrant(purpose, text.hash, grant, everyShop !== null && everyShop.checked ? "chain" : "store");
        });
        section.appendChild(grant);
      }
      box.appendChild(section);
    });
  }

  let texts = [];

  async function doGrant(purpose, hash, button, scope) {
    button.disabled = true;
    const result = await A.api("POST", "/api/v1/consents", {
      purpose: purpose, text_hash: hash, channel: "app", scope: scope,
    });
    if (!result.ok) { A.fail(result); button.disabled = false; return; }
    active[purpose] = result.data.granted_at;
    A.save("consents", active);
    A.say(A.fill(t.app_consent_given_for, { purpose: t["app_purpose_" + purpose] || purpose }), "ok");
    render(texts);
  }

  async function doWithdraw(purpose) {
    const result = await A.api("POST", "/api/v1/consents/withdraw", { purposes: [purpose] });
    if (!result.ok) { A.fail(result); return; }
    const remaining = {};
    result.data.remaining.forEach(function (p) { if (active[p]) remaining[p] = active[p]; });
    active = remaining;
    A.save("consents", active);
    A.say(t.app_withdrawn, "ok");
    render(texts);
  }

  async function start() {
    if (!A.requireToken()) return;
    const mine = await A.api("GET", "/api/v1/consents");
    if (mine.ok) {
      active = {};
      mine.data.consents.forEach(function (c) { if (c.active) active[c.purpose] = c.granted_at; });
      A.save("consents", active);
    }
    const result = await A.api("GET", "/api/v1/consent-texts");
    if (!result.ok) { A.fail(result); return; }
    texts = result.data.texts;
    render(texts);
    document.body.dataset.ready = "1";
  }

  start();
})();
