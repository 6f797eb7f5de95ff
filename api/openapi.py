"""The OpenAPI document: quart-schema's generator plus the decorators that describe what it
cannot see (error responses, 204s, response headers, text responses)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from quart_schema import OpenAPIProvider, document_response
from quart_schema.validation import QUART_SCHEMA_REQUEST_ATTRIBUTE
from werkzeug.routing import Rule

from api import schemas as s
from api.http import API

F = TypeVar("F", bound=Callable[..., Any])

_RULE_PARAM = re.compile(r"<(?:[^:<>]*:)?([^<>]+)>")
_NO_CONTENT = "_agora_no_content"
_RESPONSE_HEADERS = "_agora_response_headers"
_TEXT_RESPONSE = "_agora_text_response"


def errors(*statuses: int) -> Callable[[F], F]:
    """Document the error responses of a route (401 is added for every /api/v1 route)."""

    def decorator(func: F) -> F:
        for status in statuses:
            func = document_response(s.ErrorResponse, status)(func)
        return func

    return decorator


def no_content(description: str) -> Callable[[F], F]:
    """Document a route that answers 204 with no body."""
    def decorator(func: F) -> F:
        setattr(func, _NO_CONTENT, description)
        return func

    return decorator


class AgoraOpenAPI(OpenAPIProvider):
    """quart-schema's generator plus: 204 responses, response headers, text responses, the id
    pattern on `{notebook_id}` and the 401/408/413/429/503 responses of the front gate."""

    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        built, components = super().build_paths(rule)
        # quart-schema's own path regex swallows `<a>/x/<conv:b>` into one parameter: redo it.
        paths = {_RULE_PARAM.sub(r"{\1}", rule.rule): item for item in built.values()}
        func = self._app.view_functions[rule.endpoint]
        for path, item in paths.items():
            for operation in item.values():
                responses = operation["responses"]
                if (desc := getattr(func, _NO_CONTENT, None)) is not None:
                    responses[204] = {"description": desc}
                for status, headers in getattr(func, _RESPONSE_HEADERS, {}).items():
                    responses[status]["headers"] = headers
                if (text := getattr(func, _TEXT_RESPONSE, None)) is not None:
                    responses[200] = text
                if "requestBody" in operation:
                    model = getattr(func, QUART_SCHEMA_REQUEST_ATTRIBUTE)[0]
                    if any(f.is_required() for f in model.model_fields.values()):
                        operation["requestBody"]["required"] = True
                for param in operation["parameters"]:
                    if param["in"] == "path" and param["name"] == "notebook_id":
                        param["schema"] = {"type": "string", "pattern": s.ID_PATTERN}
                if path.startswith(API + "/"):
                    error_ref = {
                        "description": 'An error: `{"error": {"code", "message"}}`.',
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}
                        },
                    }
                    responses.setdefault(401, error_ref)
                    responses.setdefault(429, error_ref)  # per-key rate (engine/gate.py)
                    responses.setdefault(503, error_ref)  # --max-connections
                    if "requestBody" in operation:
                        responses.setdefault(400, error_ref)
                        responses.setdefault(408, error_ref)  # a stalled body
                        responses.setdefault(413, error_ref)
                        responses.setdefault(422, error_ref)
                    if operation["parameters"]:
                        responses.setdefault(422, error_ref)
        return paths, components

    def schema(self) -> dict[str, Any]:
        doc = super().schema()
        doc["components"]["schemas"].setdefault(
            "ErrorResponse", s.ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
        )
        for name, sub in (
            s.ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
            .get("$defs", {})
            .items()
        ):
            doc["components"]["schemas"].setdefault(name, sub)
        doc["components"]["schemas"]["ErrorResponse"].pop("$defs", None)
        return doc




def response_headers(func: F, headers: dict[int, dict[str, Any]]) -> F:
    """Document the headers a route answers with, by status."""
    setattr(func, _RESPONSE_HEADERS, headers)
    return func


def text_response(func: F, response: dict[str, Any]) -> F:
    """Document a route whose 200 answer is not JSON."""
    setattr(func, _TEXT_RESPONSE, response)
    return func
