"""The web inspector: static pages (no build step) served by ``msa serve`` at ``/inspector``.

They talk to the HTTP API (``/v1``) only: browse namespaces and memories, search with
recall, see each hit's per-layer routing scores as a heatmap and its matched chunk in the
text, and forget a memory. An API key pasted in the page is kept in ``sessionStorage`` and
sent as ``Authorization: Bearer``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).with_name("inspector")
PREFIX = "/inspector"


def mount_inspector(app: FastAPI) -> None:
    """Serve the inspector's files at ``/inspector/`` and send ``/`` there."""
    app.mount(PREFIX, StaticFiles(directory=STATIC, html=True), name="inspector")

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/")
