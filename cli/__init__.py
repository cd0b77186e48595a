"""`flask --app app users|agents|db|webhooks ...`: one module per command group.

Commands neither migrate the schema nor start the server's background threads: `db upgrade`
alone changes the schema, and every other command that reads or writes data first checks that
the schema is the one this release needs.
"""
