"""facekit-serve's RequestGuard on a small Starlette app (the real server is checked in test_facekit_serve.py):
what a page on another site, a rebinding DNS name or an endless body can no longer do."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("facekit_serve")

from facekit_serve.guard import FORM_BYTES, OTHER_BODY_BYTES, RequestGuard, folder_size, host_name
from fastapi import Body, FastAPI, Request
from fastapi.responses import PlainTextResponse
from starlette.middleware import Middleware
from starlette.testclient import TestClient

UPLOAD = 2_000_000


def make_client(listen: str = "127.0.0.1", **options: object) -> tuple[TestClient, list[int]]:
    """A client of an app that answers with the length of the body it read, behind the guard; the list collects
    what reached the app."""
    reached: list[int] = []

    guard = Middleware(RequestGuard, listen=listen, upload_bytes=UPLOAD, **options)
    app = FastAPI(middleware=[guard])  # as Gradio builds its app: the guard inside FastAPI's error handling

    @app.api_route("/", methods=["GET", "POST"])
    @app.post("/gradio_api/upload")
    async def echo(request: Request) -> PlainTextResponse:
        body = await request.body()
        reached.append(len(body))
        return PlainTextResponse(str(len(body)))

    @app.post("/gradio_api/queue/join")
    async def join(body: Annotated[bytes, Body(media_type="application/octet-stream")]) -> PlainTextResponse:
        reached.append(len(body))  # a body FastAPI parses: its errors while reading become 400s, ours stay 413
        return PlainTextResponse(str(len(body)))

    return TestClient(app, base_url="http://127.0.0.1:7860"), reached


@pytest.fixture
def client() -> Iterator[tuple[TestClient, list[int]]]:
    yield make_client()


def test_host_names() -> None:
    assert host_name("127.0.0.1:7860") == "127.0.0.1"
    assert host_name("[::1]:7860") == "::1"
    assert host_name("LocalHost") == "localhost"
    assert host_name("::1") == "::1"


def test_a_rebinding_name_is_refused_and_the_servers_own_names_are_not(client: tuple[TestClient, list[int]]) -> None:
    """Before: a page on attacker.example whose name was re-pointed to 127.0.0.1 read every answer."""
    http, reached = client
    refused = http.get("/", headers={"Host": "rebind.attacker.example:7860"})
    assert refused.status_code == 421 and "does not answer to the name 'rebind.attacker.example'" in refused.text
    assert reached == []
    for host in ("127.0.0.1:7860", "localhost:7860", "[::1]:7860"):
        assert http.get("/", headers={"Host": host}).status_code == 200, host
    assert http.get("/", headers={"Host": "192.168.1.20:7860"}).status_code == 421  # listening on loopback only


def test_on_every_network_addresses_pass_names_only_when_allowed() -> None:
    http, _ = make_client("0.0.0.0", allow_hosts=["studio.local"])
    assert http.get("/", headers={"Host": "192.168.1.20:7860"}).status_code == 200
    assert http.get("/", headers={"Host": "[fe80::1]:7860"}).status_code == 200
    assert http.get("/", headers={"Host": "studio.local:7860"}).status_code == 200
    assert http.get("/", headers={"Host": "attacker.example"}).status_code == 421
    listening, _ = make_client("10.0.0.5")
    assert listening.get("/", headers={"Host": "10.0.0.5:7860"}).status_code == 200


def test_a_write_from_another_site_is_refused(client: tuple[TestClient, list[int]]) -> None:
    """Before: a page elsewhere posted a form (multipart or text/plain: no CORS preflight) and the server stored the
    upload and did the work."""
    http, reached = client
    evil = {"Origin": "http://evil.test"}
    files = {"files": ("p.jpg", b"\xff\xd8" + bytes(1000), "image/jpeg")}
    assert http.post("/gradio_api/upload", files=files, headers=evil).status_code == 403
    assert http.post("/gradio_api/queue/join", content=b"x", headers={"Origin": "null"}).status_code == 403
    other_port = {"Origin": "http://127.0.0.1:3000"}  # another local app in the same browser
    assert http.post("/gradio_api/queue/join", content=b"x", headers=other_port).status_code == 403
    cross = {"Sec-Fetch-Site": "cross-site"}
    assert http.post("/gradio_api/queue/join", content=b"x", headers=cross).status_code == 403
    assert reached == []
    same = {"Origin": "http://127.0.0.1:7860", "Sec-Fetch-Site": "same-origin"}
    assert http.post("/gradio_api/upload", files=files, headers=same).status_code == 200  # the page itself
    assert http.post("/gradio_api/queue/join", content=b"x").status_code == 200  # a script, no Origin
    assert http.get("/", headers=evil).status_code == 200  # reads are CORS's to guard: the answer stays unreadable
    assert len(reached) == 3


def test_behind_a_proxy_the_allowed_names_pages_may_write() -> None:
    """A proxy serving the page as https://studio.example rewrites the Host to the server's address; the page's
    uploads carry the proxy's Origin. Allowed by --allow-host studio.example; other sites still refused."""
    http, reached = make_client(allow_hosts=["studio.example"])
    proxied = {"Host": "127.0.0.1:7860", "Origin": "https://studio.example", "Sec-Fetch-Site": "same-origin"}
    assert http.post("/gradio_api/queue/join", content=b"x", headers=proxied).status_code == 200
    elsewhere = {**proxied, "Origin": "https://evil.example"}
    assert http.post("/gradio_api/queue/join", content=b"x", headers=elsewhere).status_code == 403
    assert reached == [1]


