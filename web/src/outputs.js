// Rendering cell outputs and markdown, with no sync. Untrusted content never runs in this origin:
// HTML, markdown and SVG go through DOMPurify or become <img> data URLs; JavaScript and widget
// outputs are never executed (their text/plain is shown). Script-driven HTML (plotly, bokeh) is
// not run anywhere: the page's CSP has frame-src 'none', and a srcdoc iframe would inherit the
// page's script policy anyway, so a sandbox would need a separate origin serving the output.

import DOMPurify from "dompurify";
import { AnsiUp } from "ansi_up";
import { marked } from "marked";

const MAX_TEXT = 200000; // code points of one stream/text shown before a truncation notice
const ansi = new AnsiUp();
ansi.use_classes = true; // classes, not style attributes: the CSP forbids inline styles

const PURIFY = {
  USE_PROFILES: { html: true, svg: false, mathMl: false },
  FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "iframe", "object", "embed"],
  FORBID_ATTR: ["style"],
  ALLOW_DATA_ATTR: false,
};

// Links open outside the frame and never as javascript: (DOMPurify already drops those URLs).
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

const joinText = (t) => (Array.isArray(t) ? t.join("") : String(t ?? ""));

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

/** Sanitised HTML (a DocumentFragment) from untrusted HTML. */
export function sanitizeHtml(html) {
  return DOMPurify.sanitize(html, { ...PURIFY, RETURN_DOM_FRAGMENT: true });
}

let katexPromise = null;
function loadKatex() {
  // KaTeX is big: loaded on the first LaTeX output only (a separate chunk).
  katexPromise ??= import("./katex-lazy.js");
  return katexPromise;
}

function renderMathInto(node, tex, display) {
  node.textContent = tex;
  loadKatex()
    .then((m) => m.renderMath(node, tex, display))
    .catch(() => {});
}

const IMAGE_MIME = /^image\/(png|jpeg|gif|webp|svg\+xml)$/;

/** `attachment:NAME` links of a markdown cell as data URLs (images only; others stay broken). */
function inlineAttachments(source, attachments) {
  if (!attachments) return source;
  return source.replace(/attachment:([^\s)"'>]+)/g, (whole, name) => {
    const bundle = attachments[decodeURIComponent(name)] || attachments[name];
    const mime = bundle && Object.keys(bundle).find((m) => IMAGE_MIME.test(m));
    if (!mime) return whole;
    const data = joinText(bundle[mime]);
    return mime === "image/svg+xml"
      ? "data:image/svg+xml;charset=utf-8," + encodeURIComponent(data)
      : `data:${mime};base64,${data.replace(/\s+/g, "")}`;
  });
}

/** Markdown (cells and text/markdown outputs) rendered, sanitised, with $…$ / $$…$$ math. */
export function renderMarkdown(source, target, attachments = null) {
  source = inlineAttachments(source, attachments);
  const maths = [];
  // Keep math away from the markdown parser, render it with KaTeX afterwards.
  const protectedSrc = source.replace(/\$\$([\s\S]+?)\$\$|\$([^$\n]+?)\$/g, (m, block, inline) => {
    maths.push({ tex: block ?? inline, display: block !== undefined });
    return `@@MATH${maths.length - 1}@@`;
  });
  const html = marked.parse(protectedSrc, { async: false, gfm: true });
  target.replaceChildren(sanitizeHtml(html));
  if (!maths.length) return;
  const walker = document.createTreeWalker(target, NodeFilter.SHOW_TEXT);
  const texts = [];
  while (walker.nextNode()) if (walker.currentNode.nodeValue.includes("@@MATH")) texts.push(walker.currentNode);
  for (const t of texts) {
    const frag = document.createDocumentFragment();
    for (const part of t.nodeValue.split(/(@@MATH\d+@@)/)) {
      const m = /^@@MATH(\d+)@@$/.exec(part);
      if (m && maths[+m[1]]) {
        const span = el("span", "math");
        renderMathInto(span, maths[+m[1]].tex, maths[+m[1]].display);
        frag.append(span);
      } else if (part) frag.append(part);
    }
    t.replaceWith(frag);
  }
}

