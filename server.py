"""Agora's entry point: `agora serve` / `python server.py serve`, and `agora keys …`.

Wires everything into one trio nursery: storage, the engine (rooms), the Quart app on
hypercorn for HTTP, and the sync WebSocket endpoint, all behind one listening port
(`engine.listener`). SIGTERM/SIGINT: stop accepting, flush every notebook, exit 0.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import re
import resource
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app

from api.app import create_app
from api.embed import parse_origins
from api.host_header import with_host_header
from api.keys_cli import run_keys_command
from api.ownership import OwnerGuard, refuse_sync_if_not_owner
from engine import listener, proxyconf
from engine.auth.keys import KeyStore
from engine.auth.pg_keys import PgKeyStore
from engine.auth.secret import load_or_create_secret
from engine.auth.tokens import mint_token
from engine.connection import SyncConfig, serve_sync
from engine.engine import Engine
from engine.errors import Conflict
from engine.fanout import FanoutLimits
from engine.gate import Gate, GateLimits
from engine.ipynb import import_notebook
from engine.kernels import KernelService, KernelSettings, OutputLimits, RoomSink
from engine.room import RoomConfig
from engine.storage.base import Storage, StorageError
from engine.storage.disk import Disk, UnsafeNoSyncDisk
from engine.storage.files import FileStorage
from engine.storage.postgres import PostgresStorage
from protocol import Limits as ProtocolLimits

log = logging.getLogger("agora")


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
        type=_positive_int,
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
        type=_size,
        default=env("AGORA_KERNEL_MEMORY", "2GiB"),
        help="address-space cap per kernel (RLIMIT_AS) (env AGORA_KERNEL_MEMORY, default 2GiB)",
    )
    serve.add_argument(
        "--output-max-bytes",
        type=_size,
        default=env("AGORA_OUTPUT_MAX_BYTES", "1MiB"),
        help="output kept per cell run (env AGORA_OUTPUT_MAX_BYTES, default 1MiB)",
    )
    serve.add_argument(
        "--output-max-items",
        type=_positive_int,
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


def _kernel_service(flags: KernelFlags, data_dir: Path, engine: Engine) -> KernelService:
    settings = KernelSettings(
        data_dir=data_dir.resolve(),
        memory=flags.memory,
        idle_timeout=flags.idle_timeout,
        outputs=OutputLimits(max_bytes=flags.output_max_bytes, max_items=flags.output_max_items),
    )
    return KernelService(settings, lambda nid: RoomSink(engine, nid), flags.max_kernels)


def _env_list(name: str) -> list[str]:
    return [k.strip() for k in os.environ.get(name, "").split(",") if k.strip()]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _origins(text: str) -> list[str]:
    try:
        return parse_origins(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# ---- limits (contract §1, §8): each a flag with an AGORA_* variable -------------------------

_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_SIZE_RE = re.compile(r"\A\s*([0-9]+(?:\.[0-9]+)?)\s*([kmg]?)(?:i?b)?\s*\Z", re.IGNORECASE)


def _size(text: str) -> int:
    """A byte count: `1048576`, `1MiB`, `32M`, `512k` (binary units)."""
    match = _SIZE_RE.match(text)
    value = int(float(match[1]) * _SIZE_UNITS[match[2].lower()]) if match else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a size of at least 1 byte: {text!r} (use bytes, or k/M/G)")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


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
    ("--http-rate", "rate", 100, "HTTP requests per second per API key (429 beyond; 0: off; --dev: off)"),
    ("--http-burst", "rate", 1000, "HTTP requests an API key may make at once"),
]


def _add_limit_flags(parser: argparse.ArgumentParser) -> None:
    types = {"count": _positive_int, "size": _size, "rate": _rate}
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


def raise_fd_limit(max_connections: int) -> None:
    """Raise the soft open-files limit so `--max-connections` sockets fit (plus files, kernels)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + 1024
    if hard != resource.RLIM_INFINITY and hard < wanted:
        log.warning("open-files hard limit %d is below --max-connections + 1024 (%d)", hard, wanted)
        wanted = hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line of contract §1."""
    parser = argparse.ArgumentParser(prog="agora", description="Live collaborative Jupyter notebooks.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host", default=os.environ.get("AGORA_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("AGORA_PORT", "8000")))
    serve.add_argument("--data-dir", type=Path, default=Path(os.environ.get("AGORA_DATA_DIR", "./data")))
    serve.add_argument("--public-url", default=os.environ.get("AGORA_PUBLIC_URL", ""))
    serve.add_argument("--coalesce-ms", type=float, default=float(os.environ.get("AGORA_COALESCE_MS", "20")))
    serve.add_argument(
        "--idle-timeout", type=float, default=float(os.environ.get("AGORA_IDLE_TIMEOUT", "60"))
    )
    serve.add_argument(
        "--keep-snapshots",
        type=_positive_int,
        default=os.environ.get("AGORA_KEEP_SNAPSHOTS") or None,
        help="keep only the newest N milestone snapshots per notebook and the log after them "
        "(default: keep all history)",
    )
    serve.add_argument("--dev", action="store_true", help="print a dev API key and create a demo notebook")
    serve.add_argument(
        "--host-id",
        default=os.environ.get("AGORA_HOST_ID", ""),
        help="this host's name in the X-Agora-Host response header (default: hostname:port)",
    )
    serve.add_argument(
        "--unsafe-no-fsync",
        action="store_true",
        default=os.environ.get("AGORA_FSYNC", "1") == "0",
        help="skip fsync (benchmarks only: acknowledged ops may be lost on power failure)",
    )
    serve.add_argument(
        "--embed-origins",
        type=_origins,
        default=os.environ.get("AGORA_EMBED_ORIGINS", ""),  # a str default goes through `type` too
        help="comma-separated origins allowed to frame /embed/{id} and to send it tokens by postMessage",
    )
    _add_kernel_flags(serve)
    _add_limit_flags(serve)
    # -- several hosts (contract §1, §7) --
    store_help = "keep notebooks and keys in this PostgreSQL database instead of the data dir"
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
    _add_proxy_config_parser(sub)
    return parser.parse_args(argv)


# ---- agora proxy-config (contract §7) ------------------------------------------------------


def _add_proxy_config_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    proxy = sub.add_parser("proxy-config", help="print an nginx.conf routing notebooks over several hosts")
    proxy.add_argument("--listen", required=True, metavar="HOST:PORT", help="where nginx listens")
    proxy.add_argument(
        "--upstream", action="append", required=True, metavar="HOST:PORT", help="an agora host (repeat)"
    )
    proxy.add_argument("--tries", type=_positive_int, default=None, help="hosts tried per request")
    proxy.add_argument("--connect-timeout", type=float, default=1.0, help="seconds (default 1)")
    proxy.add_argument("--socket-timeout", type=float, default=3600.0, help="WebSocket idle seconds")
    proxy.add_argument("--worker-processes", default="auto")
    proxy.add_argument("--error-log-level", default="crit", choices=proxyconf.ERROR_LOG_LEVELS)
    proxy.add_argument("--tls-cert", metavar="FILE", help="PEM certificate chain: serve HTTPS/WSS")
    proxy.add_argument("--tls-key", metavar="FILE", help="the certificate's private key")


def run_proxy_config(args: argparse.Namespace, argv: list[str]) -> int:
    """Print the nginx.conf of `args` to stdout; bad input: a message on stderr and exit 2."""
    try:
        settings = proxyconf.ProxySettings(
            listen=proxyconf.parse_endpoint(args.listen),
            upstreams=tuple(proxyconf.parse_endpoint(u) for u in args.upstream),
            tries=args.tries,
            connect_timeout=args.connect_timeout,
            socket_timeout=args.socket_timeout,
            worker_processes=args.worker_processes,
            error_log_level=args.error_log_level,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
        )
    except ValueError as exc:
        print(f"agora proxy-config: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(proxyconf.render(settings, "agora " + " ".join(argv)))
    return 0


def settings_from(args: argparse.Namespace) -> Settings:
    """Merge parsed flags with the environment."""
    return Settings(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        api_keys=_env_list("AGORA_API_KEYS"),
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


DEMO_NOTEBOOK = {
    "nbformat": 4,
    "nbformat_minor": 5,
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    "cells": [
        {
            "id": "intro",
            "cell_type": "markdown",
            "metadata": {},
            "source": "# Welcome to Agora\nEdit me live.",
        },
        {
            "id": "hello",
            "cell_type": "code",
            "metadata": {},
            "execution_count": None,
            "outputs": [],
            "source": "print('hello, seminar')",
        },
    ],
}


def _dev_key(data_dir: Path) -> str:
    """The dev API key of `--dev`, kept in the data dir so it survives restarts."""
    key_file = data_dir / "dev-api-key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(24))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


async def _prepare_dev(settings: Settings, engine: Engine, secret: bytes, base: str) -> None:
    """`--dev`: a stable dev API key and a demo notebook, printed with how to reach them."""
    key = _dev_key(settings.data_dir)
    try:
        await engine.create_notebook("demo", "Demo notebook", import_notebook(DEMO_NOTEBOOK))
    except Conflict:
        pass
    day = int(time.time()) + 86400
    incarnation, issued = await engine.token_grant("demo", "dev")
    dev, dev_viewer = {"id": "dev", "name": "Developer"}, {"id": "dev-viewer", "name": "Viewer"}
    token = mint_token(secret, "demo", dev, "editor", day, incarnation=incarnation, issued=issued)
    viewer = mint_token(secret, "demo", dev_viewer, "viewer", day, incarnation=incarnation, issued=issued)
    ws_base = base.replace("http://", "ws://")
    print(
        f"\nAgora dev server on {base}\n"
        f"  API key (dev):   {key}\n"
        f"  demo notebook:   {base}/api/v1/notebooks/demo\n"
        f"  try:             curl -H 'Authorization: Bearer {key}' {base}/api/v1/notebooks/demo/content\n"
        f"  editor page:     {base}/embed/demo#token={token}\n"
        f"  viewer page:     {base}/embed/demo#token={viewer}\n"
        f"  editor socket:   {ws_base}/api/v1/notebooks/demo/ws?token={token}\n"
        f"  API docs:        {base}/api/v1/docs   (OpenAPI: {base}/api/v1/openapi.json)\n",
        flush=True,
    )


async def serve(
    settings: Settings,
    *,
    disk: Disk | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the whole server until SIGTERM/SIGINT (or cancellation); then flush and return.
    `disk` replaces the file store's disk (tests inject faults through it)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    shared = await open_shared_store(settings) if settings.store else None
    storage: Storage = shared[0] if shared else FileStorage(
        settings.data_dir,
        keep_snapshots=settings.keep_snapshots,
        disk=disk if disk is not None else None if settings.fsync else UnsafeNoSyncDisk(),
    )
    if not settings.fsync:
        log.warning("fsync is OFF (--unsafe-no-fsync): acknowledged ops may be lost on power failure")
    if settings.dev:
        settings.api_keys.append(_dev_key(settings.data_dir))
    room_config = RoomConfig(
        window=settings.window,
        coalesce=settings.coalesce_ms / 1000,
        idle_timeout=settings.idle_timeout,
        fanout=FanoutLimits(),
        notebook_max_bytes=settings.limits.notebook_max_bytes,
    )
    engine = Engine(storage, room_config)
    secret = load_or_create_secret(settings.data_dir, settings.secret)
    keys = shared[1] if shared else KeyStore(settings.data_dir, settings.api_keys)
    sock = listener.bind_socket(settings.host, settings.port)
    port = sock.getsockname()[1]
    base = settings.public_url or f"http://{settings.host}:{port}"
    kernels = _kernel_service(settings.kernels, settings.data_dir, engine)
    host_id = settings.host_id or f"{socket.gethostname()}:{port}"
    limits = settings.limits
    raise_fd_limit(limits.max_connections)
    # keys: a KeyStore or a PgKeyStore (same interface, duck-typed)
    app: Any = create_app(
        engine,
        keys=keys,  # type: ignore[arg-type]
        secret=secret,
        public_url=base,
        kernel_service=kernels,
        host_id=host_id,
        embed_origins=tuple(settings.embed_origins),
        max_body_bytes=limits.http_max_body,
    )
    gate = Gate(
        GateLimits(
            max_connections=limits.max_connections,
            http_max_body=limits.http_max_body,
            http_body_timeout=limits.http_body_timeout,
            http_rate=limits.http_rate,
            http_burst=limits.http_burst,
        ),
        keys.verify,
    )
    if shared:
        app = OwnerGuard(app, engine)
    hconfig = HypercornConfig()
    hconfig.accesslog = None
    hconfig.errorlog = logging.getLogger("hypercorn.error")
    asgi = wrap_app(with_host_header(app, host_id), hconfig.wsgi_max_body_size, None)
    context = WorkerContext(None)
    lifespan_state: dict[str, object] = {}
    lifespan = Lifespan(asgi, hconfig, lifespan_state)
    sync_config = SyncConfig(
        secret=secret,
        limits=ProtocolLimits(max_message_bytes=limits.ws_max_message),
        fanout=room_config.fanout,
        rate=limits.ws_msg_rate,
        burst=limits.ws_msg_burst,
        byte_rate=limits.ws_byte_rate,
        byte_burst=limits.ws_byte_burst,
        kernels=kernels,
        host_id=host_id,
    )

    async def on_http(stream: trio.abc.Stream) -> None:
        await TCPServer(asgi, hconfig, context, ConnectionState(dict(lifespan_state)), stream)  # type: ignore[arg-type]

    async def on_sync(conn: object, head: bytes) -> None:
        if shared and await refuse_sync_if_not_owner(engine, conn, head, host_id):  # type: ignore[arg-type]
            listener.close_socket(conn)  # type: ignore[arg-type]
            return
        await serve_sync(conn, head, engine.admit, sync_config)  # type: ignore[arg-type]

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            if shared:
                await nursery.start(shared[0].run)
                await nursery.start(shared[1].run)
            await nursery.start(engine.run)
            await nursery.start(kernels.run)
            await nursery.start(lifespan.handle_lifespan)
            await lifespan.wait_for_startup()
            if settings.dev:  # before the port answers, so /healthz means the banner is out
                await _prepare_dev(settings, engine, secret, base)
            async with trio.open_nursery() as front:
                serve_front = functools.partial(listener.serve, gate=gate)
                accepting = await front.start(serve_front, sock, on_sync, on_http)
                log.info(
                    "agora serving on http://%s:%d (data dir %s)", settings.host, port, settings.data_dir
                )
                task_status.started(port)
                async for signum in signals:
                    log.info("signal %d: flushing notebooks and shutting down", signum)
                    break
                accepting.cancel()  # stop accepting first,
                await kernels.shutdown_all()  # end the runs (their cells say so) and the kernels,
                await engine.registry.close_all()  # then flush every notebook (clients get 1001),
                front.cancel_scope.cancel()  # then end the remaining connections
            await lifespan.wait_for_shutdown()
            nursery.cancel_scope.cancel()
    if shared:
        await shared[0].close()
    log.info("agora stopped cleanly")


async def open_shared_store(settings: Settings) -> tuple[PostgresStorage, PgKeyStore]:
    """`--store`: connect (migrating the schema), register this host, load the API keys."""
    assert settings.store is not None
    ttl = float(os.environ.get("AGORA_LEASE_TTL", "5"))  # seconds; see docs/operations.md
    storage = await trio.to_thread.run_sync(partial(PostgresStorage, settings.store, lease_ttl=ttl))
    keys = await trio.to_thread.run_sync(PgKeyStore, storage.pool.connection, settings.api_keys)
    log.info("store: PostgreSQL, this host is %s", storage.leases.host_id)
    return storage, keys


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (`agora`)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "proxy-config":
        return run_proxy_config(args, sys.argv[1:] if argv is None else argv)
    if args.command == "keys":
        return run_keys_command(
            args.data_dir, args.action, getattr(args, "name", None), getattr(args, "key", None), args.store
        )
    try:
        trio.run(serve, settings_from(args))
    except StorageError as exc:  # --store: the database cannot be used (unreachable, newer schema)
        log.error("cannot start: %s", exc.message)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
