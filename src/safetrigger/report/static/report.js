// safetrigger report: the sample browser. Reads the JSON in #sample-data, renders cards with
// textContent only (model output is never parsed as HTML), filters by model / benchmark / verdict.
(function () {
  "use strict";
  var holder = document.getElementById("sample-data");
  if (!holder) return;
  var data = JSON.parse(holder.textContent);
  var samples = data.samples || [];
  var PAGE = 200;
  var shown = PAGE;
  var $ = function (id) { return document.getElementById(id); };
  var list = $("sample-list"), count = $("sample-count"), more = $("sample-more");
  var fModel = $("filter-model"), fBench = $("filter-benchmark"), fVerdict = $("filter-verdict");

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }

  function matches(s) {
    if (fModel.value && s.model !== fModel.value) return false;
    if (fBench.value && s.benchmark !== fBench.value) return false;
    if (fVerdict.value) {
      var cut = fVerdict.value.lastIndexOf("|");
      var v = s.verdicts[fVerdict.value.slice(0, cut)];
      if (!v || v.outcome !== fVerdict.value.slice(cut + 1)) return false;
    }
    return true;
  }

  function part(name, text, meta) {
    var empty = text === null || text === undefined || text === "";
    var d = el("div", "part part-" + name + (empty ? " empty" : ""));
    d.appendChild(el("span", "plabel", name));
    if (meta) d.appendChild(el("span", "pmeta", meta));
    var none = name === "safe" ? "(no <safe> block)" : name === "think" ? "(no reasoning)" : "(no answer)";
    d.appendChild(el("div", "text", empty ? none : text));
    return d;
  }

  function card(s) {
    var a = el("article", "sample");
    a.dataset.model = s.model;
    a.dataset.benchmark = s.benchmark;
    var h = el("header");
    h.appendChild(el("span", "tag", s.model));
    h.appendChild(el("span", "tag", s.benchmark + (s.group ? " · " + s.group : "")));
    Object.keys(s.verdicts).forEach(function (j) {
      var v = s.verdicts[j];
      var b = el("span", "verdict outcome-" + v.outcome, j + ": " + v.outcome.replace("_", " ") + (v.label ? " (" + v.label + ")" : ""));
      if (v.score !== null && v.score !== undefined) b.title = "score " + v.score;
      h.appendChild(b);
    });
    if (s.issues && s.issues.length) h.appendChild(el("span", "tag", "issues: " + s.issues.join(", ")));
    h.appendChild(el("span", "sid", s.id));
    a.appendChild(h);
    var q = el("div", "query");
    q.appendChild(el("span", "plabel", "query"));
    q.appendChild(el("div", "text", s.query));
    a.appendChild(q);
    var t = s.tokens || {}, f = s.finish || {};
    a.appendChild(part("think", s.think, tok(t.think) + (f.think ? " · " + f.think : "")));
    a.appendChild(part("safe", s.safe, tok(t.safe) + (s.safe && !s.has_safe ? " · block not closed" : "")));
    a.appendChild(part("answer", s.answer, tok(t.answer) + (f.answer ? " · " + f.answer : "")));
    return a;
  }

  function tok(n) { return n === null || n === undefined ? "" : n + " tokens"; }

  function render() {
    var hits = samples.filter(matches);
    list.replaceChildren();
    var frag = document.createDocumentFragment();
    hits.slice(0, shown).forEach(function (s) { frag.appendChild(card(s)); });
    list.appendChild(frag);
    count.dataset.count = String(hits.length);
    count.textContent = hits.length + " of " + samples.length + " samples match" +
      (hits.length > shown ? " (first " + shown + " shown)" : "");
    more.hidden = hits.length <= shown;
  }

  [fModel, fBench, fVerdict].forEach(function (s) {
    s.addEventListener("change", function () { shown = PAGE; render(); });
  });
  more.addEventListener("click", function () { shown += PAGE; render(); });
  render();
})();
