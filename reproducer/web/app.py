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
import functools
import hmac
import io
import math
import threading
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
KEEPALIVE_S = 15.0

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
    title: str = "ray-reproducer results",
) -> Any:
    """The ASGI application; the feed is started and stopped with it."""
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
    changes = _Changes()
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
            chosen, total = window.page(
                where(request),
                before=_int(request.query_params.get("before")),
                limit=min(_int(request.query_params.get("limit")) or 100, MAX_LIMIT),
            )
        except ValueError as exc:
            return error(str(exc), 400)
        return as_json(
            {
                "rows": [e.row() for e in chosen],
                "total": total,
                "last_seq": window.last_seq,
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
            file = await asyncio.to_thread(read_attachment, output_dir, claims[i])
        except AttachmentError as exc:
            return error(str(exc), exc.status)
        headers = {
            "content-disposition": ("inline" if file.inline else "attachment")
            + f'; filename="{_safe_name(file.name)}"',
            "content-security-policy": "sandbox",
        }
        return Response(file.data, media_type=file.media_type, headers=headers)

    async def state(request: Request) -> Response:
        return as_json(feed.state())

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
            yield _event("state", feed.state())
            last_state = asyncio.get_running_loop().time()
            while not closing.is_set():
                newer, after = window.since(after, chosen)
                if newer:
                    yield _event(
                        "entries", {"rows": [e.row() for e in newer], "counts": window.counts()}
                    )
                now = asyncio.get_running_loop().time()
                if now - last_state >= STATE_EVERY_S:
                    last_state = now
                    yield _event("state", feed.state())
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
        return as_json({"analysis": analysis, "fields": numeric_fields(held)})

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
            found, field, x = points(request)
        except ValueError as exc:
            return error(str(exc), 400)
        return as_json({"field": field, "x": x, "points": found})

    async def trend_png(request: Request) -> Response:
        try:
            found, field, x = points(request)
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
        middleware=[Middleware(_Guard, token=token, title=title)],
        lifespan=_lifespan(lifespan),
    )

    def close() -> None:
        """From any thread: end the event streams now (the server then stops at once)."""
        loop = changes.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(closing.set)
            changes.notify()

    app.state.close = close
    return app


def _lifespan(body: Callable[[Any], AsyncIterator[None]]) -> Any:
    import contextlib  # noqa: PLC0415

    return contextlib.asynccontextmanager(body)


class _Guard:
    """Security headers on every answer, and the token, when there is one, on every
    request (compared in constant time; a wrong one is told nothing more)."""

    def __init__(self, app: Any, token: str | None, title: str) -> None:
        self.app, self.token, self.title = app, token, title

    async def __call__(
        self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from starlette.requests import Request  # noqa: PLC0415
        from starlette.responses import PlainTextResponse  # noqa: PLC0415

        request = Request(scope)
        from_query = request.query_params.get("token")
        if self.token is not None and not self._allowed(request, from_query):
            response = PlainTextResponse(
                "401: this page needs its token: open it as http://HOST:PORT/?token=... "
                "(or send 'Authorization: Bearer ...')\n",
                401,
                headers=_SECURITY_HEADERS,
            )
            await response(scope, receive, send)
            return
        set_cookie = self.token is not None and from_query is not None

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                for key, value in _SECURITY_HEADERS.items():
                    if key.encode() not in names:
                        headers.append((key.encode(), value.encode()))
                if set_cookie:
                    headers.append(
                        (
                            b"set-cookie",
                            f"{TOKEN_COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/".encode(),
                        )
                    )
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _allowed(self, request: Any, from_query: str | None) -> bool:
        assert self.token is not None
        offered = [
            from_query,
            request.cookies.get(TOKEN_COOKIE),
            request.headers.get("authorization", "").removeprefix("Bearer ").strip() or None,
        ]
        expected = self.token.encode()
        return any(o is not None and hmac.compare_digest(o.encode(), expected) for o in offered)


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
    ax.plot(xs, ys, marker="o", markersize=3, linewidth=1, color="tab:blue")
    ax.set_ylabel(field)
    ax.set_title(f"{analysis or 'all analyses'}: {field} ({len(ys)} results)", fontsize=10)
    ax.grid(alpha=0.3)
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()
