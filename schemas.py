"""Validation of every request's `data` object (marshmallow 4).

Limits live here, not in views. Unknown fields are rejected. Strings refuse NUL characters
(PostgreSQL cannot store them) and lone surrogates (no database can encode them), so whatever
passes here can be stored on either backend.
"""
import re
import unicodedata
from urllib.parse import urlsplit

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from chat.accounts import normalize_email
from chat.workspace import SHORTCUT
from models import MAX_EMAIL_LENGTH, MAX_PUBLIC_ID_LENGTH

MAX_MESSAGE_LENGTH = 10_000
MAX_NAME_LENGTH = 200
MAX_URL_LENGTH = 2_048
MAX_PLAN_ID = 2**63 - 1
MAX_UNIX_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
UUID_PATTERN = "[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}"


def storable_text(value):
    if "\x00" in value:
        raise ValidationError("Must not contain NUL characters.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("Must be valid Unicode text.") from None


def uuid_shape(value):
    if not re.fullmatch(UUID_PATTERN, value):
        raise ValidationError("Must be a UUID: 8-4-4-4-12 hexadecimal digits.")


# Letters that show as nothing (Hangul fillers, the braille blank, the Mongolian vowel
# separator).
INVISIBLE_LETTERS = "\u115f\u1160\u180e\u2800\u3164\uffa0"
# Unicode's Default_Ignorable_Code_Point characters beyond the format characters: the
# combining grapheme joiner, Khmer's inherent vowels, the variation selectors (and their
# supplement), and the code points reserved as ignorable (U+FFF0-FFF8, U+E0000-E0FFF).
IGNORABLE_RANGES = ((0x034F, 0x034F), (0x17B4, 0x17B5), (0x180B, 0x180F), (0xFE00, 0xFE0F),
                    (0xFFF0, 0xFFF8), (0xE0000, 0xE0FFF))
# The planes that hold format characters (the tags, U+E0000 on, can hide a whole text).
PLANES_WITH_FORMAT_CHARACTERS = (range(0x20000), range(0xE0000, 0xE1000))


def invisible_characters():
    """A regular expression's character class (without the brackets) of the characters that
    show as nothing or reorder what is shown: format characters (ZERO WIDTH SPACE, direction
    marks and overrides, the byte-order mark, soft hyphens, tags), the line and paragraph
    separators, the invisible letters, and the rest of Unicode's default-ignorable code points
    (variation selectors, the combining grapheme joiner). One rule for a message that is blank
    and for what the logs escape (api/errors.py `printable`)."""
    chars = {chr(code) for plane in PLANES_WITH_FORMAT_CHARACTERS for code in plane
             if unicodedata.category(chr(code)) in ("Cf", "Zl", "Zp")} | set(INVISIBLE_LETTERS)
    chars |= {chr(code) for first, last in IGNORABLE_RANGES for code in range(first, last + 1)}
    return "".join(re.escape(first) if first == last else f"{re.escape(first)}-{re.escape(last)}"
                   for first, last in runs(sorted(chars)))


def runs(chars):
    """(first, last) of each run of consecutive code points in sorted `chars`. As ranges the
    class stays a few dozen items: written out char by char, the 4,096 reserved code points
    from U+E0000 on made every match test them one by one, a millisecond per log line."""
    found = []
    for char in chars:
        if found and ord(char) == ord(found[-1][1]) + 1:
            found[-1][1] = char
        else:
            found.append([char, char])
    return [tuple(run) for run in found]


INVISIBLE_CHARACTERS = invisible_characters()
BLANK = re.compile(rf"[\s{INVISIBLE_CHARACTERS}]*")


def not_blank(value):
    """Some character besides spaces and invisible ones (`invisible_characters`). (Other
    controls stay valid text: they are escaped wherever they are shown.)"""
    if BLANK.fullmatch(value):
        raise ValidationError("Must not be blank.")


def public_host(value):
    """Images are shown to agents: a link to the agent's own machine is never what was meant."""
    host = (urlsplit(value).hostname or "").rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        raise ValidationError("Must be a public http or https URL.")


class Text(fields.String):
    """A string field whose value any backend can store."""

    def __init__(self, *, max_length, min_length=None, **kwargs):
        validators = [validate.Length(min=min_length, max=max_length), storable_text]
        validators += kwargs.pop("validate", [])
        super().__init__(validate=validators, **kwargs)


class StrictFloat(fields.Float):
    """A JSON number: unlike `fields.Float`, a numeric string such as "12" is refused."""

    def _validated(self, value):
        if isinstance(value, str):
            raise self.make_error("invalid")
        return super()._validated(value)


class QueryInteger(fields.Integer):
    """A whole number from a query string: ASCII digits only ("5", "-5"). `int()` alone also
    takes other scripts' digits, fullwidth ones ("\uff11") and underscores ("1_0")."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str) and not re.fullmatch(r"[+-]?[0-9]+", value, re.ASCII):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class QueryFloat(fields.Float):
    """A number from a query string: ASCII digits, an optional decimal part and exponent
    ("2", "0.5", ".5", "1e1"); `float()` alone also reads other scripts' digits."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str) and not re.fullmatch(
                r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?", value, re.ASCII):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


def no_look_alikes(value):
    """marshmallow's Email takes any character from U+00A1 on as a letter. Refused here: what
    only looks like an address someone else has, since it would be a second, confusable user
    (emails are matched exactly, but for ASCII case): spaces and invisible characters (Unicode
    separators, controls, format characters such as ZERO WIDTH SPACE, unassigned code points),
    and compatibility characters, which NFKC maps to others (KELVIN SIGN to "K", fullwidth
    letters to ASCII). Letters such as "é" stay valid."""
    if value.isascii() and value.isprintable():  # the usual address: nothing to look like
        return
    for char in value:
        if unicodedata.category(char)[0] in "ZC" or unicodedata.normalize("NFKC", char) != char:
            raise ValidationError(f"Must not contain the character U+{ord(char):04X}.")


class NormalizedEmail(fields.Email):
    """An email address, normalized as users are stored (`accounts.normalize_email`)."""

    def __init__(self, **kwargs):
        super().__init__(validate=[validate.Length(max=MAX_EMAIL_LENGTH), storable_text,
                                   no_look_alikes], **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            value = normalize_email(value)
        return super()._deserialize(value, attr, data, **kwargs)


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


def message_field():
    return Text(required=True, min_length=1, max_length=MAX_MESSAGE_LENGTH, validate=[not_blank])


def image_url_field():
    return fields.Url(load_default=None, allow_none=True, schemes={"http", "https"},
                      validate=[validate.Length(max=MAX_URL_LENGTH), storable_text,
                                public_host])


def chat_id_field():
    return Text(required=True, min_length=1, max_length=MAX_PUBLIC_ID_LENGTH)


class CreateChatSchema(StrictSchema):
    email = NormalizedEmail(required=True)
    name = Text(load_default=None, allow_none=True, max_length=MAX_NAME_LENGTH)
    plan_id = fields.Integer(load_default=None, allow_none=True, strict=True,
                             validate=validate.Range(min=0, max=MAX_PLAN_ID))
    created_at = StrictFloat(required=True, allow_nan=False,
                             validate=validate.Range(min=0, max=MAX_UNIX_SECONDS))
    message = message_field()
    image_url = image_url_field()


class SendMessageSchema(StrictSchema):
    chat_id = chat_id_field()
    email = NormalizedEmail(required=True)
    message = message_field()
    image_url = image_url_field()


class UserSchema(StrictSchema):
    """A user as provisioned by the CLI or the admin API."""

    email = NormalizedEmail(required=True)
    uuid = fields.String(required=True, validate=uuid_shape,
                         metadata={"pattern": f"^{UUID_PATTERN}$"})
    name = Text(load_default=None, allow_none=True, max_length=MAX_NAME_LENGTH)


class UserEmailSchema(StrictSchema):
    email = NormalizedEmail(required=True)


# --- two-way chat ------------------------------------------------------------------------

MAX_SEQ = 2**31 - 1
MAX_PAGE_SIZE = 100
DEFAULT_MESSAGE_PAGE = 50
DEFAULT_CHAT_PAGE = 20
MAX_WAIT_SECONDS = 25
MAX_CURSOR_LENGTH = 200
MAX_EVENT_ID = 2**63 - 1
MAX_AGENT_NAME_LENGTH = 64


def integer_field(strict):
    """JSON bodies take integers only (`strict`); query strings take ASCII digits."""
    return fields.Integer if strict else QueryInteger


def after_field(strict=True):
    return integer_field(strict)(strict=strict, load_default=0, validate=validate.Range(0, MAX_SEQ))


def limit_field(default, strict=True):
    return integer_field(strict)(strict=strict, load_default=default,
                          validate=validate.Range(1, MAX_PAGE_SIZE))


def seq_field(strict=True):
    return integer_field(strict)(strict=strict, required=True, validate=validate.Range(0, MAX_SEQ))


def wait_field(float_field=StrictFloat):
    return float_field(load_default=0, allow_nan=False,
                       validate=validate.Range(0, MAX_WAIT_SECONDS))


def status_field(default):
    return fields.String(load_default=default,
                         validate=validate.OneOf(["open", "closed", "all"]))


def cursor_field():
    return Text(load_default=None, allow_none=True, min_length=1, max_length=MAX_CURSOR_LENGTH)


class ChatRefSchema(StrictSchema):
    chat_id = chat_id_field()
    email = NormalizedEmail(required=True)


class PollSchema(ChatRefSchema):
    after = after_field()
    limit = limit_field(DEFAULT_MESSAGE_PAGE)
    wait = wait_field()


class ReadSchema(ChatRefSchema):
    seq = seq_field()


class ListChatsSchema(StrictSchema):
    email = NormalizedEmail(required=True)
    status = status_field("all")
    limit = limit_field(DEFAULT_CHAT_PAGE)
    before = cursor_field()


# Agent GETs take query strings, where every value is text: these schemas convert "5" to 5.

class AgentChatsQuery(StrictSchema):
    status = status_field("open")
    limit = limit_field(DEFAULT_CHAT_PAGE, strict=False)
    before = cursor_field()
    # me, none, any, or an agent's name (agent names are never one of those three words)
    assignee = Text(load_default="any", min_length=1, max_length=MAX_AGENT_NAME_LENGTH)
    sort = fields.String(load_default="recent", validate=validate.OneOf(["recent", "waiting"]))


class AgentMessagesQuery(StrictSchema):
    after = after_field(strict=False)
    limit = limit_field(DEFAULT_MESSAGE_PAGE, strict=False)
    wait = wait_field(QueryFloat)


class AgentEventsQuery(StrictSchema):
    # No `after`: from the newest event on (a new reader's starting point).
    after = QueryInteger(strict=False, load_default=None, validate=validate.Range(0, MAX_EVENT_ID))
    limit = limit_field(MAX_PAGE_SIZE, strict=False)
    wait = wait_field(QueryFloat)


class AgentReplySchema(StrictSchema):
    message = message_field()
    image_url = image_url_field()


class AgentReadSchema(StrictSchema):
    seq = seq_field()


class NoQuery(StrictSchema):
    """A GET that takes no parameters: one it is given is refused, not silently ignored (a
    client asking /chats/counts?status=closed must not believe it got closed chats)."""


class AssignSchema(StrictSchema):
    agent = Text(required=True, allow_none=True, min_length=1,
                 max_length=MAX_AGENT_NAME_LENGTH)


class NoteSchema(StrictSchema):
    message = message_field()


class NotesQuery(StrictSchema):
    after = QueryInteger(strict=False, load_default=0, validate=validate.Range(0, MAX_EVENT_ID))
    limit = limit_field(MAX_PAGE_SIZE, strict=False)


def shortcut_shape(value):
    if not SHORTCUT.fullmatch(value):
        raise ValidationError("Must be 1 to 32 letters, digits, - or _.")


class RepliesQuery(StrictSchema):
    # The shortcut to go on after (a page's `next_after`): one a shortcut could be.
    after = fields.String(load_default=None, validate=shortcut_shape)


class SavedReplySchema(StrictSchema):
    text = message_field()


class CustomerChatsQuery(StrictSchema):
    limit = limit_field(DEFAULT_CHAT_PAGE, strict=False)
    before = cursor_field()
