"""Delivery events from MTA accounting logs and ESP webhooks: parsed, classified, never raised.

Pure: standard library (plus ``cryptography`` for signature checks), synchronous, no I/O. Each
parser turns one source's records into ``Event`` objects (one per recipient) and ``EventError``
records for input it cannot read; see docs/events.md.
"""
