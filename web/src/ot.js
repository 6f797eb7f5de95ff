// Notebook OT, the same rules as the server (engine/ot/text.py, engine/ot/components.py).
// Pure: no DOM, no network. Text offsets are Unicode code points; strings are JS strings,
// so every length here counts code points ([...s].length), never UTF-16 units.

/** Code points of a string as an array (indexing by code point). */
export function cps(s) {
  return Array.from(s);
}

/** Number of code points in `s`. */
export function cpLength(s) {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) i++;
    }
    n++;
  }
  return n;
}

/** UTF-16 offset `u` in `s` → code point offset. */
export function utf16ToCp(s, u) {
  return cpLength(s.slice(0, u));
}

/** Code point offset `p` in `s` → UTF-16 offset (clamped to the end). */
export function cpToUtf16(s, p) {
  let u = 0;
  for (let k = 0; k < p && u < s.length; k++) {
    const c = s.charCodeAt(u);
    u += c >= 0xd800 && c <= 0xdbff && u + 1 < s.length ? 2 : 1;
  }
  return u;
}

/** `\r\n` and lone `\r` become `\n` (what the editor shows). */
export function normalizeNewlines(s) {
  return s.indexOf("\r") < 0 ? s : s.replace(/\r\n?/g, "\n");
}

const isInt = (c) => typeof c === "number";
const isStr = (c) => typeof c === "string";
const isDel = (c) => c !== null && typeof c === "object";
const compLen = (c) => (isInt(c) ? c : isStr(c) ? cpLength(c) : c.d);

class Builder {
  constructor() {
    this.op = [];
  }
  append(c) {
    const op = this.op;
    const last = op.length ? op[op.length - 1] : undefined;
    if (isInt(c)) {
      if (c === 0) return;
      if (isInt(last)) op[op.length - 1] = last + c;
      else op.push(c);
    } else if (isStr(c)) {
      if (!c) return;
      if (isStr(last)) op[op.length - 1] = last + c;
      else op.push(c);
    } else {
      if (c.d === 0) return;
      if (isDel(last)) op[op.length - 1] = { d: last.d + c.d };
      else op.push({ d: c.d });
    }
  }
  result() {
    if (this.op.length && isInt(this.op[this.op.length - 1])) this.op.pop();
    return this.op;
  }
}

/** Canonical form of a splice: no empty parts, neighbours merged, no trailing skip. */
export function normalizeText(ops) {
  const b = new Builder();
  for (const c of ops) b.append(isDel(c) ? { d: c.d } : c);
  return b.result();
}

class Taker {
  constructor(op) {
    this.op = op;
    this.idx = 0;
    this.offset = 0;
  }
  peek() {
    return this.idx < this.op.length ? this.op[this.idx] : null;
  }
  take(n, indivisible) {
    if (this.idx === this.op.length) return n === -1 ? null : n;
    const c = this.op[this.idx];
    const off = this.offset;
    if (isInt(c)) {
      if (n === -1 || c - off <= n) {
        this.idx++;
        this.offset = 0;
        return c - off;
      }
      this.offset += n;
      return n;
    }
    if (isStr(c)) {
      const chars = cps(c);
      if (n === -1 || indivisible === "i" || chars.length - off <= n) {
        this.idx++;
        this.offset = 0;
        return chars.slice(off).join("");
      }
      this.offset += n;
      return chars.slice(off, off + n).join("");
    }
    if (n === -1 || indivisible === "d" || c.d - off <= n) {
      this.idx++;
      this.offset = 0;
      return { d: c.d - off };
    }
    this.offset += n;
    return { d: n };
  }
}

/** Apply a splice to `source`; throws Error("text_out_of_range") when it runs past the end. */
export function applyText(source, ops) {
  const chars = cps(source);
  const out = [];
  let pos = 0;
  for (const c of ops) {
    if (isInt(c)) {
      if (pos + c > chars.length) throw new Error("text_out_of_range");
      out.push(chars.slice(pos, pos + c).join(""));
      pos += c;
    } else if (isStr(c)) {
      out.push(c);
    } else {
      if (pos + c.d > chars.length) throw new Error("text_out_of_range");
      pos += c.d;
    }
  }
  out.push(chars.slice(pos).join(""));
  return out.join("");
}

