"""Concurrent senders against a real waitress server on a SQLite file."""
import threading
import uuid

import requests

import models

from conftest import running_server, sign

THREADS = 16
MESSAGES_PER_THREAD = 25
CHATS = 4


def test_concurrent_sends_lose_nothing_and_number_gap_free(tmp_path, database_url, app):
    customers = []
    with app.app_context():
        for number in range(CHATS):
            email, key = f"c{number}@example.com", str(uuid.uuid4())
            models.save_user(email, key)
            customers.append((email, sign(email, key)))
    models.database.close_all()

    acknowledged, failures = [], []
    with running_server(tmp_path, database_url, env={"WAITRESS_THREADS": "8"}) as server:
        chats = []
        for email, token in customers:
            response = requests.post(f"{server.url}/api/client/live/create", timeout=10, json={
                "data": {"email": email, "created_at": 1, "message": "first"}},
                headers={"Authorization": f"Bearer {token}"})
            chats.append(response.json()["data"]["chatId"])

        def sender(thread):
            email, token = customers[thread % CHATS]
            with requests.Session() as session:
                for number in range(MESSAGES_PER_THREAD):
                    try:
                        response = session.post(
                            f"{server.url}/api/client/live/chat", timeout=30,
                            json={"data": {"chat_id": chats[thread % CHATS], "email": email,
                                           "message": f"thread {thread} message {number}"}},
                            headers={"Authorization": f"Bearer {token}"})
                    except requests.RequestException as error:
                        failures.append(repr(error))
                        continue
                    if response.status_code == 200:
                        acknowledged.append(response.json()["data"]["messageId"])
                    else:
                        failures.append(response.text)

        threads = [threading.Thread(target=sender, args=(n,)) for n in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert "Traceback" not in server.log()

    assert failures == []
    assert len(acknowledged) == THREADS * MESSAGES_PER_THREAD
    with app.app_context():
        stored = {m.public_id for m in models.Message.select(models.Message.public_id)}
        assert set(acknowledged) <= stored
        per_chat = THREADS // CHATS * MESSAGES_PER_THREAD + 1
        for chat_id in chats:
            chat = models.Chat.get(models.Chat.public_id == chat_id)
            seqs = [m.seq for m in chat.messages.order_by(models.Message.seq)]
            assert seqs == list(range(1, per_chat + 1))
            assert chat.last_seq == per_chat
