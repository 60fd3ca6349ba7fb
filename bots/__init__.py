"""Service core shared by every front end, and its thin adapters (Telegram, Discord, HTTP)."""
