"""Durable state: SQLite metadata, blob store, job queue. See issue "Service core and storage/"."""
