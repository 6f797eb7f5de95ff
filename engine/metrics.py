"""Process-wide Prometheus metrics (contract §1 `/metrics`). One registry, served by the HTTP layer."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

CONNECTIONS = Gauge(
    "agora_connections", "Open WebSocket sync connections by role.", ["role"], registry=REGISTRY
)
NOTEBOOKS_OPEN = Gauge("agora_notebooks_open", "Notebooks with a live room.", registry=REGISTRY)
OPS_COMMITTED = Counter("agora_ops_committed_total", "Ops committed (durable).", registry=REGISTRY)
REJECTS = Counter("agora_rejects_total", "Ops rejected, by code.", ["code"], registry=REGISTRY)
BROADCAST_FRAMES = Counter(
    "agora_broadcast_frames_total", "Shared frames built (encoded once each).", ["kind"], registry=REGISTRY
)
FRAMES_SENT = Counter(
    "agora_frames_sent_total", "Frames written to connections (frame x recipients).", registry=REGISTRY
)
FSYNC_SECONDS = Histogram(
    "agora_fsync_seconds",
    "Group-commit durability latency (write + fsync) per batch.",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0),
    registry=REGISTRY,
)
SLOW_CONSUMER_CUTS = Counter(
    "agora_slow_consumer_cuts_total", "Connections closed with 4408 (too slow).", registry=REGISTRY
)
QUEUE_DROPS = Counter(
    "agora_queue_drops_total",
    "Messages refused because a bounded queue was full.",
    ["queue"],
    registry=REGISTRY,
)
KERNELS = Gauge("agora_kernels", "Running kernels.", registry=REGISTRY)
KERNEL_EXECUTIONS = Counter(
    "agora_kernel_executions_total", "Cells run on kernels, by final state.", ["state"], registry=REGISTRY
)
KERNEL_OUTPUT_BYTES = Counter(
    "agora_kernel_output_bytes_total",
    "Kernel output bytes: committed to notebooks, or dropped by the per-cell caps.",
    ["fate"],
    registry=REGISTRY,
)
KERNEL_IOPUB_MESSAGES = Counter(
    "agora_kernel_iopub_messages_total", "Kernel iopub messages decoded.", registry=REGISTRY
)
LOOP_LAG = Histogram(
    "agora_loop_lag_seconds",
    "How late the trio loop ran a 100 ms timer (a stalled loop shows here).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
    registry=REGISTRY,
)
