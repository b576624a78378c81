"""The report page: one self-contained HTML file (inline CSS and JS, no network).

The per-image data is one compact JSON block that the page's script turns into
a sortable, paged table and gallery; only the current page's thumbnails exist
in the document, each ``loading="lazy"``, so 5,000 images open as fast as 50.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from typing import Any

from .entries import Entry
from .thumbs import FALSE_POSITIVE_COLOR, FOUND_COLOR, MISSED_COLOR, NEW_COLOR, THUMB_LONG_SIDE

#: Images per page of the table and of the gallery.
PAGE_SIZE = 40
#: The page's column label of each iou type.
IOU_LABELS = {"bbox": "box", "segm": "mask", "keypoints": "kpt"}


def render_page(
    title: str, subtitle: str, entries: Sequence[Entry], data: dict[str, Any], sections: Sequence[str] = (),
    legend: str = "",
) -> str:
    """The whole page. ``data`` (mode, iterations, ...) goes to the script with
    the entries; ``sections`` are HTML blocks shown above the images."""
    payload = json.dumps({**data, "pageSize": PAGE_SIZE, "thumb": THUMB_LONG_SIDE, "short": IOU_LABELS,
                          "images": list(entries)}, separators=(",", ":"))
    # In a <script> block only "</script" can end it early: no "<" at all is simplest.
    payload = payload.replace("<", "\\u003c")
    return _TEMPLATE.format(
        title=html.escape(title), subtitle=html.escape(subtitle), sections="\n".join(sections),
        legend=legend, data=payload, style=_STYLE, script=_SCRIPT,
    )


def swatch(color_bgr: tuple[int, int, int], dashed: bool = False) -> str:
    b, g, r = color_bgr
    return f'<span class="swatch{" dashed" if dashed else ""}" style="border-color:rgb({r},{g},{b})"></span>'


def eval_legend(matching: str) -> str:
    """What the thumbnails' highlights mean, and how a person counts as found."""
    rule = ("keypoint OKS &ge; 0.5" if matching == "keypoints" else "box IoU &ge; 0.5")
    return (
        f"<p class=\"legend\">{swatch(FOUND_COLOR)} new in the iteration shown, matched a ground-truth "
        f"person (in a later iteration: <b>recovered</b>) {swatch(FALSE_POSITIVE_COLOR)} new, matched "
        f"nobody (<b>false positive</b>) {swatch(MISSED_COLOR, dashed=True)} ground-truth person not found "
        f"by the iteration shown (after the last: <b>never found</b>). Everyone found up to the iteration "
        f"shown is drawn, filled in a colour per person and outlined in the colour of the iteration that "
        f"found them.</p>"
        f"<p class=\"note\">Matching: COCOeval's own per image (people by descending score, each taking the "
        f"best free ground-truth person) at {rule}, crowd regions ignored, on everyone found up to the "
        f"iteration. Per-image AP: COCOeval's AP (IoU 0.50:0.95, 101-point precision) of that image alone. "
        f"Loop gain: AP after the last iteration minus AP after the first.</p>"
    )


def run_legend() -> str:
    return (f"<p class=\"legend\">{swatch(NEW_COLOR)} new in the iteration shown. Everyone found up to the "
            f"iteration shown is drawn, filled in a colour per person and outlined in the colour of the "
            f"iteration that found them.</p>")


def added_summary(entries: Sequence[Entry], num_iters: int, primary: str) -> str:
    """Per later iteration, the people it added: recovered and false positives;
    the ground-truth persons never found; how many images the loop helped."""
    rows = []
    for k in range(2, num_iters + 1):
        added = sum(e["new"][k - 1] for e in entries)
        hit = sum(e["hit"][k - 1] for e in entries)
        fp = sum(e["fp"][k - 1] for e in entries)
        rows.append(f"<tr><td>{k}</td><td>{added}</td><td>{hit}</td><td>{fp}</td>"
                    f"<td>{sum(e['miss'][k - 1] for e in entries)}</td></tr>")
    gt = sum(e["gt"] for e in entries)
    never = sum(e["miss"][-1] for e in entries)
    gains = [e["ap"][primary][-1] - e["ap"][primary][0] for e in entries
             if primary in e["ap"] and e["ap"][primary][0] is not None]
    better, worse = sum(g > 1e-9 for g in gains), sum(g < -1e-9 for g in gains)
    table = ("<table class=\"small\"><thead><tr><th>iteration</th><th>people added</th><th>recovered</th>"
             "<th>false positives</th><th>GT persons not found after it</th></tr></thead><tbody>"
             + "".join(rows) + "</tbody></table>") if rows else "<p>Only one iteration ran.</p>"
    return (
        "<section id=\"added\"><h2>What the later iterations added</h2>" + table
        + f"<p>Never found: <b>{never}</b> of {gt} ground-truth persons. Loop gain "
        f"({IOU_LABELS.get(primary, primary)} AP) per image: <b>{better}</b> better, <b>{worse}</b> worse, "
        f"{len(gains) - better - worse} unchanged.</p></section>"
    )


