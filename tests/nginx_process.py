"""Run Debian's nginx with `agora proxy-config`'s configuration on a free loopback port (tests, benches).

    with running_proxy([host_a.port, host_b.port]) as proxy:
        httpx.get(f"{proxy.base_url}/healthz")

The configuration comes from `engine.proxyconf.render`, the same function behind the CLI; it is
written into a fresh temp prefix, and nginx runs in the foreground
(`nginx -p PREFIX -c nginx.conf -g 'daemon off;'`) so that stopping the Popen stops it all.
nginx missing: the tests skip, except under CI (`CI=true`), where `make test` installs it (system-deps).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from engine.proxyconf import ProxySettings, render
from tests.server_process import free_port


def nginx_binary() -> str:
    """The nginx executable; skips the test when there is none (fails under CI instead)."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is not installed (`make test` installs it: Makefile system-deps)")
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    return found


def new_prefix() -> Path:
    """An empty prefix dir that nginx's workers (`nobody` when started as root) can enter."""
    prefix = Path(tempfile.mkdtemp(prefix="agora-nginx-"))
    prefix.chmod(0o755)
    return prefix


@dataclass
class NginxProcess:
    """nginx in front of `upstreams` (`HOST:PORT` or bare ports on 127.0.0.1)."""

    upstreams: Sequence[int | str]
    prefix: Path = field(default_factory=new_prefix)
    port: int = field(default_factory=free_port)
    connect_timeout: float = 1.0
    tries: int | None = None
    error_log_level: str = "error"  # tests want to see failures; production default is crit
    user: str | None = None  # run nginx as this user (needs root); None: as ourselves
    tls_cert: str | None = None  # serve HTTPS/WSS with this PEM certificate and key
    tls_key: str | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls_cert else 'http'}://127.0.0.1:{self.port}"

    @property
    def conf_path(self) -> Path:
        return self.prefix / "nginx.conf"

    def settings(self) -> ProxySettings:
        """What this proxy renders (one worker: the test machine is small)."""
        upstreams = tuple(f"127.0.0.1:{u}" if isinstance(u, int) else u for u in self.upstreams)
        return ProxySettings(
            listen=f"127.0.0.1:{self.port}",
            upstreams=upstreams,
            tries=self.tries,
            connect_timeout=self.connect_timeout,
            worker_processes="1",
            worker_connections=1024,
            error_log_level=self.error_log_level,
            tls_cert=self.tls_cert,
            tls_key=self.tls_key,
        )

    def write_config(self) -> Path:
        """Write nginx.conf into the prefix (nothing else: nginx creates the rest)."""
        self.conf_path.write_text(render(self.settings(), "tests/nginx_process.py"))
        if self.user is not None:
            shutil.chown(self.prefix, self.user)
        return self.conf_path

    def command(self, *extra: str) -> list[str]:
        """`nginx -p PREFIX/ -c nginx.conf …` as this fixture runs it."""
        return [nginx_binary(), "-p", f"{self.prefix}/", "-c", "nginx.conf", *extra]

    def check(self) -> subprocess.CompletedProcess[str]:
        """`nginx -t` on the written configuration."""
        self.write_config()
        return subprocess.run(
            self.command("-t"),
            capture_output=True,
            text=True,
            timeout=30,
            user=self.user,
            group=self._group(),
            extra_groups=self._extra_groups(),
        )

    def start(self, timeout: float = 20.0) -> None:
        """Write the config, start nginx in the foreground, wait until the port accepts."""
        self.write_config()
        self.proc = subprocess.Popen(
            self.command("-g", "daemon off;"),
            stdout=subprocess.DEVNULL,
            stderr=open(self.prefix / "stderr.log", "ab"),  # closed with the process
            user=self.user,
            group=self._group(),
            extra_groups=self._extra_groups(),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nginx did not start listening:\n{self.log()}")

    def stop(self, timeout: float = 20.0) -> None:
        """Fast shutdown (SIGTERM) and wait; the prefix stays until `cleanup`."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cleanup(self) -> None:
        """Stop nginx and remove the prefix."""
        self.stop()
        shutil.rmtree(self.prefix, ignore_errors=True)

    def log(self) -> str:
        """nginx's stderr and error log."""
        parts = [
            p.read_text(errors="replace")
            for p in (self.prefix / "stderr.log", self.prefix / "error.log")
            if p.exists()
        ]
        return "\n".join(parts)

    def access_log(self) -> str:
        """The access log so far (nginx writes it unbuffered)."""
        path = self.prefix / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _group(self) -> int | None:
        return None if self.user is None else pwd.getpwnam(self.user).pw_gid

    def _extra_groups(self) -> list[int] | None:
        return None if self.user is None else []


@contextmanager
def running_proxy(upstream_ports: Sequence[int | str], **options: object) -> Iterator[NginxProcess]:
    """nginx started in front of `upstream_ports`, stopped and removed afterwards.

    `options` go to `NginxProcess` (e.g. `connect_timeout=10`, `tries=2`). The proxy's port is
    `proxy.port`, its URL `proxy.base_url`.
    """
    proxy = NginxProcess(upstreams=list(upstream_ports), **options)  # type: ignore[arg-type]
    try:
        proxy.start()
        yield proxy
    finally:
        proxy.cleanup()


def start_proxy(upstream_ports: Sequence[int | str], **options: object) -> NginxProcess:
    """Start nginx in front of `upstream_ports` and return it (`.port`); call `.cleanup()` after."""
    proxy = NginxProcess(upstreams=list(upstream_ports), **options)  # type: ignore[arg-type]
    try:
        proxy.start()
    except BaseException:
        proxy.cleanup()
        raise
    return proxy
