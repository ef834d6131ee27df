"""The playground (GET /playground): a page that plots a function and its derivatives, draws the
derivative's graph and runs check_grads, all through this service's own /v1 API (docs/PLAYGROUND.md).

Its files ship in the package (service/static/playground) and are read once, when the app is
built: a request names a file of that fixed set, never a path. The page's Content-Security-Policy
lets it load and fetch from this origin only, so the browser itself holds it to "no internet".
Also here: POST /v1/graph, the derivative's graph the page draws (computed by the pipeline,
service.graph_view).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response

from service.errors import NotFound

ASSET_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
               ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
# Same origin for everything; no inline script or style; nothing may frame the page.
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
          "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": POLICY, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "Cache-Control": "no-cache"}
GRAPH_EXAMPLE = {"function": {"expr": "sin(x) * x**2", "params": ["x"]}, "args": [1.0], "order": 2}


def load_assets() -> dict[str, tuple[bytes, str]]:
    """Every file of the page by name, with its media type."""
    folder = resources.files("service") / "static" / "playground"
    assets = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in ASSET_TYPES:
            assets[entry.name] = (entry.read_bytes(), ASSET_TYPES[suffix])
    if "index.html" not in assets:
        raise RuntimeError(f"the playground's files are missing from {folder}: the package was built without them")
    return assets


def install(app: FastAPI, lanes: Any, call: Callable[..., Any], json_body: Callable[..., Any],
            require_key: Callable[..., Any]) -> None:
    """Add GET /playground, its files, and POST /v1/graph to the app."""
    assets = load_assets()

    @app.post("/v1/graph", tags=["introspection"], dependencies=[Depends(require_key)], operation_id="graph",
              summary="The traced and optimised graph of grad (order n), with node counts before and after "
                      "optimisation", openapi_extra=_graph_body())
    async def graph(request: Request) -> Response:
        return await lanes.run(call(request, "graph", await json_body(request)))

    @app.get("/playground", include_in_schema=False)
    async def page() -> Response:
        body, media_type = assets["index.html"]
        return Response(body, media_type=media_type, headers=HEADERS)

    @app.get("/playground/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        found = assets.get(name)
        if found is None or name == "index.html":
            raise NotFound(f"the playground has no file {name[:80]!r}", {"file": name[:80]})
        return Response(found[0], media_type=found[1], headers=HEADERS)


def _graph_body() -> dict[str, Any]:
    ref = "#/components/schemas/"
    request = {"schema": {"$ref": ref + "GraphRequest"}, "examples": {"second_derivative": {"value": GRAPH_EXAMPLE}}}
    answer = {"schema": {"$ref": ref + "GraphResponse"}}
    return {"requestBody": {"required": True, "content": {"application/json": request}},
            "responses": {"200": {"description": "the result", "content": {"application/json": answer}}}}


__all__ = ["install", "load_assets"]
