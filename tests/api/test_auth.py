"""HMAC bearer authentication: one identical 401 for every cause."""
import pytest

import auth
from support.helpers import assert_error, sign

CREATE = "/api/client/live/create"


def create_body(email):
    return {"data": {"email": email, "created_at": 1679223400, "message": "hello"}}


def test_lower_and_upper_case_hex_are_accepted(customer, client):
    for token in (customer.token.lower(), customer.token.upper()):
        response = client.post(CREATE, json=create_body(customer.email),
                               headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200


def test_email_is_looked_up_case_blind_but_signed_as_sent(customer, client):
    sent = "  User@Example.COM "
    response = client.post(CREATE, json=create_body(sent),
                           headers={"Authorization": f"Bearer {sign(sent, customer.uuid)}"})
    assert response.status_code == 200

    signed_normalized = client.post(
        CREATE, json=create_body(sent),
        headers={"Authorization": f"Bearer {sign(customer.email, customer.uuid)}"})
    assert_error(signed_normalized, 401, "unauthorized")


def failing_requests(customer):
    """(reason, headers, email) for every way authentication can fail."""
    good = customer.token
    return [
        ("no header", {}, customer.email),
        ("other scheme", {"Authorization": f"Basic {good}"}, customer.email),
        ("no token", {"Authorization": "Bearer"}, customer.email),
        ("short token", {"Authorization": f"Bearer {good[:-1]}"}, customer.email),
        ("long token", {"Authorization": f"Bearer {good}0"}, customer.email),
        ("non-hex token", {"Authorization": "Bearer " + "g" * 64}, customer.email),
        ("non-ascii token", {"Authorization": "Bearer " + "é" * 64}, customer.email),
        ("no email", {"Authorization": f"Bearer {good}"}, None),
        ("email not a string", {"Authorization": f"Bearer {good}"}, 42),
        ("email with lone surrogate", {"Authorization": f"Bearer {good}"}, "a\ud800@x.com"),
        ("unknown email", {"Authorization": f"Bearer {sign('nobody@example.com', customer.uuid)}"},
         "nobody@example.com"),
        ("wrong hash", {"Authorization": f"Bearer {sign(customer.email, 'not-the-uuid')}"},
         customer.email),
    ]


def test_every_failure_is_the_same_401(customer, client):
    bodies = set()
    for reason, headers, email in failing_requests(customer):
        data = {"created_at": 1, "message": "hello"}
        if email is not None:
            data["email"] = email
        response = client.post(CREATE, json={"data": data}, headers=headers)
        assert_error(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"] == "Bearer", reason
        bodies.add(response.get_data())
    assert len(bodies) == 1


def test_unknown_email_and_wrong_hash_cost_the_same_work(customer, client, monkeypatch):
    """Both paths compute one HMAC, so their timing cannot tell an email exists."""
    calls = []
    real_sign = auth.sign
    monkeypatch.setattr(auth, "sign", lambda key, msg: calls.append(msg) or real_sign(key, msg))
    wrong = "0" * 64
    for email in ("nobody@example.com", customer.email):
        client.post(CREATE, json=create_body(email),
                    headers={"Authorization": f"Bearer {wrong}"})
    assert calls == [b"nobody@example.com", customer.email.encode()]


def test_removed_user_is_refused(customer, client, runner):
    assert runner.invoke(args=["users", "remove", customer.email]).exit_code == 0
    assert_error(customer.post(CREATE, create_body(customer.email)["data"]), 401,
                 "unauthorized")


def test_body_is_parsed_before_authentication(client):
    response = client.post(CREATE, data="not json", content_type="text/plain")
    assert_error(response, 415, "unsupported_media_type")
    response = client.post(CREATE, data="{broken", content_type="application/json")
    assert_error(response, 400, "invalid_json")


def test_authentication_comes_before_validation(client, customer):
    """A stranger learns nothing from field errors: bad fields without a valid token are 401."""
    response = client.post(CREATE, json={"data": {"email": customer.email, "bogus": 1}})
    assert_error(response, 401, "unauthorized")


@pytest.mark.parametrize("path", ["/api/client/live/create", "/api/client/live/chat"])
def test_both_endpoints_require_auth(client, path):
    assert_error(client.post(path, json={"data": {}}), 401, "unauthorized")
