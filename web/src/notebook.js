// The notebook UI: cells in visible order, lazily created CodeMirror views, outputs, toolbars,
// run / interrupt, input() prompts, presence. All changes go through the SyncClient as ops.

import { createEditor, changesToSplice, spliceToChanges, newlineSplice, showCarets, setReadOnly, remote } from "./editor.js";
import { applyText, normalizeNewlines, normalizeText, visibleCells, cpToUtf16, utf16ToCp } from "./ot.js";
import { keyBetween } from "./poskeys.js";
import { renderOutput, renderMarkdown } from "./outputs.js";

const PALETTE = ["#e8590c", "#1c7ed6", "#2f9e44", "#ae3ec9", "#f08c00", "#0c8599", "#e03131", "#5f3dc4"];
const ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789";

function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== false && v !== null && v !== undefined) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function newCellId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return Array.from(bytes, (b) => ID_CHARS[b % ID_CHARS.length]).join("");
}

function slotOf(clientId) {
  let x = 0;
  for (const ch of clientId) x = (x * 31 + ch.charCodeAt(0)) >>> 0;
  return x % PALETTE.length;
}

/** One cell on the page. */
class CellView {
  constructor(nbv, cell) {
    this.nbv = nbv;
    this.id = cell.id;
    this.view = null;
    this.editingMarkdown = false;
    this.root = h("div", { class: "cell", "data-cell": cell.id });
    this.prompt = h("div", { class: "prompt" });
    this.outPrompt = h("div", { class: "prompt out-prompt" });
    this.inputArea = h("div", { class: "input-area" });
    this.outputsEl = h("div", { class: "outputs" });
    this.inputBox = h("div", { class: "input-request" });
    this.toolbar = nbv.canEdit ? this.makeToolbar() : null;
    this.root.append(
      h("div", { class: "cell-row" }, this.prompt, h("div", { class: "cell-body" }, this.inputArea, this.toolbar)),
      h("div", { class: "cell-row" }, this.outPrompt, h("div", { class: "cell-body" }, this.outputsEl, this.inputBox)),
    );
    this.root.addEventListener("mousedown", () => nbv.select(this.id));
    this.render(cell);
  }

  get cell() {
    return this.nbv.doc.nb.cells.get(this.id);
  }

  makeToolbar() {
    const nbv = this.nbv;
    const btn = (label, title, fn) =>
      h("button", { class: "tb", title, "aria-label": title, text: label, onclick: (e) => (e.stopPropagation(), fn()) });
    this.typeSelect = h(
      "select",
      { class: "tb-type", title: "Cell type", onchange: () => nbv.setType(this.id, this.typeSelect.value) },
      h("option", { value: "code", text: "Code" }),
      h("option", { value: "markdown", text: "Markdown" }),
      h("option", { value: "raw", text: "Raw" }),
    );
    return h(
      "div",
      { class: "cell-toolbar" },
      btn("▶", "Run (Ctrl-Enter)", () => nbv.run([this.id])),
      btn("↑", "Move up", () => nbv.move(this.id, -1)),
      btn("↓", "Move down", () => nbv.move(this.id, 1)),
      this.typeSelect,
      btn("+", "Add a cell below", () => nbv.addCell(this.id, "code")),
      btn("✕", "Delete cell", () => nbv.deleteCell(this.id)),
    );
  }

  /** Re-render everything but an existing editor's text. */
  render(cell = this.cell) {
    this.root.dataset.type = cell.cell_type;
    if (this.typeSelect) this.typeSelect.value = cell.cell_type;
    this.renderPrompt(cell);
    this.renderInput(cell);
    this.renderOutputs(cell);
  }

  renderPrompt(cell = this.cell) {
    if (cell.cell_type !== "code") {
      this.prompt.textContent = "";
      this.root.classList.remove("running", "queued");
      return;
    }
    const st = this.nbv.runState(cell);
    this.root.classList.toggle("running", st === "running");
    this.root.classList.toggle("queued", st === "queued");
    const n = st === "running" || st === "queued" ? "*" : cell.execution_count ?? " ";
    this.prompt.textContent = `[${n}]:`;
    this.prompt.title = st ? `state: ${st}` : "";
  }

