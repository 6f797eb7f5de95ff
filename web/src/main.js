// The embed page's entry: find the token (URL fragment or the parent's postMessage), connect,
// render. The token is never put anywhere a server log could see it except the WebSocket query.

import { SyncClient, tokenClaims } from "./sync.js";
import { NotebookView } from "./notebook.js";

const config = JSON.parse(document.getElementById("agora-config").textContent);
const app = document.getElementById("app");
let token = null;
let client = null;
let view = null;
let refreshTimer = null;

function tokenFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const t = params.get("token");
  if (t) {
    // Keep the token out of the address bar (and out of copy-pasted links).
    history.replaceState(null, "", location.pathname + location.search);
  }
  return t;
}

function originAllowed(origin) {
  return origin === location.origin || config.origins.includes("*") || config.origins.includes(origin);
}

function askParentForToken() {
  if (window.parent !== window) window.parent.postMessage({ type: "agora:token_request", notebook: config.notebook }, "*");
}

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  const claims = tokenClaims(token);
  if (!claims?.e) return;
  // Ask a minute before expiry (the server accepts a token until expires + 30 s).
  const ms = Math.max(5000, (claims.e - 60) * 1000 - Date.now());
  refreshTimer = setTimeout(askParentForToken, Math.min(ms, 2 ** 31 - 1));
}

function wsUrl(since, clientId) {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const q = new URLSearchParams({ token });
  if (since !== null) q.set("since", String(since));
  if (clientId) q.set("client", clientId);
  return `${proto}//${location.host}/api/v1/notebooks/${encodeURIComponent(config.notebook)}/ws?${q}`;
}

function start() {
  view = new NotebookView(app, { nonce: config.nonce, sync: null });
  client = new SyncClient({
    url: wsUrl,
    WebSocket: window.WebSocket,
    onState: (s, d) => view.setConnection(s, d),
    onSnapshot: () => view.load(client.doc),
    onRemote: (op, touched, before) => view.onRemote(op, touched, before),
    onPresence: (f) => view.onPresence(f),
    onKernel: (f) => view.onKernel(f),
    onInputRequest: (f) => view.onInputRequest(f),
    onError: (f) => view.onError(f),
    onTokenExpired: () => {
      askParentForToken();
      return window.parent !== window;
    },
  });
  view.sync = client;
  window.addEventListener("offline", () => client.networkLost());
  window.addEventListener("online", () => client.networkBack());
  window.agora = { client, view }; // for debugging and browser tests
  client.connect();
  scheduleRefresh();
}

function setToken(t) {
  const first = token === null;
  token = t;
  scheduleRefresh();
  if (first) start();
}

window.addEventListener("message", (ev) => {
  const d = ev.data;
  if (!d || typeof d !== "object" || d.type !== "agora:token" || typeof d.token !== "string") return;
  if (!originAllowed(ev.origin)) return;
  setToken(d.token);
});

const fromFragment = tokenFromFragment();
if (fromFragment) setToken(fromFragment);
else {
  app.textContent = "Waiting for a token from the embedding page…";
  askParentForToken();
}
