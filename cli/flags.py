"""`agora`'s command line (contract §1): every flag with its AGORA_* variable and default,
parsed into `Settings` for `server.serve`."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from cli.argtypes import env_list, origins, positive_int, rate, size
from cli.proxy import add_proxy_config_parser


@dataclass(slots=True)
class Settings:
    """Everything `agora serve` can be told, by flag or environment variable."""

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("./data")
    api_keys: list[str] = field(default_factory=list)
    secret: str | None = None
    public_url: str = ""
    coalesce_ms: float = 20.0
    idle_timeout: float = 60.0
    window: int = 2000
    keep_snapshots: int | None = None
    fsync: bool = True
    dev: bool = False
    store: str | None = None  # --store postgresql://…: several hosts share one database
    embed_origins: list[str] = field(default_factory=list)  # embed page: frame-ancestors, postMessage
    host_id: str = ""  # X-Agora-Host; empty: hostname:port
    kernels: KernelFlags = field(default_factory=lambda: KernelFlags())
    limits: ServeLimits = field(default_factory=lambda: ServeLimits())


# ---- kernel flags (contract §1, §2, §8) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KernelFlags:
    """`--max-kernels`, `--kernel-idle-timeout`, `--kernel-memory`, `--output-max-*`."""

    max_kernels: int = 32
    idle_timeout: float = 3600.0
    memory: int = 2 * 1024**3
    output_max_bytes: int = 1024 * 1024
    output_max_items: int = 500


def _add_kernel_flags(serve: argparse.ArgumentParser) -> None:
    env = os.environ.get
    serve.add_argument(
        "--max-kernels",
        type=positive_int,
        default=env("AGORA_MAX_KERNELS", "32"),
        help="kernels running at once; beyond, a start is 503 kernel_limit "
        "(env AGORA_MAX_KERNELS, default 32)",
    )
    serve.add_argument(
        "--kernel-idle-timeout",
        type=float,
        default=env("AGORA_KERNEL_IDLE_TIMEOUT", "3600"),
        help="seconds an idle kernel lives (env AGORA_KERNEL_IDLE_TIMEOUT, default 3600)",
    )
    serve.add_argument(
        "--kernel-memory",
        type=size,
        default=env("AGORA_KERNEL_MEMORY", "2GiB"),
        help="address-space cap per kernel (RLIMIT_AS) (env AGORA_KERNEL_MEMORY, default 2GiB)",
    )
    serve.add_argument(
        "--output-max-bytes",
        type=size,
        default=env("AGORA_OUTPUT_MAX_BYTES", "1MiB"),
        help="output kept per cell run (env AGORA_OUTPUT_MAX_BYTES, default 1MiB)",
    )
    serve.add_argument(
        "--output-max-items",
        type=positive_int,
        default=env("AGORA_OUTPUT_MAX_ITEMS", "500"),
        help="outputs kept per cell run (env AGORA_OUTPUT_MAX_ITEMS, default 500)",
    )


def _kernel_flags(args: argparse.Namespace) -> KernelFlags:
    return KernelFlags(
        args.max_kernels,
        args.kernel_idle_timeout,
        args.kernel_memory,
        args.output_max_bytes,
        args.output_max_items,
    )


# ---- limits (contract §1, §8): each a flag with an AGORA_* variable -------------------------

@dataclass(frozen=True, slots=True)
class ServeLimits:
    """The limits of `agora serve` (defaults in contract §8 and docs/operations.md)."""

    max_connections: int = 10_000
    ws_max_message: int = 1024 * 1024
    http_max_body: int = 32 * 1024 * 1024
    http_body_timeout: float = 15.0
    notebook_max_bytes: int = 32 * 1024 * 1024
    ws_byte_rate: int = 1024 * 1024
    ws_byte_burst: int = 4 * 1024 * 1024
    ws_msg_rate: float = 200.0
    ws_msg_burst: float = 400.0
    http_rate: float = 100.0
    http_burst: float = 1000.0


_LIMIT_FLAGS: list[tuple[str, str, object, str]] = [  # (flag, type, default, meaning)
    ("--max-connections", "count", 10_000, "open connections; beyond, 503 before any upgrade"),
    ("--ws-max-message", "size", "1MiB", "largest WebSocket message; beyond, close 4413"),
    ("--http-max-body", "size", "32MiB", "largest HTTP request body; beyond, 413 before reading it"),
    ("--http-body-timeout", "rate", 15, "seconds a request body may make no progress; then 408"),
    ("--notebook-max-bytes", "size", "32MiB", "notebook content cap: 413 on upload/PUT/copy, "
     "reject notebook_too_large on ops"),
    ("--ws-byte-rate", "size", "1MiB", "message bytes per second an editor connection is read at, sustained"),
    ("--ws-byte-burst", "size", "4MiB", "message bytes a connection may send at once before that rate"),
    ("--ws-msg-rate", "rate", 200, "messages per second per connection, sustained"),
    ("--ws-msg-burst", "rate", 400, "messages a connection may send at once"),
    ("--http-rate", "rate", 100, "HTTP requests per second per API key (429 beyond; 0 or dev mode: off)"),
    ("--http-burst", "rate", 1000, "HTTP requests an API key may make at once"),
]


def _add_limit_flags(parser: argparse.ArgumentParser) -> None:
    types = {"count": positive_int, "size": size, "rate": rate}
    for flag, kind, default, meaning in _LIMIT_FLAGS:
        env = "AGORA_" + flag[2:].upper().replace("-", "_")
        parser.add_argument(
            flag,
            type=types[kind],
            metavar={"count": "N", "size": "BYTES", "rate": "X"}[kind],
            default=os.environ.get(env),  # None: unset, the `ServeLimits` default applies
            help=f"{meaning} (env {env}, default {default})",
        )


def limits_from(args: argparse.Namespace) -> ServeLimits:
    """The parsed limit flags; `--dev` turns HTTP rate limiting off unless it was set."""
    given = {
        flag[2:].replace("-", "_"): getattr(args, flag[2:].replace("-", "_"))
        for flag, *_ in _LIMIT_FLAGS
        if getattr(args, flag[2:].replace("-", "_")) is not None
    }
    if args.dev:
        given.setdefault("http_rate", 0.0)
    return ServeLimits(**given)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line of contract §1."""
    parser = argparse.ArgumentParser(prog="agora", description="Live collaborative Jupyter notebooks.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server")
    env = os.environ.get
    serve.add_argument(
        "--host", default=env("AGORA_HOST", "127.0.0.1"),
        help="address to bind (env AGORA_HOST, default 127.0.0.1)",
    )
    serve.add_argument(
        "--port", type=int, default=env("AGORA_PORT", "8000"),
        help="the one public port, 0 for any free one (env AGORA_PORT, default 8000)",
    )
    serve.add_argument(
        "--data-dir", type=Path, default=env("AGORA_DATA_DIR", "./data"),
        help="notebooks, op logs, snapshots, keys (env AGORA_DATA_DIR, default ./data)",
    )
    serve.add_argument(
        "--public-url", default=env("AGORA_PUBLIC_URL", ""),
        help="base of embed_url in token answers (env AGORA_PUBLIC_URL, default http://HOST:PORT)",
    )
    serve.add_argument(
        "--coalesce-ms", type=float, default=env("AGORA_COALESCE_MS", "20"),
        help="minimum gap between two ops frames of a busy notebook (env AGORA_COALESCE_MS, default 20)",
    )
    serve.add_argument(
        "--idle-timeout", type=float, default=env("AGORA_IDLE_TIMEOUT", "60"),
        help="seconds a notebook stays open with nobody connected (env AGORA_IDLE_TIMEOUT, default 60)",
    )
    serve.add_argument(
        "--keep-snapshots",
        type=positive_int,
        default=env("AGORA_KEEP_SNAPSHOTS") or None,
        help="keep only the newest N milestone snapshots per notebook and the log after them "
        "(env AGORA_KEEP_SNAPSHOTS, default: keep all history)",
    )
    serve.add_argument("--dev", action="store_true", help="print a dev API key and create a demo notebook")
    serve.add_argument(
        "--host-id",
        default=env("AGORA_HOST_ID", ""),
        help="this host's name in the X-Agora-Host response header "
        "(env AGORA_HOST_ID, default hostname:port)",
    )
    serve.add_argument(
        "--unsafe-no-fsync",
        action="store_true",
        default=env("AGORA_FSYNC", "1") == "0",
        help="skip fsync (benchmarks only: acknowledged ops may be lost on power failure) "
        "(env AGORA_FSYNC=0, default off)",
    )
    serve.add_argument(
        "--embed-origins",
        type=origins,
        default=env("AGORA_EMBED_ORIGINS", ""),  # a str default goes through `type` too
        help="comma-separated origins allowed to frame /embed/{id} and to send it tokens by postMessage "
        "(env AGORA_EMBED_ORIGINS, default: same origin only)",
    )
    _add_kernel_flags(serve)
    _add_limit_flags(serve)
    # -- several hosts (contract §1, §7) --
    store_help = (
        "keep notebooks and keys in this PostgreSQL database (postgresql://…) instead of the data dir "
        "(env AGORA_STORE, default: the data dir)"
    )
    serve.add_argument("--store", default=os.environ.get("AGORA_STORE") or None, help=store_help)
    keys = sub.add_parser("keys", help="manage API keys stored in the data dir (or --store)")
    keys.add_argument("--data-dir", type=Path, default=Path(os.environ.get("AGORA_DATA_DIR", "./data")))
    keys.add_argument("--store", default=os.environ.get("AGORA_STORE") or None, help=store_help)
    keys_sub = keys.add_subparsers(dest="action", required=True)
    create = keys_sub.add_parser("create", help="mint a key, print it once")
    create.add_argument("--name", required=True)
    keys_sub.add_parser("list", help="list keys (never the secrets)")
    revoke = keys_sub.add_parser("revoke", help="revoke a key by id or name")
    revoke.add_argument("key")
    add_proxy_config_parser(sub)
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    """Merge parsed flags with the environment."""
    return Settings(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        api_keys=env_list("AGORA_API_KEYS"),
        secret=os.environ.get("AGORA_SECRET") or None,
        public_url=args.public_url,
        coalesce_ms=args.coalesce_ms,
        idle_timeout=args.idle_timeout,
        keep_snapshots=args.keep_snapshots,
        fsync=not args.unsafe_no_fsync,
        dev=args.dev,
        store=args.store,
        embed_origins=args.embed_origins,
        kernels=_kernel_flags(args),
        host_id=args.host_id,
        limits=limits_from(args),
    )


