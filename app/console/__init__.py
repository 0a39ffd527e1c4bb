"""The support console: server-rendered pages at ``/`` where support staff sign in with an API key,
find an address and see why it is blocked, unblock or block it, browse, export and import the list,
and look at intake and keys.

It has no rules of its own: every answer comes from the services the API calls
(``app.suppression``, ``app.bulk``, ``app.keys``, ``app.intake``). ``sessions`` keeps the
server-side sessions (SQL on ``console_sessions``) and the sign-in throttle; ``jobs`` the imports'
progress and results (``console_imports``); ``web`` the route class
(security headers, HTML errors), templates, session and CSRF checks; ``pages_*`` the routes.

May import: everything below ``app.http`` (the container's services included) and
``app.http.deps`` for the services dependency. Never ``app.main`` or the CLI.
"""