/** Transform splice `ops` past `other` (same base); at a tie the op ordered first stays left. */
export function transformText(ops, other, opFirst) {
  const b = new Builder();
  const take = new Taker(ops);
  for (const c2 of other) {
    if (isInt(c2)) {
      let length = c2;
      while (length > 0) {
        const c1 = take.take(length, "i");
        b.append(c1);
        if (!isStr(c1)) length -= compLen(c1);
      }
    } else if (isStr(c2)) {
      if (opFirst && isStr(take.peek())) b.append(take.take(-1));
      b.append(cpLength(c2));
    } else {
      let length = c2.d;
      while (length > 0) {
        const c1 = take.take(length, "i");
        if (isInt(c1)) length -= c1;
        else if (isStr(c1)) b.append(c1);
        else length -= c1.d;
      }
    }
  }
  let c;
  while ((c = take.take(-1)) !== null) b.append(c);
  return b.result();
}

/** Map a cursor offset through a splice (an insert at the cursor leaves it before, unless stickRight). */
export function transformPosition(pos, ops, stickRight = false) {
  let cur = 0;
  let shift = 0;
  for (const c of ops) {
    if (isInt(c)) {
      cur += c;
      if (cur > pos) break;
    } else if (isStr(c)) {
      if (cur < pos || (cur === pos && stickRight)) shift += cpLength(c);
      else break;
    } else {
      if (cur >= pos) break;
      shift -= Math.min(c.d, pos - cur);
      cur += c.d;
    }
  }
  return pos + shift;
}

const REGISTERS = {
  cell_move: "pos",
  cell_delete: "deleted",
  cell_restore: "deleted",
  cell_type: "cell_type",
  meta_set: "meta",
  exec_count: "exec_count",
  exec_state: "exec_state",
};
const OUTPUT_WRITERS = new Set(["outputs_append", "stream_append"]);

function sameRegister(c, o, reg) {
  if (REGISTERS[o.t] !== reg || c.id !== o.id) return false;
  return reg !== "meta" || c.key === o.key;
}

/** Transform one component past another; null means dropped (last writer wins on registers). */
export function transformComponent(c, other, opFirst) {
  if (c.t === "text") {
    if (other.t === "text" && other.id === c.id) {
      const ops = transformText(c.ops, other.ops, opFirst);
      return ops.length ? { ...c, ops } : null;
    }
    return c;
  }
  if (!opFirst) return c;
  const reg = REGISTERS[c.t];
  if (reg !== undefined) return sameRegister(c, other, reg) ? null : c;
  if (OUTPUT_WRITERS.has(c.t) && other.t === "outputs_clear" && other.id === c.id) return null;
  return c;
}

/** Transform op past other (both on the same document), pairwise, never composed. */
export function transformOp(op, other, opFirst) {
  if (!op.length || !other.length) return op.slice();
  let rest = other.slice();
  const out = [];
  for (const a of op) {
    let cur = a;
    const carried = [];
    for (const b of rest) {
      if (cur === null) {
        carried.push(b);
        continue;
      }
      const b2 = transformComponent(b, cur, !opFirst);
      cur = transformComponent(cur, b, opFirst);
      if (b2 !== null) carried.push(b2);
    }
    rest = carried;
    if (cur !== null) out.push(cur);
  }
  return out;
}

// ---- the notebook model -------------------------------------------------------------------

/** A replica built from a welcome DOC: {metadata, cells: Map(id → cell), displays: Map}. */
export function notebookFromDoc(doc) {
  const cells = new Map();
  const displays = new Map();
  for (const c of doc.cells) {
    const cell = {
      id: c.id,
      pos: c.pos,
      cell_type: c.cell_type,
      source: c.source,
      metadata: c.metadata || {},
      attachments: c.attachments,
      outputs: c.outputs || [],
      display_ids: c.display_ids || (c.outputs || []).map(() => null),
      execution_count: c.execution_count ?? null,
      exec_state: c.exec_state ?? null,
      deleted: !!c.deleted,
    };
    cells.set(c.id, cell);
    cell.display_ids.forEach((d) => {
      if (d !== null) {
        if (!displays.has(d)) displays.set(d, new Set());
        displays.get(d).add(c.id);
      }
    });
  }
  return { metadata: doc.metadata || {}, cells, displays };
}

