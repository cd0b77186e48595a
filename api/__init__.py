"""The HTTP API: the customer, agent and admin views, the envelope and the error
table, answer shapes, idempotent retries, rate limits, long-polls, OpenAPI."""
