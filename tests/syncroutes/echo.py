"""flask-sock's echo example moved to Switchboard: only the import differs from
`flask_sock_echo.py`. Run: gunicorn -k switchboard_server.Worker tests.syncroutes.echo:app"""

from flask import Flask

from switchboard_server.sync import Sock

app = Flask(__name__)
sock = Sock(app)


@sock.route("/echo")
def echo(ws):
    while True:
        data = ws.receive()
        ws.send(data)
