"""Outbound events: the transactional outbox (``outbox``: written by ``app.suppression`` and
``app.feedback`` in the transaction of each change), the sequencer that orders committed events
for the pull feed and fans them out to subscriptions, the signed delivery worker (Standard
Webhooks), the subscription store and the SSRF guard.

``app.webhooks.outbox`` sits with the models (it imports only ``app.models``) so the writers of
history can call it; the rest imports ``app.models``, ``app.db``, ``app.settings``,
``app.metrics`` and ``app.errors`` only, never a flow or the container."""
