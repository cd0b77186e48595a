"""Every relative link in README.md and docs/*.md leads somewhere: to a file of the repository
and, with a #fragment, to a heading of that file (its anchor as GitHub makes it)."""
import glob
import os
import re

import pytest

from support.helpers import ROOT

DOCUMENTS = ["README.md"] + sorted(
    os.path.relpath(path, ROOT) for path in glob.glob(os.path.join(ROOT, "docs", "*.md")))
# [text](target) and ![alt](target), the target up to a space or the closing parenthesis.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as document:
        return document.read()


def prose(text):
    """The text outside fenced code blocks and inline code (which may span lines)."""
    lines, fenced = [], False
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return re.sub(r"`[^`]*`", "", "\n".join(lines))


def anchor(heading):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path):
    """Every heading's anchor in `path` (a repeated one gets -1, -2, ... as on GitHub)."""
    seen, found = {}, set()
    text, fenced = read(path), False
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        heading = None if fenced else re.match(r"#{1,6} (.*)", line)
        if heading:
            name = anchor(heading.group(1))
            found.add(name if name not in seen else f"{name}-{seen[name]}")
            seen[name] = seen.get(name, 0) + 1
    return found


def links(path):
    return LINK.findall(prose(read(path)))


def relative(target):
    return not re.match(r"(?i)[a-z][a-z0-9+.-]*:", target)  # no https:, mailto:, ...


def test_the_docs_are_all_here():
    assert {"docs/configuration.md", "docs/customer-api.md", "docs/agent-api.md",
            "docs/events-and-webhooks.md", "docs/inbox.md", "docs/operations.md",
            "docs/architecture.md"} <= set(DOCUMENTS)


@pytest.mark.parametrize("path", DOCUMENTS)
def test_every_relative_link_and_anchor_resolves(path):
    checked = 0
    for target in filter(relative, links(path)):
        file_part, _, fragment = target.partition("#")
        linked = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) \
            if file_part else path
        assert os.path.exists(os.path.join(ROOT, linked)), f"{path}: {target}: no such file"
        if fragment:
            assert linked.endswith(".md"), f"{path}: {target}: an anchor into a non-document"
            assert fragment in anchors(linked), f"{path}: {target}: no such heading"
        checked += 1
    assert checked, f"{path} links nowhere"


def test_the_anchors_are_made_as_github_makes_them():
    assert anchor("`POST /api/client/live/messages`: poll for messages") == \
        "post-apiclientlivemessages-poll-for-messages"
    assert anchor("The agents' workspace") == "the-agents-workspace"
    assert anchor("Long-polls, threads and sizing") == "long-polls-threads-and-sizing"


def test_the_readme_is_a_front_door():
    """What it is, a picture, two commands, a first five minutes and links: about 200 lines;
    and nothing it cites lies outside the repository."""
    readme = read("README.md")
    assert len(readme.splitlines()) <= 200
    assert "shared/spec" not in readme and "live-chat-api.md" not in readme
    for document in DOCUMENTS[1:]:
        assert f"]({document})" in readme, document
