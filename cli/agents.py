"""`flask --app app agents ...`: support agents and their tokens."""
import re

import click
from flask import current_app
from flask.cli import AppGroup

from chat import accounts
from cli.common import needs_current_schema
from schemas import MAX_NAME_LENGTH

group = AppGroup("agents", help="Add, list and remove support agents and their tokens.")
AGENT_NAME = re.compile(r"\A[A-Za-z0-9._@-]{1,64}\Z")


@group.command("add")
@click.argument("name")
@click.option("--display-name", default=None, help="The name customers see on replies.")
@needs_current_schema
def add_agent(name, display_name):
    """Add agent NAME and print its new token (shown this once, stored only as a digest)."""
    if not AGENT_NAME.match(name):
        raise click.ClickException("NAME must be 1 to 64 letters, digits or . _ @ -")
    if display_name is not None and not 0 < len(display_name) <= MAX_NAME_LENGTH:
        raise click.ClickException(f"--display-name must be 1 to {MAX_NAME_LENGTH} characters")
    try:
        agent, token = accounts.add_agent(name, display_name)
    except accounts.AgentExists:
        raise click.ClickException(f"an agent named {name} exists; remove it first") from None
    except accounts.ReservedAgentName:
        raise click.ClickException(f"NAME cannot be {name}: the chat lists' assignee filter "
                                   "uses it (assignee=me|none|any)") from None
    click.echo(f"added agent {agent.name}; its token (shown only now):", err=True)
    click.echo(token)
    public_url = current_app.config["PUBLIC_URL"]
    if public_url:
        # The token rides in the fragment, which browsers never send to a server or its logs.
        # (On stderr, like the line above: `TOKEN=$(flask agents add ann)` still gets the
        # token alone.)
        click.echo(f"sign-in link (as secret as the token): {public_url}/inbox#token={token}",
                   err=True)


@group.command("list")
@needs_current_schema
def list_agents():
    """List the active agents (never their tokens)."""
    for agent in accounts.active_agents():
        click.echo(f"{agent.name}\t{agent.display_name or ''}\t{agent.created_at:%Y-%m-%d}")


@group.command("remove")
@click.argument("name")
@needs_current_schema
def remove_agent(name):
    """Revoke agent NAME's token at once (its replies keep their author)."""
    if not accounts.remove_agent(name):
        raise click.ClickException(f"no active agent is named {name}")
    click.echo(f"removed agent {name}")
