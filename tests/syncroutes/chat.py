"""A flask-sock chat moved to Switchboard: only the import differs from `flask_sock_chat.py`.
Run: gunicorn -k switchboard_server.Worker tests.syncroutes.chat:app"""

from flask import Flask

from switchboard_server.sync import ConnectionClosed, Sock

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