function truncated(text) {
  const chars = Array.from(text);
  if (chars.length <= MAX_TEXT) return [text, 0];
  return [chars.slice(chars.length - MAX_TEXT).join(""), chars.length - MAX_TEXT];
}

function ansiBlock(text, cls) {
  const [shown, cut] = truncated(text);
  const wrap = el("div", "out-text-wrap");
  if (cut) wrap.append(el("div", "out-notice", `Output truncated: the first ${cut} characters are not shown.`));
  const pre = el("pre", cls);
  // ansi_up escapes HTML itself; DOMPurify makes sure of it.
  pre.append(sanitizeHtml(ansi.ansi_to_html(shown)));
  wrap.append(pre);
  return wrap;
}

const b64ok = (s) => /^[A-Za-z0-9+/=\s]*$/.test(s);

function imageFrom(mime, data) {
  const img = el("img", "out-image");
  img.alt = mime;
  const raw = joinText(data);
  if (mime === "image/svg+xml") {
    // An <img> never runs SVG scripts or loads its sub-resources.
    img.src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(raw);
  } else {
    const clean = raw.replace(/\s+/g, "");
    if (!b64ok(clean)) return el("pre", "out-text", "[invalid image data]");
    img.src = `data:${mime};base64,${clean}`;
  }
  return img;
}

const RICH_ORDER = [
  "application/vnd.jupyter.widget-view+json",
  "application/javascript",
  "text/html",
  "image/svg+xml",
  "image/png",
  "image/jpeg",
  "image/gif",
  "text/markdown",
  "text/latex",
  "text/plain",
];

function renderData(data) {
  const mimes = Object.keys(data || {});
  const mime = RICH_ORDER.find((m) => mimes.includes(m)) ?? mimes[0];
  if (mime === undefined) return el("div");
  const value = joinText(data[mime]);
  switch (mime) {
    case "application/vnd.jupyter.widget-view+json":
    case "application/javascript":
      // Never executed: show what the kernel said in plain text instead.
      return ansiBlock(joinText(data["text/plain"] ?? `[${mime} output not shown]`), "out-text");
    case "text/html": {
      const box = el("div", "out-html");
      box.append(sanitizeHtml(value));
      return box;
    }
    case "image/svg+xml":
    case "image/png":
    case "image/jpeg":
    case "image/gif":
      return imageFrom(mime, data[mime]);
    case "text/markdown": {
      const box = el("div", "out-markdown markdown");
      renderMarkdown(value, box);
      return box;
    }
    case "text/latex": {
      const box = el("div", "out-latex");
      const tex = value.replace(/^\s*\$\$?|\$\$?\s*$/g, "");
      renderMathInto(box, tex, true);
      return box;
    }
    default:
      return ansiBlock(value, "out-text");
  }
}

/** Render one nbformat output into a new element (never throws: a broken output says so). */
export function renderOutput(output) {
  const wrap = el("div", `output output-${output.output_type || "unknown"}`);
  try {
    switch (output.output_type) {
      case "stream":
        wrap.classList.add(output.name === "stderr" ? "out-stderr" : "out-stdout");
        wrap.append(ansiBlock(joinText(output.text), "out-text"));
        break;
      case "error": {
        const tb = (output.traceback || []).map(joinText).join("\n") || `${output.ename}: ${output.evalue}`;
        wrap.append(ansiBlock(tb, "out-text out-error"));
        break;
      }
      case "execute_result":
      case "display_data":
        wrap.append(renderData(output.data));
        break;
      default:
        wrap.append(el("pre", "out-text", `[unknown output type ${output.output_type}]`));
    }
  } catch (e) {
    wrap.append(el("pre", "out-text", `[output could not be shown: ${e.message}]`));
  }
  return wrap;
}
