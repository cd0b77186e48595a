"""Browsers on listed origins may call the customer API; nobody else gets CORS headers."""
import pytest

ORIGIN = "https://app.example.com"


@pytest.fixture
def cors_client(make_app):
    return make_app(CORS_ORIGINS=f"{ORIGIN}, https://other.example.com").test_client()


def preflight(client, origin):
    return client.options("/api/client/live/chat", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Authorization, Content-Type"})


def test_preflight_from_listed_origin_allows_auth_and_json(cors_client):
    response = preflight(cors_client, ORIGIN)
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


def test_actual_request_from_listed_origin_is_readable(cors_client):
    response = cors_client.post("/api/client/live/create", json={"data": {}},
                                headers={"Origin": ORIGIN})
    assert response.status_code == 401
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN


def test_unlisted_origin_gets_no_cors_headers(cors_client):
    response = preflight(cors_client, "https://evil.example.net")
    assert "Access-Control-Allow-Origin" not in response.headers
    response = cors_client.post("/api/client/live/create", json={"data": {}},
                                headers={"Origin": "https://evil.example.net"})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_no_origin_is_allowed_by_default(client):
    response = preflight(client, ORIGIN)
    assert "Access-Control-Allow-Origin" not in response.headers
