"""A database as the first release (the two spec endpoints) left it, for the tests of upgrades."""
import datetime

import models
from storage import migrations

UUID = "123e4567-e89b-12d3-a456-426614174000"


def build_version_1(database_url, record_version):
    """The schema and data the first release (two spec endpoints) left behind."""
    models.configure_database(database_url)
    migrations.upgrade(target=1)
    v1 = migrations.version_1
    with models.database.bind_ctx([migrations.SchemaVersion, *v1.models]):
        now = datetime.datetime(2026, 1, 2, 3, 4, 5)
        user = v1.User.create(email="old@example.com", uuid=UUID, name="Old",
                                        created_at=now, updated_at=now)
        for number in range(3):
            chat = v1.Chat.create(
                public_id=f"chat-legacy-{number:017d}", user=user, status="open",
                name="Basic Plan", plan_id=1, account_created_at=1600000000, last_seq=2,
                created_at=now, updated_at=now + datetime.timedelta(minutes=number))
            for seq in (1, 2):
                v1.Message.create(
                    public_id=f"msg-legacy-{number}-{seq:013d}", chat=chat, seq=seq,
                    sender="user", body=f"chat {number} message {seq}", image_url=None,
                    created_at=now)
        if not record_version:  # the first release kept no schema_version table
            models.database.drop_tables([migrations.SchemaVersion])
    assert set(models.database.get_tables()) >= {"user", "chat", "message"}
    assert "agent" not in models.database.get_tables()
    models.database.close_all()
