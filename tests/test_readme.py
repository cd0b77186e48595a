"""README's examples, pasted in order into a shell against a real server, do what it says."""
import os
import re
import subprocess

import pytest

from helpers import ROOT, running_server


def walk_through_commands(port):
    """Every `sh` block from "Try the spec's example requests" to the customer closing the chat,
    in README order, aimed at the test's server."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as readme:
        text = readme.read()
    start = text.index("### Try the spec's example requests")
    end = text.index("### Retries: `Idempotency-Key`")
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
    assert answers[-1].startswith('{"status":"success","message":"Chat closed."')