  renderInput(cell = this.cell) {
    const wantEditor = cell.cell_type !== "markdown" || this.editingMarkdown;
    if (!wantEditor) {
      this.destroyView();
      const md = h("div", { class: "markdown rendered" });
      renderMarkdown(cell.source || "", md, cell.attachments);
      if (!cell.source) md.append(h("span", { class: "md-empty", text: this.nbv.canEdit ? "Double-click to write markdown" : "" }));
      if (this.nbv.canEdit) md.addEventListener("dblclick", () => this.editMarkdown());
      this.inputArea.replaceChildren(md);
      this.inputArea.className = "input-area markdown-area";
      return;
    }
    this.inputArea.className = `input-area code-area type-${cell.cell_type}`;
    if (this.view) {
      this.syncViewText(cell);
      return;
    }
    const pre = h("pre", { class: "source-placeholder", text: normalizeNewlines(cell.source) || " " });
    this.inputArea.replaceChildren(pre);
    this.nbv.observe(this);
    if (this.editingMarkdown) this.ensureView(true);
  }

  editMarkdown() {
    if (!this.nbv.canEdit) return;
    this.editingMarkdown = true;
    this.renderInput();
    this.ensureView(true);
  }

  finishMarkdown() {
    if (!this.editingMarkdown) return;
    this.editingMarkdown = false;
    this.renderInput();
  }

  /** Create the CodeMirror view now (it is created lazily when the cell scrolls into sight). */
  ensureView(focus = false) {
    const cell = this.cell;
    if (!cell || (cell.cell_type === "markdown" && !this.editingMarkdown)) return;
    if (!this.view) {
      this.inputArea.replaceChildren();
      const nbv = this.nbv;
      this.view = createEditor(this.inputArea, {
        doc: cell.source,
        language: cell.cell_type === "code" ? "python" : null,
        readOnly: !nbv.canEdit,
        nonce: nbv.nonce,
        onLocal: (changes, startDoc) => nbv.localChange(this.id, changes, startDoc),
        onSelection: (anchor, head) => nbv.localSelection(this.id, anchor, head),
        keys: [
          { key: "Shift-Enter", run: () => (nbv.runAndAdvance(this.id), true) },
          { key: "Mod-Enter", run: () => (nbv.runCell(this.id), true) },
          { key: "Escape", run: () => (this.finishMarkdown(), true) },
        ],
      });
      this.view.contentDOM.addEventListener("blur", () => {
        if (this.editingMarkdown) setTimeout(() => !this.view?.hasFocus && this.finishMarkdown(), 150);
      });
      nbv.refreshCarets(this.id);
    }
    if (focus) this.view.focus();
  }

  destroyView() {
    if (this.view) {
      this.view.destroy();
      this.view = null;
    }
  }

  /** Make the editor show exactly the (normalised) source; used when a precise splice is not possible. */
  syncViewText(cell = this.cell) {
    if (!this.view) return;
    const want = normalizeNewlines(cell.source);
    const have = this.view.state.doc.toString();
    if (want === have) return;
    let a = 0;
    while (a < want.length && a < have.length && want[a] === have[a]) a++;
    let b = 0;
    while (b < want.length - a && b < have.length - a && want[want.length - 1 - b] === have[have.length - 1 - b]) b++;
    this.view.dispatch({
      changes: { from: a, to: have.length - b, insert: want.slice(a, want.length - b) },
      annotations: remote.of(true),
    });
  }

  /** A remote splice on this cell's source (code points on `oldSource`). */
  applyRemoteText(splice, oldSource, newSource) {
    if (!this.view) {
      const pre = this.inputArea.querySelector(".source-placeholder");
      if (pre) pre.textContent = normalizeNewlines(newSource) || " ";
      else if (this.cell.cell_type === "markdown") this.renderInput();
      return;
    }
    // Precise only when the editor shows exactly the source the splice was made on.
    if (oldSource.includes("\r") || newSource.includes("\r") || this.view.state.doc.toString() !== oldSource) {
      this.syncViewText();
      return;
    }
    this.view.dispatch({ changes: spliceToChanges(splice, oldSource), annotations: remote.of(true) });
  }

  renderOutputs(cell = this.cell) {
    this.outputsEl.replaceChildren();
    this.outPrompt.textContent = "";
    if (cell.cell_type !== "code") return;
    const outputs = cell.outputs || [];
    for (const o of outputs) this.outputsEl.append(renderOutput(o));
    const result = outputs.find((o) => o.output_type === "execute_result");
    this.outPrompt.textContent = result ? `[${result.execution_count ?? cell.execution_count ?? " "}]:` : "";
  }

