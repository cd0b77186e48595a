"""The examples of README.md and docs/, pasted in order into a shell against a real server, do
what they say."""
import os
import re
import subprocess

import pytest
import requests

from support.helpers import ROOT, running_server

# The walk-through of the two APIs: the customer opens a chat and writes, the agent answers
# and works in the chat, then the customer reads the reply, closes the chat and retries a
# create. (file, from heading, to heading): every `sh` block between, in this order.
WALK_THROUGH = [
    ("docs/customer-api.md", "## Trying the examples", "## `POST /api/client/live/messages`"),
    ("docs/agent-api.md", "## Chats and messages", "## Following every change"),
    ("docs/customer-api.md", "## `POST /api/client/live/messages`", "## Long-polling"),
]
# The README's first five minutes: add a customer and an agent, write as the customer; then
# (after the agent has answered from the inbox) see the reply as the customer's app does.
FIRST_FIVE_MINUTES = ("README.md", "## The first five minutes", "## Documentation")


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as document:
        return document.read()


def sh_blocks(path, start, end):
    """The `sh` blocks of `path` from the heading `start` to the heading `end`."""
    text = read(path)
    section = text[text.index(start):text.index(end)]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def aimed_at(port, commands):
    return "\n".join(commands).replace("localhost:8080", f"127.0.0.1:{port}")


def walk_through_commands(port):
    """Every `sh` block of the walk-through, in its order, aimed at the test's server."""
    return aimed_at(port, [block for part in WALK_THROUGH for block in sh_blocks(*part)])


def run_script(script, database_url):
    return subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DATABASE_URL": database_url})


@pytest.mark.slow
def test_the_examples_run_in_order(tmp_path, database_url):
    with running_server(tmp_path, database_url) as server:
        port = server.url.rsplit(":", 1)[1]
        result = run_script(walk_through_commands(port), database_url)
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


@pytest.mark.slow
def test_the_first_five_minutes_run_as_the_readme_says(tmp_path, database_url):
    *before_the_answer, see_the_answer = sh_blocks(*FIRST_FIVE_MINUTES)
    with running_server(tmp_path, database_url) as server:
        port = server.url.rsplit(":", 1)[1]
        # Steps 1 to 3, then the shell's variables ($TOKEN, $CHAT) for step 5.
        first = run_script(aimed_at(port, before_the_answer) + "\ndeclare -p TOKEN CHAT",
                           database_url)
        assert first.returncode == 0, first.stderr
        link = re.search(rf"sign-in link .*: (http://127\.0\.0\.1:{port}/inbox#token=(\S+))$",
                         first.stderr, re.M)
        assert link, first.stderr
        assert requests.get(link.group(1).split("#")[0], timeout=10).status_code == 200
        created = re.search(r'^\{"status":"success","message":"Live chat session created '
                            r'successfully\.","data":\{"chatId":"(chat-[^"]+)"', first.stdout,
                            re.M)
        assert created, first.stdout
        # Step 4, as the inbox does it: Ann answers over the agent API with her token.
        reply = requests.post(f"{server.url}/api/agent/chats/{created.group(1)}/messages",
                              json={"data": {"message": "Happy to help!"}}, timeout=10,
                              headers={"Authorization": f"Bearer {link.group(2)}"})
        assert reply.status_code == 200, reply.text
        variables = "\n".join(line for line in first.stdout.splitlines()
                              if line.startswith("declare "))
        second = run_script(variables + "\n" + aimed_at(port, [see_the_answer]), database_url)
    assert second.returncode == 0, second.stderr
    assert re.search(r'"seq":2,"sender":"agent","message":"Happy to help!".*'
                     r'"agent_name":"Ann"', second.stdout), second.stdout


def test_ci_runs_the_test_command_the_readme_gives():
    (command,) = sh_blocks("README.md", "## Run the tests", "## The first five minutes")
    assert command.strip() in read(".ci/run").splitlines()
