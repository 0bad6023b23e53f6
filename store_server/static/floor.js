// Manager floor map: polls the counts per zone and the boxes' health (no customer named).
"use strict";
(function () {
  const map = document.getElementById("floor-map");
  const status = document.getElementById("status");
  if (!map) return;
  const every = parseInt(map.dataset.pollMs, 10) || 1000;
  const labels = map.dataset;

  function setLive(live) {
    status.textContent = live ? status.dataset.live : status.dataset.offline;
    status.classList.toggle("active", live);
  }

  function apply(data) {
    Object.keys(data.zones).forEach(function (zone) {
      const count = String(data.zones[zone]);
      document.querySelectorAll("[data-zone='" + CSS.escape(zone) + "'].zone-count, tr[data-zone='" +
        CSS.escape(zone) + "'] .count").forEach(function (node) {
        if (node.textContent !== count) node.textContent = count;
      });
    });
    Object.keys(data.boxes).forEach(function (box) {
      const state = data.boxes[box];
      const node = map.querySelector("circle[data-box='" + CSS.escape(box) + "']");
      if (!node || node.dataset.state === state) return;
      node.dataset.state = state;
      node.setAttribute("class", "box " + state.replace("_", "-"));
      const title = node.querySelector("title");
      const key = "state" + state.split("_").map(function (p) {
        return p.charAt(0).toUpperCase() + p.slice(1);
      }).join("");
      if (title) title.textContent = title.textContent.replace(/[^:：]*$/, " " + (labels[key] || ""));
    });
  }

  function poll() {
    fetch("/manager/floor/live", { credentials: "same-origin", cache: "no-store" })
      .then(function (resp) {
        if (!resp.ok) throw new Error(String(resp.status));
        return resp.json();
      })
      .then(function (data) { apply(data); setLive(true); })
      .catch(function () { setLive(false); })
      .finally(function () { setTimeout(poll, every); });
  }
  poll();
})();
