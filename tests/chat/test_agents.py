"""Agents: tokens from the CLI, stored hashed; their API and its separation from customers."""
import hashlib
import logging

import pytest

import models
from support.helpers import AgentClient, assert_error, sign


def add_agent(runner, name, *options):
    result = runner.invoke(args=["agents", "add", name, *options])
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[-1]


def test_cli_token_is_shown_once_and_stored_hashed(runner, app, client):
    token = add_agent(runner, "bob", "--display-name", "Bob from support")
    assert token.startswith("szagent_")
    with app.app_context():
        agent = models.Agent.get(models.Agent.name == "bob")
        assert agent.token_digest == hashlib.sha256(token.encode()).hexdigest()
        assert token not in str(list(models.Agent.select().tuples()))
    listed = runner.invoke(args=["agents", "list"])
    assert "bob\tBob from support" in listed.output and token not in listed.output
    assert AgentClient("bob", token, client).get("/chats").status_code == 200


def test_cli_prints_a_sign_in_link_when_the_public_url_is_set(make_app, client):
    runner = make_app(PUBLIC_URL="https://support.example.com/").test_cli_runner()
    result = runner.invoke(args=["agents", "add", "fay"])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()  # stdout holds the token alone, for scripts
    assert token.startswith("szagent_")
    assert f"https://support.example.com/inbox#token={token}" in result.stderr


def test_cli_prints_no_link_without_a_public_url(runner):
    result = runner.invoke(args=["agents", "add", "gil"])
    assert "inbox#token=" not in result.output


@pytest.mark.parametrize("url", ["ftp://support.example.com", "support.example.com",
                                 "https://support.example.com/?x=1", "https://u@example.com"])
def test_a_public_url_that_is_no_web_address_is_refused(make_app, url):
    with pytest.raises(ValueError, match="PUBLIC_URL"):
        make_app(PUBLIC_URL=url)


def test_cli_rejects_duplicates_and_bad_names(runner):
    add_agent(runner, "carol")
    duplicate = runner.invoke(args=["agents", "add", "carol"])
    assert duplicate.exit_code != 0 and "exists" in duplicate.output
    # me, none and any mean something else in the chat lists' assignee filter.
    for name in ["", "has space", "x" * 65, "semi;colon", "me", "none", "any"]:
        assert runner.invoke(args=["agents", "add", name]).exit_code != 0
    long_display = runner.invoke(args=["agents", "add", "dave", "--display-name", "d" * 201])
    assert long_display.exit_code != 0


def test_removed_agent_token_stops_working_at_once(runner, client, customer):
    token = add_agent(runner, "erin")
    erin = AgentClient("erin", token, client)
    chat_id = customer.create()
    assert erin.reply(chat_id, "hi").status_code == 200

    assert runner.invoke(args=["agents", "remove", "erin"]).exit_code == 0
    assert_error(erin.get("/chats"), 401, "unauthorized")
    assert_error(erin.reply(chat_id, "still here?"), 401, "unauthorized")
    assert "erin" not in runner.invoke(args=["agents", "list"]).output
    assert runner.invoke(args=["agents", "remove", "erin"]).exit_code != 0

    # Re-adding the name gives a new token; the old one stays dead. Old replies keep their author.
    new_token = add_agent(runner, "erin")
    assert new_token != token
    assert_error(erin.get("/chats"), 401, "unauthorized")
    page = AgentClient("erin", new_token, client).get(f"/chats/{chat_id}/messages").json
    assert page["data"]["messages"][1]["agent"]["name"] == "erin"


def test_customer_token_never_works_on_agent_endpoints(customer, client, agent):
    chat_id = customer.create()
    customer_as_agent = AgentClient("x", customer.token, client)
    for response in [customer_as_agent.get("/chats"),
                     customer_as_agent.get(f"/chats/{chat_id}"),
                     customer_as_agent.reply(chat_id, "sneaky")]:
        assert_error(response, 401, "unauthorized")


def test_agent_token_never_works_on_customer_endpoints(customer, agent, client):
    chat_id = customer.create()
    for path, data in [("create", {"created_at": 1, "message": "x"}),
                       ("chat", {"chat_id": chat_id, "message": "x"}),
                       ("messages", {"chat_id": chat_id}), ("list", {})]:
        response = client.post(f"/api/client/live/{path}",
                               json={"data": {"email": customer.email, **data}},
                               headers=agent.headers)
        assert_error(response, 401, "unauthorized")


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer nope", "Basic abc",
                                    "Bearer szagent_" + "a" * 43, "Bearer " + "a" * 64])
