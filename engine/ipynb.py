"""Import and export of Jupyter `.ipynb` files for Agora notebooks.

`import_notebook` turns an uploaded notebook (bytes, text or an already parsed dict) into the
in-memory `engine.ot.model.Notebook`; `export_notebook` / `export_bytes` turn a `Notebook` back
into an nbformat 4.5 document that passes `nbformat.validate`.

What import accepts and how it normalises
-----------------------------------------
- Any nbformat 4.x notebook (4.0 to 4.5). Notebooks of nbformat 1, 2 and 3 are upgraded exactly
  as `nbformat.reads(..., as_version=4)` does (worksheets flattened, `heading` cells become
  markdown, v3 mime keys renamed). nbformat 5 or later, or anything else, is refused.
- The document is validated against the nbformat **4.5** schema after the repairs below (4.5 is
  a superset of 4.0-4.4 except that it requires cell ids, which we mint). A 4.0-4.4 file that
  already carries valid cell ids keeps them.
- Multi-line values stored as lists of lines (sources, stream text, non-JSON mime values,
  attachment payloads) are joined into single strings, as nbformat does on read.
- Line endings: in cell sources `\\r\\n` and a lone `\\r` become `\\n` (the OT layer counts code
  points; a source has one line-ending convention). In outputs (stream text and the string values
  of non-JSON mime types) `\\r\\n` becomes `\\n`, but a lone `\\r` is KEPT: in a stream it is a
  carriage return that Jupyter front ends render by overwriting the line (progress bars);
  turning it into `\\n` would explode every progress bar into hundreds of lines.
- The transient keys nbformat strips on read and write (`metadata.orig_nbformat`,
  `orig_nbformat_minor`, `signature`, cell `metadata.trusted`) are dropped.
- Every cell gets `pos` from `keys_between(None, None, n)` in upload order, `created=0`,
  `display_ids` all `None`, `exec_state` `None`. Notebook metadata, cell metadata, attachments,
  outputs and execution counts are kept.

Cell ids
--------
- An uploaded id that is a valid nbformat id (`^[a-zA-Z0-9-_]+$`, 1-64 characters) is kept
  exactly. A duplicate id is refused (contract §8: 422). An id that is present but invalid
  (wrong type, empty, too long, bad characters) is refused as well, not repaired: the platform
  may refer to cells by the ids it uploaded, and silently renaming one would break that.
- A cell without an id gets a minted one, deterministically: `cell-<index>` (index in upload
  order), or `cell-<index>-<k>` with the smallest `k >= 1` that collides with no other id. So the
  same upload always yields the same ids. nbformat 1-3 files have no ids: the random ids that
  nbformat's converter invents are discarded and replaced by minted ones.

Repairs of real-world files (the only ones done)
------------------------------------------------
- Missing cell ids (see above). Colab and old tools save 4.5 files with some ids missing; Jupyter
  itself adds them on open.
- A `metadata` key on a **stream** output is removed. Google Colab writes `"metadata": {...}`
  (often `{"tags": null}`) on stream outputs, which the schema forbids (stream outputs have no
  metadata) while every Jupyter front end opens such files (nbformat only logs the error). This is
  why the corpus file `hf_diffusers_training_example_invalid.ipynb` is invalid (that, and one
  cell without an id); refusing it would refuse a file a user just opened in Jupyter, and the key
  carries nothing Jupyter could show. Everything else the schema rejects is refused.

Errors
------
Every failure is an `InvalidNotebook` (HTTP 422, code `invalid_notebook`) with a one-line human
`message`; `import_notebook` never raises any other exception type and never mutates its input.
Limits: at most `max_cells` cells (default 10,000) and JSON nesting at most `MAX_DEPTH` levels.
The byte size of an upload is the HTTP layer's business (413), not this module's.

Export
------
`export_notebook` returns an nbformat 4.5 dict of the live cells in visible order (`ordered_cells`),
without `pos`, tombstones, `created`, `exec_state` or `display_ids`. It always passes
`nbformat.validate`: should a metadata value set through ops violate the schema (for example
`"tags": "x"`), the offending top-level metadata key is dropped from the export (nbformat's own
`normalize(strip_invalid_metadata=True)`), never the cell. `export_bytes` is the file form:
UTF-8, formatted as `nbformat.writes` does (indent 1, sorted keys, raw non-ASCII, multi-line
strings split into lists of lines) plus a final newline; the same document always gives the
same bytes.
"""

