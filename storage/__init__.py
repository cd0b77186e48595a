"""Storage: hand-written queries, migrations, SQLite's checkpoints, database
trouble, copying a database, and watching other processes' changes."""
