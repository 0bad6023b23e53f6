// Live staff board: renders cards pushed over the WebSocket; reconnects and resyncs.
"use strict";
(function () {
  const board = document.getElementById("board");
  const empty = document.getElementById("empty");
  const status = document.getElementById("status");
  const t = board.dataset;
  const lang = t.lang;
  const cards = new Map();
  let socket = null;
  let retry = 0;

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function since(ts) {
    const s = Math.max(0, Math.round(Date.now() / 1000 - ts));
    return s < 60 ? s + " s" : Math.floor(s / 60) + " min";
  }

  function zoneText(card) {
    return card.zone_name ? card.zone_name[lang] || card.zone_name.fr : (card.zone || "");
  }

  function action(card, label, as) {
    const b = el("button", "", label);
    b.type = "button";
    b.addEventListener("click", function () {
      if (socket && socket.readyState === WebSocket.OPEN) {
        socket.send(JSON.stringify({ action: "close", id: card.id, as: as }));
      }
    });
    return b;
  }

  function render(card) {
    const node = el("article", "card " + card.kind);
    node.dataset.cardId = card.id;
    node.setAttribute("aria-label", card.kind === "greeting" ? t.tGreetingCard : t.tStockCard);
    node.appendChild(el("p", "kind", card.kind === "greeting" ? t.tGreetingCard : t.tStockCard));
    if (card.kind === "greeting") {
      // The greeting is in the customer's language, which may not be the board's.
      const greeting = el("h2", "greeting", card.text);
      if (card.language) greeting.lang = card.language;
      node.appendChild(greeting);
      if (!card.named) node.appendChild(el("p", "meta", t.tNoName));
    } else {
      if (card.name) node.appendChild(el("h2", "greeting", card.name));
      const code = el("p", "");
      code.appendChild(el("span", "", t.tPickup + " "));
      // A code to read out or copy as it is: never translated (translate="no").
      const pickup = el("span", "code", card.pickup_code);
      pickup.translate = false;
      code.appendChild(pickup);
      node.appendChild(code);
      const list = el("ul", "items");
      card.items.forEach(function (item) {
        list.appendChild(el("li", "", (item.name[lang] || item.name.fr) + " — " + item.count + " " + t.tInStock +
          (item.aisle ? ", " + t.tAisle + " " + item.aisle : "")));
      });
      node.appendChild(list);
    }
    const meta = el("p", "meta zone");
    meta.dataset.arrived = card.arrived_at;
    node.appendChild(meta);
    const actions = el("div", "actions");
    if (card.kind === "greeting") actions.appendChild(action(card, t.tGreeted, "greeted"));
    else actions.appendChild(action(card, t.tBrought, "brought"));
    actions.appendChild(action(card, t.tDismiss, "dismissed"));
    node.appendChild(actions);
    return node;
  }

  function refreshMeta() {
    cards.forEach(function (entry) {
      const meta = entry.node.querySelector(".zone");
      meta.textContent = zoneText(entry.card) + " · " + t.tSince + " " + since(entry.card.arrived_at);
    });
    empty.hidden = cards.size > 0;
  }

  function add(card) {
    remove(card.id);
    const node = render(card);
    cards.set(card.id, { card: card, node: node });
    board.prepend(node);
    refreshMeta();
  }

  function remove(id) {
    const entry = cards.get(id);
    if (entry) {
      entry.node.remove();
      cards.delete(id);
    }
    refreshMeta();
  }

  function onMessage(event) {
    const msg = JSON.parse(event.data);
    if (msg.type === "snapshot") {
      Array.from(cards.keys()).forEach(remove);
      msg.cards.forEach(add);
    } else if (msg.type === "card") {
      add(msg.card);
    } else if (msg.type === "retract" || msg.type === "closed") {
      remove(msg.id);
    } else if (msg.type === "zone") {
      const entry = cards.get(msg.id);
      if (entry) { entry.card.zone = msg.zone; entry.card.zone_name = msg.zone_name; refreshMeta(); }
    }
  }

  function setLive(live) {
    status.textContent = live ? status.dataset.live : status.dataset.reconnecting;
    status.classList.toggle("live", live);
    document.body.dataset.live = live ? "1" : "0";
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + "/ws/board");
    socket.addEventListener("open", function () { retry = 0; setLive(true); });
    socket.addEventListener("message", onMessage);
    socket.addEventListener("close", function () {
      setLive(false);
      retry = Math.min(retry + 1, 5);
      setTimeout(connect, 500 * retry + Math.random() * 500);
    });
  }

  setInterval(refreshMeta, 5000);
  refreshMeta();
  connect();
})();