def stage_summary(entries: Sequence[Entry]) -> str:
    """People found per iteration over all images, and the mean time per loop stage."""
    if not entries:
        return ""
    iters = max(len(e["n"]) for e in entries)
    new = [sum(e["new"][k] for e in entries if k < len(e["new"])) for k in range(iters)]
    parts = ["<section id=\"summary\"><h2>Summary</h2><p>People found per iteration: "
             + ", ".join(f"iteration {k + 1}: <b>{n}</b>" for k, n in enumerate(new)) + ".</p>"]
    parts.append(stage_times(entries))
    parts.append("</section>")
    return "".join(parts)


def stage_times(entries: Sequence[Entry]) -> str:
    """The mean milliseconds per image of each loop stage ("" when no image logged its times)."""
    timed = [e["tm"] for e in entries if e.get("tm")]
    if not timed:
        return ""
    stages = list(dict.fromkeys(s for t in timed for s in t))
    means = {s: sum(t.get(s, 0.0) for t in timed) / len(timed) for s in stages}
    head = "".join(f"<th>{html.escape(s)}</th>" for s in stages)
    return (f"<table class=\"small\" id=\"stage-times\"><thead><tr>{head}<th>total</th></tr></thead>"
            "<tbody><tr>"
            + "".join(f"<td>{means[s]:.1f}</td>" for s in stages)
            + f"<td>{sum(means.values()):.1f}</td></tr></tbody></table>"
            f"<p class=\"note\">Mean milliseconds per image over {len(timed)} images "
            "(a batch's time is shared equally by its images).</p>")


