"""A live results page: results, plots and failures as they arrive, in a browser.

``reproducer web --config C --topic_name RESULTS [--dead_letter_topic D] [--output_dir DIR]
[--port 8000]``, or beside a run: ``reproducer run ... --web_port 8000``. It needs the
``web`` extra (``pip install 'ray-reproducer[web]'``: Starlette, uvicorn, matplotlib);
the pipeline itself does not.

- :mod:`reproducer.web.window`: the bounded window of the newest entries (pure);
- :mod:`reproducer.web.attachments`: a claim check's file, read only from inside the
  output folder and checked against its SHA-256;
- :mod:`reproducer.web.feed`: the topics read into the window, the runs found;
- :mod:`reproducer.web.app`: the HTTP routes, the event stream and the token;
- ``static/``: the page (HTML, CSS, JavaScript; no build step).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reproducer.errors import ReproducerError
from reproducer.web.feed import Feed, FeedSettings, RunSource
from reproducer.web.window import Window

__all__ = [
    "TOKEN_ENV",
    "FeedSettings",
    "PageServer",
    "WebSettings",
    "check_host",
    "serve",
    "start",
]

log = logging.getLogger(__name__)

TOKEN_ENV = "REPRODUCER_WEB_TOKEN"
MISSING = "the results page needs the web extra: pip install 'ray-reproducer[web]'"


@dataclass(frozen=True)
class WebSettings:
    feed: FeedSettings
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    output_dir: Path | None = None
    max_entries: int = 10_000
    max_mb: float = 64.0  # of messages; held as Python objects they take about 8 times that


def check_host(host: str, token: str | None) -> str | None:
    """The token to require: on a loopback address none is needed (one given is still
    required); on any other address one must be given, here or in $REPRODUCER_WEB_TOKEN."""
    token = token or os.environ.get(TOKEN_ENV) or None
    if token is None and not _loopback(host):
        raise ReproducerError(
            f"the results page on {host} (not this machine only) needs a token: give "
            f"--web_token or set {TOKEN_ENV}"
        )
    return token


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class PageServer:
    """The page served by uvicorn on a thread of its own (``start``), or on this thread
    (``run``, until interrupted)."""

    def __init__(self, settings: WebSettings, runs: RunSource | None = None) -> None:
        try:
            import uvicorn  # noqa: PLC0415

            from reproducer.web.app import create_app  # noqa: PLC0415
        except ImportError as exc:
            raise ReproducerError(MISSING) from exc
        token = check_host(settings.host, settings.token)
        self.settings = settings
        window = Window(settings.max_entries, int(settings.max_mb * 2**20))
        self.feed = Feed(settings.feed, window, runs=runs)
        self.sock = _bind(settings.host, settings.port)
        port = self.sock.getsockname()[1]
        self.app = app = create_app(
            self.feed,
            output_dir=settings.output_dir,
            token=token,
            cookie=f"reproducer_token_{port}",
            hosts=(settings.host,),
        )
        config = uvicorn.Config(
            app,
            log_level="warning",
            timeout_graceful_shutdown=2,
            lifespan="on",
        )

        class Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: Any) -> None:
                app.state.close()  # ^C: open event streams end, so the server need not wait
                super().handle_exit(sig, frame)

        self.server = Server(config)
        self._thread: threading.Thread | None = None
        self.token_required = token is not None

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def announce(self) -> None:
        more = " (open it with ?token=<your token>)" if self.token_required else ""
        log.info("results page: %s%s", self.url, more)

    def run(self) -> None:
        self.announce()
        self.server.run(sockets=[self.sock])

    def start(self) -> PageServer:
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="web", daemon=True
        )
        self._thread.start()
        self.announce()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.app.state.close()  # open event streams end, so the server need not wait
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self.sock.close()


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound now: a port in use is an error at once, naming it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # answers go out at once (the connections accepted inherit it): without it, a small
    # answer written in two parts waits for the client's delayed ACK, 40 ms a request
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ReproducerError(
            f"the results page cannot listen on {host}:{port}: {exc.strerror}"
        ) from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(settings: WebSettings, runs: RunSource | None = None) -> None:
    """``reproducer web``: serve the page until interrupted."""
    PageServer(settings, runs).run()


def start(settings: WebSettings, runs: RunSource | None = None) -> PageServer:
    """The page beside a run, on a thread of this process."""
    return PageServer(settings, runs).start()
