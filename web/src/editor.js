// CodeMirror 6 glue: building an editor for one cell, translating between CodeMirror changes
// (UTF-16, normalised newlines) and Agora text splices (code points, the source as stored), and
// drawing other editors' carets.

import { Annotation, EditorState, StateEffect, StateField, Compartment } from "@codemirror/state";
import { Decoration, EditorView, WidgetType, keymap, drawSelection } from "@codemirror/view";
import { defaultKeymap, history, historyKeymap, indentWithTab } from "@codemirror/commands";
import { syntaxHighlighting, defaultHighlightStyle, indentOnInput, bracketMatching } from "@codemirror/language";
import { python } from "@codemirror/lang-python";
import { cpLength, cpToUtf16, normalizeNewlines } from "./ot.js";

/** Marks transactions that come from the server, so they are not sent back. */
export const remote = Annotation.define();

const setCarets = StateEffect.define();

class CaretWidget extends WidgetType {
  constructor(name, color) {
    super();
    this.name = name;
    this.color = color;
  }
  eq(o) {
    return o.name === this.name && o.color === this.color;
  }
  toDOM() {
    const span = document.createElement("span");
    span.className = "remote-caret";
    span.style.borderLeftColor = this.color;
    const label = document.createElement("span");
    label.className = "remote-caret-label";
    label.style.backgroundColor = this.color;
    label.textContent = this.name;
    span.append(label);
    return span;
  }
  ignoreEvent() {
    return true;
  }
}

const caretField = StateField.define({
  create: () => Decoration.none,
  update(deco, tr) {
    deco = deco.map(tr.changes);
    for (const e of tr.effects) if (e.is(setCarets)) deco = e.value;
    return deco;
  },
  provide: (f) => EditorView.decorations.from(f),
});

/** Show other editors' carets: [{name, color, anchor, head}] in UTF-16 offsets of this view. */
export function showCarets(view, carets) {
  const len = view.state.doc.length;
  const ranges = [];
  for (const c of carets) {
    const head = Math.min(Math.max(0, c.head), len);
    const anchor = Math.min(Math.max(0, c.anchor), len);
    if (anchor !== head) {
      const from = Math.min(anchor, head);
      const to = Math.max(anchor, head);
      const cls = `remote-sel remote-sel-${c.slot}`;
      ranges.push(Decoration.mark({ class: cls }).range(from, to));
    }
    ranges.push(Decoration.widget({ widget: new CaretWidget(c.name, c.color), side: 1 }).range(head));
  }
  view.dispatch({ effects: setCarets.of(Decoration.set(ranges, true)) });
}

const theme = EditorView.theme({
  "&": { fontSize: "13.5px", backgroundColor: "transparent" },
  ".cm-content": { fontFamily: "var(--mono)", padding: "6px 0" },
  ".cm-line": { padding: "0 8px" },
  "&.cm-focused": { outline: "none" },
  // Lines wrap, so nothing needs to scroll sideways; visible overflow lets other editors' name
  // labels show above the first line.
  ".cm-scroller": { fontFamily: "var(--mono)", lineHeight: "1.45", overflow: "visible" },
});

/**
 * A CodeMirror view for one cell. `opts`: {doc, language: "python"|null, readOnly, nonce,
 * onLocal(changes, startDoc), onSelection(anchor, head), keys: [{key, run}]}.
 */
export function createEditor(parent, opts) {
  const readOnly = new Compartment();
  const extensions = [
    EditorView.cspNonce.of(opts.nonce || ""),
    theme,
    history(),
    drawSelection(),
    indentOnInput(),
    bracketMatching(),
    syntaxHighlighting(defaultHighlightStyle, { fallback: true }),
    EditorView.lineWrapping,
    caretField,
    keymap.of([...(opts.keys || []), indentWithTab, ...defaultKeymap, ...historyKeymap]),
    readOnly.of([EditorState.readOnly.of(!!opts.readOnly), EditorView.editable.of(!opts.readOnly)]),
    EditorView.updateListener.of((u) => {
      if (u.docChanged) {
        for (const tr of u.transactions) {
          if (tr.docChanged && !tr.annotation(remote)) opts.onLocal?.(tr.changes, tr.startState.doc.toString());
        }
      }
      if ((u.selectionSet || u.focusChanged) && u.view.hasFocus) {
        const sel = u.state.selection.main;
        opts.onSelection?.(sel.anchor, sel.head);
      }
    }),
  ];
  if (opts.language === "python") extensions.push(python());
  const view = new EditorView({
    parent,
    state: EditorState.create({ doc: normalizeNewlines(opts.doc), extensions }),
  });
  view.agoraReadOnly = readOnly;
  return view;
}

/** Switch a view between read-only and editable. */
export function setReadOnly(view, ro) {
  view.dispatch({
    effects: view.agoraReadOnly.reconfigure([EditorState.readOnly.of(ro), EditorView.editable.of(!ro)]),
  });
}

/**
 * A CodeMirror ChangeSet (made on `startDoc`, normalised newlines) as an Agora splice on the same
 * text in code points.
 */
export function changesToSplice(changes, startDoc) {
  const splice = [];
  let lastU = 0; // UTF-16 offset in startDoc already covered
  changes.iterChanges((fromA, toA, _fromB, _toB, inserted) => {
    const skip = cpLength(startDoc.slice(lastU, fromA));
    if (skip) splice.push(skip);
    const del = cpLength(startDoc.slice(fromA, toA));
    if (del) splice.push({ d: del });
    const ins = inserted.sliceString(0, inserted.length, "\n");
    if (ins) splice.push(ins);
    lastU = toA;
  });
  return splice;
}

/** An Agora splice (code points on `oldText`) as CodeMirror change specs (UTF-16 on `oldText`). */
export function spliceToChanges(splice, oldText) {
  const changes = [];
  let u = 0; // UTF-16 offset in oldText
  for (const c of splice) {
    if (typeof c === "number") u += cpToUtf16(oldText.slice(u), c);
    else if (typeof c === "string") changes.push({ from: u, to: u, insert: normalizeNewlines(c) });
    else {
      const n = cpToUtf16(oldText.slice(u), c.d);
      changes.push({ from: u, to: u + n, insert: "" });
      u += n;
    }
  }
  return changes;
}

/** A splice turning `source` (which holds `\r`) into its normalised form. */
export function newlineSplice(source) {
  const splice = [];
  let skip = 0;
  const chars = Array.from(source);
  for (let i = 0; i < chars.length; i++) {
    if (chars[i] !== "\r") {
      skip++;
      continue;
    }
    if (skip) splice.push(skip);
    skip = 0;
    if (chars[i + 1] === "\n") splice.push({ d: 1 });
    else splice.push({ d: 1 }, "\n");
  }
  return splice;
}

export { EditorView };
