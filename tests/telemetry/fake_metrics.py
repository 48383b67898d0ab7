"""Test helper: a tiny local HTTP server that plays a vLLM /metrics endpoint, and the metrics fixtures it serves."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FIXTURES = Path(__file__).parents[1] / "fixtures"


@dataclass
class FakeMetricsEndpoint:
    """What the local server answers; tests change it between polls."""

    bodies: list[str]
    status: int = 200
    delay_s: float = 0.0
    required_key: str | None = None
    requests: int = 0
    in_flight: int = 0
    most_in_flight: int = 0
    paths: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_body(self) -> str:
        with self.lock:
            body = self.bodies[min(self.requests, len(self.bodies) - 1)]
            self.requests += 1
            return body


@contextmanager
def fake_metrics_endpoint() -> Iterator[tuple[FakeMetricsEndpoint, str]]:
    """A local server on a free port answering from a FakeMetricsEndpoint; yields it and its base URL."""
    state = FakeMetricsEndpoint(bodies=[(FIXTURES / "metrics_v032_idle.txt").read_text()])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with state.lock:
                state.in_flight += 1
                state.most_in_flight = max(state.most_in_flight, state.in_flight)
                state.paths.append(self.path)
            try:
                time.sleep(state.delay_s)
                status, body = state.status, state.next_body()
                if state.required_key and self.headers.get("Authorization") != f"Bearer {state.required_key}":
                    status, body = 401, '{"error": "Unauthorized"}'
                payload = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the poller gave up (timeout test)
            finally:
                with state.lock:
                    state.in_flight -= 1

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def fixture_text(name: str) -> str:
    """The captured /metrics text ``tests/fixtures/metrics_<name>.txt``."""
    return (FIXTURES / f"metrics_{name}.txt").read_text()


def free_port() -> int:
    """A local TCP port nothing listens on now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
