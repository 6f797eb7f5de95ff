"""`agora proxy-config` (contract §7): print an nginx.conf that routes notebooks over hosts."""

from __future__ import annotations

import argparse
import sys

from cli.argtypes import positive_int
from engine import proxyconf


def add_proxy_config_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    proxy = sub.add_parser("proxy-config", help="print an nginx.conf routing notebooks over several hosts")
    proxy.add_argument("--listen", required=True, metavar="HOST:PORT", help="where nginx listens")
    proxy.add_argument(
        "--upstream", action="append", required=True, metavar="HOST:PORT", help="an agora host (repeat)"
    )
    proxy.add_argument("--tries", type=positive_int, default=None, help="hosts tried per request")
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


