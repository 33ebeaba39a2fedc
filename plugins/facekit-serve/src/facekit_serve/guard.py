"""What ``facekit serve`` refuses before Gradio sees a request: :class:`RequestGuard`, an ASGI middleware.

Gradio's own checks leave a local server open to any web page the visitor has open in another tab:

- **DNS rebinding**: a page on ``http://attacker.example:7860`` whose name is re-pointed to 127.0.0.1 talks to the
  server as its own origin and reads every answer (photos, faces). Refused: the ``Host`` header must name this
  server (a loopback name, the ``--host`` address, an address literal when listening on every network, or a name
  given with ``--allow-host``).
- **Cross-origin writes**: a page elsewhere may POST a form (``multipart/form-data`` or ``text/plain``) to the
  server without a CORS preflight; it cannot read the answer, but the upload is stored and the work is done.
  Refused: a state-changing request whose ``Origin`` (or ``Sec-Fetch-Site``) says it comes from another site.
- **Unbounded bodies**: Gradio limits each uploaded *file*, not a request body; a 200 MB JSON or text body was read
  into memory whole. Refused: bodies over the upload limit (plus room for the form) on the upload route and over
  :data:`OTHER_BODY_BYTES` elsewhere, counted as they arrive when no ``Content-Length`` is given (an upload must
  give one).
- **A full disk**: uploads wait in Gradio's folder until their page is closed; the folder is capped as a whole.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: The largest body of a request other than an upload (Gradio's queue and API calls carry file references, not
#: files: a few kB).
OTHER_BODY_BYTES = 1 << 20
#: Room for the multipart form around the one photo of an upload.
FORM_BYTES = 1 << 20
#: Methods that only read: never refused for their origin.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


def host_name(authority: str) -> str:
    """The host of a ``Host`` header or URL authority, lower case, without port or IPv6 brackets."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        return authority[1 : authority.find("]")] if "]" in authority else ""
    return authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority


def is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


class Refused(HTTPException):
    """A request the guard answers itself, with ``status`` and a one-line ``message``. An HTTPException, so that a
    body found too large while a route reads it is answered so by the app (FastAPI turns other errors raised while
    it parses a body into a 400)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status, self.message = status, message


class RequestGuard:
    """ASGI middleware for ``facekit serve`` (see the module docstring). ``listen`` is the ``--host`` address,
    ``allow_hosts`` more names the page may be reached by, ``upload_bytes`` the largest photo, ``upload_folder``
    Gradio's folder of uploads and served copies, capped at ``folder_bytes`` in all (None: not capped)."""

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        listen: str,
        upload_bytes: int,
        allow_hosts: Collection[str] = (),
        upload_folder: Path | str | None = None,
        folder_bytes: int | None = None,
        upload_path: str = "/gradio_api/upload",
    ) -> None:
        self.app = app
        self.any_address = listen in WILDCARD_HOSTS
        #: Names given with --allow-host: a page served under one of them (behind a proxy that rewrites the Host) is
        #: the server's own, whatever its port.
        self.named = frozenset(host_name(name) for name in allow_hosts)
        self.hosts = LOOPBACK_NAMES | self.named
        if not self.any_address:
            self.hosts |= {host_name(listen) if listen.startswith("[") else listen.lower()}
        self.upload_bytes = upload_bytes + FORM_BYTES
        self.upload_folder = Path(upload_folder) if upload_folder is not None else None
        self.folder_bytes = folder_bytes
        self.upload_path = upload_path

    # ------------------------------------------------------------------------------------------ the checks

    def check_host(self, headers: dict[str, str]) -> None:
        name = host_name(headers.get("host", ""))
        if name in self.hosts or (self.any_address and is_address(name)):
            return
        raise Refused(
            421,
            f"this server does not answer to the name {name or '(none)'!r}; open it by its address "
            "(facekit serve --allow-host NAME adds a name)",
        )

    def check_origin(self, method: str, headers: dict[str, str]) -> None:
        if method in SAFE_METHODS:
            return
        if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            raise Refused(403, "requests from other web sites are refused")
        origin = headers.get("origin")
        if origin is None:
            return  # not from a browser page (curl, gradio_client): the Host check above stands
        parts = urlsplit(origin)
        if origin == "null":
            raise Refused(403, "requests from other web sites are refused")
        same = parts.netloc.lower() == headers.get("host", "").strip().lower()
        if not same and host_name(parts.netloc) not in self.named:  # a name given with --allow-host: a proxy's
            raise Refused(403, "requests from other web sites are refused")

    def body_limit(self, method: str, path: str) -> int:
        return (
            self.upload_bytes if method == "POST" and path.rstrip("/").endswith(self.upload_path) else OTHER_BODY_BYTES
        )

    def check_length(self, limit: int, headers: dict[str, str]) -> None:
        length = headers.get("content-length")
        if length is None and limit == self.upload_bytes:
            # An upload must say its length (browsers and gradio_client do): one cut off part-way leaves the
            # multipart parser's temporary files behind, which would fill the folder's cap until a restart.
            raise Refused(411, "an upload must give its Content-Length")
        if length is not None and (not length.strip().isdigit() or int(length) > limit):
            raise Refused(413, f"request too large (more than {limit / 1e6:.1f} MB)")

    def check_folder(self, incoming: int) -> None:
        if self.upload_folder is None or self.folder_bytes is None:
            return
        if folder_size(self.upload_folder) + incoming > self.folder_bytes:
            raise Refused(503, "the server holds too many photos now; try again when other visitors' pages close")

    # ------------------------------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope.get("headers", [])}
        method = scope.get("method", "GET") if scope["type"] == "http" else "WEBSOCKET"
        limit = self.body_limit(method, scope.get("path", ""))
        try:
            self.check_host(headers)
            self.check_origin(method, headers)
            if scope["type"] == "http":
                self.check_length(limit, headers)
                if limit == self.upload_bytes:
                    self.check_folder(int(headers.get("content-length") or 0))
        except Refused as refused:
            await self.refuse(scope, send, refused)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise Refused(413, f"request too large (more than {limit / 1e6:.1f} MB)")
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except Refused as refused:
            if started:
                raise
            await self.refuse(scope, send, refused)

    @staticmethod
    async def refuse(scope: Scope, send: Send, refused: Refused) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = (refused.message + "\n").encode()
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
        if refused.status == 413:
            headers.append((b"connection", b"close"))  # the rest of the body is not read
        await send({"type": "http.response.start", "status": refused.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def folder_size(folder: Path) -> int:
    """Bytes of the regular files under ``folder`` (links not followed; 0 when it does not exist)."""
    total = 0
    stack = [folder]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return total