def markdown_html(markdown: str) -> str:
    """The Markdown of :func:`bmp.evaluation.report.markdown_table` as HTML
    (headings, bullet lines, pipe tables, `code`); nothing else is expected."""
    out: list[str] = []
    table: list[list[str]] = []

    def inline(text: str) -> str:
        return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text))

    def flush() -> None:
        if table:
            head, body = table[0], [r for r in table[1:] if not all(set(c) <= set(":-") for c in r)]
            out.append("<table><thead><tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr></thead>"
                       "<tbody>" + "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>"
                                           for row in body) + "</tbody></table>")
            table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            table.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        flush()
        if line.startswith("### "):
            out.append(f"<h3>{inline(line[4:])}</h3>")
        elif line.startswith("## "):
            out.append(f"<h2>{inline(line[3:])}</h2>")
        elif line.startswith("- "):
            out.append(f"<p class=\"note\">&bull; {inline(line[2:])}</p>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
    flush()
    return "\n".join(out)


_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<header><h1>{title}</h1><p class="sub">{subtitle}</p></header>
{sections}
<section id="images">
<h2>Images</h2>
{legend}
<div class="controls">
<label>Sort <select id="sort"></select></label>
<label>Show iteration <select id="iteration"></select></label>
<label>File <input id="filter" type="search" placeholder="part of a file name"></label>
<span class="pager"><button id="prev" type="button">&#9664;</button> <span id="page-label"></span>
<button id="next" type="button">&#9654;</button></span>
</div>
<div class="wide"><table id="table"><thead><tr id="table-head"></tr></thead><tbody></tbody></table></div>
<div id="gallery"></div>
</section>
<script type="application/json" id="bmp-data">{data}</script>
<script>{script}</script>
</body>
</html>
"""

_STYLE = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1400px;
padding:0 16px 40px;color:#1d232a;background:#f6f7f9}
header h1{margin:16px 0 0;font-size:22px} .sub{color:#57606a;margin:2px 0 12px}
h2{font-size:17px;margin:22px 0 8px} h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;background:#fff;margin:4px 0 8px}
th,td{border:1px solid #d0d7de;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#eef1f4;white-space:normal} td:nth-child(2),th:nth-child(2){text-align:left}
#table td.name{text-align:left;max-width:260px;overflow:hidden;text-overflow:ellipsis}
#table img{height:48px;width:auto;display:block} #table tr:hover{background:#f0f6ff;cursor:pointer}
.wide{overflow-x:auto} .note{color:#57606a;margin:2px 0} .legend{margin:4px 0}
.swatch{display:inline-block;width:14px;height:10px;border:3px solid;margin:0 4px 0 10px;
vertical-align:middle}
.swatch.dashed{border-style:dashed}
.plot img{max-width:100%;background:#fff;border:1px solid #d0d7de}
.controls{display:flex;flex-wrap:wrap;gap:14px;align-items:center;margin:10px 0;position:sticky;top:0;
background:#f6f7f9;padding:6px 0;z-index:1}
#gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:12px}
.card{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:8px}
.card.flash{outline:3px solid #0969da}
.card img,.card .noimg{width:100%;height:auto;display:block;background:#ddd}
.card .noimg{aspect-ratio:4/3;display:flex;align-items:center;justify-content:center;color:#57606a}
.card .name{font-weight:600;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.stepper{display:flex;align-items:center;gap:8px;margin:6px 0 2px}
.stepper button{font-size:13px;padding:1px 9px}
.good{color:#1a7f37} .bad{color:#cf222e} .muted{color:#57606a}
"""

_SCRIPT = r"""
"use strict";
const D = JSON.parse(document.getElementById("bmp-data").textContent);
const N = D.iters, P = D.primary, EVAL = D.mode === "eval";
const shown = new Map();  // image id -> iteration its card shows
let page = 0, order = [];

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const kid of kids) e.append(kid);
  return e;
}
const fmt = v => v === null || v === undefined ? "\u2013" : v.toFixed(3);
const last = e => e.n.length;
const added = e => e.new.slice(1).reduce((a, b) => a + b, 0);
const ap = (e, k) => (e.ap && e.ap[P]) ? e.ap[P][k - 1] : null;
const gain = e => ap(e, 1) === null ? null : ap(e, last(e)) - ap(e, 1);
const total = e => e.tm ? Object.values(e.tm).reduce((a, b) => a + b, 0) : null;
const sum = (a, f) => a.reduce((s, x) => s + f(x), 0);
const base = e => e.f.split(/[\\/]/).pop();  // run logs the path as given; eval the annotated name

// Sort keys: [label, key, descending]; null values always go last.
const SORTS = EVAL ? [["image id", e => e.id, false], ["loop gain (largest first)", gain, true],
  ["worst AP first", e => ap(e, last(e)), false], ["most people added later", added, true],
  ["most never found", e => e.miss[e.miss.length - 1], true]]
  : [["input order", e => e.idx, false], ["most people added later", added, true],
  ["most people", e => e.n[e.n.length - 1], true], ["slowest", total, true]];

function sorted() {
  const [, key, desc] = SORTS[+document.getElementById("sort").value];
  const needle = document.getElementById("filter").value.toLowerCase();
  const rows = D.images.filter(e => !needle || e.f.toLowerCase().includes(needle));
  return rows.sort((a, b) => {
    const x = key(a), y = key(b);
    if (x === null || y === null) return (x === null) - (y === null) || a.id - b.id;
    return (desc ? y - x : x - y) || a.id - b.id;
  });
}

function iterationOf(e) { return Math.min(shown.get(e.id) || last(e), last(e)); }

function caption(e, k) {
  const parts = [`${e.n[k - 1]} ${e.n[k - 1] === 1 ? "person" : "people"}, `,
    el("b", {class: "new-count", text: String(e.new[k - 1])}),
    ` new in iteration ${k}`];
  if (EVAL) {
    const word = k === 1 ? "found" : "recovered";
    parts.push(": ", el("span", {class: "good", text: `${e.hit[k - 1]} ${word}`}), ", ",
      el("span", {class: e.fp[k - 1] ? "bad" : "",
        text: `${e.fp[k - 1]} false positive${e.fp[k - 1] === 1 ? "" : "s"}`}),
      `; ${e.miss[k - 1]} of ${e.gt} ground-truth persons not found`);
    if (k === last(e)) parts.push(" (never found)");
    const aps = Object.entries(e.ap).map(([t, v]) => `${D.short[t] || t} ${fmt(v[k - 1])}`).join(", ");
    parts.push(el("br"), el("span", {class: "muted", text: `AP after iteration ${k}: ${aps}`}));
  } else if (e.tm) {
    parts.push(el("br"), el("span", {class: "muted", text: Object.entries(e.tm).filter(([, v]) => v > 0)
      .map(([s, v]) => `${s} ${v.toFixed(0)}ms`).join(", ")}));
  }
  return parts;
}

function image(e, k, cls) {
  const src = e.th[k - 1];
  if (!src) return el("div", {class: "noimg", text: "image not readable"});
  const f = Math.min(1, D.thumb / Math.max(e.w, e.h));
  return el("img", {src, loading: "lazy", decoding: "async", alt: `${e.f}, iteration ${k}`,
    width: Math.round(e.w * f), height: Math.round(e.h * f), class: cls || ""});
}

function card(e) {
  const k = iterationOf(e);
  const prev = el("button", {type: "button", class: "step-prev", text: "\u25c0"});
  const next = el("button", {type: "button", class: "step-next", text: "\u25b6"});
  prev.disabled = k <= 1; next.disabled = k >= last(e);
  const c = el("div", {class: "card", id: `card-${e.id}`, "data-id": e.id, "data-iteration": k},
    image(e, k), el("div", {class: "name", title: e.f, text: base(e)}),
    el("div", {class: "stepper"}, prev,
      el("span", {class: "iter-label", text: `iteration ${k} / ${last(e)}`}), next),
    el("div", {class: "caption"}, ...caption(e, k)));
  const step = d => { shown.set(e.id, Math.max(1, Math.min(last(e), k + d))); c.replaceWith(card(e)); };
  prev.onclick = () => step(-1);
  next.onclick = () => step(1);
  return c;
}

function row(e) {
  const k = last(e);
  const cells = [el("td", {}, image(e, k)), el("td", {class: "name", title: e.f, text: base(e)}),
    el("td", {text: e.n.join(" \u2192 ")}), el("td", {text: String(added(e))})];
  if (EVAL) {
    cells.push(el("td", {class: "good", text: String(sum(e.hit.slice(1), x => x))}),
      el("td", {class: "bad", text: String(sum(e.fp.slice(1), x => x))}),
      el("td", {text: `${e.miss[k - 1]} / ${e.gt}`}));
    for (const t of D.iou) cells.push(el("td", {text: `${fmt(e.ap[t][0])} \u2192 ${fmt(e.ap[t][k - 1])}`}));
    const g = gain(e);
    cells.push(el("td", {class: g > 0 ? "good" : g < 0 ? "bad" : "", text: g === null ? "\u2013" :
      (g >= 0 ? "+" : "") + g.toFixed(3)}));
  } else {
    cells.push(el("td", {text: e.tm ? `${total(e).toFixed(0)} ms` : "\u2013"}),
      el("td", {class: "name", text: e.tm ? Object.entries(e.tm).filter(([, v]) => v > 0)
        .map(([s, v]) => `${s} ${v.toFixed(0)}`).join(", ") : "not logged"}));
  }
  const r = el("tr", {"data-id": e.id}, ...cells);
  r.onclick = () => {
    const c = document.getElementById(`card-${e.id}`);
    c.scrollIntoView({block: "center"});
    c.classList.add("flash");
    setTimeout(() => c.classList.remove("flash"), 900);
  };
  return r;
}

function render() {
  const pages = Math.max(1, Math.ceil(order.length / D.pageSize));
  page = Math.max(0, Math.min(page, pages - 1));
  const slice = order.slice(page * D.pageSize, (page + 1) * D.pageSize);
  document.querySelector("#table tbody").replaceChildren(...slice.map(row));
  document.getElementById("gallery").replaceChildren(...slice.map(card));
  document.getElementById("page-label").textContent =
    `page ${page + 1} of ${pages} (${order.length} images)`;
  document.getElementById("prev").disabled = page === 0;
  document.getElementById("next").disabled = page >= pages - 1;
}

function setup() {
  D.images.forEach((e, i) => { e.idx = i; });
  const sort = document.getElementById("sort");
  SORTS.forEach(([label], i) => sort.append(el("option", {value: i, text: label})));
  const it = document.getElementById("iteration");
  for (let k = 1; k <= N; k++) it.append(el("option", {value: k, text: String(k)}));
  it.value = N;
  const head = ["image", "file", "people per iteration", "added later"];
  if (EVAL) head.push("recovered", "false positives", "never found / GT",
    ...D.iou.map(t => `${D.short[t] || t} AP 1 \u2192 ${N}`), `gain (${D.short[P] || P})`);
  else head.push("time", "per stage (ms)");
  document.getElementById("table-head").replaceChildren(...head.map(h => el("th", {text: h})));
  const reorder = () => { order = sorted(); page = 0; render(); };
  sort.onchange = reorder;
  document.getElementById("filter").oninput = reorder;
  it.onchange = () => { D.images.forEach(e => shown.set(e.id, +it.value)); render(); };
  document.getElementById("prev").onclick = () => { page--; render(); };
  document.getElementById("next").onclick = () => { page++; render(); };
  reorder();
}
setup();
"""
