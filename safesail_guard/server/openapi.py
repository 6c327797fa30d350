"""The OpenAPI schema of the proxy: request bodies the routes read by hand, documented all the same.

The chat and score routes read their bodies themselves (`server/chat_request.read_body`), so that size,
encoding and field errors are the proxy's own OpenAI-style errors; `body_schema` documents such a body on its
route (``openapi_extra``) and `install_openapi` adds the models (and their nested models) to the schema's
components. `create_app` (`server/app.py`) calls `install_openapi` once the routes are added.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from safesail_guard.server.openai_schema import ChatCompletionRequest, ScoreRequest

BODY_MODELS: tuple[type[BaseModel], ...] = (ChatCompletionRequest, ScoreRequest)
"""Request bodies read by hand but documented in the OpenAPI schema (their sub-models join its components)."""


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """Document a body we read by hand (so size, encoding and field errors are ours) in the OpenAPI schema."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def install_openapi(app: FastAPI) -> None:
    """Add the hand-read body models (and their nested models) to the schema's components."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            comps = doc.setdefault("components", {}).setdefault("schemas", {})
            for model in BODY_MODELS:
                sch = model.model_json_schema(ref_template="#/components/schemas/{model}")
                comps.update(sch.pop("$defs", {}))
                comps[model.__name__] = sch
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


__all__ = ["BODY_MODELS", "body_schema", "install_openapi"]