def test_agent_auth_failures_are_the_same_401(client, customer, header):
    headers = {"Authorization": header} if header else {}
    response = client.get("/api/agent/chats", headers=headers)
    assert_error(response, 401, "unauthorized")
    reference = client.post("/api/client/live/create", json={"data": {}})
    assert response.get_data() == reference.get_data()


def test_agent_chat_list_filters_and_pages(make_customer, agent):
    customers = [make_customer() for _ in range(5)]
    chat_ids = [c.create(f"chat {n}") for n, c in enumerate(customers)]
    agent.post(f"/chats/{chat_ids[0]}/close")

    open_ids = [c["chatId"] for c in agent.get("/chats").json["data"]["chats"]]
    assert open_ids == chat_ids[:0:-1]  # newest activity first, the closed one left out
    all_ids, before = [], None
    while True:
        params = {"status": "all", "limit": 2, **({"before": before} if before else {})}
        data = agent.get("/chats", **params).json["data"]
        all_ids += [c["chatId"] for c in data["chats"]]
        before = data["next_before"]
        assert data["has_more"] == (before is not None)
        if not before:
            break
    assert sorted(all_ids) == sorted(chat_ids) and len(all_ids) == 5
    assert all_ids[0] == chat_ids[0]  # closing counts as activity

    # A reply moves a chat to the top.
    agent.reply(chat_ids[2], "bump")
    assert agent.get("/chats").json["data"]["chats"][0]["chatId"] == chat_ids[2]


@pytest.mark.parametrize("params,field", [
    ({"status": "pending"}, "status"), ({"limit": "0"}, "limit"), ({"limit": "abc"}, "limit"),
    ({"before": "not-a-cursor"}, "before"), ({"page": "2"}, "page"),
])
def test_agent_chat_list_validation(agent, params, field):
    body = assert_error(agent.get("/chats", **params), 400, "validation_error")
    assert list(body["error"]["fields"]) == [field]


def test_agent_reply_and_read_validation(agent, customer, app):
    chat_id = customer.create()
    for data, field in [({"message": ""}, "message"), ({"message": "x" * 10_001}, "message"),
                        ({"message": "hi", "image_url": "ftp://x.example.com/a"}, "image_url"),
                        ({"message": "hi", "chat_id": chat_id}, "chat_id")]:
        body = assert_error(agent.post(f"/chats/{chat_id}/messages", data), 400,
                            "validation_error")
        assert list(body["error"]["fields"]) == [field]
    for data in [{"seq": 2}, {"seq": -1}, {"seq": "1"}, {}]:
        body = assert_error(agent.post(f"/chats/{chat_id}/read", data), 400, "validation_error")
        assert list(body["error"]["fields"]) == ["seq"]
    assert_error(agent.reply("chat-missing"), 404, "chat_not_found")
    assert_error(agent.get("/chats/chat-missing"), 404, "chat_not_found")
    assert_error(agent.post("/chats/chat-missing/close"), 404, "chat_not_found")
    with app.app_context():
        assert models.Message.select().count() == 1


def test_agents_see_customer_email_but_customers_never_see_agent_names(customer, make_agent):
    quiet = make_agent("quiet-agent")  # no display name
    chat_id = customer.create()
    quiet.reply(chat_id, "hello")
    [_, reply] = customer.poll(chat_id).json["data"]["messages"]
    assert reply["agent_name"] is None
    assert "quiet-agent" not in customer.poll(chat_id).get_data(as_text=True)
    assert quiet.get(f"/chats/{chat_id}").json["data"]["customer"]["email"] == customer.email


def test_agent_token_in_logs_never(agent, customer, caplog):
    """Everything logged while a customer and an agent talk, down to each SQL statement and its
    parameters, holds neither one's token."""
    caplog.set_level(logging.DEBUG)
    chat_id = customer.create()
    agent.reply(chat_id, "hi")
    # The log really holds the requests' work: the statements, with the email and the chat.
    assert 'INSERT INTO "message"' in caplog.text
    assert customer.email in caplog.text and chat_id in caplog.text
    assert agent.token not in caplog.text
    assert sign(customer.email, customer.uuid) not in caplog.text
