"""The chat rules: chats and messages, the agents' workspace, users and agents."""
