/*
 * recctl.js: the shop's snippet for `recctl serve` (served at /v1/recctl.js; no dependencies).
 *
 *   <script src="https://recs.shop.example/v1/recctl.js"></script>
 *   <script>
 *     recctl.init({ endpoint: "https://recs.shop.example", key: "WRITE-KEY" });
 *     recctl.identify("u00042");              // optional: a signed-in customer's id
 *     recctl.view("p0339");                   // a product page; also addToCart, purchase, search
 *     recctl.recommend(document.getElementById("recs"), { k: 8 });
 *   </script>
 *
 * Identity: a signed-in customer is their user id; an anonymous visitor is "visitor:<id>", the id kept in
 * the first-party cookie recctl_vid (400 days); the visit's session id is in recctl_sid, renewed on every
 * event and ending after sessionMinutes (30) without one. Events go to POST /v1/events with the key
 * (Authorization: Bearer); the server checks them with ingest's rules and the visitor's next list
 * reflects them at once. recommend() fills the element with an <ol class="recctl-list"> of <li>s
 * (data-item-id, data-rank, the reason as text) and resolves to the server's JSON document.
 */
(function (w, d) {
  "use strict";
  var cfg = { endpoint: "", key: null, userId: null, sessionMinutes: 30 };

  function cookie(name) {
    var m = d.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return m ? decodeURIComponent(m[1]) : null;
  }
  function setCookie(name, value, maxAge) {
    d.cookie = name + "=" + encodeURIComponent(value) + "; Max-Age=" + maxAge + "; Path=/; SameSite=Lax" +
      (w.location.protocol === "https:" ? "; Secure" : "");
  }
  function newId() {
    if (w.crypto && w.crypto.getRandomValues) {
      var b = new Uint8Array(16), s = "";
      w.crypto.getRandomValues(b);
      for (var i = 0; i < b.length; i++) s += (b[i] + 256).toString(16).slice(1);
      return s;
    }
    return String(Date.now()) + String(Math.random()).slice(2);
  }
  function visitorId() {
    var v = cookie("recctl_vid") || newId();
    setCookie("recctl_vid", v, 400 * 86400);
    return v;
  }
  function sessionId() {
    var s = cookie("recctl_sid") || newId();
    setCookie("recctl_sid", s, cfg.sessionMinutes * 60);
    return s;
  }
  function user() { return cfg.userId || "visitor:" + visitorId(); }
  function json(r) {
    return r.json().then(function (doc) {
      if (!r.ok && r.status !== 207) { var e = new Error(doc.error || ("HTTP " + r.status)); e.doc = doc; throw e; }
      return doc;
    });
  }
  function send(events) {
    var headers = { "content-type": "application/json" };
    if (cfg.key) headers.authorization = "Bearer " + cfg.key;
    return w.fetch(cfg.endpoint + "/v1/events", {
      method: "POST", headers: headers, body: JSON.stringify({ events: events }), keepalive: true
    }).then(json);
  }
  function track(type, fields) {
    var e = { user_id: user(), session_id: sessionId(), event_type: type, ts: new Date().toISOString(),
              page: w.location.pathname };
    for (var k in fields || {}) if (Object.prototype.hasOwnProperty.call(fields, k)) e[k] = fields[k];
    return send([e]);
  }
  function render(el, doc) {
    var ol = d.createElement("ol");
    ol.className = "recctl-list";
    (doc.items || []).forEach(function (it) {
      var li = d.createElement("li");
      li.setAttribute("data-item-id", it.item_id);
      li.setAttribute("data-rank", String(it.rank));
      li.textContent = it.reason || it.item_id;
      ol.appendChild(li);
    });
    el.innerHTML = "";
    el.appendChild(ol);
  }
  var api = {
    init: function (options) { for (var k in options) cfg[k] = options[k]; return api; },
    identify: function (userId) { cfg.userId = userId || null; return api; },
    user: user, visitorId: visitorId, sessionId: sessionId, track: track,
    view: function (itemId, f) { return track("view", Object.assign({ item_id: itemId }, f)); },
    addToCart: function (itemId, f) { return track("add_to_cart", Object.assign({ item_id: itemId }, f)); },
    purchase: function (itemId, f) { return track("purchase", Object.assign({ item_id: itemId }, f)); },
    search: function (query, f) { return track("search", Object.assign({ query: query }, f)); },
    recommend: function (el, options) {
      var o = options || {}, q = [];
      if (o.k) q.push("k=" + encodeURIComponent(o.k));
      if (o.page) q.push("page=" + encodeURIComponent(o.page));
      if (o.item) q.push("item=" + encodeURIComponent(o.item));
      var url = cfg.endpoint + "/v1/recommend/user/" + encodeURIComponent(user()) + (q.length ? "?" + q.join("&") : "");
      return w.fetch(url, cfg.key ? { headers: { authorization: "Bearer " + cfg.key } } : {}).then(json)
        .then(function (doc) { if (el) render(el, doc); return doc; });
    }
  };
  w.recctl = api;
})(window, document);
