// Customer app, wishlist: the catalog with stock at this store; tick the items to look for.
"use strict";
(function () {
  const A = window.BulleApp;
  const t = A.t;
  const list = document.getElementById("catalog");
  const form = document.getElementById("wishlist");

  function render(items, chosen) {
    list.replaceChildren();
    items.forEach(function (item) {
      const li = A.el("li", "item");
      const label = A.el("label", "choice");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.name = "sku";
      box.value = item.sku;
      box.checked = chosen.indexOf(item.sku) >= 0;
      label.appendChild(box);
      label.appendChild(document.createTextNode(" " + (A.lang === "en" ? item.name_en : item.name_fr)));
      li.appendChild(label);
      const stock = item.count ? item.count + " " + t.app_stock_here + (item.aisle ? " · " + t.app_aisle + " " + item.aisle : "")
        : t.app_not_stocked;
      li.appendChild(A.el("p", "meta stock " + (item.count ? "in" : "out"), stock));
      list.appendChild(li);
    });
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    const skus = Array.from(form.querySelectorAll("input[name=sku]:checked")).map(function (b) { return b.value; });
    const result = await A.api("PUT", "/api/v1/wishlist", { skus: skus });
    if (!result.ok) { A.fail(result); return; }
    A.save("wishlist", result.data.skus);
    A.say(t.app_saved, "ok");
  });

  async function start() {
    if (!A.requireToken()) return;
    const result = await A.api("GET", "/api/v1/catalog");
    if (!result.ok) { A.fail(result); return; }
    let chosen = A.load("wishlist", []);
    const me = await A.api("GET", "/api/v1/me");
    if (me.ok && Array.isArray(me.data.wishlist)) {
      chosen = me.data.wishlist.map(function (w) { return w.sku; });
    }
    render(result.data.items, chosen);
    document.body.dataset.ready = "1";
  }

  start();
})();
