// Customer app, "my data": every record the store holds (GET /api/v1/me), the JSON export
// (GET /api/v1/me/export) and erasure (DELETE /api/v1/me).
"use strict";
(function () {
  const A = window.BulleApp;
  const t = A.t;
  const box = document.getElementById("records");

  // Unix times are shown as local dates; the export keeps the raw values.
  function isTime(key) { return key === "at" || /_at$/.test(key); }

  function cell(value, key) {
    if (value === null || value === undefined) return "—";
    if (typeof value === "number" && key && isTime(key)) return A.when(value);
    if (typeof value === "boolean") return value ? t.app_yes : t.app_no;
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  // One card per record, its fields as label/value pairs: readable on a phone, where a
  // table of eight columns squeezes every value into a sliver.
  function cards(rows) {
    const list = A.el("ol", "records-list");
    rows.forEach(function (r) {
      const item = A.el("li", "record");
      const fields = A.el("dl", "fields");
      Object.keys(r).forEach(function (k) {
        fields.appendChild(A.el("dt", "", k));
        const dd = A.el("dd", "", cell(r[k], k));
        if (/hash|^id$|_id$|ref$/.test(k)) dd.className = "code";
        fields.appendChild(dd);
      });
      item.appendChild(fields);
      list.appendChild(item);
    });
    return list;
  }

  // Renders any JSON document as sections: lists of records as tables, objects as lists.
  function section(name, value, level) {
    const part = A.el("section", "record-group");
    part.dataset.key = name;
    part.appendChild(A.el(level === 2 ? "h2" : "h3", "", t["app_rec_" + name] || name));
    if (Array.isArray(value)) {
      if (value.length === 0) part.appendChild(A.el("p", "help", t.app_empty));
      else if (value.every(function (v) { return v && typeof v === "object" && !Array.isArray(v); })) {
        part.appendChild(cards(value));
      } else {
        const ul = A.el("ul");
        value.forEach(function (v) { ul.appendChild(A.el("li", "", cell(v))); });
        part.appendChild(ul);
      }
    } else if (value && typeof value === "object") {
      const plain = A.el("dl", "fields");
      Object.keys(value).forEach(function (k) {
        const v = value[k];
        if (v && typeof v === "object") {
          part.appendChild(section(k, v, 3));
        } else {
          plain.appendChild(A.el("dt", "", k));
          plain.appendChild(A.el("dd", "", cell(v, k)));
        }
      });
      if (plain.childNodes.length) part.insertBefore(plain, part.childNodes[1]);
    } else {
      part.appendChild(A.el("p", "", cell(value, name)));
    }
    return part;
  }

  async function load() {
    const result = await A.api("GET", "/api/v1/me");
    if (result.status === 404 || result.status === 405) {
      A.say(t.app_my_data_unavailable, "error");
      return;
    }
    if (!result.ok) { A.fail(result); return; }
    box.replaceChildren();
    Object.keys(result.data).forEach(function (k) { box.appendChild(section(k, result.data[k], 2)); });
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