  showInputRequest(frame, onReply) {
    const field = h("input", {
      class: "input-field",
      type: frame.password ? "password" : "text",
      autocomplete: "off",
      "aria-label": frame.prompt || "input",
    });
    const form = h(
      "form",
      {
        class: "input-form",
        onsubmit: (e) => {
          e.preventDefault();
          onReply(field.value);
          this.inputBox.replaceChildren();
        },
      },
      h("label", { class: "input-prompt", text: frame.prompt || "" }),
      field,
    );
    this.inputBox.replaceChildren(form);
    field.focus();
  }
}

/** The whole notebook page. */
export class NotebookView {
  constructor(root, { nonce, sync }) {
    this.root = root;
    this.nonce = nonce;
    this.sync = sync;
    this.doc = null;
    this.views = new Map();
    this.selected = null;
    this.presence = { viewers: 0, editors: [] };
    this.kernel = null;
    this.canEdit = false;
    this.observer = new IntersectionObserver((entries) => this.onVisible(entries), { rootMargin: "600px 0px" });
    this.buildChrome();
  }

  buildChrome() {
    const btn = (label, title, fn, cls = "") =>
      h("button", { class: `hb ${cls}`, title, text: label, onclick: fn });
    this.editButtons = h(
      "span",
      { class: "edit-buttons" },
      btn("+ Code", "Add a code cell", () => this.addCell(this.selected, "code")),
      btn("+ Markdown", "Add a markdown cell", () => this.addCell(this.selected, "markdown")),
      btn("▶▶ Run all", "Run all cells", () => this.run(visibleCells(this.doc.nb).filter((c) => c.cell_type === "code").map((c) => c.id)), "run-all"),
      btn("■ Interrupt", "Interrupt the kernel", () => this.sync.interrupt(), "interrupt"),
    );
    this.connEl = h("span", { class: "conn", role: "status", text: "connecting" });
    this.kernelEl = h("span", { class: "kernel-state", text: "" });
    this.presenceEl = h("span", { class: "presence" });
    this.viewersEl = h("span", { class: "viewers", title: "people watching" });
    this.notice = h("div", { class: "notice", role: "alert" });
    this.header = h(
      "header",
      { class: "nb-header" },
      h("span", { class: "brand", text: "Agora" }),
      this.editButtons,
      h("span", { class: "spacer" }),
      this.presenceEl,
      this.viewersEl,
      this.kernelEl,
      this.connEl,
    );
    this.cellsEl = h("main", { class: "cells" });
    this.root.replaceChildren(this.header, this.notice, this.cellsEl);
  }

  // ---- sync callbacks ----------------------------------------------------------------------

  setConnection(state, detail) {
    this.connEl.textContent = state;
    this.connEl.dataset.state = state;
    this.connEl.title = detail || "";
    this.root.dataset.conn = state;
    if (state === "offline" && detail) this.showNotice(detail);
  }

  showNotice(text, timeout = 0) {
    this.notice.textContent = text;
    this.notice.classList.add("shown");
    clearTimeout(this.noticeTimer);
    if (timeout) this.noticeTimer = setTimeout(() => this.notice.classList.remove("shown"), timeout);
  }

  onError(f) {
    if (f.code === "kernels_unavailable") this.showNotice("Kernels are not available on this server: cells cannot run.", 6000);
    else this.showNotice(`${f.code}: ${f.message}`, 8000);
  }

  /** A (new) snapshot: rebuild every cell. */
  load(doc) {
    this.doc = doc;
    this.canEdit = this.sync.role === "editor";
    this.root.dataset.role = this.sync.role;
    this.editButtons.hidden = !this.canEdit;
    for (const v of this.views.values()) v.destroyView();
    this.views.clear();
    this.observer.disconnect();
    this.cellsEl.replaceChildren();
    this.layout();
    if (!performance.getEntriesByName("agora:first-render").length) performance.mark("agora:first-render");
    document.title = doc.nb.metadata?.title || "Agora notebook";
  }

  /** Put the cell elements in visible order, creating and dropping views as needed. */
  layout() {
    const order = visibleCells(this.doc.nb);
    const live = new Set(order.map((c) => c.id));
    for (const [id, v] of this.views) {
      if (!live.has(id)) {
        v.destroyView();
        v.root.remove();
        this.views.delete(id);
      }
    }
    let prev = null;
    for (const cell of order) {
      let v = this.views.get(cell.id);
      if (!v) {
        v = new CellView(this, cell);
        this.views.set(cell.id, v);
      }
      const want = prev ? prev.nextSibling : this.cellsEl.firstChild;
      if (want !== v.root) this.cellsEl.insertBefore(v.root, want);
      prev = v.root;
    }
    if (!order.length && this.canEdit) {
      this.cellsEl.append(h("div", { class: "empty", text: "This notebook is empty. Add a cell with + Code." }));
    } else this.cellsEl.querySelector(".empty")?.remove();
  }

