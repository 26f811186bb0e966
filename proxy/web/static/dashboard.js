/* rangeproxy /stats: polls <stats_path>.json every second and draws it. No libraries, no other requests. */
(function () {
  "use strict";

  var cfg = JSON.parse(document.getElementById("config").textContent || "{}");
  var REFRESH = cfg.refreshMs || 1000;
  var WINDOW = 300; // seconds shown by the charts

  // --- the admin token: ?token=... in the page URL (kept for this tab), sent as a header ---
  var params = new URLSearchParams(location.search);
  var token = params.get("token") || "";
  try {
    if (token) sessionStorage.setItem("rangeproxy-token", token);
    else token = sessionStorage.getItem("rangeproxy-token") || "";
  } catch (e) { /* storage disabled: keep it in memory */ }
  function authHeaders() { return token ? { "Authorization": "Bearer " + token } : {}; }
  function setToken(t) {
    token = t || "";
    try { if (token) sessionStorage.setItem("rangeproxy-token", token); else sessionStorage.removeItem("rangeproxy-token"); } catch (e) { /* ignore */ }
  }

  var css = getComputedStyle(document.documentElement);
  function color(name) { return css.getPropertyValue(name).trim(); }
  var C = {
    cache: color("--cache"), origin: color("--origin"), error: color("--error"), flight: color("--flight"),
    partial: color("--partial"),
    missing: color("--missing"), line: color("--line"), muted: color("--muted"), faint: color("--faint"),
    upline: color("--upline"), text: color("--text")
  };

  // --- formatting ---------------------------------------------------------------------
  var UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  function fmtBytes(n) {
    if (n == null || !isFinite(n)) return "–";
    var i = 0, v = Math.abs(n);
    while (v >= 1024 && i < UNITS.length - 1) { v /= 1024; i++; }
    var digits = i === 0 ? 0 : (v >= 100 ? 0 : 1);
    return (n < 0 ? "-" : "") + v.toFixed(digits) + " " + UNITS[i];
  }
  function fmtRate(n) { return n == null ? "–" : fmtBytes(n) + "/s"; }
  function fmtPct(x) {
    if (x == null || !isFinite(x)) return "–";
    var p = x * 100;
    if (p >= 99.95 && p < 100) return "99.9%";
    return (Math.abs(p) >= 10 || p === 0 ? p.toFixed(0) : p.toFixed(1)) + "%";
  }
  function fmtNum(n, digits) {
    if (n == null || !isFinite(n)) return "–";
    if (digits == null) digits = n >= 100 ? 0 : (n >= 10 ? 1 : (n === 0 ? 0 : 2));
    return n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: 0 });
  }
  function fmtDur(s) {
    if (s == null || !isFinite(s)) return "–";
    if (s < 0.001) return (s * 1e6).toFixed(0) + " µs";
    if (s < 1) return (s * 1000).toFixed(s < 0.01 ? 2 : (s < 0.1 ? 1 : 0)) + " ms";
    if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + " s";
    return (s / 60).toFixed(1) + " min";
  }
  function fmtUptime(s) {
    s = Math.floor(s);
    var d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60), x = s % 60;
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + m + "m";
    if (m) return m + "m " + x + "s";
    return x + "s";
  }
  function $(id) { return document.getElementById(id); }
  function setText(id, text) { var el = $(id); if (el.textContent !== text) el.textContent = text; }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }
  // A detail line of "label <b>value</b>" parts, built without innerHTML.
  function setDetail(id, parts) {
    var node = $(id);
    node.textContent = "";
    parts.forEach(function (p, i) {
      if (i) node.appendChild(document.createTextNode(" · "));
      if (p[0]) node.appendChild(document.createTextNode(p[0] + " "));
      node.appendChild(el("b", null, p[1]));
      if (p[2]) node.appendChild(document.createTextNode(" " + p[2]));
    });
  }

  // --- canvas helpers -----------------------------------------------------------------
  function setupCanvas(canvas, cssHeight) {
    var dpr = window.devicePixelRatio || 1;
    var w = Math.max(50, canvas.clientWidth), h = cssHeight || canvas.clientHeight || 100;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
      canvas.style.height = h + "px";
    }
    var ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    return { ctx: ctx, w: w, h: h };
  }

  // A round grid step so that at most 5 steps cover v (bytes: round in KiB/MiB/GiB).
  function niceStep(v, bytes) {
    if (!(v > 0)) return bytes ? 256 : 1;
    var unit = 1;
    if (bytes) while (v / unit >= 1024 * 4) unit *= 1024;
    var raw = v / unit / 4, p = Math.pow(10, Math.floor(Math.log10(raw))), m = raw / p;
    var step = m <= 1 ? 1 : m <= 2 ? 2 : m <= 2.5 ? 2.5 : m <= 5 ? 5 : 10;
    return step * p * unit;
  }

  // Stacked areas (bottom first) plus an optional line. The time axis covers the data
  // there is (at least one minute, at most WINDOW seconds), ending at "now".
  function drawChart(canvas, t, layers, line, yfmt, bytes, now) {
    var c = setupCanvas(canvas, 190), ctx = c.ctx;
    var n = t.length, maxV = 0, i, k;
    for (i = 0; i < n; i++) {
      var sum = 0;
      for (k = 0; k < layers.length; k++) sum += layers[k].data[i] || 0;
      if (sum > maxV) maxV = sum;
      if (line && line.data[i] > maxV) maxV = line.data[i];
    }
    var step = niceStep(maxV, bytes), lines = Math.max(1, Math.ceil(maxV / step - 1e-9)), top = step * lines;
    var span = n ? Math.min(WINDOW, Math.max(60, Math.ceil((now - t[0]) / 30) * 30)) : 60;
    ctx.font = "11.5px system-ui, sans-serif";
    var L = 12, R = 10, T = 10, B = 22;
    for (i = 0; i <= lines; i++) L = Math.max(L, ctx.measureText(yfmt(step * i)).width + 14);
    var W = c.w - L - R, H = c.h - T - B;
    function X(ts) { return L + W * (1 - (now - ts) / span); }
    function Y(v) { return T + H * (1 - v / top); }

    // grid and axes
    ctx.textBaseline = "middle";
    ctx.lineWidth = 1;
    for (i = 0; i <= lines; i++) {
      var gv = step * i, gy = Math.round(Y(gv)) + 0.5;
      ctx.strokeStyle = i === 0 ? C.faint : C.line;
      ctx.beginPath(); ctx.moveTo(L, gy); ctx.lineTo(L + W, gy); ctx.stroke();
      ctx.fillStyle = C.muted; ctx.textAlign = "right";
      ctx.fillText(yfmt(gv), L - 8, gy);
    }
    ctx.textAlign = "center"; ctx.textBaseline = "top";
    var tick = span <= 60 ? 10 : span <= 180 ? 30 : 60;
    for (var ago = 0; ago <= span; ago += tick) {
      var gx = X(now - ago);
      ctx.fillStyle = C.muted;
      var label = ago === 0 ? "now" : (ago % 60 === 0 ? "−" + (ago / 60) + " min" : "−" + ago + " s");
      ctx.fillText(label, Math.min(Math.max(gx, L + 16), L + W - 12), T + H + 6);
    }

    ctx.save();
    ctx.beginPath(); ctx.rect(L, T, W, H); ctx.clip();
    // One stacked bar per one-second sample (sample j covers the second before t[j]).
    var px = W / span, gap = px >= 3 ? 1 : 0;
    for (var j = 0; j < n; j++) {
      var x1 = X(t[j]), x0 = Math.max(X(t[j] - 1), j ? X(t[j - 1]) : -Infinity);
      if (x1 - x0 < 0.5) x0 = x1 - Math.max(0.5, px);
      var acc = 0;
      for (k = 0; k < layers.length; k++) {
        var v = layers[k].data[j] || 0;
        if (v <= 0) continue;
        var yTop = Y(acc + v), yBot = Y(acc);
        ctx.fillStyle = layers[k].color;
        ctx.fillRect(x0, yTop, Math.max(0.75, x1 - x0 - gap), yBot - yTop);
        acc += v;
      }
    }
    if (line && n) { // a step line over the bars
      ctx.setLineDash([4, 3]); ctx.lineWidth = 1.6; ctx.strokeStyle = line.color;
      ctx.beginPath();
      for (var q = 0; q < n; q++) {
        var lx0 = Math.max(X(t[q] - 1), q ? X(t[q - 1]) : -Infinity), ly = Y(line.data[q] || 0);
        if (q) ctx.lineTo(lx0, ly); else ctx.moveTo(lx0, ly);
        ctx.lineTo(X(t[q]), ly);
      }
      ctx.stroke(); ctx.setLineDash([]);
    }
    ctx.restore();
    if (!(maxV > 0)) {
      ctx.fillStyle = C.faint; ctx.textAlign = "center"; ctx.textBaseline = "middle";
      ctx.font = "13px system-ui, sans-serif";
      ctx.fillText("no traffic yet", L + W / 2, T + H / 2);
    }
    canvas.dataset.max = String(maxV);
  }

  // One bar per object: each slice cached (green), being fetched (blue) or missing (grey).
  function drawSliceMap(canvas, obj) {
    var c = setupCanvas(canvas, 22), ctx = c.ctx, w = c.w, h = c.h;
    var n = obj.slices || 0;
    ctx.fillStyle = C.missing;
    ctx.fillRect(0, 0, w, h);
    if (!n) return;
    var per = w / n;
    function paint(ranges, col) {
      ctx.fillStyle = col;
      ranges.forEach(function (r) {
        var x0 = r[0] * per, x1 = r[1] * per;
        ctx.fillRect(x0, 0, Math.max(1, x1 - x0), h);
      });
    }
    paint(obj.partial || [], C.partial);
    paint(obj.cached || [], C.cache);
    paint(obj.in_flight || [], C.flight);
    if (per >= 4) { // slice boundaries, when slices are wide enough to tell apart
      ctx.fillStyle = "rgba(11,17,32,0.85)";
      for (var i = 1; i < n; i++) ctx.fillRect(Math.round(i * per) - 0.5, 0, 1, h);
    }
  }

  // --- rendering -------------------------------------------------------------------------
  var last = null;

  function renderKpis(s) {
    var r = s.ratios, tot = s.totals, rates = s.rates, lat = s.latency, cache = s.cache;
    var names = (s.origins || []).map(function (o) { return o.name; });
    setText("node", s.node || "–");
    setText("origin", names.length > 1 ? names.length + " origins: " + names.join(", ") : (s.upstream || names[0] || "–"));
    // served from cache
    setText("hit-bytes", fmtPct(r.hit_ratio_bytes));
    var served = tot.response_bytes.total;
    $("hit-bar-cache").style.width = served ? (100 * tot.response_bytes.cache / served) + "%" : "0";
    $("hit-bar-origin").style.width = served ? (100 * tot.response_bytes.origin / served) + "%" : "0";
    setDetail("hit-detail", [["of bytes ·", fmtPct(r.hit_ratio_requests), "of requests"]]);
    // offload
    var off = s.offload.bytes;
    var offEl = $("offload-bytes");
    offEl.textContent = fmtPct(off);
    offEl.className = "value " + (off == null ? "" : off >= 0.5 ? "good" : off >= 0 ? "warn" : "bad");
    setDetail("offload-detail", [["origin sent", fmtBytes(tot.upstream_bytes)], ["clients got", fmtBytes(served)]]);
    // traffic
    var rps = rates.requests_per_second;
    var v = $("req-rate");
    v.textContent = fmtNum(rps);
    v.appendChild(el("small", null, "req/s"));
    var out = rates.cache_bytes_per_second + rates.origin_bytes_per_second;
    setDetail("traffic-detail", [["", fmtRate(out), "to clients"], ["", fmtNum(tot.requests, 0), "total"]]);
    // latency
    var d = lat.duration_seconds, f = lat.ttfb_seconds;
    setText("lat-p50", fmtDur(d.p50));
    var by = lat.by_cache_status, ld = [];
    if (by.HIT) ld.push(["hit", fmtDur(by.HIT.duration_seconds.p50)]);
    if (by.MISS) ld.push(["miss", fmtDur(by.MISS.duration_seconds.p50)]);
    ld.push(["p99", fmtDur(d.p99)]);
    setDetail("lat-detail", ld);
    // cache
    setText("cache-size", fmtBytes(cache.bytes));
    $("cache-bar").style.width = Math.min(100, 100 * cache.bytes / Math.max(1, cache.limit_bytes)) + "%";
    var cd = [["of", fmtBytes(cache.limit_bytes)]];
    if (cache.objects != null) cd.push(["", fmtNum(cache.objects, 0), cache.objects === 1 ? "object" : "objects"]);
    if (cache.evictions != null) cd.push(["", fmtNum(cache.evictions, 0), "evicted"]);
    setDetail("cache-detail", cd);
  }

  function renderCharts(s) {
    var se = s.series;
    drawChart($("chart-requests"), se.t, [
      { data: se.cache_requests, color: C.cache },
      { data: se.origin_requests, color: C.origin },
      { data: se.error_requests, color: C.error }
    ], null, function (x) { return fmtNum(x) + "/s"; }, false, s.now);
    drawChart($("chart-bytes"), se.t, [
      { data: se.cache_bytes, color: C.cache },
      { data: se.origin_bytes, color: C.origin }
    ], { data: se.upstream_bytes, color: C.upline }, function (x) { return fmtRate(x); }, true, s.now);
  }

  var rows = new Map();

  function objectRow(o) {
    var path = o.path, row = rows.get(o.url);
    if (row) return row;
    var tr = el("tr");
    tr.dataset.path = path;
    tr.dataset.origin = o.origin || "";
    var obj = el("td", "obj"), served = el("td", "num"), hit = el("td", "num"), map = el("td", "map"),
      pct = el("td", "num"), act = el("td", "num");
    var p = el("div", "path", path); p.title = path;
    obj.appendChild(p); obj.appendChild(el("div", "meta"));
    served.appendChild(el("div", "big")); served.appendChild(el("div", "small"));
    hit.appendChild(el("div", "big")); hit.appendChild(el("div", "small", "of its bytes"));
    var canvas = el("canvas"); canvas.dataset.testid = "slice-map";
    map.appendChild(canvas); map.appendChild(el("div", "maptext"));
    pct.appendChild(el("span", "pct"));
    var btn = el("button", "purge", "Purge");
    btn.type = "button";
    btn.title = "Drop every cached slice of this object (asks to confirm)";
    btn.addEventListener("click", function () { onPurge(path, o.origin, btn); });
    act.appendChild(btn);
    [obj, served, hit, map, pct, act].forEach(function (td) { tr.appendChild(td); });
    row = { tr: tr, meta: obj.children[1], served: served.children[0], reqs: served.children[1],
      hit: hit.children[0], canvas: canvas, maptext: map.children[1], pct: pct.children[0], btn: btn };
    rows.set(o.url, row);
    return row;
  }

  function renderObjects(s) {
    var body = $("objects-body"), seen = new Set();
    var several = (s.origins || []).length > 1;
    s.top_objects.forEach(function (o, idx) {
      var row = objectRow(o);
      seen.add(o.url);
      // in place first: the slice map is drawn at the width the table gives it
      if (body.children[idx] !== row.tr) body.insertBefore(row.tr, body.children[idx] || null);
      var meta = [];
      if (several && o.origin) meta.push(o.origin);
      if (o.length != null) meta.push(fmtBytes(o.length));
      if (o.content_type) meta.push(o.content_type.split(";")[0]);
      if (o.slices != null) meta.push(fmtNum(o.slices, 0) + (o.slices === 1 ? " slice" : " slices"));
      if (!o.in_cache) meta.push("not in cache");
      row.meta.textContent = meta.join(" · ");
      row.served.textContent = fmtBytes(o.bytes_served);
      row.reqs.textContent = fmtNum(o.requests, 0) + (o.requests === 1 ? " request" : " requests");
      row.hit.textContent = fmtPct(o.hit_ratio_bytes);
      drawSliceMap(row.canvas, o);
      var mt = (o.slices == null ? "length unknown" :
        fmtNum(o.cached_slices, 0) + " of " + fmtNum(o.slices, 0) + " slices cached") +
        (o.partial_slices ? " · " + fmtNum(o.partial_slices, 0) + " partly" : "") +
        (o.in_flight_slices ? " · " + fmtNum(o.in_flight_slices, 0) + " fetching" : "");
      row.maptext.textContent = mt;
      row.canvas.title = mt;
      var frac = o.cached_fraction;
      row.pct.textContent = fmtPct(frac);
      row.pct.className = "pct " + (frac == null || frac === 0 ? "none" : frac >= 0.999999 ? "full" : "part");
      row.tr.dataset.cachedFraction = frac == null ? "" : String(frac);
    });
    rows.forEach(function (row, url) {
      if (!seen.has(url)) { row.tr.remove(); rows.delete(url); }
    });
    $("objects-empty").style.display = s.top_objects.length ? "none" : "block";
    setText("slice-size", "· " + fmtBytes(s.slice_size) + " slices");
  }

  function renderLatency(s) {
    var body = $("latency-body");
    body.textContent = "";
    var by = s.latency.by_cache_status;
    var order = ["HIT", "MISS", "PARTIAL", "PASS"];
    var label = { HIT: "hit", MISS: "miss", PARTIAL: "partial", PASS: "pass-through" };
    var any = false;
    order.forEach(function (cs) {
      var x = by[cs];
      if (!x) return;
      any = true;
      var tr = el("tr");
      tr.appendChild(el("td", "cs " + cs, label[cs]));
      ["p50", "p95", "p99"].forEach(function (q) { tr.appendChild(el("td", null, fmtDur(x.duration_seconds[q]))); });
      ["p50", "p95", "p99"].forEach(function (q) { tr.appendChild(el("td", null, fmtDur(x.ttfb_seconds[q]))); });
      tr.appendChild(el("td", "num muted", fmtNum(x.samples, 0)));
      body.appendChild(tr);
    });
    var all = el("tr");
    all.appendChild(el("td", "cs", "all"));
    ["p50", "p95", "p99"].forEach(function (q) { all.appendChild(el("td", null, fmtDur(s.latency.duration_seconds[q]))); });
    ["p50", "p95", "p99"].forEach(function (q) { all.appendChild(el("td", null, fmtDur(s.latency.ttfb_seconds[q]))); });
    all.appendChild(el("td", "num muted", fmtNum(s.latency.samples, 0)));
    body.appendChild(all);
    if (!any) all.style.color = C.faint;
  }

  function facts(id, items) {
    var dl = $(id);
    dl.textContent = "";
    items.forEach(function (it) {
      dl.appendChild(el("dt", null, it[0]));
      var dd = el("dd", it[2] || null, it[1]);
      dl.appendChild(dd);
    });
  }
  function cls(n, bad) { return n ? (bad ? "bad" : null) : "zero"; }

  function renderFacts(s) {
    var t = s.totals, o = t.upstream_requests_by_outcome, g = s.gauges, cache = s.cache;
    facts("origin-facts", [
      ["requests to origin", fmtNum(t.upstream_requests, 0), cls(t.upstream_requests)],
      ["answered ok", fmtNum(o.ok, 0), cls(o.ok)],
      ["errors", fmtNum(o.error, 0), cls(o.error, true)],
      ["timeouts", fmtNum(o.timeout, 0), cls(o.timeout, true)],
      ["wrong answers (mismatch)", fmtNum(o.mismatch, 0), cls(o.mismatch, true)],
      ["bytes fetched", fmtBytes(t.upstream_bytes), cls(t.upstream_bytes)],
      ["fetching now (1 min avg)", fmtRate(s.rates.upstream_bytes_per_second), cls(s.rates.upstream_bytes_per_second)],
      ["objects changed at origin", fmtNum(t.origin_version_changes, 0), cls(t.origin_version_changes)]
    ].concat(feedFacts(s.change_feeds || {}, s.now)));
    facts("now-facts", [
      ["slices being fetched", fmtNum(g.slice_fetches_in_flight, 0), cls(g.slice_fetches_in_flight)],
      ["responses streaming", fmtNum(g.responses_waiting, 0), cls(g.responses_waiting)],
      ["requests (1 min avg)", fmtNum(s.rates.requests_per_second) + "/s", cls(s.rates.requests_per_second)],
      ["responses cut short", fmtNum(t.responses_aborted, 0), cls(t.responses_aborted, true)],
      ["purges", fmtNum(t.purges, 0), cls(t.purges)],
      ["damaged entries dropped", fmtNum(cache.corrupt_dropped, 0), cls(cache.corrupt_dropped, true)],
      ["cache writable", cache.writable === false ? "no: " + (cache.write_reason || "?") : "yes",
        cache.writable === false ? "bad" : null],
      ["cache write errors", fmtNum(cache.write_errors || 0, 0), cls(cache.write_errors, true)],
      ["cache entries", fmtNum(cache.entries, 0), cls(cache.entries)]
    ]);
  }

  // One line per origin change feed: connected (events, purges) or down since when, and why.
  function feedFacts(feeds, now) {
    return Object.keys(feeds).sort().map(function (name) {
      var f = feeds[name], label = "change feed" + (name === "default" ? "" : " · " + name);
      var since = fmtUptime(Math.max(0, now - f.since));
      if (f.connected) {
        return [label, "live " + since + " · " + fmtNum(f.events, 0) + " events · " + fmtNum(f.purges, 0) + " purged", "good"];
      }
      return [label, "down " + since + (f.last_error ? " · " + f.last_error : ""), "bad"];
    });
  }

  function upstreamDot(u) {
    var d = el("span", "updot " + (u.healthy ? "up" : "down"));
    d.title = u.base + (u.healthy ? " · in use" : " · cooling down " + fmtDur(u.cool_until) + " after " +
      fmtNum(u.failures, 0) + " failure" + (u.failures === 1 ? "" : "s"));
    return d;
  }

  function renderOrigins(s) {
    var list = s.origins || [], body = $("origins-body");
    $("origins-card").style.display = list.length > 1 || list.some(function (o) { return o.upstreams.length > 1; })
      ? "block" : "none";
    while (body.firstChild) body.removeChild(body.firstChild);
    list.forEach(function (o) {
      var tr = el("tr"), r = o.requests;
      tr.dataset.origin = o.name;
      var name = el("td", "obj"); name.appendChild(el("div", "path", o.name));
      var ups = el("td", "ups"); o.upstreams.forEach(function (u) { ups.appendChild(upstreamDot(u)); });
      [name, el("td", "num", fmtNum(r.cache + r.origin + r.error, 0)), el("td", "num", fmtPct(o.hit_ratio_bytes)),
        el("td", "num", fmtBytes(o.response_bytes.cache + o.response_bytes.origin)),
        el("td", "num", fmtBytes(o.upstream_bytes)),
        el("td", "num" + (o.upstream_failures ? " bad" : ""), fmtNum(o.upstream_failures, 0) +
          (r.error ? " · " + fmtNum(r.error, 0) + " errors" : "")), ups
      ].forEach(function (td) { tr.appendChild(td); });
      body.appendChild(tr);
    });
  }

  function render(s) {
    last = s;
    renderKpis(s);
    renderCharts(s);
    renderObjects(s);
    renderOrigins(s);
    renderLatency(s);
    renderFacts(s);
    document.body.dataset.updated = String(s.now);
  }

  // --- live status and polling -------------------------------------------------------------
  var lastOk = 0, failures = 0, timer = null;
  function setLive(ok, why) {
    var live = $("live");
    live.className = "live " + (ok ? "ok" : "down");
    if (ok) setText("live-text", "live · up " + fmtUptime(last.uptime_seconds) + " · updated " + new Date(lastOk).toLocaleTimeString());
    else setText("live-text", "no data (" + why + ")" + (lastOk ? " · last " + new Date(lastOk).toLocaleTimeString() : ""));
  }

  function schedule(ms) {
    if (timer) clearTimeout(timer);
    timer = setTimeout(poll, ms);
  }

  function poll() {
    timer = null;
    fetch(cfg.statsJson, { headers: authHeaders(), cache: "no-store", credentials: "omit" })
      .then(function (r) {
        if (r.status === 401) throw new Error("token needed: open this page as ?token=<admin_token>");
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (s) { lastOk = Date.now(); failures = 0; render(s); setLive(true); })
      .catch(function (e) { failures++; setLive(false, e.message || String(e)); })
      .then(function () { schedule(failures ? Math.min(10000, REFRESH * (1 + failures)) : REFRESH); });
  }

  window.addEventListener("resize", function () { if (last) { renderCharts(last); renderObjects(last); } });

  // --- purge ---------------------------------------------------------------------------------
  var toastTimer = null;
  function toast(text, err) {
    var t = $("toast");
    t.textContent = text;
    t.className = "show" + (err ? " err" : "");
    if (toastTimer) clearTimeout(toastTimer);
    toastTimer = setTimeout(function () { t.className = ""; }, 4000);
  }

  function disarm(btn) {
    btn.classList.remove("armed");
    btn.textContent = "Purge";
    if (btn._disarm) { clearTimeout(btn._disarm); btn._disarm = null; }
  }

  function onPurge(path, origin, btn) {
    if (btn.disabled) return;
    if (!btn.classList.contains("armed")) { // first click arms, a second one within 4 s purges
      btn.classList.add("armed");
      btn.textContent = "Confirm";
      btn._disarm = setTimeout(function () { disarm(btn); }, 4000);
      return;
    }
    disarm(btn);
    if (!token) {
      var t = window.prompt("Admin token (purge needs it):");
      if (!t) return;
      setToken(t);
    }
    btn.disabled = true;
    btn.textContent = "Purging…";
    var url = cfg.purgePrefix + path.replace(/^\/+/, "");
    var headers = authHeaders();
    if (origin) headers["Rangeproxy-Origin"] = origin; // the object's origin, whatever Host this page has
    fetch(url, { method: "DELETE", headers: headers, cache: "no-store", credentials: "omit" })
      .then(function (r) {
        if (r.ok) return r.json().then(function (j) {
          toast("Purged " + path + (j.cached_slices_before ? " (" + j.cached_slices_before + " slices dropped)" : ""));
        });
        return r.text().then(function (txt) {
          if (r.status === 401) setToken("");
          toast("Purge refused (" + r.status + "): " + txt.replace(/^\d+ [^:]*: /, "").trim(), true);
        });
      })
      .catch(function (e) { toast("Purge failed: " + (e.message || e), true); })
      .then(function () { btn.disabled = false; btn.textContent = "Purge"; schedule(0); });
  }

  poll();
})();
