"""A webhook receiver for the tests: a small HTTP server on 127.0.0.1 in a thread of its own,
which records every request and answers as the test tells it."""
import contextlib
import http.server
import socket
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Received:
    event_id: int
    event_type: str
    signature: str
    headers: dict
    body: bytes
    path: str
    status: int  # what the receiver answers (0: not decided yet)
    answered: bool = False  # the answer reached the connection (the sender may be gone)
    at: float = field(default_factory=time.monotonic)


def ok(request):
    return 200, {}, b"ok"


class Receiver:
    """`answer(request) -> (status, headers, body)` decides each answer, and may block (a slow
    receiver). `start()` listens (again) on the same port; before it, or after `stop()`,
    connections to the port are refused."""

    def __init__(self, answer=ok):
        self.answer = answer
        self.dribble_seconds = 0  # set: answers come a byte at a time, this far apart
        self.received = []
        self._lock = threading.Lock()
        self._placeholder = None
        self.port = self._hold_port(0)
        self.url = f"http://127.0.0.1:{self.port}/hooks/livechat?token=secret-part"
        self._server = None
        self._connections = set()

    def start(self):
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                with receiver._lock:
                    receiver._connections.add(self.connection)

            def finish(self):
                with receiver._lock:
                    receiver._connections.discard(self.connection)
                super().finish()

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = Received(int(self.headers.get("X-Livechat-Event-Id", -1)),
                                   self.headers.get("X-Livechat-Event-Type", ""),
                                   self.headers.get("X-Livechat-Signature", ""),
                                   dict(self.headers), body, self.path, 0)
                with receiver._lock:
                    receiver.received.append(request)  # on arrival, answered or not
                status, headers, answer = receiver.answer(request)
                request.status = status
                head = [f"HTTP/1.1 {status} Answer"] + [f"{name}: {value}" for name, value in
                                                        {**headers, "Content-Length":
                                                         len(answer)}.items()]
                raw = ("\r\n".join(head) + "\r\n\r\n").encode() + answer
                if receiver.dribble_seconds:  # a byte at a time, each after a pause
                    for byte in raw:
                        time.sleep(receiver.dribble_seconds)
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                else:
                    self.wfile.write(raw)
                    self.wfile.flush()
                request.answered = True

            def log_message(self, *args):
                pass

        self._placeholder.close()
        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def _hold_port(self, port):
        """Bind the port without listening: connections to it are refused, and no other
        socket can take it meanwhile."""
        self._placeholder = socket.socket()
        self._placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._placeholder.bind(("127.0.0.1", port))
        return self._placeholder.getsockname()[1]

    def stop(self):
        """Stop listening, and cut the kept-alive connections too: down is down."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
            self._hold_port(self.port)
        with self._lock:
            connections, self._connections = self._connections, set()
        for connection in connections:
            with contextlib.suppress(OSError):  # closed already
                connection.shutdown(socket.SHUT_RDWR)

    def close(self):
        """Stop, and give the port back."""
        self.stop()
        self._placeholder.close()

    def requests(self):
        with self._lock:
            return list(self.received)

    def delivered_ids(self):
        """Event ids answered with a 2xx, in arrival order."""
        return [request.event_id for request in self.requests()
                if 200 <= request.status < 300 and request.answered]

    def attempted_ids(self):
        return [request.event_id for request in self.requests()]
