"""The OpenAPI description (rtc/http/openapi.py): it covers every registered route, is valid, is
public, and shows which operations need the token."""

from __future__ import annotations

import dataclasses
from typing import Any

import jsonschema
import pytest
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from schemathesis.core.result import Ok

from config import HttpConfig
from rtc.http.app import build_app
from rtc.http.openapi import build_spec, route_paths, undocumented
from rtc.services import Services


def _with_http(services: Services, **http: Any) -> Services:
    config = dataclasses.replace(services.config, http=HttpConfig(**http))
    return dataclasses.replace(services, config=config)


def test_every_registered_route_is_described(loaded_services: Services) -> None:
    app = build_app(loaded_services)
    assert undocumented(app, loaded_services.config) == []
    spec = build_spec(app, loaded_services.config)
    described = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    registered = set(route_paths(app))
    assert described == registered
    # Spot checks that the router, not a fixed list, is the source: the routes of every part.
    for key in (
        ("POST", "/api/generate"),
        ("POST", "/offer"),
        ("GET", "/metrics"),
        ("GET", "/api/openapi.json"),
        ("GET", "/static/{filename}"),
        ("POST", "/api/sessions/{session_id}/say"),
    ):
        assert key in registered, key
    assert not any(
        op.get("x-undocumented") for ops in spec["paths"].values() for op in ops.values()
    )


def test_a_new_route_without_a_description_is_reported(loaded_services: Services) -> None:
    app = build_app(loaded_services)

    async def secret(_: web.Request) -> web.Response:
        return web.json_response({})

    app.router.add_put("/api/new-thing/{id}", secret)
    assert undocumented(app, loaded_services.config) == [("PUT", "/api/new-thing/{id}")]
    spec = build_spec(app, loaded_services.config)
    assert spec["paths"]["/api/new-thing/{id}"]["put"]["x-undocumented"] is True


def test_the_description_is_valid_openapi_with_bodies_and_limits(loaded_services: Services) -> None:
    spec = build_spec(build_app(loaded_services), loaded_services.config)
    assert spec["openapi"] == "3.1.0"
    results = list(schemathesis.openapi.from_dict(spec).get_all_operations())
    assert results and all(isinstance(r, Ok) for r in results)
    generate = spec["paths"]["/api/generate"]["post"]
    assert set(generate["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    assert {"200", "400", "413", "415", "503", "507"} <= set(generate["responses"])
    text = spec["components"]["schemas"]["GenerateText"]["properties"]["text"]
    assert text["maxLength"] == loaded_services.config.tts.max_text_chars
    say = spec["paths"]["/api/sessions/{session_id}/say"]["post"]
    assert {"202", "400", "404", "429"} <= set(say["responses"])
    for path in ("/offer", "/api/generate_stream"):
        offer = spec["paths"][path]["post"]
        assert offer["requestBody"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Offer"
        }
        assert "503" in offer["responses"]
    assert "security" not in generate  # no token configured


async def test_served_publicly_and_marks_guarded_operations(loaded_services: Services) -> None:
    services = _with_http(loaded_services, token="t0ken")
    async with TestClient(TestServer(build_app(services), host="127.0.0.1")) as client:
        r = await client.get("/api/openapi.json")  # no token: still served
        assert r.status == 200 and r.content_type == "application/json"
        spec = await r.json()
        assert (await client.get("/metrics")).status == 401
        assert (await client.get("/metrics?token=t0ken")).status == 200
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    paths = spec["paths"]
    for path, method in (
        ("/api/generate", "post"),
        ("/offer", "post"),
        ("/metrics", "get"),
        ("/api/sessions/{session_id}/say", "post"),
    ):
        assert paths[path][method]["security"] == [{"bearer": []}], path
        assert "401" in paths[path][method]["responses"], path
    for path in ("/healthz", "/api/openapi.json", "/api/languages", "/"):
        assert "security" not in paths[path]["get"], path


def _resolved(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with the document's components attached, so $refs resolve."""
    return {**schema, "components": spec["components"]}


async def test_the_description_and_the_answers_agree(loaded_services: Services) -> None:
    """The cases where they did not: the 503 body of an unavailable engine matched both
    oneOf branches, an empty sdp passed the schema yet answered 400, and OPTIONS on a WHEP
    viewer said another Allow than its PATCH's 405."""
    app = build_app(loaded_services)
    spec = build_spec(app, loaded_services.config)
    offer = spec["paths"]["/api/generate_stream"]["post"]
    unavailable = offer["responses"]["503"]["content"]["application/json"]["schema"]
    offer_body = spec["components"]["schemas"]["Offer"]
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        # No Wav2Lip checkpoint here: the pinned endpoint answers 503 with a fallback.
        sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
        r = await client.post("/api/generate_stream", json={"sdp": sdp, "type": "offer"})
        assert r.status == 503
        jsonschema.validate(await r.json(), _resolved(spec, unavailable))
        for empty in ("", "  \r\n "):
            with pytest.raises(jsonschema.ValidationError):
                jsonschema.validate({"sdp": empty, "type": "offer"}, offer_body)
            r = await client.post("/offer", json={"sdp": empty, "type": "offer"})
            assert r.status == 400
        jsonschema.validate({"sdp": sdp, "type": "offer"}, offer_body)
        r = await client.options("/whep/s/v")
        allow = r.headers["Allow"]
        r = await client.patch("/whep/s/v", data="a=x")
        assert r.status in (404, 405)
        viewer_ops = spec["paths"]["/whep/{stream}/{viewer}"]
        assert viewer_ops["options"]["responses"]["204"]["headers"]["Allow"]["schema"] == {
            "const": allow
        }
        assert viewer_ops["patch"]["responses"]["405"]["headers"]["Allow"]["schema"] == {
            "const": allow
        }
    # Every state-changing operation documents the origin check, every body the 415.
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if method.upper() in ("POST", "PATCH", "DELETE"):
                assert "403" in op["responses"], (method, path)
            if "requestBody" in op:
                assert "415" in op["responses"], (method, path)
