"""The nginx configuration in front of several Agora hosts (contract §7): `agora proxy-config`.

`render(ProxySettings(...))` returns a whole `nginx.conf` (events and http blocks) that runs as
`nginx -p PREFIX -c FILE` without privileges: the pid file, both logs and all five temp dirs are
relative paths, which nginx resolves against PREFIX and creates there (PREFIX may start empty).

Routing. Every request and WebSocket of one notebook (`/api/v1/notebooks/{id}…`, `/embed/{id}…`)
goes to one host, chosen by `hash $agora_notebook consistent` on the id (a `map` on `$uri`
extracts it); everything else goes round-robin to any host. When the chosen host refuses the
connection or answers 503 (`not_owner`: another host holds the notebook's lease), nginx tries
the next host on the hash ring, at most `tries` hosts per request. The ring walk is
deterministic, so while a host is down all of its notebooks' requests agree on the same fallback.

Accounting. nginx counts every attempt it retries, a 503 included, as a failure toward a
server's `max_fails`, and a server that reaches it is skipped for `fail_timeout`. With the
default (`max_fails=1`) one `not_owner` answer would take a healthy host out of rotation and
send the notebooks it owns elsewhere, where they in turn get `not_owner`. So the notebook pool
has `max_fails=0` (no accounting): a dead host is still tried first for its notebooks, but a
refused connection fails in microseconds and nginx moves on at once; a host that drops packets
instead costs each request `connect_timeout`. The pool for other paths never sees `not_owner`
and keeps passive health checks.

Other choices, each forced by the server: no upstream keep-alive (the server decides once per
TCP connection whether it is a sync socket, so a pooled connection must never carry an upgrade);
the owner paths buffer request bodies so that a `not_owner` answer can be replayed to the next
host (nginx cannot retry a request whose streamed body it already started sending), while other
paths stream bodies unbuffered so the server's auth-before-body check still applies to uploads;
the access log leaves out query strings (the socket URL carries `?token=`).

Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_BODY_BYTES = 32 * 1024 * 1024  # the server's HTTP body limit (api.app.DEFAULT_MAX_BODY)
DEFAULT_MAX_TRIES = 5

_HOST_RE = re.compile(r"\A(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+|\*)\Z")
_TOO_LARGE = '{"error":{"code":"payload_too_large","message":"The request body is too large."}}'
_UNAVAILABLE = '{"error":{"code":"unavailable","message":"No Agora host answered; retry shortly."}}'
_PATH_RE = re.compile(r"\A[^\s;{}'\"$#\\]+\Z")
ERROR_LOG_LEVELS = ("debug", "info", "notice", "warn", "error", "crit", "alert", "emerg")


class EndpointError(ValueError):
    """A `HOST:PORT` that nginx would not accept (or that would inject configuration)."""


def parse_endpoint(text: str) -> str:
    """Validate `HOST:PORT` (`[v6]:PORT` for IPv6) and return it normalised; raise `EndpointError`."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host:
        raise EndpointError(f"{text!r}: expected HOST:PORT (IPv6 as [ADDR]:PORT)")
    if not _HOST_RE.match(host):
        raise EndpointError(f"{text!r}: {host!r} is not a host name or address")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise EndpointError(f"{text!r}: port must be 1-65535")
    return f"{host}:{int(port)}"


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """What `agora proxy-config` can be told. Times in seconds."""

    listen: str
    upstreams: tuple[str, ...]
    tries: int | None = None  # hosts tried per request; default min(len(upstreams), DEFAULT_MAX_TRIES)
    connect_timeout: float = 1.0  # to an upstream; a silent (not refusing) host costs this per try
    http_timeout: float = 60.0  # read/send timeout for plain HTTP requests
    socket_timeout: float = 3600.0  # read/send timeout for WebSockets (clients ping well within it)
    shutdown_timeout: float = 30.0  # graceful reload/stop: then open sockets are closed
    worker_processes: str = "auto"
    worker_connections: int = 8192  # each proxied socket takes two
    error_log_level: str = "crit"  # `error` logs request lines, whose query strings carry tokens
    max_body_bytes: int = MAX_BODY_BYTES
    tls_cert: str | None = None  # PEM chain: listen with TLS (relative: to the nginx.conf dir)
    tls_key: str | None = None

    def __post_init__(self) -> None:
        if not self.upstreams:
            raise ValueError("at least one --upstream is required")
        if len(set(self.upstreams)) != len(self.upstreams):
            raise ValueError("each --upstream must be given once")
        if self.tries is not None and self.tries < 1:
            raise ValueError("tries must be at least 1")
        if self.error_log_level not in ERROR_LOG_LEVELS:
            raise ValueError(f"error log level must be one of {', '.join(ERROR_LOG_LEVELS)}")
        if self.worker_processes != "auto" and not self.worker_processes.isdigit():
            raise ValueError("worker processes must be a number or 'auto'")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both a certificate and a key")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not _PATH_RE.match(path):
                raise ValueError(f"{path!r}: TLS file paths may not hold spaces, quotes, ';' or braces")
        for value in (self.connect_timeout, self.http_timeout, self.socket_timeout, self.shutdown_timeout):
            if value <= 0:
                raise ValueError("timeouts must be positive")

    @property
    def effective_tries(self) -> int:
        """Hosts nginx tries for one request (the first included)."""
        return self.tries if self.tries is not None else min(len(self.upstreams), DEFAULT_MAX_TRIES)


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def _servers(upstreams: tuple[str, ...], params: str) -> str:
    return "\n".join(f"        server {u} {params};" for u in upstreams)


