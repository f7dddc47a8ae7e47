"""What a person sees, checked by geometry in the browser, and kept as a screenshot.

axe reads the DOM; it cannot see that a heading sits under a link, that a chart cuts
its own labels, or that Send is below the fold. :func:`look` measures the laid-out
page with the DOM's own boxes:

- **overlap**: no two text boxes of different elements share more than a pixel each way;
- **cut**: no text leaves the box that clips it (an ancestor with ``overflow`` other than
  visible, or the ``<svg>`` a chart's ``<text>`` is drawn in), nor the viewport;
- **sideways**: the page does not scroll sideways;
- **small**: no text is rendered under 12 px (an SVG's text at its drawn scale);
- **below**: each of the ``actions`` (CSS selectors) is fully above the fold;
- **broken**: no word is split over two lines (a column too narrow for its words).

Each call writes ``screenshots/<name>.png`` (the folder is ignored by git and kept as a
CI artifact), so a failure can be looked at, not only read.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

SHOTS = Path(__file__).resolve().parent.parent / "screenshots"
MIN_PX = 12.0

GEOMETRY = r"""
(actions) => {
  const out = {overlap: [], cut: [], small: [], below: [], broken: [], sideways: 0};
  const doc = document.scrollingElement || document.documentElement;
  out.sideways = Math.max(0, doc.scrollWidth - doc.clientWidth);
  const vw = doc.clientWidth;
  const shown = el => {
    // checkVisibility also sees the content of a closed <details>, which is not drawn.
    if (el.checkVisibility && !el.checkVisibility({visibilityProperty: true})) return false;
    for (let e = el; e; e = e.parentElement) {
      if (e.hidden) return false;
      const cs = getComputedStyle(e);
      if (cs.display === "none" || cs.visibility === "hidden") return false;
      // Kept for screen readers only (clipped to nothing): not drawn for the eye.
      if (cs.clipPath !== "none" || (cs.clip && cs.clip !== "auto")) return false;
    }
    return true;
  };
  const label = (el, text) => (el.id ? "#" + el.id : el.tagName.toLowerCase()) + " «" + text + "»";
  const boxes = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    const text = node.textContent.replace(/\s+/g, " ").trim();
    const el = node.parentElement;
    if (!text || !el || el.closest("script, style, title, desc, noscript") || !shown(el)) continue;
    const range = document.createRange();
    range.selectNodeContents(node);
    const rects = Array.from(range.getClientRects()).filter(r => r.width > 0.5 && r.height > 0.5);
    if (!rects.length) continue;
    const svg = el.closest("svg");
    let size = parseFloat(getComputedStyle(el).fontSize);
    if (svg && svg.viewBox && svg.viewBox.baseVal && svg.viewBox.baseVal.width) {
      size *= svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
    }
    if (size < MIN_PX - 0.05) {
      out.small.push(label(el, text.slice(0, 30)) + " " + size.toFixed(1) + "px");
    }
    // What clips it: the chart's svg, or the nearest ancestor that does not let it out.
    let clip = svg ? svg.getBoundingClientRect() : null;
    for (let e = el; e && !clip && e !== document.body; e = e.parentElement) {
      const cs = getComputedStyle(e);
      const clips = cs.overflowX !== "visible" || cs.overflowY !== "visible";
      if (clips) clip = e.getBoundingClientRect();
    }
    // Text put wholly out of sight on purpose (a skip link until it has focus) is not laid out
    // for the eye: it is neither cut nor overlapping.
    const doc_h = doc.scrollHeight;
    if (rects.every(r => r.right <= 0 || r.left >= vw || r.bottom <= -window.scrollY ||
                          r.top >= doc_h)) continue;
    // A word split over two lines (a narrow column breaking it letter by letter).
    const raw = node.textContent;
    for (const m of raw.matchAll(/[^\s\-–—\/]{2,}/g)) {
      const word = document.createRange();
      word.setStart(node, m.index);
      word.setEnd(node, m.index + m[0].length);
      const parts = Array.from(word.getClientRects()).filter(r => r.width > 0.5);
      const tops = parts.map(r => r.top);
      const line = Math.max(...parts.map(r => r.height));
      // On two lines, not two pieces of one line (a glyph from another font sits a
      // pixel higher or lower).
      if (parts.length > 1 && Math.max(...tops) - Math.min(...tops) > line / 2) {
        out.broken.push(label(el, m[0].slice(0, 30)));
        break;
      }
    }
    for (const r of rects) {
      boxes.push({el, r, text: text.slice(0, 30)});
      const c = clip || {left: 0, right: vw, top: -1e9, bottom: 1e9};
      const over = Math.max(c.left - r.left, r.right - c.right, c.top - r.top, r.bottom - c.bottom,
                            -r.left, r.right - vw);
      if (over > 1) out.cut.push(label(el, text.slice(0, 30)) + " by " + Math.round(over) + "px");
    }
  }
  for (let i = 0; i < boxes.length; i++) {
    for (let j = i + 1; j < boxes.length; j++) {
      const a = boxes[i], b = boxes[j];
      if (a.el === b.el) continue;
      const w = Math.min(a.r.right, b.r.right) - Math.max(a.r.left, b.r.left);
      const h = Math.min(a.r.bottom, b.r.bottom) - Math.max(a.r.top, b.r.top);
      if (w > 1 && h > 1) {
        out.overlap.push(label(a.el, a.text) + " / " + label(b.el, b.text) +
                         " " + Math.round(w) + "x" + Math.round(h) + "px");
      }
    }
  }
  for (const selector of actions) {
    const els = Array.from(document.querySelectorAll(selector)).filter(shown);
    if (!els.length) out.below.push(selector + " (not shown)");
    for (const el of els) {
      const r = el.getBoundingClientRect();
      if (r.bottom > window.innerHeight + 0.5 || r.top < -0.5) {
        out.below.push(selector + " " + (el.textContent || "").trim().slice(0, 20) +
                       " bottom " + Math.round(r.bottom) + " > " + window.innerHeight);
      }
    }
  }
  out.overlap = out.overlap.slice(0, 12);
  out.cut = out.cut.slice(0, 12);
  out.small = out.small.slice(0, 12);
  out.broken = out.broken.slice(0, 12);
  return out;
}
""".replace("MIN_PX", str(MIN_PX))


def look(page: Any, name: str, actions: tuple[str, ...] = ()) -> dict[str, Any]:
    """The page's geometry findings (empty lists and 0 when all is well); the screenshot
    is written first, so it exists when the assertion fails."""
    page.wait_for_load_state("load")
    page.evaluate("document.fonts.ready")
    SHOTS.mkdir(exist_ok=True)
    shot = SHOTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}.png"
    page.screenshot(path=str(shot), full_page=True)
    found: dict[str, Any] = page.evaluate(GEOMETRY, list(actions))
    return found


def problems(found: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in found.items() if v}


def assert_sound(page: Any, name: str, actions: tuple[str, ...] = ()) -> None:
    found = problems(look(page, name, actions))
    assert found == {}, (name, found)
