"""The Pusher Channels protocol (version 7) and HTTP API on the hub, for unchanged Pusher clients.

apps.py (configuration, channel namespaces), signing.py (channel auth and request signatures),
codec.py (frames), session.py (connections), webhooks.py (the dispatcher), service.py (all of it
for one hub). No Flask here: routes/pusher.py is the thin route. See docs/pusher.md.
"""