def _tls(s: ProxySettings) -> str:
    if s.tls_cert is None:
        return ""
    return f"""
        ssl_certificate {s.tls_cert};
        ssl_certificate_key {s.tls_key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_prefer_server_ciphers off;
        ssl_session_cache shared:agora_tls:10m;
        ssl_session_timeout 1d;
        ssl_session_tickets off;
"""


def render(settings: ProxySettings, command_line: str = "") -> str:
    """The complete nginx.conf for `settings` (deterministic: same settings, same bytes)."""
    s = settings
    origin = " ".join(command_line.split()) or "agora proxy-config"  # one line: it is a comment
    generated = f"# Generated by: {origin}\n"
    return f"""{generated}\
# Run unprivileged: nginx -p PREFIX -c FILE   (pid, logs and temp dirs are created under PREFIX)
# Started as root, nginx's workers run as `nobody`: PREFIX must then be searchable by it.
# Why each setting is what it is: docs/operations.md, "Several hosts: the proxy".

worker_processes {s.worker_processes};
worker_rlimit_nofile {2 * s.worker_connections + 64};
# A reload or graceful stop waits this long for open WebSockets, then closes them (clients resume).
worker_shutdown_timeout {_ms(s.shutdown_timeout)};
pid nginx.pid;
error_log error.log {s.error_log_level};

events {{
    worker_connections {s.worker_connections};
}}

http {{
    client_body_temp_path client_body_temp;
    proxy_temp_path proxy_temp;
    fastcgi_temp_path fastcgi_temp;
    uwsgi_temp_path uwsgi_temp;
    scgi_temp_path scgi_temp;

    # No $request, $request_uri, $args or $http_referer: socket URLs carry ?token=.
    log_format agora '$remote_addr [$time_iso8601] "$request_method $uri $server_protocol" '
                     '$status $body_bytes_sent $request_time '
                     'upstream=$upstream_addr upstream_status=$upstream_status';
    access_log access.log agora;

    server_tokens off;
    default_type application/octet-stream;

    # The notebook id of an owner-only path; empty for every other path.
    map $uri $agora_notebook {{
        default "";
        "~^/api/v1/notebooks/(?<agora_nb>[^/]+)" $agora_nb;
        "~^/embed/(?<agora_nb>[^/]+)" $agora_nb;
    }}

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        "" close;
    }}

    # Owner-only paths. max_fails=0: a retried 503 (`not_owner`) must not mark a healthy host down.
    # No `keepalive`: an upgrade must never travel on a pooled connection.
    upstream agora_notebooks {{
        hash $agora_notebook consistent;
{_servers(s.upstreams, "max_fails=0")}
    }}

    # Every other path: any host; a host refusing connections is skipped for 10 s.
    upstream agora_any {{
{_servers(s.upstreams, "max_fails=1 fail_timeout=10s")}
    }}

    server {{
        listen {s.listen}{" ssl" if s.tls_cert else ""};
        server_name _;
{_tls(s)}
        client_max_body_size {s.max_body_bytes};
        proxy_http_version 1.1;
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $connection_upgrade;
        proxy_connect_timeout {_ms(s.connect_timeout)};
        proxy_read_timeout {_ms(s.http_timeout)};
        proxy_send_timeout {_ms(s.http_timeout)};
        proxy_next_upstream_tries {s.effective_tries};
        proxy_max_temp_file_size 0;

        # nginx's own errors in the API's error shape (contract §2).
        error_page 413 = @agora_too_large;
        error_page 502 504 = @agora_unavailable;
        location @agora_too_large {{
            default_type application/json;
            return 413 '{_TOO_LARGE}';
        }}
        location @agora_unavailable {{
            default_type application/json;
            add_header Retry-After 1 always;
            return 503 '{_UNAVAILABLE}';
        }}

        # The sync WebSocket: long-lived, quiet between pings.
        location ~ ^/api/v1/notebooks/[^/]+/ws$ {{
            proxy_pass http://agora_notebooks;
            proxy_next_upstream error timeout http_503;
            proxy_read_timeout {_ms(s.socket_timeout)};
            proxy_send_timeout {_ms(s.socket_timeout)};
            proxy_buffering off;
            proxy_socket_keepalive on;
        }}

        # The rest of one notebook: bodies buffered here so a `not_owner` 503 can be replayed.
        location ~ ^/(?:api/v1/notebooks|embed)/[^/]+ {{
            proxy_pass http://agora_notebooks;
            proxy_next_upstream error timeout http_503 non_idempotent;
            proxy_request_buffering on;
        }}

        # Creation, lists, tokens, health, metrics, docs: any host; bodies streamed (auth first).
        location / {{
            proxy_pass http://agora_any;
            proxy_next_upstream error timeout http_503;
            proxy_request_buffering off;
        }}
    }}
}}
"""
