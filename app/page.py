"""Pages beside the JSON API: the live demo page at ``/`` and Prometheus metrics at ``/metrics``.

The page is one static HTML file, read once at import, that drives the JSON API from the
browser: no build step and no template, so it can be opened and edited as it is.
"""

from __future__ import annotations

from pathlib import Path

import prometheus_client
from faust import web

from app.faust_app import app

PAGE = (Path(__file__).parent / "static" / "index.html").read_text(encoding="utf-8")


@app.page("/")
class DemoPage(web.View):
    """``GET /``: pick a user, click items, watch the list change. Registered at import, before
    Faust's own index page, so this one is served."""

    async def get(self, request: web.Request) -> web.Response:
        return self.html(PAGE)


@app.page("/metrics")
class Metrics(web.View):
    """``GET /metrics``: this worker's metrics in the Prometheus text format (an admin read when
    a key is set)."""

    async def get(self, request: web.Request) -> web.Response:
        # In headers: aiohttp refuses a content_type argument that carries a charset.
        return self.bytes(
            prometheus_client.generate_latest(),
            headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST},
        )
