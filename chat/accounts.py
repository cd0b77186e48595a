"""Users and agents: who may call the API, as the CLI and the admin API provision them and as
every request looks them up."""
import hashlib
import secrets
import string

from models import AGENT_TOKEN_PREFIX, MAX_EMAIL_LENGTH, Agent, User, utcnow, write_transaction
from storage import queries


class UserNotFound(Exception):
    """No active user has that email."""


# --- users -------------------------------------------------------------------------------

ASCII_WHITESPACE = string.whitespace  # space, tab, LF, CR, VT, FF: nothing beyond ASCII
ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def normalize_email(email):
    """The email as users are stored and looked up: ASCII whitespace stripped from both ends,
    ASCII letters lower-cased, and nothing else. Unicode case folding or compatibility mapping
    would make look-alikes one user (KELVIN SIGN lower-cases to "k", and `str.strip` drops an
    IDEOGRAPHIC SPACE), so that provisioning one of them would take over another's account."""
    return email.strip(ASCII_WHITESPACE).translate(ASCII_LOWER)


def is_possible_email(email):
    """Whether a stored email could be this one (from a request, unvalidated): a text with no
    NUL (PostgreSQL refuses one outright) nor lone surrogate (no driver can send one), no
    longer once normalized than a provisioned email may be (in characters, not bytes: a
    valid address of many non-ASCII letters must sign in)."""
    if not isinstance(email, str) or "\x00" in email:
        return False
    try:
        email.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return 0 < len(normalize_email(email)) <= MAX_EMAIL_LENGTH


def find_active_user(email):
    """The user who may sign in with this email, as an `ActiveUser` row, or None (every
    customer request asks)."""
    return queries.FIND_ACTIVE_USER.one(normalize_email(email))


def save_user(email, uuid, name=None):
    """Add a user, or give an existing email a new uuid (and name). Returns (user, created)."""
    email = normalize_email(email)
    with write_transaction():
        user = User.get_or_none(User.email == email)
        if user is None:
            return User.create(email=email, uuid=uuid, name=name), True
        user.uuid = uuid
        if name is not None:
            user.name = name
        user.updated_at = utcnow()
        user.save()
        return user, False


def remove_user(email):
    """Revoke a user's access at once; their chats stay for the agents. Raises `UserNotFound`
    when no active user has that email."""
    removed = (User.update(uuid=None, updated_at=utcnow())
               .where((User.email == normalize_email(email)) & User.uuid.is_null(False))
               .execute())
    if not removed:
        raise UserNotFound(normalize_email(email))


def active_users():
    return User.select().where(User.uuid.is_null(False)).order_by(User.email)


def has_active_users():
    return active_users().exists()


# --- agents ------------------------------------------------------------------------------

class AgentExists(Exception):
    """An active agent already has that name."""


class ReservedAgentName(Exception):
    """A name the chat lists' assignee filter gives another meaning (assignee=me|none|any)."""


RESERVED_AGENT_NAMES = {"me", "none", "any"}


def digest_token(token):
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def add_agent(name, display_name=None):
    """A new agent (or a removed one back) with a fresh token, returned once, never stored."""
    if name in RESERVED_AGENT_NAMES:
        raise ReservedAgentName(name)
    token = AGENT_TOKEN_PREFIX + secrets.token_urlsafe(32)
    with write_transaction():
        agent = Agent.get_or_none(Agent.name == name)
        if agent is not None and agent.token_digest is not None:
            raise AgentExists(name)
        if agent is None:
            agent = Agent(name=name)
        agent.display_name = display_name
        agent.token_digest = digest_token(token)
        agent.save()
    return agent, token


def remove_agent(name):
    """Revoke an agent's token at once; their messages keep their author."""
    return bool(Agent.update(token_digest=None)
                .where((Agent.name == name) & Agent.token_digest.is_null(False)).execute())


def active_agents():
    return Agent.select().where(Agent.token_digest.is_null(False)).order_by(Agent.name)


def find_agent_by_digest(token_digest):
    """The active agent with this token digest, as an `ActiveAgent` row, or None (every agent
    request asks)."""
    return queries.FIND_AGENT.one(token_digest)
