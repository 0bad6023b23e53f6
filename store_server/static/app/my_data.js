// Customer app, "my data": every record the store holds (GET /api/v1/me) written for a person
// (labels, local dates, cards as sentences), the complete JSON export (GET /api/v1/me/export)
// and erasure (DELETE /api/v1/me). The export keeps the raw codes and Unix times.
"use strict";
(function () {
  const A = window.BulleApp;
  const t = A.t;
  const r = t.records;
  const names = t.names;
  const box = document.getElementById("records");

  function nameOf(kind, code) {
    if (code === null || code === undefined || code === "") return "—";
    return (names[kind] && names[kind][code]) || code;
  }

  function when(seconds) { return seconds === null || seconds === undefined ? "—" : A.when(seconds); }

  function zoneName(zone) { return zone ? (t.zones[zone] || zone) : "—"; }

  // A sentence, with an optional identifier below it in small monospace (kept untranslated).
  // `text` is a string or a ready paragraph.
  function record(text, code) {
    const item = A.el("li", "record");
    item.appendChild(typeof text === "string" ? A.el("p", "", text) : text);
    if (code) {
      const small = A.el("code", "", code);
      small.translate = false;
      item.appendChild(small);
    }
    return item;
  }

  function group(key, items, emptyText) {
    const part = A.el("section", "record-group");
    part.dataset.key = key;
    part.appendChild(A.el("h2", "", t["app_rec_" + key]));
    if (!items.length) {
      part.appendChild(A.el("p", "help", emptyText || t.app_empty));
    } else {
      const list = A.el("ul", "records-list");
      items.forEach(function (node) { list.appendChild(node); });
      part.appendChild(list);
    }
    return part;
  }

  function profile(p) {
    const part = A.el("section", "record-group");
    part.dataset.key = "profile";
    part.appendChild(A.el("h2", "", t.app_rec_profile));
    const fields = A.el("dl", "fields");
    const quiet = p.quiet_start && p.quiet_end ? p.quiet_start + " – " + p.quiet_end : "—";
    const rows = [
      [r.display_name, p.display_name || "—"],
      [r.title, p.title || "—"],
      [r.name_form, t["app_form_" + p.name_form] || "—"],
      [r.language, r["language_" + p.language] || "—"],
      [r.greet_mode, t["app_mode_" + p.greet_mode] || "—"],
      [r.quiet_hours, quiet],
      [r.not_today, p.not_today || "—"],
      [r.pickup_code, p.pickup_code, true],
      [r.ibeacon_id, p.ibeacon_id || "—", Boolean(p.ibeacon_id)],
      [r.created_at, when(p.created_at)],
      [r.customer_id, p.id, true],
    ];
    rows.forEach(function (row) {
      fields.appendChild(A.el("dt", "", row[0]));
      const dd = A.el("dd", row[2] ? "code" : "", row[1]);
      if (row[2]) dd.translate = false;
      fields.appendChild(dd);
    });
    part.appendChild(fields);
    return part;
  }

  function identity(id) {
    if (!id) return group("identity", []);
    const minutes = Math.round(Math.pow(2, id.rotation_exponent) / 60);
    return group("identity", [record(A.fill(r.identity, { date: when(id.created_at), minutes: minutes }))]);
  }

  function consents(list) {
    return group("consents", list.map(function (c) {
      const text = A.fill(r.consent, {
        purpose: nameOf("purpose", c.purpose), granted: when(c.granted_at),
        expires: when(c.expires_at), scope: nameOf("scope", c.scope),
        state: c.active ? r.consent_active : r.consent_inactive,
      });
      return record(text, c.text_hash);
    }));
  }

  function history(list) {
    return group("consent_history", list.map(function (e) {
      return record(A.fill(r.history, {
        date: when(e.at), action: nameOf("consent_action", e.action),
        purpose: nameOf("purpose", e.purpose), channel: nameOf("channel", e.channel),
      }), e.entry_hash);
    }));
  }

  function wishlist(list) {
    return group("wishlist", list.map(function (w) {
      return record(A.fill(r.wish, { name: A.lang === "en" ? w.name_en : w.name_fr, date: when(w.added_at) }), w.sku);
    }));
  }

  function visits(list) {
    return group("visits", list.map(function (v) {
      return record(A.fill(r.visit, {
        date: A.day(v.arrived_at), from: A.clock(v.arrived_at),
        to: v.left_at ? A.clock(v.left_at) : r.visit_open, zone: zoneName(v.zone), via: nameOf("via", v.via),
      }));
    }));
  }

  function decisions(list) {
    return group("decisions", list.map(function (d) {
      const outcome = (d.outcome || "nothing").split("+").map(function (o) {
        return r["outcome_" + o] || o;
      }).join(", ");
      const reasons = (d.reason || "").split(",").filter(Boolean).map(function (code) {
        return r["reason_" + code] || code;
      }).join(", ");
      return record(A.fill(r.decision, { date: when(d.at), outcome: outcome, reasons: reasons || "—" }));
    }));
  }

  function cardState(c) {
    const state = r["state_" + c.state] || c.state;
    if (c.acked_by) return A.fill(r.state_by, { state: state, user: c.acked_by, date: when(c.acked_at) });
    return state;
  }

  function cards(list) {
    return group("cards", list.map(function (c) {
      const p = c.payload || {};
      let text;
      if (c.kind === "greeting") {
        // The greeting is quoted in the customer's language, marked as such.
        const parts = r.card_greeting.split("{text}");
        const values = { date: when(c.created_at), state: cardState(c) };
        text = A.el("p", "", A.fill(parts[0], values));
        const quote = A.el("span", "", p.text);
        if (p.language) quote.lang = p.language;
        text.appendChild(quote);
        text.appendChild(document.createTextNode(A.fill(parts[1] || "", values)));
      } else {
        const items = (p.items || []).map(function (i) {
          return A.fill(r.item, { name: (i.name && (i.name[A.lang] || i.name.fr)) || i.sku, count: i.count, aisle: i.aisle });
        }).join(", ");
        text = A.fill(r.card_stock, { date: when(c.created_at), code: p.pickup_code, items: items, state: cardState(c) });
      }
      return record(text, c.id);
    }));
  }

  function messages(list) {
    return group("messages", list.map(function (m) {
      const item = record(when(m.at));
      ((A.lang === "en" ? m.lines_en : m.lines_fr) || []).forEach(function (line) {
        item.appendChild(A.el("p", "", line));
      });
      return item;
    }));
  }

  function accessLog(list) {
    return group("access_log", list.map(function (a) {
      return record(A.fill(r.access, { date: when(a.at), user: a.staff_user, action: nameOf("access_action", a.action) }), a.card_id);
    }));
  }

  function render(data) {
    box.replaceChildren();
    const head = A.el("p", "help", t.app_rec_generated_at + " " + when(data.generated_at));
    box.appendChild(head);
    box.appendChild(profile(data.profile || {}));
    box.appendChild(identity(data.identity));
    box.appendChild(consents(data.consents || []));
    box.appendChild(history(data.consent_history || []));
    box.appendChild(wishlist(data.wishlist || []));
    box.appendChild(visits(data.visits || []));
    box.appendChild(decisions(data.decisions || []));
    box.appendChild(cards(data.cards || []));
    box.appendChild(messages(data.messages || []));
    box.appendChild(accessLog(data.access_log || []));
  }

  async function load() {
    const result = await A.api("GET", "/api/v1/me");
    if (result.status === 404 || result.status === 405) {
      A.say(t.app_my_data_unavailable, "error");
      return;
    }
    if (!result.ok) { A.fail(result); return; }
    render(result.data);
    document.body.dataset.ready = "1";
  }

  document.getElementById("export").addEventListener("click", async function () {
    const result = await A.api("GET", "/api/v1/me/export");
    if (!result.ok) { A.fail(result); return; }
    const blob = new Blob([JSON.stringify(result.data, null, 2)], { type: "application/json" });
    const link = A.el("a");
    link.href = URL.createObjectURL(blob);
    link.download = "bulle-my-data-" + A.storeToday() + ".json";
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(function () { URL.revokeObjectURL(link.href); }, 10000);
  });

  const erase = document.getElementById("erase");
  const confirmErase = document.getElementById("erase-confirm");
  erase.addEventListener("click", function () {
    confirmErase.hidden = false;
    confirmErase.focus();
  });
  confirmErase.addEventListener("click", async function () {
    const result = await A.api("DELETE", "/api/v1/me");
    if (!result.ok) { A.fail(result); return; }
    A.forget();
    box.replaceChildren();
    confirmErase.hidden = true;
    erase.disabled = true;
    A.say(t.app_erased, "ok");
    document.body.dataset.erased = "1";
  });

  if (A.requireToken()) load();
})();
