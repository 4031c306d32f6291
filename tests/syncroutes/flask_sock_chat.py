"""A chat as flask-sock's documentation writes one (a set of clients, each message sent to all),
for comparison only: `chat.py` beside it is the same app on Switchboard."""

from flask import Flask
from flask_sock import ConnectionClosed, Sock

app = Flask(__name__)
sock = Sock(app)
clients = set()


@sock.route("/chat")
def chat(ws):
    clients.add(ws)
    try:
        while True:
            message = ws.receive()
            for client in list(clients):
                try:
                    client.send(message)
                except ConnectionClosed:
                    clients.discard(client)
    finally:
        clients.discard(ws)
