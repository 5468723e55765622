// A small, safe Markdown subset for chat messages, rendered straight to DOM nodes.
//
// No HTML is ever parsed: every piece of a message reaches the page through `textContent` or a
// checked attribute (`href` limited to http, https and mailto), so `<script>`, `<img onerror>`,
// `<svg onload>`, entities and `javascript:` links all show as the text they are. Links open in a
// new tab with `rel="noopener noreferrer nofollow"`. Images are not loaded (`![alt](url)` is a link).
//
// Blocks: paragraphs (single newlines kept), ``` fenced code, `>` quotes, `-`/`*`/`+` and `1.` lists,
// `#` headings (shown as bold lines). Inline: `code`, **bold**, __bold__, *italic*, _italic_,
// ~~strike~~, [text](url), bare http(s):// and mailto: links, backslash escapes.

import { h } from "./util.js";

const SCHEMES = new Set(["http:", "https:", "mailto:"]);
const MAX_DEPTH = 8; // nesting of quotes and emphasis; deeper is shown as text
const MAX_INLINE = 20_000; // characters of one paragraph parsed for inline Markdown; beyond: plain text
export const LINK_REL = "noopener noreferrer nofollow";

/** `raw` as an absolute http(s) or mailto URL, or null: anything else (javascript:, data:, relative...). */
export function safeHref(raw) {
  const text = String(raw ?? "").trim();
  // Control characters and spaces inside a URL are how scheme filters get fooled ("java\tscript:").
  // biome-ignore lint/suspicious/noControlCharactersInRegex: that is the point
  if (!text || /[\u0000-\u0020\u007f-\u009f]/.test(text)) return null;
  let url;
  try {
    url = new URL(text);
  } catch {
    return null; // relative, or not a URL
  }
  if (!SCHEMES.has(url.protocol)) return null;
  if (url.protocol !== "mailto:" && !url.hostname) return null;
  return url.href;
}

function link(doc, href, fill) {
  const a = h(doc, "a", "lw-md-link");
  a.href = href;
  a.target = "_blank";
  a.rel = LINK_REL;
  a.title = href;
  fill(a);
  return a;
}