from __future__ import annotations

import math
import re
from typing import Any, TypeGuard

import nbformat
import orjson
from nbformat.v4 import nbjson

from engine.errors import Invalid
from engine.ot.model import Cell, JSONDict, Notebook, ordered_cells
from engine.ot.poskeys import keys_between

__all__ = [
    "MAX_CELLS",
    "MAX_DEPTH",
    "InvalidNotebook",
    "export_bytes",
    "export_notebook",
    "import_notebook",
]

# nbformat ships no type hints: reach it through `Any` so mypy --strict stays meaningful here.
_NBF: Any = nbformat
_V4JSON: Any = nbjson

MAX_CELLS = 10_000
"""Default cap on the number of cells of an imported notebook."""

MAX_DEPTH = 128
"""Maximum JSON nesting depth accepted on import (real notebooks stay far below 32)."""

CELL_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""A valid nbformat 4.5 cell id (the same alphabet and length as Agora's notebook ids)."""

_TRANSIENT_NB_KEYS = ("orig_nbformat", "orig_nbformat_minor", "signature")
_MAX_MESSAGE = 300


class InvalidNotebook(Invalid):
    """The upload is not a notebook Agora accepts. HTTP 422 with code `invalid_notebook`.

    `message` is one human sentence (no traceback), safe to show to the platform's user.
    """

    status = 422
    code = "invalid_notebook"

    def __init__(self, message: str) -> None:
        if len(message) > _MAX_MESSAGE:
            message = message[: _MAX_MESSAGE - 3] + "..."
        super().__init__(message)


# --------------------------------------------------------------------------------------------
# import


def import_notebook(data: bytes | str | dict[str, Any], *, max_cells: int = MAX_CELLS) -> Notebook:
    """Read an uploaded ipynb into a fresh `Notebook` (see the module docstring for the rules).

    `data` is the raw file (bytes, UTF-8 with or without BOM), its text, or the parsed JSON.
    Promises: the result's cells are in upload order with increasing `pos`, unique valid ids,
    `created=0`, string sources without `\\r`; its export passes `nbformat.validate`. The input
    is never mutated and nothing of it is shared with the result. Raises `InvalidNotebook` and
    nothing else.
    """
    try:
        return _import(data, max_cells)
    except InvalidNotebook:
        raise
    except RecursionError:
        raise InvalidNotebook("The notebook is nested too deeply to be read.") from None
    except Exception as exc:  # last line of defence: bad input must never become a 500
        raise InvalidNotebook(f"The notebook could not be read ({type(exc).__name__}).") from None


def _import(data: object, max_cells: int) -> Notebook:
    raw = _plain(_parse(data), 0)
    if not isinstance(raw, dict):
        raise InvalidNotebook(f"A notebook must be a JSON object, not {_json_type(raw)}.")
    if "nbformat" not in raw:
        raise InvalidNotebook("This JSON is not a Jupyter notebook: it has no 'nbformat' version.")
    major = raw["nbformat"]
    if not _is_int(major):
        raise InvalidNotebook("The notebook's 'nbformat' must be an integer.")
    if major > 4:
        raise InvalidNotebook(
            f"nbformat {major} is not supported; Agora reads nbformat 4 (and upgrades 1-3)."
        )
    if major < 1:
        raise InvalidNotebook(f"nbformat {major} is not a notebook format version.")
    minted_from_scratch = False
    if major < 4:
        raw = _upgrade(raw, major)
        minted_from_scratch = True  # nbformat <= 3 has no cell ids; the converter's are random
    minor = raw.get("nbformat_minor")
    if not _is_int(minor) or minor < 0:
        raise InvalidNotebook("The notebook's 'nbformat_minor' is missing or not a non-negative integer.")
    cells = raw.get("cells")
    if not isinstance(cells, list):
        raise InvalidNotebook("The notebook has no 'cells' list.")
    if len(cells) > max_cells:
        raise InvalidNotebook(f"The notebook has {len(cells)} cells; at most {max_cells} are accepted.")
    if not isinstance(raw.get("metadata"), dict):
        raise InvalidNotebook("The notebook's 'metadata' must be an object.")

    for index, cell in enumerate(cells):
        if not isinstance(cell, dict):
            raise InvalidNotebook(f"Cell {index} is {_json_type(cell)}, not an object.")
        if cell.get("cell_type") not in ("code", "markdown", "raw"):
            shown = _short(cell.get("cell_type"))
            raise InvalidNotebook(
                f"Cell {index} has cell_type {shown}; it must be 'code', 'markdown' or 'raw'."
            )
    _strip_transient(raw)
    _repair(raw)
    _assign_ids(cells, discard_existing=minted_from_scratch)
    raw["nbformat_minor"] = 5
    _validate(raw)
    return _build(raw)


def _parse(data: object) -> object:
    """Bytes or text → parsed JSON; a dict passes through (it is copied by `_plain`)."""
    if isinstance(data, dict):
        return data
    if isinstance(data, bytes | bytearray | memoryview):
        blob = bytes(data)
        if blob.startswith(b"\xef\xbb\xbf"):
            blob = blob[3:]
        try:
            blob.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidNotebook("The notebook is not UTF-8 text.") from None
        text: bytes | str = blob
    elif isinstance(data, str):
        text = data.removeprefix("\ufeff")
    else:
        raise InvalidNotebook(f"A notebook must be JSON text or an object, not {type(data).__name__}.")
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidNotebook(f"The notebook is not valid JSON: {exc}.") from None
    except UnicodeEncodeError:  # a str holding lone surrogates
        raise InvalidNotebook("The notebook text contains invalid Unicode (lone surrogates).") from None


def _plain(obj: object, depth: int) -> Any:
    """A fresh copy made of plain dict/list/str/int/float/bool/None, or `InvalidNotebook`.

    Checks what a parsed dict handed in by a caller might break: non-JSON types, non-string
    keys, NaN/Infinity, lone surrogates, and nesting deeper than `MAX_DEPTH`.
    """
    if depth > MAX_DEPTH:
        raise InvalidNotebook(f"The notebook is nested more than {MAX_DEPTH} levels deep.")
    if isinstance(obj, str):
        if not obj.isascii():
            try:
                obj.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidNotebook("The notebook contains invalid Unicode (lone surrogates).") from None
        return str(obj)
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                raise InvalidNotebook("The notebook has an object key that is not a string.")
            out[_plain(key, depth)] = _plain(value, depth + 1)
        return out
    if isinstance(obj, list | tuple):
        return [_plain(item, depth + 1) for item in obj]
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise InvalidNotebook("The notebook contains NaN or Infinity, which JSON does not allow.")
        return float(obj)
    raise InvalidNotebook(f"The notebook contains a value that is not JSON ({type(obj).__name__}).")


def _upgrade(raw: dict[str, Any], major: int) -> dict[str, Any]:
    """Upgrade an nbformat 1-3 dict to v4 exactly as `nbformat.reads(..., as_version=4)` does."""
    minor = raw.get("nbformat_minor", 0)
    try:
        node = _NBF.versions[major].to_notebook_json(raw, minor=minor)
        node = _NBF.convert(node, 4)
    except Exception:
        raise InvalidNotebook(
            f"The nbformat {major} notebook is malformed and could not be upgraded."
        ) from None
    upgraded = _plain(node, 0)
    if not isinstance(upgraded, dict) or upgraded.get("nbformat") != 4:
        raise InvalidNotebook(f"The nbformat {major} notebook could not be upgraded to nbformat 4.")
    return upgraded


def _strip_transient(raw: dict[str, Any]) -> None:
    """Drop the keys nbformat itself strips on read and write."""
    meta = raw["metadata"]
    for key in _TRANSIENT_NB_KEYS:
        meta.pop(key, None)
    for cell in raw["cells"]:
        if isinstance(cell, dict) and isinstance(cell.get("metadata"), dict):
            cell["metadata"].pop("trusted", None)


def _repair(raw: dict[str, Any]) -> None:
    """The documented repairs of real-world files: drop `metadata` on stream outputs (Colab)."""
    for cell in raw["cells"]:
        outputs = cell.get("outputs") if isinstance(cell, dict) else None
        if not isinstance(outputs, list):
            continue
        for output in outputs:
            if isinstance(output, dict) and output.get("output_type") == "stream":
                output.pop("metadata", None)


def _assign_ids(cells: list[Any], *, discard_existing: bool) -> None:
    """Check uploaded ids (valid, unique) and mint `cell-<index>[-<k>]` for missing ones."""
    taken: set[str] = set()
    missing: list[int] = []
    for index, cell in enumerate(cells):
        if not isinstance(cell, dict):
            continue  # schema validation reports it
        if discard_existing:
            cell.pop("id", None)
        if "id" not in cell:
            missing.append(index)
            continue
        cell_id = cell["id"]
        if not isinstance(cell_id, str) or not CELL_ID_RE.match(cell_id):
            shown = repr(cell_id) if isinstance(cell_id, str) else _json_type(cell_id)
            raise InvalidNotebook(
                f"Cell {index} has an invalid id {shown}: ids are 1 to 64 characters "
                "of A-Z, a-z, 0-9, '_' and '-'."
            )
        if cell_id in taken:
            raise InvalidNotebook(f"The cell id {cell_id!r} is used by more than one cell (cell {index}).")
        taken.add(cell_id)
    for index in missing:
        candidate = f"cell-{index}"
        k = 0
        while candidate in taken:
            k += 1
            candidate = f"cell-{index}-{k}"
        taken.add(candidate)
        cells[index]["id"] = candidate


def _validate(raw: dict[str, Any]) -> None:
    """`nbformat.validate` against 4.5, errors turned into one readable `InvalidNotebook`."""
    try:
        _NBF.validate(raw, version=4, version_minor=5)
    except nbformat.ValidationError as exc:
        raise InvalidNotebook(_describe(exc)) from None


def _describe(exc: Exception) -> str:
    """'The notebook is not valid nbformat 4.5: at cells[3].outputs[0]: <schema message>'."""
    path = getattr(exc, "absolute_path", None)
    try:
        parts = list(path) if path is not None else []
    except TypeError:
        parts = []
    where = ""
    for part in parts:
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    instance = getattr(exc, "instance", None)
    if (
        len(parts) == 2
        and parts[0] == "cells"
        and isinstance(instance, dict)
        and instance.get("cell_type") not in ("code", "markdown", "raw")
    ):
        shown = _short(instance.get("cell_type"))
        return f"Cell {parts[1]} has cell_type {shown}; it must be 'code', 'markdown' or 'raw'."
    message = getattr(exc, "message", None)
    if not isinstance(message, str) or not message:
        message = str(exc).split("\n", 1)[0]
    if instance is not None:
        shown = repr(instance)
        if len(shown) > 40 and message.startswith(shown):
            message = (
                f"this {_json_type(instance).removeprefix('a ').removeprefix('an ')}" + message[len(shown) :]
            )
    message = " ".join(message.split())
    if len(message) > 160:
        message = message[:157] + "..."
    prefix = "The notebook is not valid nbformat 4.5"
    return f"{prefix}: at {where}: {message}" if where else f"{prefix}: {message}"


def _short(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _build(raw: dict[str, Any]) -> Notebook:
    """The validated, id-complete 4.5 dict → `Notebook` (joins lines, fixes line endings)."""
    cells_raw: list[dict[str, Any]] = raw["cells"]
    keys = keys_between(None, None, len(cells_raw)) if cells_raw else []
    cells: dict[str, Cell] = {}
    for cell_raw, pos in zip(cells_raw, keys, strict=True):
        cell_type: str = cell_raw["cell_type"]
        source = _join(cell_raw["source"]).replace("\r\n", "\n").replace("\r", "\n")
        attachments = cell_raw.get("attachments")
        if attachments is not None:
            for bundle in attachments.values():
                _rejoin_bundle(bundle, crlf=False)
        outputs: list[JSONDict] = []
        execution_count: int | None = None
        if cell_type == "code":
            outputs = cell_raw["outputs"]
            for output in outputs:
                _normalise_output(output)
            execution_count = cell_raw["execution_count"]
        cells[cell_raw["id"]] = Cell(
            id=cell_raw["id"],
            pos=pos,
            cell_type=cell_type,
            source=source,
            metadata=cell_raw["metadata"],
            attachments=attachments,
            outputs=outputs,
            display_ids=[None] * len(outputs),
            execution_count=execution_count,
            created=0,
        )
    return Notebook(metadata=raw["metadata"], cells=cells, nbformat=4, nbformat_minor=5)


def _normalise_output(output: dict[str, Any]) -> None:
    kind = output.get("output_type")
    if kind == "stream":
        output["text"] = _join(output["text"]).replace("\r\n", "\n")
    elif kind in ("execute_result", "display_data"):
        _rejoin_bundle(output["data"], crlf=True)


def _rejoin_bundle(bundle: dict[str, Any], *, crlf: bool) -> None:
    """Join list-of-lines values of non-JSON mime types (as nbformat's `rejoin_lines`)."""
    for mime, value in bundle.items():
        if _is_json_mime(mime):
            continue
        if isinstance(value, list):
            value = "".join(value)
        if crlf and isinstance(value, str):
            value = value.replace("\r\n", "\n")
        bundle[mime] = value


def _is_json_mime(mime: str) -> bool:
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


def _join(value: str | list[str]) -> str:
    return value if isinstance(value, str) else "".join(value)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "an object"


# --------------------------------------------------------------------------------------------
# export


def export_notebook(nb: Notebook) -> dict[str, Any]:
    """The live cells of `nb`, in visible order, as an nbformat 4.5 dict.

    Promises: passes `nbformat.validate`; no `pos`, tombstones, `created`, `exec_state` or
    `display_ids`; code cells carry `outputs` and `execution_count`, markdown and raw cells carry
    neither (their `attachments` only when not None). All containers are fresh (mutating the
    result never touches `nb`).
    """
    cells: list[dict[str, Any]] = []
    for cell in ordered_cells(nb):
        metadata = _copy(cell.metadata)
        metadata.pop("trusted", None)
        out: dict[str, Any] = {
            "id": cell.id,
            "cell_type": cell.cell_type,
            "metadata": metadata,
            "source": cell.source,
        }
        if cell.cell_type == "code":
            out["outputs"] = _copy(cell.outputs)
            out["execution_count"] = cell.execution_count
        elif cell.attachments is not None:
            out["attachments"] = _copy(cell.attachments)
        cells.append(out)
    metadata = _copy(nb.metadata)
    for key in _TRANSIENT_NB_KEYS:
        metadata.pop(key, None)
    doc: dict[str, Any] = {"cells": cells, "metadata": metadata, "nbformat": 4, "nbformat_minor": 5}
    if not _NBF.validator.isvalid(doc, version=4, version_minor=5):
        _, doc = _NBF.validator.normalize(doc, 4, 5, strip_invalid_metadata=True)
    return doc


def export_bytes(nb: Notebook) -> bytes:
    """`export_notebook(nb)` as file bytes: nbformat's own formatting plus a final newline.

    Deterministic: the same document (same live cells, order and content) gives the same bytes.
    """
    text: str = _V4JSON.writes(_NBF.from_dict(export_notebook(nb)))
    if not text.endswith("\n"):
        text += "\n"
    return text.encode("utf-8")


def _copy(obj: Any) -> Any:
    """A copy with fresh dicts and lists (strings and numbers are immutable and shared)."""
    if isinstance(obj, dict):
        return {key: _copy(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_copy(item) for item in obj]
    return obj
