"""Request and response models of the HTTP API (pydantic), used to validate bodies and query
strings and to generate the OpenAPI document. No logic here."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

NotebookId = Annotated[
    str,
    Field(pattern=ID_PATTERN, min_length=1, max_length=64, description="Notebook id: `[A-Za-z0-9_-]{1,64}`."),
]
Name = Annotated[str, Field(min_length=1, max_length=200, description="Human-readable notebook name.")]
Ipynb = Annotated[
    dict[str, Any],
    Field(
        description=(
            "A Jupyter notebook as a JSON object (an .ipynb file's content): nbformat 4, or 1-3 which "
            "are upgraded. Validated with nbformat; 422 `invalid_notebook` when it is not valid."
        ),
        json_schema_extra={
            "required": ["nbformat", "nbformat_minor", "metadata", "cells"],
            "properties": {
                "nbformat": {"type": "integer", "minimum": 1, "maximum": 4},
                "nbformat_minor": {"type": "integer", "minimum": 0},
                "metadata": {"type": "object"},
                "cells": {"type": "array", "items": {"type": "object"}},
            },
        },
    ),
]


def _integral(value: Any) -> Any:
    """JSON has one number type: accept `3.0` where an integer is expected (JSON Schema does)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# An integer in a strict body model: a JSON integer, or a float with no fractional part.
JsonInt = Annotated[int, BeforeValidator(_integral)]


class _Query(BaseModel):
    """Query strings: unknown parameters refused (`?limt=5` must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid")


class _Body(BaseModel):
    """Request bodies: strict JSON types, unknown fields refused (a typo must not be ignored)."""

    model_config = ConfigDict(extra="forbid", strict=True)


# ---- errors ------------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable snake_case error code.", examples=["not_found"])
    message: str = Field(description="A human-readable sentence.")


class ErrorResponse(BaseModel):
    """An error: `{"error": {"code", "message"}}`."""

    error: ErrorDetail


# ---- notebooks ---------------------------------------------------------------------------------


class NotebookSummary(BaseModel):
    """A notebook's summary."""

    id: str
    name: str
    version: int = Field(description="Head version (0 = initial content).")
    created: int = Field(description="Creation time, epoch milliseconds.")
    updated: int = Field(description="Last change, epoch milliseconds.")


class ConnectionCounts(BaseModel):
    viewers: int
    editors: int


class KernelSummary(BaseModel):
    state: Literal["none", "starting", "idle", "busy", "dead"]
    name: str | None


class NotebookDetail(NotebookSummary):
    """A notebook's summary with its live connection counts and kernel state."""

    connections: ConnectionCounts
    kernel: KernelSummary


class NotebookList(BaseModel):
    """One page of notebooks in id order. Pass `next_cursor` as `cursor` for the next page."""

    items: list[NotebookSummary]
    next_cursor: str | None = Field(description="Opaque cursor of the next page; null on the last page.")


class CreateNotebookRequest(_Body):
    id: NotebookId | None = Field(default=None, description="Chosen id; Agora generates one when absent.")
    name: Name | None = None
    notebook: Ipynb | None = Field(
        default=None, description="Initial content; an empty notebook when absent."
    )


class ListQuery(_Query):
    limit: int = Field(default=50, ge=1, le=500, description="Page size (1-500).")
    cursor: str | None = Field(
        default=None, max_length=256, description="`next_cursor` of the previous page."
    )


class ContentQuery(_Query):
    version: int | None = Field(default=None, ge=0, description="A past version; head when absent.")


class NotebookDocument(BaseModel):
    """The notebook as nbformat 4.5 JSON (valid under `nbformat.validate`)."""

    model_config = ConfigDict(extra="allow")

    nbformat: int
    nbformat_minor: int
    metadata: dict[str, Any]
    cells: list[dict[str, Any]]


class ReplaceContentRequest(_Body):
    notebook: Ipynb
    base_version: JsonInt | None = Field(
        default=None, ge=0, description="The version the new content is based on; 409 if head moved on."
    )


class CopyRequest(_Body):
    id: NotebookId | None = Field(default=None, description="Id of the copy; generated when absent.")
    name: Name | None = Field(default=None, description="Name of the copy; the source's name when absent.")


