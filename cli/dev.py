"""`agora serve --dev`: a stable dev API key, a demo notebook, and a banner with the pages to
open (an editor page and a viewer page) and how to reach the API."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

from engine.auth.tokens import mint_token
from engine.engine import Engine
from engine.errors import Conflict
from engine.ipynb import import_notebook

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


def dev_key(data_dir: Path) -> str:
    """The dev API key of `--dev`, kept in the data dir so it survives restarts."""
    key_file = data_dir / "dev-api-key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(24))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


async def prepare_dev(data_dir: Path, engine: Engine, secret: bytes, base: str) -> None:
    """`--dev`: a stable dev API key and a demo notebook, printed with how to reach them."""
    key = dev_key(data_dir)
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


