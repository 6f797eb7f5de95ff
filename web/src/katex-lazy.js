// The KaTeX chunk, loaded on the first piece of LaTeX only. Its stylesheet is a separate hashed asset
// whose URL the page lists in #agora-assets.
import katex from "katex";

let cssAdded = false;

function addCss() {
  if (cssAdded) return;
  cssAdded = true;
  const assets = JSON.parse(document.getElementById("agora-assets")?.textContent || "{}");
  if (!assets.katexCss) return;
  const link = document.createElement("link");
  link.rel = "stylesheet";
  link.href = assets.katexCss;
  document.head.append(link);
}

/** Render `tex` into `node` (text stays as is if KaTeX cannot parse it). */
export function renderMath(node, tex, display) {
  addCss();
  try {
    katex.render(tex, node, { displayMode: display, throwOnError: false, trust: false, strict: "ignore" });
  } catch {
    node.textContent = tex;
  }
}