  /**
   * A committed op from someone else, already transformed and applied to the replica; `before`
   * holds the sources its text components started from.
   */
  onRemote(op, touched, before = new Map()) {
    const sources = new Map(before);
    let relayout = false;
    const rerender = new Set();
    const outputs = new Set();
    for (const c of op) {
      switch (c.t) {
        case "text": {
          const v = this.views.get(c.id);
          const cell = this.doc.nb.cells.get(c.id);
          // The replica already holds the final source; replay the components to know what this
          // one started from, so the editor gets the same splice (or a full resync after \r).
          const start = sources.get(c.id) ?? cell.source;
          let after;
          try {
            after = applyText(start, c.ops);
          } catch {
            after = cell.source;
          }
          sources.set(c.id, after);
          if (v) {
            v.applyRemoteText(c.ops, start, after);
            if (cell.cell_type === "markdown" && !v.editingMarkdown) rerender.add(c.id);
          }
          break;
        }
        case "cell_insert":
        case "cell_delete":
        case "cell_restore":
        case "cell_move":
          relayout = true;
          break;
        case "cell_type":
          rerender.add(c.id);
          break;
        case "exec_count":
        case "exec_state":
          this.views.get(c.id)?.renderPrompt();
          break;
        case "meta_set":
          break;
        default:
          for (const id of touched) outputs.add(id);
      }
    }
    if (relayout) this.layout();
    for (const id of rerender) {
      const v = this.views.get(id);
      if (v) {
        if (this.doc.nb.cells.get(id).cell_type !== "markdown") v.editingMarkdown = false;
        v.destroyView();
        v.render();
      }
    }
    for (const id of outputs) this.views.get(id)?.renderOutputs();
    for (const id of touched) if (this.presenceByCell?.has(id)) this.refreshCarets(id);
  }

  onPresence(f) {
    this.presence = f;
    const mine = this.sync.doc?.client;
    const others = f.editors.filter((e) => e.client !== mine);
    this.viewersEl.textContent = f.viewers ? `${f.viewers} watching` : "";
    this.viewersEl.title = `${f.viewers} watching`;
    this.presenceEl.replaceChildren(
      ...others.map((e) => {
        const color = e.user.color || PALETTE[slotOf(e.client)];
        const chip = h("span", { class: "avatar", title: e.user.name || e.user.id, text: (e.user.name || e.user.id || "?").slice(0, 1).toUpperCase() });
        chip.style.backgroundColor = color;
        return chip;
      }),
    );
    const byCell = new Map();
    for (const e of others) {
      if (!e.cursor) continue;
      if (!byCell.has(e.cursor.cell)) byCell.set(e.cursor.cell, []);
      byCell.get(e.cursor.cell).push(e);
    }
    const old = this.presenceByCell || new Map();
    this.presenceByCell = byCell;
    for (const id of new Set([...old.keys(), ...byCell.keys()])) this.refreshCarets(id);
  }

  refreshCarets(cellId) {
    const v = this.views.get(cellId);
    if (!v?.view) return;
    const text = v.view.state.doc.toString();
    const carets = (this.presenceByCell?.get(cellId) || []).map((e) => ({
      name: e.user.name || e.user.id,
      color: e.user.color || PALETTE[slotOf(e.client)],
      slot: slotOf(e.client),
      anchor: cpToUtf16(text, e.cursor.anchor),
      head: cpToUtf16(text, e.cursor.head),
    }));
    showCarets(v.view, carets);
  }

  onKernel(f) {
    this.kernel = f;
    this.kernelEl.textContent = `${f.name || "kernel"}: ${f.state}`;
    this.kernelEl.dataset.state = f.state;
    for (const v of this.views.values()) v.renderPrompt();
  }

  onInputRequest(f) {
    const v = this.views.get(f.cell);
    if (!v) return this.sync.inputReply("");
    v.showInputRequest(f, (value) => this.sync.inputReply(value));
  }

