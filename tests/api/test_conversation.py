"""A whole conversation through both APIs."""
from support.helpers import assert_error


def test_a_whole_conversation(customer, agent):
    # The customer opens a chat.
    chat_id = customer.create("My VPN does not connect", name="Premium Plan", plan_id=5)

    # The agent sees it first in the open list, with the customer and one unread message.
    listed = agent.get("/chats")
    assert listed.status_code == 200
    [summary] = listed.json["data"]["chats"]
    assert summary["chatId"] == chat_id
    assert summary["customer"] == {"email": "user@example.com", "name": "Ada"}
    assert (summary["name"], summary["plan_id"], summary["account_created_at"]) == (
        "Premium Plan", 5, 1679223400)
    assert summary["status"] == "open"
    assert summary["unread"] == 1
    assert summary["last_message"]["preview"] == "My VPN does not connect"
    assert summary["last_message"]["sender"] == "user"

    # The agent reads the messages, marks them read and replies.
    page = agent.get(f"/chats/{chat_id}/messages").json["data"]
    assert [m["message"] for m in page["messages"]] == ["My VPN does not connect"]
    assert agent.post(f"/chats/{chat_id}/read", {"seq": 1}).json["data"]["unread"] == 0
    reply = agent.reply(chat_id, "Which app version do you use?")
    assert reply.status_code == 200
    assert reply.json["message"] == "Reply sent."
    assert reply.json["data"]["seq"] == 2
    assert reply.json["data"]["messageId"].startswith("msg-")

    # The customer polls and sees the reply, with the agent's display name only.
    polled = customer.poll(chat_id).json["data"]
    assert polled["status"] == "open"
    assert [(m["seq"], m["sender"], m["message"]) for m in polled["messages"]] == [
        (1, "user", "My VPN does not connect"), (2, "agent", "Which app version do you use?")]
    assert polled["messages"][1]["agent_name"] == "Alice"
    assert "agent" not in polled["messages"][1]
    assert polled["next_after"] == 2 and polled["has_more"] is False

    # The customer's unread count moves with their read mark.
    assert customer.list().json["data"]["chats"][0]["unread"] == 1
    read = customer.read(chat_id, 2)
    assert read.json["data"] == {"chatId": chat_id, "read_seq": 2, "unread": 0}
    assert customer.list().json["data"]["chats"][0]["unread"] == 0

    # The customer answers; the agents' unread count goes up again.
    assert customer.send(chat_id, "Version 4.2").status_code == 200
    detail = agent.get(f"/chats/{chat_id}").json["data"]
    assert (detail["unread"], detail["last_seq"], detail["agent_read_seq"],
            detail["customer_read_seq"]) == (1, 3, 1, 2)

    # The agent closes the chat: the customer can no longer send into it.
    closed = agent.post(f"/chats/{chat_id}/close")
    assert closed.json["data"] == {"chatId": chat_id, "status": "closed"}
    assert_error(customer.send(chat_id, "hello?"), 409, "chat_closed")
    assert_error(agent.reply(chat_id, "one more thing"), 409, "chat_closed")
    assert customer.poll(chat_id, after=3).json["data"]["status"] == "closed"
    assert agent.get("/chats").json["data"]["chats"] == []
    assert [c["chatId"] for c in agent.get("/chats", status="closed").json["data"]["chats"]] == [
        chat_id]

    # The agent reopens it and the conversation goes on.
    reopened = agent.post(f"/chats/{chat_id}/reopen")
    assert reopened.json["data"] == {"chatId": chat_id, "status": "open"}
    assert customer.send(chat_id, "thanks!").status_code == 200
    final = customer.poll(chat_id, after=3).json["data"]
    assert [m["seq"] for m in final["messages"]] == [4]


def test_customer_close_is_idempotent_and_final_for_them(customer):
    chat_id = customer.create()
    for _ in range(2):
        response = customer.close(chat_id)
        assert response.status_code == 200
        assert response.json["data"] == {"chatId": chat_id, "status": "closed"}
    assert_error(customer.send(chat_id), 409, "chat_closed")
    assert customer.create() != chat_id  # a new conversation starts with create


def test_close_needs_an_own_chat(make_customer):
    alice, bob = make_customer(), make_customer()
    chat_id = alice.create()
    assert_error(bob.close(chat_id), 404, "chat_not_found")
    assert alice.send(chat_id).status_code == 200
