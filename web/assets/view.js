// The log view: lines kept in arrays, only the visible rows in the DOM (virtualised), so a
// million lines scroll as smoothly as a hundred. Links to a line (`#L1234`) or a range
// (`#L10-L20`), search within the loaded lines, follow-the-tail that pauses when the reader
// scrolls up, download as text.

import { render } from "./ansi.js";

/** Height of one row in pixels (app.css: `.line`). */
const ROW = 18;
/** Rows rendered above and below the visible ones. */
const OVERSCAN = 20;
/** Tallest scroll area used; longer logs map their rows onto it (browsers cap element heights). */
const MAX_PX = 8000000;

export class LogView {
  constructor(scroller) {
    this.scroller = scroller;
    this.spacer = scroller.querySelector(".spacer");
    this.rows = scroller.querySelector(".rows");
    this.lines = [];
    this.following = true;
    this.highlight = null; // [from, to], 1-based
    this.match = 0; // line of the current search match
    this.pending = false;
    this.target = null; // a linked line not loaded yet
    this.anchor = 0; // the (fractional) line at the top, kept in place while lines arrive
    this.drawn = ""; // what the rows in the DOM show, to rebuild them only when that changes
    this.onchange = () => {};
    scroller.addEventListener("scroll", () => {
      const bottom = this.scroller.scrollTop + this.scroller.clientHeight >= this.scroller.scrollHeight - 2;
      if (bottom !== this.following) {
        this.following = bottom;
        this.onchange();
      }
      this.anchor = this.scroller.scrollTop * this.geometry().ratio / ROW;
      this.schedule();
    });
    // Any move up by the reader pauses following at once (a small wheel step included).
    const pause = () => {
      if (this.following) {
        this.following = false;
        this.onchange();
      }
    };
    scroller.addEventListener("wheel", (ev) => ev.deltaY < 0 && pause(), { passive: true });
    scroller.addEventListener("keydown", (ev) => ["ArrowUp", "PageUp", "Home"].includes(ev.key) && pause());
    new ResizeObserver(() => this.schedule()).observe(scroller);
  }

  get count() {
    return this.lines.length;
  }

  /** Adds lines `count + 1 …` (the follower releases them contiguously). */
  append(messages) {
    for (const m of messages) this.lines.push(m);
    if (this.target && this.target[0] <= this.count) {
      const t = this.target;
      this.target = null;
      this.show(t[0], t[1]);
    }
    this.schedule();
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
    });
  }

  /** The scroll geometry: total virtual height, its on-page height, and the factor between. */
  geometry() {
    const total = this.count * ROW;
    const height = Math.min(total, MAX_PX);
    const view = this.scroller.clientHeight;
    const ratio = total > height ? (total - view) / Math.max(1, height - view) : 1;
    return { height, ratio, view };
  }

  draw() {
    const { height, ratio, view } = this.geometry();
    this.spacer.style.height = `${height}px`;
    if (this.following) {
      this.scroller.scrollTop = this.scroller.scrollHeight;
    } else if (ratio !== 1) {
      // Longer than the scroll area: a new line changes the ratio, so keep the line the reader
      // is looking at where it was.
      this.scroller.scrollTop = (this.anchor * ROW) / ratio;
    }
    const top = this.scroller.scrollTop;
    const virtualTop = top * ratio;
    this.anchor = virtualTop / ROW;
    const first = Math.max(0, Math.floor(virtualTop / ROW) - OVERSCAN);
    const last = Math.min(this.count, Math.ceil((virtualTop + view) / ROW) + OVERSCAN);
    this.rows.style.transform = `translateY(${top - (virtualTop - first * ROW)}px)`;
    // Rebuilt only when what they show changes: a selection survives lines arriving elsewhere.
    const drawn = `${first}:${last}:${this.highlight}:${this.match}`;
    if (drawn === this.drawn) return;
    this.drawn = drawn;
    const rows = [];
    for (let i = first; i < last; i++) rows.push(this.row(i + 1));
    this.rows.replaceChildren(...rows);
  }

  row(n) {
    const div = document.createElement("div");
    div.className = "line";
    div.dataset.line = String(n);
    if (this.highlight && n >= this.highlight[0] && n <= this.highlight[1]) div.classList.add("hl");
    if (n === this.match) div.classList.add("match");
    const a = document.createElement("a");
    a.className = "ln";
    a.href = `#L${n}`;
    a.textContent = String(n);
    const msg = document.createElement("span");
    msg.className = "msg";
    render(this.lines[n - 1], msg);
    div.append(a, msg);
    return div;
  }

  /** Scrolls line `from` to the middle, highlights `from..=to`; waits for it if not loaded. */
  show(from, to = from) {
    this.highlight = [from, Math.max(from, to)];
    if (from > this.count) {
      this.target = [from, to];
      return;
    }
    this.following = false;
    this.scrollToLine(from);
    this.onchange();
  }

  scrollToLine(n) {
    const { height, ratio, view } = this.geometry();
    // The scroll area must have its new height before it can be scrolled there.
    this.spacer.style.height = `${height}px`;
    this.following = false;
    this.anchor = Math.max(0, ((n - 1) * ROW - view / 2 + ROW / 2) / ROW);
    this.scroller.scrollTop = (this.anchor * ROW) / ratio;
    this.schedule();
  }

  follow() {
    this.following = true;
    this.scroller.scrollTop = this.scroller.scrollHeight;
    this.schedule();
    this.onchange();
  }

  /** The next (or previous) loaded line containing `needle`, case-insensitively; 0 if none. */
  find(needle, backwards = false) {
    if (!needle) return 0;
    const lower = needle.toLowerCase();
    const n = this.count;
    const start = this.match || (backwards ? n + 1 : 0);
    for (let k = 1; k <= n; k++) {
      const i = backwards ? ((start - 1 - k + 2 * n) % n) + 1 : ((start - 1 + k) % n) + 1;
      if (this.lines[i - 1].toLowerCase().includes(lower)) {
        this.match = i;
        this.scrollToLine(i);
        this.onchange();
        return i;
      }
    }
    this.match = 0;
    this.schedule();
    return 0;
  }

  /** Every loaded line as text, one per line. */
  blob() {
    const parts = [];
    for (const l of this.lines) parts.push(l, "\n");
    return new Blob(parts, { type: "text/plain;charset=utf-8" });
  }
}

/** `#L12` → [12, 12]; `#L10-L20` (or `#L10-20`) → [10, 20]; otherwise null. */
export function parseLineHash(hash) {
  const m = /^#L(\d+)(?:-L?(\d+))?$/.exec(hash);
  if (!m) return null;
  const a = Number(m[1]);
  const b = m[2] ? Number(m[2]) : a;
  if (a < 1) return null;
  return [Math.min(a, b), Math.max(a, b)];
}
