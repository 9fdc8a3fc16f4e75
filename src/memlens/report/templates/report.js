(function () {
  "use strict";
  // Audited text is untrusted. It arrives as JSON (never parsed as HTML) and every piece of it is
  // inserted with textContent / createTextNode. Never use innerHTML (or insertAdjacentHTML, or
  // document.write) with anything from P.
  var P = JSON.parse(document.getElementById("memlens-data").textContent);
  // Texts outside the token-view selection come column-wise (scores only): rebuild them as records
  // with empty token data, so the list, sorting and filters treat every text alike.
  var T = P.texts, R = P.rest, SEL = P.selection;
  T.forEach(function (t) { t.tv = 1; });
  for (var r = 0; r < R.id.length; r++) {
    var sc = {};
    for (var a in R.scores) sc[a] = R.scores[a][r];
    T.push({id: R.id[r], label: R.label[r], tier: R.tier[r], scores: sc, text: "", start: [], end: [], lp_t: [], lp_r: null,
            s: {}, pii: [], tv: 0});
  }
  var TA = {};
  P.token_attacks.forEach(function (a) { TA[a.name] = a; });
  var S = {attack: P.default_attack, tok: P.token_attacks.length ? P.token_attacks[0].name : null, thr: P.threshold,
           sortKey: "score", sortDir: -1, current: null, spans: [], rows: new Map(), limit: 0};
  var PAGE = 200;  // rows drawn at a time: a long table makes every redraw (e.g. a slider step) slow
  S.limit = PAGE;

  function $(id) { return document.getElementById(id); }
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function isNum(v) { return typeof v === "number" && isFinite(v); }
  function fmt(v, d) { return isNum(v) ? v.toFixed(d === undefined ? 3 : d) : ""; }
  function labelName(l) { return l === 1 ? "member" : l === 0 ? "non-member" : ""; }
  function tierName(t) { return t === null || t === undefined ? "" : (typeof t === "number" ? t + "x" : String(t)); }
  function unit() { return S.tok ? TA[S.tok].unit : ""; }
  function scoresOf(t) { return S.tok && t.s[S.tok] ? t.s[S.tok] : null; }
  function setText(id, v) { var e = $(id); if (e) e.textContent = v; }

  // ---- leak statistics at the current threshold, per text -------------------------------------
  function computeLeaks() {
    for (var k = 0; k < T.length; k++) {
      var t = T[k], s = scoresOf(t), n = 0, bits = 0, npii = 0, types = {};
      if (s) for (var i = 0; i < s.length; i++) {
        var v = s[i];
        if (v !== null && v > S.thr) { n++; bits += v; var p = t.pii[i]; if (p >= 0) { npii++; types[p] = 1; } }
      }
      t._n = n; t._bits = bits; t._npii = npii; t._types = Object.keys(types).map(function (x) { return P.pii_types[+x]; });
    }
  }

  // ---- texts list ------------------------------------------------------------------------------
  var attackSel = $("attackSel");
  P.attacks.forEach(function (a) { var o = el("option", a); o.value = a; attackSel.appendChild(o); });
  if (S.attack) attackSel.value = S.attack;
  var tierSel = $("tierSel");
  if (tierSel) {
    var tiers = [];
    T.forEach(function (t) { if (t.tier !== null && tiers.indexOf(t.tier) < 0) tiers.push(t.tier); });
    tiers.sort(function (a, b) { return a < b ? -1 : a > b ? 1 : 0; });
    tiers.forEach(function (x) { var o = el("option", tierName(x)); o.value = String(x); tierSel.appendChild(o); });
  }
  function sortVal(t, k) {
    if (k === "score") return t.scores[S.attack];
    if (k === "leaked") return t._n;
    if (k === "bits") return t._bits;
    return t[k];
  }
  function renderTexts() {
    var q = $("filter").value.toLowerCase(), lab = $("labelSel").value, tier = tierSel ? tierSel.value : "";
    var leakOnly = $("leakOnly").checked, tvOnly = $("tvOnly") ? $("tvOnly").checked : false;
    var rows = T.filter(function (t) {
      if (tvOnly && !t.tv) return false;
      if (lab !== "" && String(t.label) !== lab) return false;
      if (tier !== "" && String(t.tier) !== tier) return false;
      if (leakOnly && !t._n) return false;
      return !q || t.id.toLowerCase().indexOf(q) >= 0 || t.text.toLowerCase().indexOf(q) >= 0;
    });
    var k = S.sortKey, dir = S.sortDir;
    rows.sort(function (x, y) {
      var u = sortVal(x, k), v = sortVal(y, k);
      if (u === v) return 0;
      if (u === null || u === undefined) return 1;
      if (v === null || v === undefined) return -1;
      return (u < v ? -1 : 1) * dir;
    });
    var shown = rows.slice(0, S.limit);
    var tb = document.querySelector("#textsTable tbody"), frag = document.createDocumentFragment();
    S.rows = new Map();
    shown.forEach(function (t) {
      var tr = el("tr");
      tr.dataset.id = t.id;
      if (S.current === t) tr.className = "sel";
      var cells = [[t.id, "l"], [labelName(t.label)]];
      if (tierSel) cells.push([tierName(t.tier)]);
      cells.push([fmt(t.scores[S.attack])], [S.tok ? t._n : ""], [S.tok ? fmt(t._bits, 1) : ""], t.tv ? [t.text.slice(0, 120), "snip"] : ["(no token view: memlens show)", "snip muted"]);
      cells.forEach(function (c) { tr.appendChild(el("td", c[0], c[1])); });
      var n = tr.children.length;
      tr._leak = [tr.children[n - 3], tr.children[n - 2]];
      tr.addEventListener("click", function () { showText(t); });
      S.rows.set(t, tr);
      frag.appendChild(tr);
    });
    tb.textContent = "";
    tb.appendChild(frag);
    setText("textsCount", rows.length + " of " + T.length + " texts" + (rows.length > shown.length ? " (first " + shown.length + " shown)" : "") +
      (S.attack ? ", by " + S.attack + " score (higher = more likely a member)" : ""));
    $("moreRows").style.display = rows.length > shown.length ? "" : "none";
    $("allRows").style.display = rows.length > shown.length ? "" : "none";
    document.querySelectorAll("#textsTable th.sortable").forEach(function (th) {
      th.classList.remove("sorted-asc", "sorted-desc");
      if (th.dataset.k === S.sortKey) th.classList.add(S.sortDir > 0 ? "sorted-asc" : "sorted-desc");
    });
  }
  document.querySelectorAll("#textsTable th.sortable").forEach(function (th) {
    th.addEventListener("click", function () {
      var k = th.dataset.k;
      S.sortDir = S.sortKey === k ? -S.sortDir : (k === "id" ? 1 : -1);
      S.sortKey = k;
      renderTexts();
    });
  });
  // After a threshold change only the leak columns change, unless the list is sorted or filtered by them.
  function updateTexts() {
    if (S.sortKey === "leaked" || S.sortKey === "bits" || $("leakOnly").checked) return renderTexts();
    S.rows.forEach(function (tr, t) { tr._leak[0].textContent = t._n; tr._leak[1].textContent = fmt(t._bits, 1); });
  }
  attackSel.addEventListener("change", function () { S.attack = attackSel.value; renderTexts(); });
  ["filter", "labelSel", "tierSel", "leakOnly", "tvOnly"].forEach(function (id) {
    var e = $(id);
    if (e) e.addEventListener(e.tagName === "INPUT" && e.type !== "checkbox" ? "input" : "change", function () { S.limit = PAGE; renderTexts(); });
  });
  $("moreRows").addEventListener("click", function () { S.limit += PAGE; renderTexts(); });
  $("allRows").addEventListener("click", function () { S.limit = T.length; renderTexts(); });

  // ---- token view ------------------------------------------------------------------------------
  function colour(v) {
    if (v === null || v === undefined) return "";
    var a = Math.min(Math.abs(v) / TA[S.tok].scale, 1);
    return v > 0 ? "rgba(220,38,38," + (0.85 * a).toFixed(3) + ")" : "rgba(37,99,235," + (0.55 * a).toFixed(3) + ")";
  }
  var box = $("tokens"), tip = $("tip");
  function tipText(t, i) {
    var piece = t.text.slice(t.start[i], t.end[i]);
    var L = ["token      " + JSON.stringify(piece) + "   #" + (i + 1) + " of " + t.start.length];
    var lt = t.lp_t[i], lr = t.lp_r ? t.lp_r[i] : null;
    L.push("log p      target " + (isNum(lt) ? fmt(lt) + " (p=" + Math.exp(lt).toPrecision(3) + ")" : "n/a") +
           "   reference " + (isNum(lr) ? fmt(lr) + " (p=" + Math.exp(lr).toPrecision(3) + ")" : "n/a"));
    P.token_attacks.forEach(function (a) {
      var s = t.s[a.name];
      if (!s) return;
      var v = s[i];
      L.push((a.name + "          ").slice(0, Math.max(11, a.name.length + 1)) + (isNum(v) ? fmt(v) + " " + a.unit : "n/a") +
             (a.name === S.tok ? (isNum(v) && v > S.thr ? "   above the threshold " + S.thr : "   below the threshold " + S.thr) : ""));
    });
    L.push("PII        " + (t.pii[i] >= 0 ? P.pii_types[t.pii[i]] : (P.pii_types.length ? "none" : "no ground truth")));
    return L.join("\n");
  }
  function moveTip(ev) {
    var x = ev.clientX + 14, y = ev.clientY + 16, w = tip.offsetWidth, h = tip.offsetHeight;
    if (x + w > window.innerWidth - 4) x = Math.max(4, ev.clientX - w - 10);
    if (y + h > window.innerHeight - 4) y = Math.max(4, ev.clientY - h - 10);
    tip.style.left = x + "px"; tip.style.top = y + "px";
  }
  box.addEventListener("mouseover", function (ev) {
    var sp = ev.target.closest ? ev.target.closest(".tok") : null;
    if (!sp || !S.current) return;
    tip.textContent = tipText(S.current, +sp.dataset.i);
    tip.style.display = "block";
    moveTip(ev);
  });
  box.addEventListener("mousemove", function (ev) { if (tip.style.display === "block") moveTip(ev); });
  box.addEventListener("mouseout", function (ev) {
    var to = ev.relatedTarget;
    if (!to || !to.closest || !to.closest(".tok")) tip.style.display = "none";
  });
  function markLeaks() {
    var t = S.current, s = t ? scoresOf(t) : null;
    S.spans.forEach(function (sp) {
      var v = s ? s[+sp.dataset.i] : null;
      sp.classList.toggle("leak", v !== null && v !== undefined && v > S.thr);
    });
    if (t && S.tok && t.tv) {
      setText("summary", t._n + " of " + t.start.length + " tokens above " + S.thr + " " + unit() + ": " + fmt(t._bits, 1) + " " + unit() +
              " leaked" + (P.pii_types.length ? " (" + t._npii + " of them ground-truth PII)" : "") + nullNote(t));
    }
  }
  // At the calibrated threshold: how many tokens a non-member text of this length has above it by chance.
  function nullNote(t) {
    var L = P.leak;
    if (!L || L.rate === null || L.attack !== S.tok || S.thr !== P.threshold) return "";
    var out = "; a non-member text of " + t.start.length + " tokens has " + fmt(L.rate * t.start.length, 2) + " above it by chance (" +
              fmt(L.rate * 100, 2) + "% of " + L.source + ")";
    // the calibrated text-level flag: how many null texts (the other non-members) have as many above it for their length
    var f = t.flag;
    if (f) out += (f.leaking ? "; LEAKING: only " : "; not flagged as leaking: ") + (f.exact ? "" : "at least ") + f.m + " of " + f.n + " " + L.text_source +
                  " have as many above it for their length";
    return out;
  }
  function paint() {
    var t = S.current, s = t ? scoresOf(t) : null;
    S.spans.forEach(function (sp) { sp.style.backgroundColor = s ? colour(s[+sp.dataset.i]) : ""; });
    markLeaks();
  }
  function showText(t) {
    if (S.current && S.rows.get(S.current)) S.rows.get(S.current).classList.remove("sel");
    S.current = t;
    if (S.rows.get(t)) S.rows.get(t).classList.add("sel");
    setText("tvTitle", t.id);
    var meta = [labelName(t.label) || "unlabelled"];
    if (t.tier !== null && t.tier !== undefined) meta.push("tier " + tierName(t.tier));
    P.attacks.forEach(function (a) { if (isNum(t.scores[a])) meta.push(a + " " + fmt(t.scores[a])); });
    if (!SEL.all && t.tv) meta.push("in the token-view selection: " + t.why);
    setText("tvMeta", meta.join(" \u00b7 "));
    var frag = document.createDocumentFragment(), pos = 0, spans = [];
    if (!t.tv) {
      frag.appendChild(el("p", "No token view for this text in this report: it keeps token-level data for " + SEL.n + " of " +
        SEL.n_texts + " texts (see the note above the texts list). In a terminal: memlens show " + t.id +
        " --results <the audit's output directory>", "note notv"));
      setText("summary", "");
    }
    for (var i = 0; i < t.start.length; i++) {
      var s = t.start[i], e = t.end[i];
      if (s > pos) frag.appendChild(document.createTextNode(t.text.slice(pos, s)));
      var sp = el("span", e > pos ? t.text.slice(Math.max(s, pos), e) : "", "tok");  // a character split over tokens shows once
      sp.dataset.i = i;
      if (t.pii[i] >= 0) sp.classList.add("pii");
      spans.push(sp);
      frag.appendChild(sp);
      pos = Math.max(pos, e);
    }
    if (pos < t.text.length) frag.appendChild(document.createTextNode(t.text.slice(pos)));
    if (t.tv && !t.start.length && !t.text) frag.appendChild(el("span", "(no text saved)", "muted"));
    box.textContent = "";
    box.appendChild(frag);
    S.spans = spans;
    tip.style.display = "none";
    paint();
  }

  // ---- leak summary ----------------------------------------------------------------------------
  function row(tb, cells, onclick) {
    var tr = el("tr");
    cells.forEach(function (c, j) { tr.appendChild(el("td", c, j === cells.length - 1 && onclick ? "l" : undefined)); });
    if (onclick) tr.addEventListener("click", onclick);
    tb.appendChild(tr);
  }
  function renderLeaks() {
    if (!S.tok) return;
    setText("leakThr", S.thr + " " + unit());
    var by = {}, order = P.pii_types.concat(["(no PII)"]);
    order.forEach(function (k) { by[k] = {n: 0, leak: 0, mem: 0, non: 0, texts: 0, bits: 0}; });
    T.forEach(function (t) {
      var s = scoresOf(t), seen = {};
      for (var i = 0; i < t.pii.length; i++) {
        var k = t.pii[i] >= 0 ? P.pii_types[t.pii[i]] : "(no PII)", b = by[k], v = s ? s[i] : null;
        b.n++;
        if (v !== null && v !== undefined && v > S.thr) {
          b.leak++; b.bits += v;
          if (t.label === 1) b.mem++; else if (t.label === 0) b.non++;
          if (!seen[k]) { seen[k] = 1; b.texts++; }
        }
      }
    });
    var tb = document.querySelector("#byType tbody");
    tb.textContent = "";
    order.filter(function (k) { return by[k].n; }).sort(function (a, b) { return by[b].leak - by[a].leak; }).forEach(function (k) {
      var b = by[k];
      row(tb, [k, b.n, b.leak, fmt(b.leak / Math.max(b.n, 1), 3), b.mem, b.non, b.texts, fmt(b.bits, 1)]);
    });
    var tt = document.querySelector("#byTier tbody");
    if (tt) {
      var groups = {}, keys = [];
      T.forEach(function (t) {
        if (!t.tv) return;  // group shares over the texts with token data only
        var g = (labelName(t.label) || "unlabelled") + (t.tier !== null && t.tier !== undefined ? ", tier " + tierName(t.tier) : "");
        if (!groups[g]) { groups[g] = {n: 0, any: 0, tok: 0, pii: 0, bits: 0, l: t.label, tier: t.tier}; keys.push(g); }
        var G = groups[g]; G.n++; if (t._n) G.any++; G.tok += t._n; G.pii += t._npii; G.bits += t._bits;
      });
      keys.sort(function (a, b) {
        var A = groups[a], B = groups[b];
        if (A.l !== B.l) return (B.l === null ? -1 : B.l) - (A.l === null ? -1 : A.l);
        return (A.tier === null ? -1 : A.tier) < (B.tier === null ? -1 : B.tier) ? -1 : 1;
      });
      tt.textContent = "";
      keys.forEach(function (g) { var G = groups[g]; row(tt, [g, G.n, G.any, fmt(G.tok / G.n, 2), fmt(G.pii / G.n, 2), fmt(G.bits / G.n, 2)]); });
    }
    var top = T.filter(function (t) { return t._n > 0; }).sort(function (a, b) { return b._bits - a._bits; }).slice(0, 25);
    var t2 = document.querySelector("#topTexts tbody");
    t2.textContent = "";
    if (!top.length) row(t2, ["no text has a token above the threshold", "", "", "", "", ""]);
    top.forEach(function (t) {
      row(t2, [t.id, labelName(t.label), tierName(t.tier), t._n, fmt(t._bits, 1), t._types.join(", ")], function () {
        showText(t);
        $("tokenview").scrollIntoView();
      });
    });
  }

  // ---- controls --------------------------------------------------------------------------------
  var slider = $("thr"), tokSel = $("tokAttackSel"), pending = false;
  function setUnits() { document.querySelectorAll(".unit").forEach(function (e) { e.textContent = unit() || "score"; }); }
  function configureSlider() {
    var a = TA[S.tok];
    slider.min = a.min; slider.max = a.max; slider.step = a.step;
    if (!(S.thr >= a.min && S.thr <= a.max)) S.thr = Math.min(Math.max(P.threshold, a.min), a.max);
    slider.value = S.thr;
    setText("thrVal", String(S.thr));
    setText("legLo", "-" + a.scale); setText("legHi", "+" + a.scale + " " + a.unit);
    var L = P.leak;
    setText("thrNote", !L || L.attack !== S.tok ? "" : L.rate === null ? "(default " + L.value + ": a fixed level, no non-members to calibrate on)" :
            "(default " + P.threshold + ": the level " + fmt(L.rate * 100, 2) + "% of the " + L.n_tokens + " " + L.source + " exceed)");
  }
  function refreshTables() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(function () { pending = false; updateTexts(); renderLeaks(); document.body.dataset.thr = S.thr; });
  }
  if (slider && S.tok) {
    P.token_attacks.forEach(function (a) { var o = el("option", a.name + " (" + a.unit + ")"); o.value = a.name; tokSel.appendChild(o); });
    tokSel.value = S.tok;
    configureSlider();
    slider.addEventListener("input", function () {
      S.thr = parseFloat(slider.value);
      setText("thrVal", slider.value);
      computeLeaks();
      markLeaks();
      refreshTables();
    });
    tokSel.addEventListener("change", function () {
      S.tok = tokSel.value;
      configureSlider();
      setUnits();
      computeLeaks();
      paint();
      refreshTables();
    });
  }
  setUnits();
  computeLeaks();
  renderTexts();
  renderLeaks();
  if (T.length) {
    var best = T[0];  // the selection comes first in T, so a text with a token view when there is one
    T.forEach(function (t) { if (t.tv && t._bits > best._bits) best = t; });
    showText(best);
  }
  document.body.dataset.thr = S.thr;
  window.memlensReadyMs = performance.now();  // for benchmarks/report_size.py
  document.body.dataset.ready = "1";
})();