function must(nb, id) {
  const cell = nb.cells.get(id);
  if (!cell) throw new Error("unknown_cell");
  return cell;
}

/** Apply one op to the replica in place; returns the set of touched cell ids. Throws on an invalid op. */
export function applyOp(nb, op) {
  const touched = new Set();
  for (const c of op) {
    if (c.id !== undefined && c.id !== null) touched.add(c.id);
    switch (c.t) {
      case "cell_insert": {
        if (nb.cells.has(c.id)) throw new Error("cell_exists");
        const s = c.cell;
        nb.cells.set(c.id, {
          id: c.id,
          pos: c.pos,
          cell_type: s.cell_type,
          source: s.source || "",
          metadata: s.metadata || {},
          attachments: s.attachments,
          outputs: [],
          display_ids: [],
          execution_count: null,
          exec_state: null,
          deleted: false,
        });
        break;
      }
      case "cell_delete":
        must(nb, c.id).deleted = true;
        break;
      case "cell_restore":
        must(nb, c.id).deleted = false;
        break;
      case "cell_move":
        must(nb, c.id).pos = c.pos;
        break;
      case "text": {
        const cell = must(nb, c.id);
        cell.source = applyText(cell.source, c.ops);
        break;
      }
      case "cell_type":
        must(nb, c.id).cell_type = c.value;
        break;
      case "meta_set": {
        const target = c.id === null || c.id === undefined ? nb : must(nb, c.id);
        const meta = { ...target.metadata };
        if (c.value === null) delete meta[c.key];
        else meta[c.key] = c.value;
        target.metadata = meta;
        break;
      }
      case "outputs_clear": {
        const cell = must(nb, c.id);
        for (const d of cell.display_ids) if (d !== null) nb.displays.get(d)?.delete(cell.id);
        cell.outputs = [];
        cell.display_ids = [];
        break;
      }
      case "outputs_append": {
        const cell = must(nb, c.id);
        const did = c.display_id ?? null;
        if (did !== null) {
          if (!nb.displays.has(did)) nb.displays.set(did, new Set());
          nb.displays.get(did).add(cell.id);
        }
        cell.outputs = [...cell.outputs, c.output];
        cell.display_ids = [...cell.display_ids, did];
        break;
      }
      case "stream_append": {
        const cell = must(nb, c.id);
        const last = cell.outputs[cell.outputs.length - 1];
        if (last && last.output_type === "stream" && last.name === c.name) {
          const prev = Array.isArray(last.text) ? last.text.join("") : String(last.text ?? "");
          cell.outputs = [...cell.outputs.slice(0, -1), { ...last, text: prev + c.text }];
        } else {
          cell.outputs = [...cell.outputs, { output_type: "stream", name: c.name, text: c.text }];
          cell.display_ids = [...cell.display_ids, null];
        }
        break;
      }
      case "display_update": {
        const ids = nb.displays.get(c.display_id);
        if (!ids) break;
        for (const cid of ids) {
          const cell = must(nb, cid);
          touched.add(cid);
          cell.outputs = cell.outputs.map((o, i) =>
            cell.display_ids[i] === c.display_id
              ? { ...o, data: c.output.data || {}, metadata: c.output.metadata || {} }
              : o,
          );
        }
        break;
      }
      case "exec_count":
        must(nb, c.id).execution_count = c.n;
        break;
      case "exec_state":
        must(nb, c.id).exec_state = c.state;
        break;
      default:
        throw new Error("invalid_op");
    }
  }
  return touched;
}

const byteCmp = (a, b) => (a < b ? -1 : a > b ? 1 : 0); // keys and ids are ASCII: JS order is bytewise

/** Live cells in visible order: sorted by (pos, id) bytewise. */
export function visibleCells(nb) {
  return [...nb.cells.values()]
    .filter((c) => !c.deleted)
    .sort((a, b) => byteCmp(a.pos, b.pos) || byteCmp(a.id, b.id));
}
