// Customer app, home: enroll this device, "I'm here", "not today", the pickup code, messages
// from the store.
"use strict";
(function () {
  const A = window.BulleApp;
  const t = A.t;
  const enroll = document.getElementById("enroll");
  const enrolled = document.getElementById("enrolled");
  const messagesPanel = document.getElementById("messages-panel");
  let code = null;

  async function show() {
    const has = Boolean(A.token());
    enroll.hidden = has;
    enrolled.hidden = !has;
    messagesPanel.hidden = !has;
    if (has) {
      await loadPickupCode();
      await loadMessages();
    }
    document.body.dataset.ready = "1";
  }

  // The code a customer gives at the front desk: the same code staff see on the stock card.
  async function loadPickupCode() {
    const result = await A.api("GET", "/api/v1/me");
    if (!result.ok || !result.data || !result.data.profile) return;
    code = result.data.profile.pickup_code;
    document.getElementById("pickup-code").textContent = code;
    document.getElementById("pickup").hidden = !code;
  }

  async function loadMessages() {
    const result = await A.api("GET", "/api/v1/messages");
    if (!result.ok) { A.fail(result); return; }
    const list = document.getElementById("messages");
    list.replaceChildren();
    result.data.messages.forEach(function (m) {
      const item = A.el("li", "message");
      item.appendChild(A.el("p", "meta", A.when(m.at)));
      const lines = (A.lang === "en" ? m.lines_en : m.lines_fr) || [];
      lines.forEach(function (line) { item.appendChild(A.el("p", "", line)); });
      if (m.kind === "stock" && code) {
        const pickup = A.el("p", "", t.app_pickup_line);
        const strong = A.el("strong", "", code);
        strong.translate = false;
        pickup.appendChild(strong);
        item.appendChild(pickup);
      }
      list.appendChild(item);
    });
    document.getElementById("no-messages").hidden = result.data.messages.length > 0;
  }

  document.getElementById("enroll-button").addEventListener("click", async function () {
    const result = await A.api("POST", "/api/v1/enroll", { language: A.lang });
    if (!result.ok) { A.fail(result); return; }
    // Keep the token; the identity key belongs to the beacon (native code), never shown.
    // The panel shown next says the key was issued: no second copy in the status line.
    A.setToken(result.data.token);
    show();
  });

  document.getElementById("check-in").addEventListener("click", async function () {
    const result = await A.api("POST", "/api/v1/check-in", {});
    if (!result.ok) { A.fail(result); return; }
    A.say(result.data.checked_in ? t.app_checked_in : t.app_check_in_no_consent,
      result.data.checked_in ? "ok" : "");
    loadMessages();
  });

  document.getElementById("not-today").addEventListener("click", async function () {
    const result = await A.api("PUT", "/api/v1/preferences", { not_today: A.storeToday() });
    if (!result.ok) { A.fail(result); return; }
    A.say(t.app_not_today_set, "ok");
  });

  show();
})();
