// Manager pages: keep the current tab in sight in the one-row navigation of a phone.
"use strict";
(function () {
  const current = document.querySelector(".manager-nav [aria-current='page']");
  if (current && current.scrollIntoView) current.scrollIntoView({ block: "nearest", inline: "center" });
})();