  runState(cell) {
    const k = this.kernel;
    if (k) {
      if (k.running === cell.id) return "running";
      if ((k.queue || []).includes(cell.id)) return "queued";
    }
    return cell.exec_state === "running" || cell.exec_state === "queued" ? cell.exec_state : null;
  }

  // ---- local actions -----------------------------------------------------------------------

  observe(cellView) {
    this.observer.observe(cellView.inputArea);
  }

  onVisible(entries) {
    for (const e of entries) {
      if (!e.isIntersecting) continue;
      this.observer.unobserve(e.target);
      const id = e.target.closest(".cell")?.dataset.cell;
      this.views.get(id)?.ensureView(false);
    }
  }

  select(id) {
    if (this.selected === id) return;
    this.views.get(this.selected)?.root.classList.remove("selected");
    this.selected = id;
    this.views.get(id)?.root.classList.add("selected");
  }

  edit(op) {
    if (!this.canEdit) return;
    this.sync.edit(op);
  }

  localChange(cellId, changes, startDoc) {
    const cell = this.doc.nb.cells.get(cellId);
    if (!cell || !this.canEdit) return;
    const op = [];
    if (cell.source.includes("\r")) op.push({ t: "text", id: cellId, ops: normalizeText(newlineSplice(cell.source)) });
    const splice = normalizeText(changesToSplice(changes, startDoc));
    if (splice.length) op.push({ t: "text", id: cellId, ops: splice });
    if (op.length) this.edit(op);
    if (cell.cell_type === "markdown" && !this.views.get(cellId)?.editingMarkdown) this.views.get(cellId)?.renderInput();
  }

  localSelection(cellId, anchor, head) {
    this.select(cellId);
    if (!this.canEdit) return;
    const text = this.views.get(cellId)?.view?.state.doc.toString() ?? "";
    const cursor = { cell: cellId, anchor: utf16ToCp(text, anchor), head: utf16ToCp(text, head) };
    clearTimeout(this.presenceTimer);
    this.presenceTimer = setTimeout(() => this.sync.sendPresence(cursor), 40);
  }

  neighbours(id) {
    const order = visibleCells(this.doc.nb);
    const i = order.findIndex((c) => c.id === id);
    return { order, i };
  }

  addCell(afterId, type) {
    if (!this.canEdit) return;
    const { order, i } = this.neighbours(afterId);
    const at = i < 0 ? order.length - 1 : i;
    const prev = order[at] || null;
    const next = order[at + 1] || null;
    const pos = keyBetween(prev?.pos ?? null, next?.pos ?? null) ?? prev?.pos ?? "V";
    const id = newCellId();
    this.edit([{ t: "cell_insert", id, pos, cell: { cell_type: type, source: "", metadata: {} } }]);
    this.layout();
    this.select(id);
    const v = this.views.get(id);
    if (type === "markdown") v?.editMarkdown();
    else v?.ensureView(true);
    return id;
  }

  deleteCell(id) {
    this.edit([{ t: "cell_delete", id }]);
    this.layout();
  }

  move(id, dir) {
    const { order, i } = this.neighbours(id);
    let a, b;
    if (dir < 0) {
      if (i <= 0) return;
      a = order[i - 2] || null;
      b = order[i - 1];
    } else {
      if (i < 0 || i >= order.length - 1) return;
      a = order[i + 1];
      b = order[i + 2] || null;
    }
    const pos = keyBetween(a?.pos ?? null, b?.pos ?? null) ?? (dir < 0 ? b.pos : a.pos);
    this.edit([{ t: "cell_move", id, pos }]);
    this.layout();
  }

  setType(id, type) {
    const v = this.views.get(id);
    this.edit([{ t: "cell_type", id, value: type }]);
    if (v) {
      v.editingMarkdown = false;
      v.destroyView();
      v.render();
    }
  }

  run(ids) {
    if (!this.canEdit || !ids.length) return;
    this.sync.execute(ids);
  }

  runCell(id) {
    const cell = this.doc.nb.cells.get(id);
    if (cell.cell_type === "code") this.run([id]);
    else this.views.get(id)?.finishMarkdown();
  }

  runAndAdvance(id) {
    this.runCell(id);
    const { order, i } = this.neighbours(id);
    const next = order[i + 1];
    if (next) {
      this.select(next.id);
      const v = this.views.get(next.id);
      if (next.cell_type === "markdown") v.root.scrollIntoView({ block: "nearest" });
      else v.ensureView(true);
    } else this.addCell(id, "code");
  }
}
