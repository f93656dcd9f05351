// herald status page. No framework, no build step, nothing from elsewhere.
// Every value that comes from the network is put into the page with
// textContent or as an SVG attribute, never as HTML.
//
// It reads GET /api/status/stream with fetch() and a small SSE parser (an
// EventSource cannot send the Authorization header): first an `event:
// history` with the samples the replica kept, then an `event: nodes` with a
// snapshot of the cluster every second. When the stream ends it reconnects
// with backoff, through whatever replica the load balancer picks.
(function () {
  "use strict";

  var WINDOW_MS = 5 * 60 * 1000; // what the charts show
  var STALL_MS = 10000;          // no event for this long: reconnect
  var BACKOFF_MIN_MS = 500;
  var BACKOFF_MAX_MS = 10000;
  var KEY_STORAGE = "herald.status.key";
  var PALETTE = ["#2f6fde", "#e8710a", "#12a37f", "#c2185b", "#8e44ad", "#b8860b", "#0097a7", "#6d4c41", "#d81b60", "#558b2f"];
  var SVGNS = "http://www.w3.org/2000/svg";

  var $ = function (id) { return document.getElementById(id); };

  // window.heraldStatus is the page's state, for people and browser tests.
  var st = window.heraldStatus = {
    state: "connecting", // connecting | open | retrying | unauthorized
    snapshot: null,      // the latest Snapshot {time, nodes}
    snapshots: 0,        // `nodes` events received
    histories: 0,        // `history` events received
    samples: [],         // the Snapshots the charts show, oldest first
    intervalMs: 1000,
    streams: 0,          // streams opened
    reconnects: 0,       // streams opened after the first
    nodeIds: [],         // the ids on the cards, sorted
    charts: {},          // name -> {points, series, max, last: {id: value}}
    topics: null,        // the last /api/topics answer
    topic: null,         // the last /api/topics/{topic} answer
    lastError: "",
    connect: connect
  };

  // ---- admin key ----------------------------------------------------------

  var key = readKey();

  function readKey() {
    var m = /(?:^#|&)key=([^&]*)/.exec(location.hash);
    if (m) {
      var k = "";
      try { k = decodeURIComponent(m[1]); } catch (e) { k = m[1]; }
      storeKey(k);
      // Out of the address bar (and the history, and screenshots).
      history.replaceState(null, "", location.pathname + location.search);
      return k;
    }
    try { return sessionStorage.getItem(KEY_STORAGE) || ""; } catch (e) { return ""; }
  }

  function storeKey(k) {
    try { sessionStorage.setItem(KEY_STORAGE, k); } catch (e) { /* private mode */ }
  }

  function headers(extra) {
    var h = extra || {};
    if (key) { h.Authorization = "Bearer " + key; }
    return h;
  }

  function needKey(status, message) {
    setState("unauthorized");
    var form = $("key-form");
    var text = status !== 403 ? "This page needs the admin key" :
      key ? "This key is not allowed to read the cluster view" : "The server refused the cluster view";
    $("key-message").textContent = text + (message ? " (" + message + ")." : ".");
    if (form.hidden) {
      form.hidden = false;
      $("admin-key").focus();
    }
  }

  $("key-form").addEventListener("submit", function (e) {
    e.preventDefault();
    key = $("admin-key").value.trim();
    storeKey(key);
    $("admin-key").value = "";
    $("key-form").hidden = true;
    connect();
    searchTopics();
  });

  // Unauthorized is an error that is not retried until a key is entered.
  function Unauthorized(status, message) { this.status = status; this.message = message; }

  async function apiGet(path) {
    var resp = await fetch(path, { headers: headers({ Accept: "application/json" }), cache: "no-store" });
    var body = null;
    try { body = await resp.json(); } catch (e) { body = null; }
    if (resp.status === 401 || resp.status === 403) {
      needKey(resp.status, body && body.error);
      throw new Unauthorized(resp.status, body && body.error);
    }
    if (!resp.ok) {
      throw new Error((body && body.error) || ("HTTP " + resp.status));
    }
    return body;
  }

  // ---- the stream ---------------------------------------------------------

  var ctrl = null;       // AbortController of the current stream
  var attempt = 0;       // failed attempts since the last event
  var retryTimer = 0;
  var stallTimer = 0;
  var lastEventAt = 0;   // Date.now() of the last event

  function setState(s) {
    st.state = s;
    var el = $("stream-state");
    el.textContent = s;
    el.setAttribute("data-state", s);
  }

  function connect() {
    clearTimeout(retryTimer);
    if (ctrl) { ctrl.abort(); }
    var my = ctrl = new AbortController();
    setState(st.streams > 0 ? "retrying" : "connecting");
    fetch("/api/status/stream", {
      headers: headers({ Accept: "text/event-stream" }),
      cache: "no-store",
      signal: my.signal
    }).then(async function (resp) {
      if (resp.status === 401 || resp.status === 403) {
        var body = null;
        try { body = await resp.json(); } catch (e) { body = null; }
        throw new Unauthorized(resp.status, body && body.error);
      }
      if (!resp.ok || !resp.body) {
        throw new Error("HTTP " + resp.status);
      }
      if (my !== ctrl) { return; }
      if (st.streams > 0) { st.reconnects++; }
      st.streams++;
      setState("open");
      armStall(my);
      await readSSE(resp.body, function (type, data) {
        if (my !== ctrl) { return; }
        attempt = 0;
        armStall(my);
        onEvent(type, data);
      });
      throw new Error("the stream ended");
    }).catch(function (err) {
      if (my !== ctrl) { return; } // replaced by a newer stream
      clearTimeout(stallTimer);
      if (err instanceof Unauthorized) {
        needKey(err.status, err.message);
        return;
      }
      st.lastError = String(err && err.message || err);
      retry();
    });
  }

  function retry() {
    setState("retrying");
    var base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * Math.pow(2, attempt));
    attempt++;
    retryTimer = setTimeout(connect, base / 2 + Math.random() * base / 2);
  }

  // A stream that goes silent (a replica frozen, a half-open connection)
  // is dropped and opened again.
  function armStall(my) {
    clearTimeout(stallTimer);
    stallTimer = setTimeout(function () {
      if (my === ctrl) { my.abort(); }
    }, STALL_MS);
  }

  // readSSE parses an event stream (the WHATWG rules: lines end with CRLF,
  // LF or CR; `event` and `data` fields; an empty line dispatches) and
  // calls onEvent(type, data) per event. It returns when the stream ends.
  async function readSSE(body, onEvent) {
    var reader = body.getReader();
    var decoder = new TextDecoder();
    var buf = "", held = "", type = "", data = [];
    function line(l) {
      if (l === "") {
        if (data.length > 0) { onEvent(type || "message", data.join("\n")); }
        type = ""; data = [];
        return;
      }
      if (l.charAt(0) === ":") { return; }
      var i = l.indexOf(":");
      var field = i < 0 ? l : l.slice(0, i);
      var value = i < 0 ? "" : l.slice(i + 1);
      if (value.charAt(0) === " ") { value = value.slice(1); }
      if (field === "event") { type = value; } else if (field === "data") { data.push(value); }
    }
    for (;;) {
      var r = await reader.read();
      if (r.done) { return; }
      var text = held + decoder.decode(r.value, { stream: true });
      held = "";
      // A CR at the end may be the first half of a CRLF.
      if (text.charAt(text.length - 1) === "\r") { held = "\r"; text = text.slice(0, -1); }
      buf += text.replace(/\r\n?/g, "\n");
      var nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        line(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
    }
  }

  function onEvent(type, data) {
    var v;
    try { v = JSON.parse(data); } catch (e) { st.lastError = "bad JSON in " + type; return; }
    lastEventAt = Date.now();
    if (type === "history") {
      st.histories++;
      if (v.interval_ms > 0) { st.intervalMs = v.interval_ms; }
      var hs = (v.samples || []).filter(validSample).sort(function (a, b) { return a._t - b._t; });
      if (hs.length > 0) {
        // What this replica remembers replaces what the page saw since its
        // first sample (after a reconnect, the page keeps the older part).
        var first = hs[0]._t;
        st.samples = st.samples.filter(function (s) { return s._t < first; }).concat(hs);
      }
    } else if (type === "nodes") {
      if (!validSample(v)) { return; }
      st.snapshots++;
      // Keep the samples in time order (another replica's clock may be a
      // little behind the last one's).
      while (st.samples.length > 0 && st.samples[st.samples.length - 1]._t >= v._t) { st.samples.pop(); }
      st.samples.push(v);
    } else {
      return;
    }
    if (st.samples.length > 0) {
      var last = st.samples[st.samples.length - 1];
      var from = last._t - WINDOW_MS;
      while (st.samples.length > 0 && st.samples[0]._t < from) { st.samples.shift(); }
      st.snapshot = last;
    }
    scheduleRender();
  }

  function validSample(s) {
    if (!s || !Array.isArray(s.nodes)) { return false; }
    s._t = parseTime(s.time);
    return !isNaN(s._t);
  }

  // parseTime reads RFC 3339 (with nanoseconds) into milliseconds.
  function parseTime(s) {
    if (typeof s !== "string" || s === "") { return NaN; }
    return Date.parse(s.replace(/(\.\d{3})\d+/, "$1"));
  }

  // ---- rendering ----------------------------------------------------------

  var renderPending = false;
  function scheduleRender() {
    if (renderPending) { return; }
    renderPending = true;
    setTimeout(function () { renderPending = false; render(); }, 0);
  }

  var colors = {}; // id -> palette color, kept for as long as the page lives
  var colorsUsed = 0;
  function colorOf(id) {
    if (!colors[id]) { colors[id] = PALETTE[colorsUsed++ % PALETTE.length]; }
    return colors[id];
  }

  function render() {
    var snap = st.snapshot;
    if (!snap) { return; }
    var nodes = snap.nodes.slice().sort(function (a, b) { return a.id < b.id ? -1 : a.id > b.id ? 1 : 0; });
    nodes.forEach(function (n) { colorOf(n.id); });
    var note = $("view-note");
    note.hidden = snap.complete !== false && !snap.error;
    note.textContent = note.hidden ? "" : "The cluster view is incomplete" + (snap.error ? ": " + snap.error : ".");
    renderCards(nodes, snap._t);
    renderLegend(nodes);
    renderCharts();
    updateAge();
  }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }

  var cards = {}; // id -> {root, fields}

  function renderCards(nodes, now) {
    var box = $("nodes");
    var seen = {};
    nodes.forEach(function (n, i) {
      seen[n.id] = true;
      var c = cards[n.id] || (cards[n.id] = makeCard(n.id));
      fillCard(c, n, now);
      if (box.children[i] !== c.root) { box.insertBefore(c.root, box.children[i] || null); }
    });
    Object.keys(cards).forEach(function (id) {
      if (!seen[id]) {
        cards[id].root.remove();
        delete cards[id];
      }
    });
    st.nodeIds = nodes.map(function (n) { return n.id; });
    $("node-count").textContent = String(nodes.length);
    $("nodes-empty").hidden = nodes.length > 0;
  }

  function makeCard(id) {
    var root = el("article", "card");
    root.setAttribute("data-node-id", id);
    root.style.setProperty("--c", colorOf(id));
    var f = {};
    root.appendChild(el("div", "id", id));
    f.sub = root.appendChild(el("div", "sub"));
    var dl = root.appendChild(el("dl"));
    [["uptime", "Uptime"], ["connections", "Connections"], ["topics", "Topics"],
      ["deliveries", "Deliveries / s"], ["publishes", "Publishes / s"], ["latency", "Latency p50 / p99"]].forEach(function (p) {
      dl.appendChild(el("dt", "", p[1]));
      f[p[0]] = dl.appendChild(el("dd"));
      f[p[0]].setAttribute("data-field", p[0]);
    });
    var broker = root.appendChild(el("div", "broker"));
    f.broker = broker.appendChild(el("span", "state"));
    f.broker.setAttribute("data-field", "broker");
    f.lastEvent = broker.appendChild(el("span", "muted"));
    f.top = root.appendChild(el("div", "top"));
    return { root: root, f: f };
  }

  function fillCard(c, n, now) {
    var f = c.f;
    var sub = [n.address, n.version ? (/^\d/.test(n.version) ? "v" : "") + n.version : ""].filter(Boolean).join(" · ");
    var updated = parseTime(n.updated);
    if (!isNaN(updated) && now - updated > 3 * st.intervalMs) {
      sub += " · last report " + fmtAgo(now - updated) + " ago";
    }
    set(f.sub, sub);
    var started = parseTime(n.started);
    set(f.uptime, isNaN(started) ? "—" : fmtDuration(now - started));
    set(f.connections, fmtInt(n.connections));
    set(f.topics, fmtInt(n.topics) + (n.topics_truncated ? "+" : ""));
    set(f.deliveries, fmtRate(n.deliveries_per_second));
    set(f.publishes, fmtRate(n.publishes_per_second));
    set(f.latency, fmtLatency(n.latency_p50_seconds) + " / " + fmtLatency(n.latency_p99_seconds));
    var b = n.broker || {};
    var up = b.up === true;
    set(f.broker, (b.kind || "broker") + " " + (up ? "up" : "down"));
    f.broker.setAttribute("data-up", String(up));
    var le = parseTime(b.last_event);
    set(f.lastEvent, isNaN(le) ? "no pub/sub activity yet" : "last event " + fmtAgo(now - le) + " ago");
    var top = (n.top_topics || []).slice(0, 5).map(function (t) { return t.topic + " " + fmtInt(t.subscribers); });
    set(f.top, top.length > 0 ? "top: " + top.join(" · ") + (n.topics_truncated ? " …" : "") : "");
  }

  function set(e, text) { if (e.textContent !== text) { e.textContent = text; } }

  function renderLegend(nodes) {
    var box = $("legend");
    var live = {};
    nodes.forEach(function (n) { live[n.id] = true; });
    var ids = seriesIds();
    while (box.firstChild) { box.removeChild(box.firstChild); }
    ids.forEach(function (id) {
      var s = el("span", live[id] ? "" : "muted", live[id] ? id : id + " (gone)");
      s.style.setProperty("--c", colorOf(id));
      s.setAttribute("data-legend-id", id);
      box.appendChild(s);
    });
  }

  // seriesIds: every replica in the samples on the charts, sorted.
  function seriesIds() {
    var ids = {};
    st.samples.forEach(function (s) { s.nodes.forEach(function (n) { ids[n.id] = true; }); });
    return Object.keys(ids).sort();
  }

  function num(v) { return typeof v === "number" && isFinite(v) ? v : null; }

  var CHARTS = [
    { name: "connections", fmt: fmtInt, min: 4, lines: [{ v: function (n) { return num(n.connections); } }] },
    { name: "deliveries", fmt: fmtRate, min: 2, lines: [{ v: function (n) { return num(n.deliveries_per_second); } }] },
    { name: "publishes", fmt: fmtRate, min: 2, lines: [{ v: function (n) { return num(n.publishes_per_second); } }] },
    {
      name: "latency", fmt: fmtLatency, min: 0.002, lines: [
        { v: function (n) { return num(n.latency_p99_seconds); } },
        { v: function (n) { return num(n.latency_p50_seconds); }, cls: "p50" }
      ]
    }
  ];

  function renderCharts() {
    var samples = st.samples;
    var now = samples[samples.length - 1]._t;
    var ids = seriesIds();
    CHARTS.forEach(function (c) { drawLines(c, samples, ids, now); });
    drawBroker(samples, ids, now);
  }

  function svgEl(tag, attrs) {
    var e = document.createElementNS(SVGNS, tag);
    for (var k in attrs) { e.setAttribute(k, String(attrs[k])); }
    return e;
  }

  function clear(svg) { while (svg.firstChild) { svg.removeChild(svg.firstChild); } }

  function frame(svg, height) {
    var w = Math.max(200, Math.round(svg.getBoundingClientRect().width) || 600);
    svg.setAttribute("viewBox", "0 0 " + w + " " + height);
    svg.setAttribute("width", String(w));
    svg.setAttribute("height", String(height));
    return w;
  }

  function timeAxis(svg, x0, x1, y, now) {
    for (var m = 5; m >= 0; m--) {
      var x = x0 + (x1 - x0) * (5 - m) / 5;
      var t = svgEl("text", { x: x, y: y, "text-anchor": m === 5 ? "start" : m === 0 ? "end" : "middle" });
      t.textContent = m === 0 ? "now" : "−" + m + "m";
      svg.appendChild(t);
    }
  }

  // nodeIn returns the node of a sample with this id, or null.
  function nodeIn(s, id) {
    if (!s._byId) {
      s._byId = {};
      s.nodes.forEach(function (n) { s._byId[n.id] = n; });
    }
    return Object.prototype.hasOwnProperty.call(s._byId, id) ? s._byId[id] : null;
  }

  // A new segment starts where a replica is missing from a sample or
  // samples are further apart than a few intervals.
  function gapMs() { return Math.max(3 * st.intervalMs, 3000); }

  function drawLines(c, samples, ids, now) {
    var svg = $("chart-" + c.name);
    var H = 150, L = 52, R = 8, T = 8, B = 20;
    var W = frame(svg, H);
    clear(svg);
    var max = 0, points = 0, last = {};
    samples.forEach(function (s) {
      s.nodes.forEach(function (n) {
        c.lines.forEach(function (ln) { var v = ln.v(n); if (v !== null && v > max) { max = v; } });
      });
    });
    var scale = niceScale(Math.max(max, c.min));
    var top = scale.top;
    var x = function (t) { return L + (W - L - R) * (1 - (now - t) / WINDOW_MS); };
    var y = function (v) { return T + (H - T - B) * (1 - v / top); };
    for (var i = 0; i * scale.step <= top * 1.000001; i++) {
      var v = i * scale.step, yy = y(v);
      svg.appendChild(svgEl("line", { "class": "grid", x1: L, x2: W - R, y1: yy, y2: yy }));
      var lbl = svgEl("text", { x: L - 6, y: yy + 4, "text-anchor": "end" });
      lbl.textContent = c.fmt(v);
      svg.appendChild(lbl);
    }
    timeAxis(svg, L, W - R, H - 4, now);
    ids.forEach(function (id) {
      c.lines.forEach(function (ln) {
        var d = "", prevT = -Infinity, open = false;
        samples.forEach(function (s) {
          var n = nodeIn(s, id);
          var v = n ? ln.v(n) : null;
          if (v === null) { open = false; return; }
          var px = x(s._t).toFixed(1), py = y(v).toFixed(1);
          d += (open && s._t - prevT <= gapMs() ? "L" : "M") + px + " " + py;
          open = true; prevT = s._t; points++;
          if (ln === c.lines[0]) { last[id] = v; }
        });
        if (d !== "") {
          var p = svgEl("path", { "class": "series" + (ln.cls ? " " + ln.cls : ""), d: d, stroke: colorOf(id) });
          p.setAttribute("data-series", id);
          svg.appendChild(p);
        }
      });
    });
    st.charts[c.name] = { points: points, series: ids.length, max: max, last: last };
    svg.setAttribute("data-points", String(points));
  }

  function drawBroker(samples, ids, now) {
    var svg = $("chart-broker");
    var L = 170, R = 8, T = 4, ROW = 18, B = 20;
    var H = T + Math.max(1, ids.length) * ROW + B;
    var W = frame(svg, H);
    clear(svg);
    var x = function (t) { return L + (W - L - R) * (1 - (now - t) / WINDOW_MS); };
    var points = 0, last = {};
    ids.forEach(function (id, row) {
      var y = T + row * ROW;
      var lbl = svgEl("text", { x: 0, y: y + 12 });
      lbl.textContent = id.length > 26 ? id.slice(0, 25) + "…" : id;
      svg.appendChild(lbl);
      svg.appendChild(svgEl("rect", { x: L - 12, y: y + 3, width: 6, height: ROW - 6, fill: colorOf(id), rx: 1 }));
      // One rectangle per run of samples in the same state.
      var run = null;
      function flush() {
        if (!run) { return; }
        var x0 = Math.max(L, x(run.from)), x1 = Math.min(W - R, Math.max(x0 + 1, x(run.to)));
        if (x1 > L) {
          svg.appendChild(svgEl("rect", { "class": run.up ? "up" : "down", x: x0.toFixed(1), y: y + 3, width: (x1 - x0).toFixed(1), height: ROW - 6 }));
        }
        run = null;
      }
      for (var i = 0; i < samples.length; i++) {
        var s = samples[i], n = nodeIn(s, id);
        if (!n) { flush(); continue; }
        var up = !!(n.broker && n.broker.up);
        var next = i + 1 < samples.length ? samples[i + 1]._t : s._t + st.intervalMs;
        var to = Math.min(next, s._t + gapMs());
        if (run && (run.up !== up || s._t > run.to)) { flush(); }
        if (!run) { run = { up: up, from: s._t, to: to }; } else { run.to = to; }
        points++;
        last[id] = up ? 1 : 0;
      }
      flush();
    });
    timeAxis(svg, L, W - R, H - 4, now);
    st.charts.broker = { points: points, series: ids.length, max: 1, last: last };
    svg.setAttribute("data-points", String(points));
  }

  // niceScale: a top at or above max and a round step for about 4 lines.
  function niceScale(max) {
    var raw = max / 4;
    var p = Math.pow(10, Math.floor(Math.log10(raw)));
    var f = raw / p;
    var step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
    return { top: Math.ceil(max / step - 1e-9) * step, step: step };
  }

  // ---- formatting ---------------------------------------------------------

  function fmtInt(v) { return typeof v === "number" ? Math.round(v).toLocaleString("en-US") : "—"; }

  function fmtRate(v) {
    if (typeof v !== "number") { return "—"; }
    if (v === 0) { return "0"; }
    if (v >= 100) { return Math.round(v).toLocaleString("en-US"); }
    if (v >= 10) { return v.toFixed(1).replace(/\.0$/, ""); }
    return v.toFixed(2).replace(/0$/, "").replace(/\.0$/, "");
  }

  function fmtLatency(s) {
    if (typeof s !== "number") { return "—"; }
    if (s === 0) { return "0"; }
    if (s >= 1) { return s.toFixed(s >= 10 ? 0 : 1) + " s"; }
    var ms = s * 1000;
    if (ms >= 10) { return Math.round(ms) + " ms"; }
    if (ms >= 1) { return ms.toFixed(1).replace(/\.0$/, "") + " ms"; }
    return ms.toFixed(2).replace(/0$/, "") + " ms";
  }

  function fmtDuration(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    var d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    if (d > 0) { return d + "d " + h + "h"; }
    if (h > 0) { return h + "h " + m + "m"; }
    if (m > 0) { return m + "m " + (s % 60) + "s"; }
    return s + "s";
  }

  function fmtAgo(ms) { return ms < 1000 ? "<1s" : fmtDuration(ms); }

  function updateAge() {
    $("updated").textContent = lastEventAt === 0 ? "never" : fmtAgo(Date.now() - lastEventAt) + " ago";
  }
  setInterval(updateAge, 1000);

  // Charts are drawn to the width of their box.
  var resizeTimer = 0;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () { if (st.snapshot) { renderCharts(); } }, 100);
  });

  // ---- topics -------------------------------------------------------------

  var searchSeq = 0;
  var searchTimer = 0;

  async function searchTopics() {
    var seq = ++searchSeq;
    var prefix = $("topic-prefix").value.trim();
    var err = $("topic-error");
    try {
      var res = await apiGet("/api/topics?prefix=" + encodeURIComponent(prefix) + "&limit=50");
      if (seq !== searchSeq) { return; }
      err.hidden = true;
      st.topics = res;
      renderTopics(res, prefix);
    } catch (e) {
      if (seq !== searchSeq || e instanceof Unauthorized) { return; }
      err.textContent = "Topic search failed: " + e.message;
      err.hidden = false;
    }
  }

  function renderTopics(res, prefix) {
    var list = $("topic-results");
    while (list.firstChild) { list.removeChild(list.firstChild); }
    var topics = res.topics || [];
    var what = prefix === "" ? "busiest topics" : "topics starting with “" + prefix + "”";
    var summary = topics.length === 0 ? "No " + what + " with subscribers." : topics.length + " " + what + ", busiest first.";
    if (res.complete === false) { summary += " Partial: some replicas listed only their busiest topics."; }
    $("topic-summary").textContent = summary;
    var selected = st.topic && st.topic.topic;
    topics.forEach(function (t) {
      var li = el("li");
      li.setAttribute("data-topic", t.topic);
      li.setAttribute("aria-selected", String(t.topic === selected));
      var b = li.appendChild(el("button"));
      b.type = "button";
      b.appendChild(el("span", "name", t.topic));
      b.appendChild(el("span", "count", fmtInt(t.subscribers) + " subscriber" + (t.subscribers === 1 ? "" : "s") +
        " · " + fmtInt(t.nodes) + " replica" + (t.nodes === 1 ? "" : "s")));
      b.addEventListener("click", function () { showTopic(t.topic); });
      list.appendChild(li);
    });
  }

  async function showTopic(topic) {
    var err = $("topic-error");
    try {
      var res = await apiGet("/api/topics/" + encodeURIComponent(topic));
      err.hidden = true;
      st.topic = res;
      renderTopic(res);
    } catch (e) {
      if (e instanceof Unauthorized) { return; }
      err.textContent = "Topic " + topic + ": " + e.message;
      err.hidden = false;
    }
  }

  function renderTopic(res) {
    var box = $("topic-detail");
    box.hidden = false;
    box.setAttribute("data-topic", res.topic);
    $("topic-detail-name").textContent = res.topic;
    $("topic-detail-subscribers").textContent = fmtInt(res.subscribers);
    var h = res.history || {};
    $("topic-detail-length").textContent = typeof h.length === "number" ? fmtInt(h.length) : "—";
    $("topic-detail-first").textContent = h.first_id || "—";
    $("topic-detail-last").textContent = h.last_id || "—";
    $("topic-detail-epoch").textContent = h.epoch || "—";
    var body = $("topic-detail-nodes");
    while (body.firstChild) { body.removeChild(body.firstChild); }
    (res.nodes || []).forEach(function (n) {
      var tr = el("tr");
      tr.setAttribute("data-node-id", n.id);
      tr.appendChild(el("td", "", n.id));
      tr.appendChild(el("td", "", fmtInt(n.subscribers)));
      body.appendChild(tr);
    });
    if ((res.nodes || []).length === 0) {
      var tr = el("tr");
      var td = tr.appendChild(el("td", "muted", "No replica has a subscriber."));
      td.colSpan = 2;
      body.appendChild(tr);
    }
    $("topic-detail-note").textContent = res.complete === false ? "Partial: some replicas did not list all their topics." : "";
    Array.prototype.forEach.call($("topic-results").children, function (li) {
      li.setAttribute("aria-selected", String(li.getAttribute("data-topic") === res.topic));
    });
  }

  $("topic-form").addEventListener("submit", function (e) {
    e.preventDefault();
    clearTimeout(searchTimer);
    searchTopics();
  });
  $("topic-prefix").addEventListener("input", function () {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(searchTopics, 300);
  });

  connect();
  searchTopics();
})();
