"""The results page's HTTP side: a Starlette application over a :class:`Window`.

Routes (all ``GET``; the page never writes anything, to Kafka or elsewhere):

- ``/``: the page (``static/``: HTML, CSS and JavaScript, no build step);
- ``/api/entries?analysis=&path=&status=&since=&until=&before=&limit=``: a page of table
  rows, newest first, and how many entries in the window match;
- ``/api/entries/{seq}``: one entry whole (its record, its claim checks);
- ``/api/entries/{seq}/attachments/{i}``: the ``i``-th attachment's file, checked;
- ``/api/events?after=SEQ&...``: Server-Sent Events: ``entries`` (new matching rows, oldest
  first) as they are read, ``state`` (topics, runs and their lag) every few seconds;
- ``/api/state``: the same state once;
- ``/api/fields?analysis=``: the numeric fields of an analysis's results;
- ``/api/trend?analysis=&field=&x=index|time`` and ``/api/trend.png?...``: that field
  over the analysis's results, as points or as a matplotlib plot.

With a token, every request must carry it: ``Authorization: Bearer T``, the cookie the
page sets, or ``?token=T`` (which sets that cookie).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import io
import math
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from reproducer.results import strict_json
from reproducer.web.attachments import AttachmentError, read_attachment
from reproducer.web.feed import Feed
from reproducer.web.window import Filter, claim_checks, field_value, numeric_fields

__all__ = ["TOKEN_COOKIE", "create_app"]

TOKEN_COOKIE = "reproducer_token"
STATIC = Path(__file__).parent / "static"
MAX_LIMIT = 500
STATE_EVERY_S = 2.0

# no inline script or style: what a result holds can never run as code on the page
_SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


class _Changes:
    """Wakes the event streams when the feed added entries (called from its threads)."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.event: asyncio.Event | None = None
        self._pending = threading.Event()  # a wake-up is on its way to the loop

    def bind(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()

    def notify(self) -> None:
        """One wake-up on its way at a time: a backlog read at thousands of messages a
        second costs the loop one wake-up per turn, not one per message."""
        loop = self.loop
        if loop is None or loop.is_closed() or self._pending.is_set():
            return
        self._pending.set()
        try:
            loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # the loop closed meanwhile: nobody is listening
            self._pending.clear()

    def _wake(self) -> None:
        self._pending.clear()
        if self.event is not None:  # a new event for the next turn: none is cleared
            woken, self.event = self.event, asyncio.Event()
            woken.set()

    async def wait(self, timeout: float, ready: Callable[[], bool]) -> None:
        """Until the next change, at most ``timeout`` seconds; at once if ``ready()``
        (checked with no await before the wait begins, so no change is missed)."""
        event = self.event
        if ready() or event is None:
            return
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            return


def create_app(
    feed: Feed,
    *,
    output_dir: Path | None = None,
    token: str | None = None,
    cookie: str = TOKEN_COOKIE,
    hosts: tuple[str, ...] = (),
) -> Any:
    """The ASGI application; the feed is started and stopped with it.

    ``token``: required of every request (``cookie``: the name of the cookie that
    carries it; one per port, as browsers send a host's cookies to all its ports).
    Without a token only requests naming this machine (or one of ``hosts``) in their
    ``Host`` header are answered: a web site that points its own name at 127.0.0.1 (DNS
    rebinding) gets nothing."""
    from starlette.applications import Starlette  # noqa: PLC0415
    from starlette.middleware import Middleware  # noqa: PLC0415
    from starlette.requests import Request  # noqa: PLC0415
    from starlette.responses import (  # noqa: PLC0415
        FileResponse,
        Response,
        StreamingResponse,
    )
    from starlette.routing import Mount, Route  # noqa: PLC0415
    from starlette.staticfiles import StaticFiles  # noqa: PLC0415

    window = feed.window
    instance = uuid.uuid4().hex[:12]  # a page that reconnects to a new server starts over
    changes = _Changes()
    reads = asyncio.Semaphore(4)  # attachments read at once (each up to its size in memory)
    feed.on_change = changes.notify
    closing = asyncio.Event()

    def as_json(value: Any, status: int = 200) -> Response:
        text, _ = strict_json(value, default=str)
        return Response(text, status, media_type="application/json")

    def error(message: str, status: int) -> Response:
        return as_json({"error": message}, status)

    def where(request: Request) -> Filter:
        return Filter.from_query(request.query_params)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    async def entries(request: Request) -> Response:
        try:
            found = await asyncio.to_thread(
                window.page,
                where(request),
                before=_int(request.query_params.get("before")),
                limit=min(_int(request.query_params.get("limit")) or 100, MAX_LIMIT),
            )
        except ValueError as exc:
            return error(str(exc), 400)
        return as_json(
            {
                "rows": [e.row() for e in found.entries],
                "total": found.total,
                "more": found.more,
                "last_seq": found.upto,  # where the live stream goes on: nothing missed
                "instance": instance,
                "counts": window.counts(),
            }
        )

    def entry_of(request: Request) -> Any:
        seq = _int(request.path_params.get("seq"))
        return window.get(seq) if seq is not None else None

    async def entry(request: Request) -> Response:
        found = entry_of(request)
        if found is None:
            return error("no such entry in the window (it may have been dropped)", 404)
        return as_json(
            {"row": found.row(), "record": found.record, "claims": claim_checks(found.record)}
        )

    async def attachment(request: Request) -> Response:
        found = entry_of(request)
        if found is None:
            return error("no such entry in the window (it may have been dropped)", 404)
        claims = claim_checks(found.record)
        i = _int(request.path_params.get("i"))
        if i is None or not 0 <= i < len(claims):
            return error(f"this result has {len(claims)} attachment(s)", 404)
        try:
            async with reads:
                file = await asyncio.to_thread(read_attachment, output_dir, claims[i])
        except AttachmentError as exc:
            return error(str(exc), exc.status)
        headers = {
            "content-disposition": ("inline" if file.inline else "attachment")
            + f'; filename="{_safe_name(file.name)}"',
            "content-security-policy": "sandbox",
        }
        return Response(file.data, media_type=file.media_type, headers=headers)

    def current() -> dict[str, Any]:
        return {**feed.state(), "instance": instance}

    async def state(request: Request) -> Response:
        return as_json(current())

    async def events(request: Request) -> Response:
        try:
            chosen = where(request)
        except ValueError as exc:
            return error(str(exc), 400)
        try:
            asked = _int(request.query_params.get("after"))
        except ValueError as exc:
            return error(str(exc), 400)
        after: int = window.last_seq if asked is None else asked

        async def stream() -> AsyncIterator[str]:
            nonlocal after
            yield ": connected\n\n"
            yield _event("state", current())
            last_state = asyncio.get_running_loop().time()
            while not closing.is_set():
                newer, after, matched = window.since(after, chosen)
                if newer:
                    yield _event(
                        "entries",
                        {
                            "rows": [e.row() for e in newer],
                            "matched": matched,  # more than the rows after a flood
                            "counts": window.counts(),
                        },
                    )
                now = asyncio.get_running_loop().time()
                if now - last_state >= STATE_EVERY_S:
                    last_state = now
                    yield _event("state", current())
                if await request.is_disconnected():
                    return
                await changes.wait(STATE_EVERY_S, functools.partial(_newer, window, after))

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def fields(request: Request) -> Response:
        analysis = request.query_params.get("analysis") or None
        held = window.entries(Filter(analysis=analysis, status="ok"))
        names = await asyncio.to_thread(numeric_fields, held)
        return as_json({"analysis": analysis, "fields": names})

    def points(request: Request) -> tuple[list[dict[str, Any]], str, str]:
        analysis = request.query_params.get("analysis") or None
        field = request.query_params.get("field") or ""
        x = request.query_params.get("x") or "index"
        if not field:
            raise ValueError("choose a numeric field (field=result....)")
        if x not in ("index", "time"):
            raise ValueError("x is 'index' (files in the order read) or 'time'")
        found = []
        for e in window.entries(Filter(analysis=analysis, status="ok")):
            value = field_value(e.record, field)
            if value is not None and math.isfinite(value):
                found.append({"seq": e.seq, "file": e.path, "time": e.timestamp_ms, "y": value})
        return found, field, x

    async def trend(request: Request) -> Response:
        try:
            found, field, x = await asyncio.to_thread(points, request)
        except ValueError as exc:
            return error(str(exc), 400)
        return as_json({"field": field, "x": x, "points": found})

    async def trend_png(request: Request) -> Response:
        try:
            found, field, x = await asyncio.to_thread(points, request)
        except ValueError as exc:
            return error(str(exc), 400)
        try:
            png = await asyncio.to_thread(
                _trend_png, found, field, x, request.query_params.get("analysis") or ""
            )
        except ImportError:
            return error("the trend plot needs matplotlib: pip install 'ray-reproducer[web]'", 501)
        return Response(png, media_type="image/png")

    routes = [
        Route("/", index),
        Route("/api/entries", entries),
        Route("/api/entries/{seq:int}", entry),
        Route("/api/entries/{seq:int}/attachments/{i:int}", attachment),
        Route("/api/events", events),
        Route("/api/state", state),
        Route("/api/fields", fields),
        Route("/api/trend", trend),
        Route("/api/trend.png", trend_png),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        changes.bind()
        feed.start()
        try:
            yield
        finally:
            closing.set()
            await asyncio.to_thread(feed.stop)

    app = Starlette(
        routes=routes,
        middleware=[Middleware(_Guard, token=token, cookie=cookie, hosts=hosts)],
        lifespan=lifespan,
    )

    def close() -> None:
        """From any thread: end the event streams now (the server then stops at once)."""
        loop = changes.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(closing.set)
            changes.notify()

    app.state.close = close
    return app


class _Guard:
    """Security headers on every answer; the token, when there is one, on every request
    (compared in constant time; a wrong one is told nothing more); without one, only
    requests that name this machine in their Host header."""

    def __init__(self, app: Any, token: str | None, cookie: str, hosts: tuple[str, ...]) -> None:
        self.app, self.token, self.cookie = app, token, cookie
        self.hosts = {"127.0.0.1", "localhost", "::1", *(h.strip("[]").lower() for h in hosts)}

    async def __call__(
        self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any
    ) -> None:
        if scope["type"] == "websocket":  # none is served
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from starlette.requests import Request  # noqa: PLC0415
        from starlette.responses import PlainTextResponse, RedirectResponse  # noqa: PLC0415

        request = Request(scope)
        from_query = request.query_params.get("token")
        refusal = self._refusal(request, from_query)
        if refusal is not None:
            await PlainTextResponse(refusal[1], refusal[0], headers=_SECURITY_HEADERS)(
                scope, receive, send
            )
            return
        cookie = None
        if self.token is not None and from_query is not None:
            cookie = f"{self.cookie}={self.token}; HttpOnly; SameSite=Strict; Path=/"
            if scope["path"] == "/":  # the address bar and history keep no token
                response = RedirectResponse("/", 303, headers=_SECURITY_HEADERS)
                response.headers.append("set-cookie", cookie)
                await response(scope, receive, send)
                return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                for key, value in _SECURITY_HEADERS.items():
                    if key.encode() not in names:
                        headers.append((key.encode(), value.encode()))
                if cookie is not None:
                    headers.append((b"set-cookie", cookie.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _refusal(self, request: Any, from_query: str | None) -> tuple[int, str] | None:
        if self.token is None:
            host = request.headers.get("host", "")
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name.strip("[]").lower() not in self.hosts:
                return 421, "421: this page answers only to the address it listens on\n"
            return None
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        offered = [
            from_query,
            request.cookies.get(self.cookie),
            credentials.strip() if scheme.lower() == "bearer" else None,
        ]
        expected = self.token.encode()
        if any(o and hmac.compare_digest(o.encode(), expected) for o in offered):
            return None
        return 401, (
            "401: this page needs its token: open it as http://HOST:PORT/?token=... "
            "(or send 'Authorization: Bearer ...')\n"
        )


def _newer(window: Any, after: int) -> bool:
    return bool(window.last_seq > after)


def _event(name: str, data: Any) -> str:
    text, _ = strict_json(data, default=str)
    return f"event: {name}\ndata: {text}\n\n"


def _int(text: Any) -> int | None:
    if text is None or text == "":
        return None
    if isinstance(text, int):
        return text
    try:
        return int(str(text))
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:100] or "attachment"


def _trend_png(points: list[dict[str, Any]], field: str, x: str, analysis: str) -> bytes:
    import datetime as dt  # noqa: PLC0415

    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    fig = Figure(figsize=(7, 3.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ys = [p["y"] for p in points]
    if x == "time":
        xs: list[Any] = [
            dt.datetime.fromtimestamp(p["time"] / 1000, tz=dt.timezone.utc)
            for p in points
            if p["time"] is not None
        ]
        ys = [p["y"] for p in points if p["time"] is not None]
        ax.set_xlabel("produced at (UTC)")
        fig.autofmt_xdate()
    else:
        xs = list(range(1, len(points) + 1))
        ax.set_xlabel("result (in the order read)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.plot(xs, ys, marker="o", markersize=3, linewidth=1, color="tab:blue")
    ax.set_ylabel(field)
    ax.set_title(f"{analysis or 'all analyses'}: {field} ({len(ys)} results)", fontsize=10)
    ax.grid(alpha=0.3)
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()
