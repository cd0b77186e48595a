"""A webhook receiver for `run.py --webhooks`: answers every POST with 204 at once and prints,
when stopped, how many it took."""
import http.server
import signal
import sys

received = 0


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        global received
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        received += 1
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: (print(f"received {received}", flush=True),
                                              sys.exit(0)))
    server.serve_forever()


if __name__ == "__main__":
    main()
