// The sync state machine without a DOM or a server: node --test web/test/
import { test } from "node:test";
import assert from "node:assert/strict";
import { DocState, SyncClient } from "../src/sync.js";
import { transformText, cpToUtf16, utf16ToCp, normalizeNewlines } from "../src/ot.js";

const doc = (source) => ({ metadata: {}, cells: [{ id: "c1", pos: "V", cell_type: "code", source, metadata: {}, outputs: [] }] });
const text = (ops) => [{ t: "text", id: "c1", ops }];

test("a committed insert stays left at a tie", () => {
  assert.deepEqual(transformText(["x"], ["y"], true), ["x"]);
  assert.deepEqual(transformText(["x"], ["y"], false), [1, "x"]);
});

test("UTF-16 and code points", () => {
  const s = "a🎉b";
  assert.equal(cpToUtf16(s, 2), 3);
  assert.equal(utf16ToCp(s, 3), 2);
  assert.equal(normalizeNewlines("a\r\nb\rc"), "a\nb\nc");
});

test("one op in flight, the rest pending, never changed once sent", () => {
  const d = new DocState(doc("abc"), 0, "me");
  const first = d.edit(text([3, "1"]));
  assert.deepEqual(first, { type: "op", seq: 1, base: 0, op: text([3, "1"]) });
  assert.equal(d.edit(text([4, "2"])), null);
  // Someone else's op commits first: ours are transformed, the sent one is not resent.
  const r = d.receive({ v: 1, client: "other", seq: 9, op: text(["Z"]) });
  assert.equal(r.ack, false);
  assert.equal(d.nb.cells.get("c1").source, "Zabc12");
  assert.deepEqual(d.inflight, [1, text([4, "1"])]);
  // Our op comes back: ack, the next is sent on top of the new version.
  assert.equal(d.receive({ v: 2, client: "me", seq: 1, op: text([4, "1"]) }).ack, true);
  assert.deepEqual(d.nextToSend(), { type: "op", seq: 2, base: 2, op: text([5, "2"]) });
  assert.throws(() => d.receive({ v: 4, client: "x", seq: 1, op: [] }), /expected version 3/);
});

test("registers: last writer wins; text survives a delete", () => {
  const d = new DocState(doc("abc"), 0, "me");
  d.edit([{ t: "cell_type", id: "c1", value: "markdown" }]);
  d.receive({ v: 1, client: "o", seq: 1, op: [{ t: "cell_type", id: "c1", value: "raw" }, { t: "cell_delete", id: "c1" }] });
  assert.equal(d.nb.cells.get("c1").cell_type, "markdown"); // ours commits later: it wins
  d.receive({ v: 2, client: "me", seq: 1, op: [] });
  d.edit(text(["x"]));
  assert.equal(d.nb.cells.get("c1").source, "xabc");
  assert.equal(d.nb.cells.get("c1").deleted, true);
});

class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.readyState = 1;
    this.sent = [];
    FakeSocket.all.push(this);
  }
  send(m) {
    this.sent.push(JSON.parse(m));
  }
  close(code = 1000) {
    this.readyState = 3;
    this.onclose?.({ code });
  }
  frame(f) {
    this.onmessage({ data: JSON.stringify(f) });
  }
}

test("resume after a drop: since and client, the op in flight resubmitted with its seq", async () => {
  const states = [];
  const c = new SyncClient({
    url: (since, client) => `ws://x/ws?token=t${since !== null ? `&since=${since}&client=${client}` : ""}`,
    WebSocket: FakeSocket,
    onState: (s) => states.push(s),
  });
  c.connect();
  const ws1 = FakeSocket.all.at(-1);
  ws1.frame({ type: "welcome", client: "me", role: "editor", user: { id: "u" }, version: 3, notebook: doc("abc") });
  c.edit(text(["1"]));
  assert.deepEqual(ws1.sent.at(-1), { type: "op", seq: 1, base: 3, op: text(["1"]) });
  c.edit(text([1, "2"]));
  ws1.close(1006);
  assert.equal(c.state, "reconnecting");
  await new Promise((r) => setTimeout(r, 300));
  const ws2 = FakeSocket.all.at(-1);
  assert.notEqual(ws2, ws1);
  assert.match(ws2.url, /since=3&client=me/);
  // Someone else's op committed while we were away; ours did not.
  ws2.frame({ type: "welcome", client: "me", role: "editor", user: { id: "u" }, version: 4, ops: [{ v: 4, client: "o", seq: 1, op: text(["Z"]) }] });
  // Theirs committed first, so at the tie it stays left of ours; our op keeps seq 1.
  assert.deepEqual(ws2.sent[0], { type: "op", seq: 1, base: 4, op: text([1, "1"]) });
  assert.equal(c.doc.nb.cells.get("c1").source, "Z12abc");
  ws2.frame({ type: "ops", ops: [{ v: 5, client: "me", seq: 1, op: text([1, "1"]) }] });
  assert.deepEqual(ws2.sent.at(-1), { type: "op", seq: 2, base: 5, op: text([2, "2"]) });
  assert.deepEqual(states, ["connected", "reconnecting", "connected"]);
  c.stop();
});

test("viewers are read-only and never send ops", () => {
  const c = new SyncClient({ url: () => "ws://x", WebSocket: FakeSocket });
  c.connect();
  const ws = FakeSocket.all.at(-1);
  ws.frame({ type: "welcome", client: "v", role: "viewer", user: { id: "u" }, version: 0, notebook: doc("") });
  assert.equal(c.state, "read-only");
  assert.equal(c.edit(text(["x"])), false);
  assert.deepEqual(ws.sent, []);
  c.stop();
});

test("a connection that stays silent after pings is abandoned and resumed", (t) => {
  t.mock.timers.enable({ apis: ["setInterval", "setTimeout", "Date"] });
  const states = [];
  const c = new SyncClient({
    url: (since, client) => `ws://x/ws?${since !== null ? `since=${since}&client=${client}` : ""}`,
    WebSocket: FakeSocket,
    onState: (s) => states.push(s),
  });
  c.connect();
  const ws = FakeSocket.all.at(-1);
  ws.frame({ type: "welcome", client: "me", role: "editor", user: { id: "u" }, version: 7, notebook: doc("") });
  t.mock.timers.tick(20000);
  assert.deepEqual(ws.sent.at(-1), { type: "ping" });
  ws.frame({ type: "pong" }); // alive
  t.mock.timers.tick(40000);
  assert.equal(c.state, "connected");
  t.mock.timers.tick(40000); // 60 s of silence since the pong
  assert.equal(c.state, "reconnecting");
  t.mock.timers.tick(1000);
  assert.match(FakeSocket.all.at(-1).url, /since=7&client=me/);
  c.stop();
});