const AUTOLINK = /^(?:https?:\/\/|mailto:)[^\s<>"'`]+/i;
const TRAILING = /[.,;:!?'")\]*_~]+$/;

class Inline {
  constructor(doc) {
    this.doc = doc;
  }

  /** Append the inline content of `text` to `parent`. */
  render(parent, text, depth = 0, inLink = false) {
    const doc = this.doc;
    if (depth > MAX_DEPTH || text.length > MAX_INLINE) {
      parent.append(doc.createTextNode(text));
      return;
    }
    const noCloser = new Set(); // markers with no closer after some position: none after later ones
    let buf = "";
    const flush = () => {
      if (buf) parent.append(doc.createTextNode(buf));
      buf = "";
    };
    let i = 0;
    const n = text.length;
    while (i < n) {
      const c = text[i];
      if (c === "\\" && i + 1 < n && /[!-/:-@[-`{-~]/.test(text[i + 1])) {
        buf += text[i + 1];
        i += 2;
        continue;
      }
      if (c === "`") {
        let run = 1;
        while (text[i + run] === "`") run++;
        const fence = "`".repeat(run);
        const end = noCloser.has(fence) ? -1 : text.indexOf(fence, i + run);
        if (end !== -1) {
          flush();
          parent.append(h(doc, "code", "lw-md-code", text.slice(i + run, end)));
          i = end + run;
          continue;
        }
        noCloser.add(fence);
        buf += fence;
        i += run;
        continue;
      }
      const two = text.slice(i, i + 2);
      if (two === "**" || two === "__" || two === "~~") {
        const tag = two === "~~" ? "del" : "strong";
        const end = this._closer(text, two, i + 2, noCloser);
        if (end !== -1 && (two !== "__" || this._wordEdge(text, i, end + 2))) {
          flush();
          const el = h(doc, tag);
          this.render(el, text.slice(i + 2, end), depth + 1, inLink);
          parent.append(el);
          i = end + 2;
          continue;
        }
      }
      if ((c === "*" || c === "_") && text[i + 1] !== c && text[i + 1] !== " " && text[i + 1] !== undefined) {
        const end = this._closer(text, c, i + 1, noCloser);
        if (end !== -1 && text[end - 1] !== " " && (c !== "_" || this._wordEdge(text, i, end + 1))) {
          flush();
          const el = h(doc, "em");
          this.render(el, text.slice(i + 1, end), depth + 1, inLink);
          parent.append(el);
          i = end + 1;
          continue;
        }
      }
      if (c === "[" && !inLink) {
        const parsed = this._bracketLink(text, i, noCloser);
        if (parsed) {
          const href = safeHref(parsed.url);
          flush();
          if (href) {
            parent.append(link(doc, href, (a) => this.render(a, parsed.label, depth + 1, true)));
          } else {
            // not a safe link: the whole source as text, so the reader sees what was sent
            parent.append(doc.createTextNode(text.slice(i, parsed.end)));
          }
          i = parsed.end;
          continue;
        }
      }
      if (!inLink && (c === "h" || c === "H" || c === "m" || c === "M") && !/[\p{L}\p{N}]/u.test(text[i - 1] ?? "")) {
        const m = AUTOLINK.exec(text.slice(i, i + 2048));
        if (m) {
          const url = m[0].replace(TRAILING, "");
          const href = safeHref(url);
          if (href && url.length > 8) {
            flush();
            parent.append(link(doc, href, (a) => a.append(doc.createTextNode(url))));
            i += url.length;
            continue;
          }
        }
      }
      buf += c;
      i += 1;
    }
    flush();
  }

  _closer(text, marker, from, noCloser) {
    if (noCloser.has(marker)) return -1;
    let at = text.indexOf(marker, from);
    // `**` must not close on the first half of a longer run right at the start
    while (at === from) at = text.indexOf(marker, at + 1);
    if (at === -1) noCloser.add(marker);
    return at;
  }

  _wordEdge(text, start, after) {
    // snake_case_names are not emphasis: `_` markers must not touch letters on their outer side
    const word = /[\p{L}\p{N}]/u;
    return !word.test(text[start - 1] ?? "") && !word.test(text[after] ?? "");
  }

  _bracketLink(text, i, noCloser) {
    if (noCloser.has("]")) return null;
    const close = text.indexOf("](", i + 1);
    if (close === -1) {
      noCloser.add("]");
      return null;
    }
    if (text.slice(i + 1, close).includes("\n")) return null;
    let depth = 0;
    for (let j = close + 2; j < text.length && j < close + 2050; j++) {
      const ch = text[j];
      if (ch === "(") depth++;
      else if (ch === ")") {
        if (depth === 0) {
          return { label: text.slice(i + 1, close), url: text.slice(close + 2, j), end: j + 1 };
        }
        depth--;
      } else if (ch === "\n") return null;
    }
    return null;
  }
}

const FENCE = /^\s{0,3}```/;
const QUOTE = /^\s{0,3}>\s?/;
const BULLET = /^\s{0,3}[-*+]\s+/;
const ORDERED = /^\s{0,3}(\d{1,9})[.)]\s+/;
const HEADING = /^\s{0,3}#{1,6}\s+/;

/** Render `text` (Markdown) into a new `<div class="lw-md">`; never interprets HTML. */
export function renderMarkdown(doc, text, depth = 0) {
  const root = h(doc, "div", "lw-md");
  const inline = new Inline(doc);
  const lines = String(text ?? "").replace(/\r\n?/g, "\n").split("\n");
  let para = [];
  const endPara = () => {
    if (para.length === 0) return;
    const p = h(doc, "p");
    inline.render(p, para.join("\n"), depth);
    root.append(p);
    para = [];
  };
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (FENCE.test(line)) {
      endPara();
      const body = [];
      i += 1;
      while (i < lines.length && !FENCE.test(lines[i])) body.push(lines[i++]);
      i += 1; // the closing fence (or the end)
      const pre = h(doc, "pre", "lw-md-pre");
      pre.append(h(doc, "code", null, body.join("\n")));
      root.append(pre);
      continue;
    }
    if (QUOTE.test(line) && depth < MAX_DEPTH) {
      endPara();
      const body = [];
      while (i < lines.length && QUOTE.test(lines[i])) body.push(lines[i++].replace(QUOTE, ""));
      const quote = h(doc, "blockquote", "lw-md-quote");
      quote.append(...renderMarkdown(doc, body.join("\n"), depth + 1).childNodes);
      root.append(quote);
      continue;
    }
    const ordered = ORDERED.exec(line);
    if (BULLET.test(line) || ordered) {
      endPara();
      const pattern = ordered ? ORDERED : BULLET;
      const list = h(doc, ordered ? "ol" : "ul", "lw-md-list");
      if (ordered && ordered[1] !== "1") list.setAttribute("start", String(Number(ordered[1])));
      while (i < lines.length && pattern.test(lines[i])) {
        const item = h(doc, "li");
        inline.render(item, lines[i].replace(pattern, ""), depth);
        list.append(item);
        i += 1;
      }
      root.append(list);
      continue;
    }
    if (HEADING.test(line)) {
      endPara();
      const p = h(doc, "p", "lw-md-heading");
      const strong = h(doc, "strong");
      inline.render(strong, line.replace(HEADING, ""), depth);
      p.append(strong);
      root.append(p);
      i += 1;
      continue;
    }
    if (!line.trim()) {
      endPara();
      i += 1;
      continue;
    }
    para.push(line);
    i += 1;
  }
  endPara();
  return root;
}
