// Calibration walk: the progress bar of the zone being measured, live; the page reloads when
// the phone joins or a step ends, to show the next step.
"use strict";
(function () {
  const walk = document.getElementById("walk");
  if (!walk || walk.dataset.active !== "1") return;
  const bar = document.getElementById("walk-progress");
  const joined = !!document.getElementById("walk-joined");
  const zone = walk.dataset.zone;

  function poll() {
    fetch("/manager/calibration/walk", { credentials: "same-origin", cache: "no-store" })
      .then(function (resp) { return resp.ok ? resp.json() : null; })
      .then(function (data) {
        const w = data && data.walk;
        if (!w || w.joined !== joined || (w.zone || "") !== zone) {
          window.location.reload();
          return;
        }
        if (bar) bar.value = w.progress;
        setTimeout(poll, 1000);
      })
      .catch(function () { setTimeout(poll, 2000); });
  }
  setTimeout(poll, 1000);
})();
