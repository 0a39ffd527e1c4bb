"""The ``stoplist`` command line: one module per command group, assembled in ``app.cli.root``.

Sits on top with ``app.http``: it may import the container and any domain package; nothing imports
it. Commands work on the configured database and cache directly (the same environment variables as
the service), so run them where the service's configuration is.
"""

from app.cli.root import app, main

__all__ = ["app", "main"]