def test_bodies_are_capped_by_their_length_or_as_they_arrive(client: tuple[TestClient, list[int]]) -> None:
    """Before: a 200 MB text body to the queue was read into memory whole."""
    http, reached = client
    big = http.post("/gradio_api/queue/join", content=b"x" * (OTHER_BODY_BYTES + 1))
    assert big.status_code == 413 and "request too large" in big.text
    assert reached == []

    def chunks(total: int) -> Iterator[bytes]:  # no Content-Length: sent chunked
        for _ in range(total // 65536 + 1):
            yield b"x" * 65536

    assert http.post("/gradio_api/queue/join", content=chunks(OTHER_BODY_BYTES * 2)).status_code == 413
    assert reached == []
    assert http.post("/gradio_api/queue/join", content=chunks(OTHER_BODY_BYTES // 2)).status_code == 200
    # An upload must give its length: one cut off part-way left the multipart parser's temporary files behind
    # (helper-45: three refused chunked uploads filled the folder's cap, and real uploads got 503 until a restart).
    unsized = http.post("/gradio_api/upload", content=chunks(1000))
    assert unsized.status_code == 411 and "Content-Length" in unsized.text
    photo = b"x" * (UPLOAD + FORM_BYTES // 2)  # the upload route takes a photo up to the limit, and its form
    assert http.post("/gradio_api/upload", content=photo).status_code == 200
    assert http.post("/gradio_api/upload", content=b"x" * (UPLOAD + FORM_BYTES + 1)).status_code == 413
    assert http.post("/gradio_api/upload", content=b"x", headers={"Content-Length": "-1"}).status_code in (400, 413)


def test_uploads_stop_when_the_folder_is_full(tmp_path: Path) -> None:
    folder = tmp_path / "gradio"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "photo.jpg").write_bytes(bytes(3_000_000))
    (folder / "link").symlink_to("/usr")  # not followed
    assert folder_size(folder) == 3_000_000
    http, reached = make_client(upload_folder=folder, folder_bytes=4_000_000)
    full = http.post("/gradio_api/upload", content=bytes(1_500_000))
    assert full.status_code == 503 and "too many photos" in full.text
    assert http.post("/gradio_api/upload", content=bytes(500_000)).status_code == 200
    assert http.post("/gradio_api/queue/join", content=b"{}").status_code == 200  # only uploads are held back
    assert reached == [500_000, 2]
