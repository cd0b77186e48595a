"""What the tests share: clients, servers in child processes, receivers, raw polls."""
