// Log text as the page shows it: colours (SGR, `ESC [ … m`) become styles, every other control
// character is shown, never obeyed (`^[`, `^M`, `<U+009B>`), as the CLI shows them on a terminal
// (cli/src/terminal.rs). Text only ever reaches the page through `textContent`: a line is never
// parsed as HTML.

const CARE = /[\u0000-\u0008\u000a-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;

/** Most segments (so DOM nodes) one line becomes: past it, the rest of the line is one text
 * segment with its controls shown, so a line of a million control characters cannot become a
 * million spans and freeze the tab. */
export const MAX_SEGMENTS = 1000;

/** A control character as it is shown. */
function shownControl(c) {
  return c < 0x20 ? "^" + String.fromCharCode(c + 0x40) : c === 0x7f ? "^?" : `<U+${c.toString(16).toUpperCase().padStart(4, "0")}>`;
}

function isControl(c) {
  return (c < 0x20 && c !== 0x09) || c === 0x7f || (c >= 0x80 && c <= 0x9f) || (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069);
}

/** `[{text, style}]` for one line; `style` is null for plain text, `"ctl"` for a shown control. */
export function segments(text) {
  if (!CARE.test(text)) return [{ text, style: null }];
  const out = [];
  let style = null;
  let buf = "";
  let ctl = "";
  const flush = () => {
    if (buf) out.push({ text: buf, style });
    buf = "";
  };
  const flushCtl = () => {
    // A run of controls is one segment, not one each.
    if (ctl) out.push({ text: ctl, style: { ...(style || {}), ctl: true } });
    ctl = "";
  };
  for (let i = 0; i < text.length; ) {
    if (out.length >= MAX_SEGMENTS) {
      flush();
      flushCtl();
      let rest = "";
      for (let j = i; j < text.length; j++) {
        const c = text.charCodeAt(j);
        rest += isControl(c) ? shownControl(c) : text[j];
      }
      out.push({ text: rest, style: null });
      return out;
    }
    const c = text.charCodeAt(i);
    if (c === 0x1b) {
      const n = sgrLength(text, i);
      if (n) {
        flush();
        flushCtl();
        style = applySgr(style, text.slice(i + 2, i + n - 1));
        i += n;
        continue;
      }
    }
    if (isControl(c)) {
      flush();
      ctl += shownControl(c);
    } else {
      flushCtl();
      buf += c === 0x09 ? "\t" : text[i];
    }
    i += 1;
  }
  flush();
  flushCtl();
  return out;
}

/** Length of an SGR sequence `ESC [ (digits ; :)* m` at `i`, or 0. */
function sgrLength(text, i) {
  if (text[i + 1] !== "[") return 0;
  let j = i + 2;
  while (j < text.length && j - i < 66 && /[0-9;:]/.test(text[j])) j++;
  return text[j] === "m" ? j - i + 1 : 0;
}

const BASIC = ["black", "red", "green", "yellow", "blue", "magenta", "cyan", "white"];

/** The style after the SGR parameters `params` (e.g. `1;31`, `38;5;208`, `38;2;255;0;0`). */
export function applySgr(style, params) {
  const s = { ...(style || {}) };
  const p = params === "" ? [0] : params.split(/[;:]/).map((x) => (x === "" ? 0 : Number(x)));
  for (let k = 0; k < p.length; k++) {
    const n = p[k];
    if (n === 0) {
      for (const key of Object.keys(s)) delete s[key];
    } else if (n === 1) s.bold = true;
    else if (n === 2) s.dim = true;
    else if (n === 3) s.italic = true;
    else if (n === 4) s.underline = true;
    else if (n === 7) s.inverse = true;
    else if (n === 22) {
      delete s.bold;
      delete s.dim;
    }
    else if (n === 23) delete s.italic;
    else if (n === 24) delete s.underline;
    else if (n === 27) delete s.inverse;
    else if (n >= 30 && n <= 37) s.fg = BASIC[n - 30];
    else if (n >= 90 && n <= 97) s.fg = "bright-" + BASIC[n - 90];
    else if (n === 39) delete s.fg;
    else if (n >= 40 && n <= 47) s.bg = BASIC[n - 40];
    else if (n >= 100 && n <= 107) s.bg = "bright-" + BASIC[n - 100];
    else if (n === 49) delete s.bg;
    else if (n === 38 || n === 48) {
      const key = n === 38 ? "fg" : "bg";
      if (p[k + 1] === 5 && k + 2 < p.length) {
        s[key] = color256(p[k + 2]);
        k += 2;
      } else if (p[k + 1] === 2 && k + 4 < p.length) {
        s[key] = rgb(p[k + 2], p[k + 3], p[k + 4]);
        k += 4;
      }
    }
  }
  return Object.keys(s).length ? s : null;
}

const clamp = (v) => Math.max(0, Math.min(255, v | 0));
const rgb = (r, g, b) => `rgb(${clamp(r)}, ${clamp(g)}, ${clamp(b)})`;

function color256(n) {
  n = clamp(n);
  if (n < 8) return BASIC[n];
  if (n < 16) return "bright-" + BASIC[n - 8];
  if (n < 232) {
    const v = [0, 95, 135, 175, 215, 255];
    const i = n - 16;
    return rgb(v[Math.floor(i / 36)], v[Math.floor(i / 6) % 6], v[i % 6]);
  }
  const g = 8 + (n - 232) * 10;
  return rgb(g, g, g);
}

/** Appends the line's segments to `parent` as text nodes and styled spans. */
export function render(text, parent) {
  for (const seg of segments(text)) {
    if (!seg.style) {
      parent.appendChild(document.createTextNode(seg.text));
      continue;
    }
    const span = document.createElement("span");
    span.textContent = seg.text;
    const st = seg.style;
    const classes = [];
    if (st.ctl) classes.push("ctl");
    if (st.bold) classes.push("b");
    if (st.dim) classes.push("dim");
    if (st.italic) classes.push("i");
    if (st.underline) classes.push("u");
    let fg = st.fg;
    let bg = st.bg;
    if (st.inverse) [fg, bg] = [bg || "default-bg", fg || "default-fg"];
    for (const [prefix, value] of [["fg", fg], ["bg", bg]]) {
      if (!value) continue;
      if (value.startsWith("rgb(")) span.style[prefix === "fg" ? "color" : "backgroundColor"] = value;
      else classes.push(`${prefix}-${value}`);
    }
    span.className = classes.join(" ");
    parent.appendChild(span);
  }
}
