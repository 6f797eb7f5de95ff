// Builds the embed page into ../api/embed_static: hashed file names and a manifest.json the server
// reads. Deterministic: the same sources and lockfile give the same bytes (a test checks that).
import * as esbuild from "esbuild";
import { createHash } from "node:crypto";
import { readFileSync, rmSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const outdir = resolve(process.argv[2] || join(here, "..", "api", "embed_static"));

// KaTeX's stylesheet lists woff2, woff and ttf for every font; every browser we serve reads woff2.
const woff2Only = {
  name: "katex-woff2-only",
  setup(build) {
    build.onLoad({ filter: /katex[\\/]dist[\\/]katex\.css$/ }, (args) => ({
      contents: readFileSync(args.path, "utf8").replace(/,\s*url\([^)]*\.(woff|ttf)\) format\("(woff|truetype)"\)/g, ""),
      loader: "css",
    }));
  },
};

rmSync(outdir, { recursive: true, force: true });
mkdirSync(outdir, { recursive: true });
const result = await esbuild.build({
  absWorkingDir: here,
  entryPoints: { embed: "src/main.js", "embed-style": "src/style.css", katex: "node_modules/katex/dist/katex.css" },
  bundle: true,
  splitting: true,
  format: "esm",
  target: ["es2020"],
  minify: true,
  legalComments: "none",
  charset: "utf8",
  outdir,
  entryNames: "[name]-[hash]",
  chunkNames: "chunk-[hash]",
  assetNames: "[name]-[hash]",
  loader: { ".woff2": "file" },
  metafile: true,
  preserveSymlinks: true, // the same bytes when node_modules is a symlink
  plugins: [woff2Only],
  logLevel: "warning",
});

const manifest = {};
for (const [file, meta] of Object.entries(result.metafile.outputs)) {
  const name = relative(outdir, resolve(here, file));
  if (meta.entryPoint === "src/main.js") manifest.js = name;
  else if (meta.entryPoint === "src/style.css") manifest.css = name;
  else if (meta.entryPoint?.endsWith("katex.css")) manifest.katex_css = name;
}
// The API docs page (quart-schema's Swagger UI) loads swagger-ui-dist from here, not from a CDN.
for (const [key, file] of [["swagger_js", "swagger-ui-bundle.js"], ["swagger_css", "swagger-ui.css"]]) {
  const body = readFileSync(join(here, "node_modules", "swagger-ui-dist", file));
  const hash = createHash("sha256").update(body).digest("hex").slice(0, 10);
  const name = file.replace(/\.(js|css)$/, `-${hash}.$1`);
  writeFileSync(join(outdir, name), body);
  manifest[key] = name;
}
const sorted = Object.fromEntries(Object.entries(manifest).sort());
writeFileSync(join(outdir, "manifest.json"), JSON.stringify(sorted, null, 2) + "\n");
console.log(`built ${outdir}: ${JSON.stringify(sorted)}`);
