"""platform: the HTTP API traffic a learning platform sends, `--users` clients at `--rate`
requests/s each.

The weights follow a course's life: most calls are page views (a token for the embed page, a
summary, the content for grading or export), fewer are authoring (create, PUT content, revert)
and distribution (a handout copied to a class of 30 with `copies`). Every user starts from the
handout the runner created and works on notebooks it creates itself (ids `lt-…`).
"""

from __future__ import annotations

import copy
import random
import string
from typing import Any

from agora_ws import CONFIG
from locust import HttpUser, constant_throughput, task

API = "/api/v1"
CLASS_SIZE = 30


def small_notebook(marker: str) -> dict[str, Any]:
    """A 6-cell handout-like ipynb."""
    cells: list[dict[str, Any]] = [
        {
            "cell_type": "markdown",
            "metadata": {},
            "source": f"# Exercise {marker}\nRead the data, then plot it.",
        }
    ]
    for i in range(5):
        cells.append(
            {
                "cell_type": "code",
                "metadata": {},
                "source": f"import math\nvalues = [math.sin(x / 10) for x in range({i + 10})]\nsum(values)",
                "outputs": [],
                "execution_count": None,
            }
        )
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "cells": cells,
    }


def rid(k: int = 10) -> str:
    """A random id suffix."""
    return "".join(random.choices(string.ascii_lowercase + string.digits, k=k))


class Platform(HttpUser):
    """One platform backend calling the API."""

    wait_time = constant_throughput(float(CONFIG["rate"]))

    def on_start(self) -> None:
        """Authenticate with the API key; start from the runner's handout."""
        self.client.headers["Authorization"] = f"Bearer {CONFIG['api_key']}"
        self.mine: list[str] = [CONFIG["notebook"]]
        self.versions: dict[str, int] = {}

    def some(self) -> str:
        """One of the notebooks this user works on."""
        return random.choice(self.mine)

    def remember(self, response: Any) -> None:
        """Keep a notebook's version from a summary answer (for revert targets)."""
        try:
            body = response.json()
            self.versions[body["id"]] = int(body["version"])
        except Exception:
            pass

    @task(2)
    def create(self) -> None:
        """A teacher uploads a new handout."""
        nb_id = f"lt-{rid()}"
        with self.client.post(
            f"{API}/notebooks",
            json={"id": nb_id, "name": "load test", "notebook": small_notebook(nb_id)},
            name="/notebooks",
            catch_response=True,
        ) as r:
            if r.status_code == 201:
                self.mine.append(nb_id)
                self.remember(r)
                r.success()
            else:
                r.failure(f"{r.status_code}: {r.text[:200]}")

    @task(1)
    def copies_to_class(self) -> None:
        """A handout is copied to a class of 30 in one call."""
        src = self.some()
        targets = [{"id": f"lt-{rid()}", "name": f"student {i}"} for i in range(CLASS_SIZE)]
        with self.client.post(
            f"{API}/notebooks/{src}/copies",
            json={"targets": targets},
            name="/notebooks/[id]/copies",
            catch_response=True,
        ) as r:
            if r.status_code != 200:
                r.failure(f"{r.status_code}: {r.text[:200]}")
                return
            results = r.json().get("results", [])
            bad = [x for x in results if x.get("status") != "created"]
            if bad:
                r.failure(f"{len(bad)} copies not created: {bad[0]}")
            else:
                r.success()
            # A class's copies are read and written afterwards; keep a few of them.
            self.mine.extend(t["id"] for t in targets[:3])

    @task(12)
    def mint_token(self) -> None:
        """A page view: a token for the embed page (30 % editors)."""
        role = "editor" if random.random() < 0.3 else "viewer"
        user = {"id": f"u{random.randrange(1000)}", "name": "Student"}
        self.client.post(
            f"{API}/tokens",
            json={"notebook": self.some(), "user": user, "role": role, "ttl": 3600},
            name="/tokens",
        )

    @task(6)
    def summary(self) -> None:
        """The notebook's summary (connections, kernel)."""
        self.client.get(f"{API}/notebooks/{self.some()}", name="/notebooks/[id]")

    @task(6)
    def read_content(self) -> None:
        """The content, for grading or export."""
        self.client.get(f"{API}/notebooks/{self.some()}/content", name="/notebooks/[id]/content")

    @task(2)
    def history(self) -> None:
        """The first page of history."""
        self.client.get(
            f"{API}/notebooks/{self.some()}/history?since=0&limit=100", name="/notebooks/[id]/history"
        )

    @task(2)
    def sessions(self) -> None:
        """Who is connected."""
        self.client.get(f"{API}/notebooks/{self.some()}/sessions", name="/notebooks/[id]/sessions")

    @task(1)
    def list_notebooks(self) -> None:
        """The first page of the notebook list."""
        self.client.get(f"{API}/notebooks?limit=50", name="/notebooks")

    @task(2)
    def put_content(self) -> None:
        """The platform replaces the content (a revised handout)."""
        nb_id = self.some()
        nb = small_notebook(nb_id)
        nb = copy.deepcopy(nb)
        nb["cells"][0]["source"] += f"\nRevised {rid(4)}."
        r = self.client.put(
            f"{API}/notebooks/{nb_id}/content", json={"notebook": nb}, name="/notebooks/[id]/content"
        )
        if r.status_code == 200:
            self.remember(r)

    @task(1)
    def revert(self) -> None:
        """Revert to a random earlier version."""
        nb_id = self.some()
        head = self.versions.get(nb_id, 0)
        target = random.randint(0, head) if head else 0
        r = self.client.post(
            f"{API}/notebooks/{nb_id}/revert", json={"version": target}, name="/notebooks/[id]/revert"
        )
        if r.status_code == 200:
            self.remember(r)