class CopyTarget(_Body):
    """One target of a bulk copy. Its id and name are checked per target: a bad one gets an
    `error` result (`invalid_id`, `invalid_name`) and the other targets are still copied."""

    id: Any = Field(default=None, description="Notebook id: `[A-Za-z0-9_-]{1,64}`.")
    name: Any = Field(default=None, description="Human-readable notebook name (1-200 characters).")


class CopiesRequest(_Body):
    targets: list[CopyTarget] = Field(min_length=1, max_length=1000)


class CopyResult(BaseModel):
    id: str
    status: Literal["created", "exists", "error"]
    error: ErrorDetail | None = Field(default=None, description="Present when status is `error`.")


class CopiesResponse(BaseModel):
    """One result per target, in request order."""

    results: list[CopyResult]


class HistoryQuery(_Query):
    since: int = Field(default=0, ge=0, description="Exclusive: ops with `v > since`.")
    limit: int = Field(default=100, ge=1, le=1000, description="Page size (1-1000).")


class HistoryItem(BaseModel):
    v: int
    client: str
    seq: int
    user: str
    time: int = Field(description="Commit time, epoch milliseconds.")
    op: list[dict[str, Any]]


class HistoryPage(BaseModel):
    """Committed ops, oldest first. Pass `next_since` as `since` for the next page."""

    items: list[HistoryItem]
    next_since: int | None = Field(description="`since` of the next page; null once head is reached.")


class RevertRequest(_Body):
    version: JsonInt = Field(ge=0, description="The version whose content becomes head again.")


class EditorSessionModel(BaseModel):
    client: str
    user: dict[str, Any]
    cursor: dict[str, Any] | None


class SessionsResponse(BaseModel):
    """Who is connected now: editors listed, viewers counted."""

    viewers: int
    editors: list[EditorSessionModel]


# ---- tokens ------------------------------------------------------------------------------------


class TokenUser(_Body):
    id: str = Field(min_length=1, max_length=256, description="The platform's user id.")
    name: str | None = Field(default=None, max_length=200, description="Display name; the id when absent.")
    color: str | None = Field(default=None, max_length=32, description="Presence color, e.g. `#e91e63`.")


class TokenRequest(_Body):
    notebook: NotebookId
    user: TokenUser
    role: Literal["viewer", "editor"]
    ttl: JsonInt = Field(default=3600, ge=1, le=86400, description="Lifetime in seconds (max 86400).")


class TokenResponse(BaseModel):
    """A signed user token and the URL of the embed page that uses it."""

    token: str
    expires: int = Field(description="Expiry, epoch seconds.")
    embed_url: str


# ---- operations --------------------------------------------------------------------------------


class HealthResponse(BaseModel):
    """The server is ready."""

    status: Literal["ok"]
    host: str = Field(description="This host's id (`--host-id`, default hostname:port), as in X-Agora-Host.")


# ---- kernels -----------------------------------------------------------------------------------

CellId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="A cell id.")]


class KernelState(BaseModel):
    """A notebook's kernel: its state, kernelspec name, queued cells and the running cell."""

    state: Literal["none", "starting", "idle", "busy", "dead"]
    name: str | None
    queue: list[str]
    running: str | None = None


class KernelAction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["start", "restart", "interrupt", "shutdown"]
    name: str | None = Field(
        default=None,
        max_length=200,
        description="Accepted for compatibility; the kernel is the notebook's kernelspec (else python3).",
    )


class ExecuteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cells: list[CellId] | Literal["all"] = Field(
        description='Cell ids to run in this order, or "all" (every code cell in visible order).',
        max_length=10_000,
    )
    wait: bool = Field(default=False, description="Answer once the cells have run (or `timeout`).")
    timeout: float = Field(
        default=300.0, gt=0, le=3600, description="With `wait`: seconds to wait; the run goes on after."
    )


class CellResult(BaseModel):
    id: str
    state: str | None
    execution_count: int | None
    outputs: list[dict[str, Any]]


class ExecuteResponse(BaseModel):
    """The cells' states now (all final unless `timed_out`)."""

    results: list[CellResult]
    timed_out: bool = False
