"""The chat of the article: a Flask app with its own login and database, real time through Switchboard.

Run it from the repository root (docs/example-chat.md):

    gunicorn -k switchboard_server.Worker -b 127.0.0.1:8001 'examples.chat.app:create_app()'
"""
