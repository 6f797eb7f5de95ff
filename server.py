"""Agora's entry point: `agora serve` / `python server.py serve`, `agora keys …`, `agora proxy-config`.

The command line itself (flags, `Settings`) is in `cli/`; this module wires a running server.

Wires everything into one trio nursery: storage, the engine (rooms), the Quart app on
hypercorn for HTTP, and the sync WebSocket endpoint, all behind one listening port
(`engine.listener`). SIGTERM/SIGINT: stop accepting, flush every notebook, exit 0.
"""

from __future__ import annotations

import functools
import logging
import os
import resource
import signal
import socket
import sys
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
from api.host_header import with_host_header
from api.keys_cli import run_keys_command
from api.ownership import OwnerGuard, refuse_sync_if_not_owner
from cli.dev import dev_key, prepare_dev
from cli.flags import KernelFlags, Settings, parse_args, settings_from
from cli.proxy import run_proxy_config
from engine import listener
from engine.auth.keys import KeyStore
from engine.auth.pg_keys import PgKeyStore
from engine.auth.secret import load_or_create_secret
from engine.connection import SyncConfig, serve_sync
from engine.engine import Engine
from engine.fanout import FanoutLimits
from engine.gate import Gate, GateLimits
from engine.kernels import KernelService, KernelSettings, OutputLimits, RoomSink
from engine.room import RoomConfig
from engine.storage.base import Storage, StorageError
from engine.storage.disk import Disk, UnsafeNoSyncDisk
from engine.storage.files import FileStorage
from engine.storage.postgres import PostgresStorage
from protocol import Limits as ProtocolLimits

log = logging.getLogger("agora")


def _kernel_service(flags: KernelFlags, data_dir: Path, engine: Engine) -> KernelService:
    settings = KernelSettings(
        data_dir=data_dir.resolve(),
        memory=flags.memory,
        idle_timeout=flags.idle_timeout,
        outputs=OutputLimits(max_bytes=flags.output_max_bytes, max_items=flags.output_max_items),
    )
    return KernelService(settings, lambda nid: RoomSink(engine, nid), flags.max_kernels)


def raise_fd_limit(max_connections: int) -> None:
    """Raise the soft open-files limit so `--max-connections` sockets fit (plus files, kernels)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + 1024
    if hard != resource.RLIM_INFINITY and hard < wanted:
        log.warning("open-files hard limit %d is below --max-connections + 1024 (%d)", hard, wanted)
        wanted = hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


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
        settings.api_keys.append(dev_key(settings.data_dir))
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
                await prepare_dev(settings.data_dir, engine, secret, base)
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
