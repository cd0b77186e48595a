"""README's examples, pasted in order into a shell against a real server, do what it says."""
import os
import re
import subprocess

import pytest

from helpers import ROOT, running_server


def walk_through_commands(port):
    """Every `sh` block from "Try the spec's example requests" to the retry with an
    Idempotency-Key, in README order, aimed at the test's server."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as readme:
        text = readme.read()
    start = text.index("### Try the spec's example requests")
    end = text.index("### Long-polling and threads")
    blocks = re.findall(r"```sh\n(.*?)```", text[start:end], re.S)
    return "\n".join(blocks).replace("localhost:8080", f"127.0.0.1:{port}")


@pytest.mark.slow
def test_the_examples_run_in_order(tmp_path, database_url):
    with running_server(tmp_path, database_url) as server:
        port = server.url.rsplit(":", 1)[1]
        script = "set -euo pipefail\n" + walk_through_commands(port)
        result = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True,
                                text=True, timeout=120,
                                env={**os.environ, "DATABASE_URL": database_url})
    assert result.returncode == 0, result.stderr
    answers = re.findall(r'^\{"status":.*$', result.stdout, re.M)
    assert all('"status":"success"' in answer for answer in answers), result.stdout
    assert '"message":"Live chat session created successfully."' in answers[0]
    assert '"seq":3,"sender":"agent","message":"Which app version do you use?"' in result.stdout
    feed = next(answer for answer in answers if '"message":"Events."' in answer)
    assert '"type":"chat.created"' in feed and '"type":"chat.reopened"' in feed
    for workspace_answer in ('"message":"Chat assigned."', '"message":"Note saved."',
                             '"message":"Saved reply created."', '"message":"Customer."',
                             '"unread":{"mine":0,"unassigned":0,"all":0}'):
        assert workspace_answer in result.stdout
    closed = [answer for answer in answers if '"message":"Chat closed."' in answer]
    assert closed and '"status":"closed"' in closed[-1]
    # The retried create: the same answer twice, the second marked as a replay.
    retried = answers[-2:]
    assert retried[0] == retried[1]
    assert '"message":"Live chat session created successfully."' in retried[0]
    assert re.search(r"^Idempotent-Replayed: true\r?$", result.stdout, re.M | re.I)
