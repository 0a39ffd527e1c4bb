"""Stoplist service: everything with I/O (settings, storage, cache, API, SMTP sink, CLI)."""
