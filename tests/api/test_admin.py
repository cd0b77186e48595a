"""PUT / DELETE /api/admin/users: user sync for the main SupportZen backend."""
import pytest

import models
from chat import accounts
from support.helpers import Customer, assert_error

TOKEN = "s3cret-admin-token-with-enough-entropy"
UUID = "123e4567-e89b-12d3-a456-426614174000"
UUID2 = "00000000-0000-4000-8000-000000000002"


@pytest.fixture
def admin_app(make_app):
    return make_app(ADMIN_TOKEN=TOKEN)


@pytest.fixture
def admin(admin_app):
    return admin_app.test_client()


def call(client, method, data, token=TOKEN):
    return client.open("/api/admin/users", method=method, json={"data": data},
                       headers={"Authorization": f"Bearer {token}"})


def test_admin_api_is_off_without_a_token(client):
    assert_error(call(client, "PUT", {"email": "a@example.com", "uuid": UUID}), 404,
                 "not_found")
    assert_error(call(client, "DELETE", {"email": "a@example.com"}), 404, "not_found")


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": f"Basic {TOKEN}"},
                                     {"Authorization": f"Bearer {TOKEN}x"},
                                     {"Authorization": "Bearer é"}])
def test_wrong_admin_token_is_401(admin, headers):
    response = admin.put("/api/admin/users", json={"data": {"email": "a@example.com",
                                                            "uuid": UUID}}, headers=headers)
    assert_error(response, 401, "unauthorized")


def test_customer_token_is_not_an_admin_token(admin, admin_app):
    with admin_app.app_context():
        accounts.save_user("a@example.com", UUID)
    customer = Customer("a@example.com", UUID, admin)
    assert_error(call(admin, "PUT", {"email": "b@example.com", "uuid": UUID}, customer.token),
                 401, "unauthorized")


def test_put_creates_then_updates(admin, admin_app):
    response = call(admin, "PUT", {"email": "New@Example.com", "uuid": UUID, "name": "New"})
    assert response.status_code == 200
    assert response.json == {"status": "success", "message": "User created.",
                             "data": {"email": "new@example.com", "name": "New",
                                      "created": True}, "error": None}
    response = call(admin, "PUT", {"email": "new@example.com", "uuid": UUID2})
    assert response.json["data"] == {"email": "new@example.com", "name": "New",
                                     "created": False}
    assert UUID not in response.get_data(as_text=True)
    assert UUID2 not in response.get_data(as_text=True)
    # The new uuid signs from now on; the old one no longer does.
    assert Customer("new@example.com", UUID2, admin).create()
    old = Customer("new@example.com", UUID, admin).post(
        "/api/client/live/create", {"created_at": 1, "message": "hi"})
    assert_error(old, 401, "unauthorized")


@pytest.mark.parametrize("data,field", [
    ({"email": "x", "uuid": UUID}, "email"),
    ({"email": "a@example.com", "uuid": "nope"}, "uuid"),
    ({"email": "a@example.com"}, "uuid"),
    ({"email": "a@example.com", "uuid": UUID, "name": "n" * 201}, "name"),
    ({"email": "a@example.com", "uuid": UUID, "admin": True}, "admin"),
])
def test_put_validates(admin, data, field):
    body = assert_error(call(admin, "PUT", data), 400, "validation_error")
    assert list(body["error"]["fields"]) == [field]


def test_put_needs_a_json_envelope(admin):
    response = admin.put("/api/admin/users", data="x", content_type="text/plain",
                         headers={"Authorization": f"Bearer {TOKEN}"})
    assert_error(response, 415, "unsupported_media_type")


def test_delete_revokes_access_and_keeps_chats(admin, admin_app):
    call(admin, "PUT", {"email": "gone@example.com", "uuid": UUID})
    customer = Customer("gone@example.com", UUID, admin)
    customer.create()

    response = call(admin, "DELETE", {"email": "GONE@example.com"})
    assert response.status_code == 200
    assert response.json["data"] == {"email": "gone@example.com", "removed": True}
    assert_error(customer.post("/api/client/live/create", {"created_at": 1, "message": "x"}),
                 401, "unauthorized")
    with admin_app.app_context():
        assert models.Chat.select().count() == 1
    assert_error(call(admin, "DELETE", {"email": "gone@example.com"}), 404, "user_not_found")
