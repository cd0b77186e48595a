"""The admin API: lets the main SupportZen backend keep our users in step without a shell."""
from flask import Blueprint

from api.envelope import read_data, success
from auth import require_admin
from chat import accounts
from schemas import UserEmailSchema, UserSchema

bp = Blueprint("admin", __name__, url_prefix="/api/admin")

user_schema = UserSchema()
user_email_schema = UserEmailSchema()


@bp.put("/users")
@require_admin
def put_user():
    fields = user_schema.load(read_data())
    user, created = accounts.save_user(fields["email"], fields["uuid"], fields["name"])
    return success("User created." if created else "User updated.",
                   {"email": user.email, "name": user.name, "created": created})


@bp.delete("/users")
@require_admin
def delete_user():
    fields = user_email_schema.load(read_data())
    accounts.remove_user(fields["email"])
    return success("User removed.", {"email": fields["email"], "removed": True})
