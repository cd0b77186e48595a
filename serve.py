"""`python app.py`: the service on waitress, as production runs it.

Settings of the server itself (HOST, PORT, WAITRESS_THREADS, TRUSTED_PROXY) are read here;
the app's own are in settings.py.
"""
import logging
import os

import lane
import models
from app import create_app, start_serving


def main():
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app()
    start_serving(app)
    server = lane.create_server(app, **waitress_settings(os.environ))
    server.print_listen("Serving on http://{}:{}")
    try:
        server.run()
    finally:
        models.background_checkpoints.stop()


def waitress_settings(environ):
    settings = {"host": environ.get("HOST", "0.0.0.0"), "port": int(environ.get("PORT", "8080")),
                "threads": int(environ.get("WAITRESS_THREADS", "16")),
                # A backstop: the app answers 431 in JSON from MAX_HEADER_BYTES on.
                "max_request_header_size": 64 * 1024}
    if environ.get("TRUSTED_PROXY"):
        # Take the client address from X-Forwarded-For, but only from this proxy.
        settings.update(trusted_proxy=environ["TRUSTED_PROXY"],
                        trusted_proxy_headers={"x-forwarded-for"}, trusted_proxy_count=1,
                        clear_untrusted_proxy_headers=True)
    return settings
