"""`GET /healthz` and `GET /metrics`: for load balancers and Prometheus, no API key."""

from __future__ import annotations

from prometheus_client import generate_latest
from quart import Blueprint, Response
from quart_schema import document_response, security_scheme, tag

from api import schemas as s
from api.http import context, json_response
from api.openapi import text_response
from engine.metrics import REGISTRY

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

blueprint = Blueprint("operations", __name__)


@blueprint.get("/healthz")
@tag(["operations"])
@security_scheme([])
@document_response(s.HealthResponse)
async def healthz() -> Response:
    """Health check: 200 once the server is ready to serve; `host` names the host that answered."""
    return json_response({"status": "ok", "host": context().host_id})


@blueprint.get("/metrics")
@tag(["operations"])
@security_scheme([])
async def metrics() -> Response:
    """Prometheus metrics (text exposition format 0.0.4)."""
    return Response(generate_latest(REGISTRY), status=200, content_type=METRICS_CONTENT_TYPE)


text_response(
    metrics,
    {"description": "Prometheus text format.", "content": {"text/plain": {"schema": {"type": "string"}}}},
)
