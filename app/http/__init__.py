"""The HTTP API: app wiring, middleware, request dependencies, error rendering, schemas, and one
route module per resource in ``routes/``.

Sits on top with ``app.cli``: it may import the container and any domain package; nothing but
``app.main`` imports it. Route functions parse, call one service function and shape the answer.
"""
