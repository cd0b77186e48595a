"""The server runtime: `python app.py` on waitress, SQLite's request lane and the
event loop."""
