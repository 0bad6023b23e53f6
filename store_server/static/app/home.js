// Customer app, home: enroll this device, "I'm here", "not today", messages from the store.
"use strict";
(function () {
  const A = window.BulleApp;
  const t = A.t;
  const enroll = document.getElementById("enroll");
  const enrolled = document.getElementById("enrolled");
  const messagesPanel = document.getElementById("messages-panel");

  function show() {
    const has = Boolean(A.token());
    enroll.hidden = has;
    enrolled.hidden = !has;
    messagesPanel.hidden = !has;
    if (has) loadMessages();
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
      list.appendChild(item);
    });
    document.getElementById("no-messages").hidden = result.data.messages.length > 0;
  }

  document.getElementById("enroll-button").addEventListener("click", async function () {
    const result = await A.api("POST", "/api/v1/enroll", { language: A.lang });
    if (!result.ok) { A.fail(result); return; }
    // Keep the token; the identity key belongs to the beacon (native code), never shown.
    A.setToken(result.data.token);
    A.say(t.app_enrolled, "ok");
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
