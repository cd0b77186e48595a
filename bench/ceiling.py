"""The framework ceiling: a bare Flask view that reads a JSON body and answers a small JSON
envelope, served by waitress with the same settings as the app."""
from flask import Flask, jsonify, request


def create_app():
    app = Flask(__name__)

    @app.route("/", methods=["GET", "POST"])
    def echo():
        body = request.get_json(silent=True) or {}
        return jsonify(status="success", message="ok", data={"keys": len(body)}, error=None)

    return app
