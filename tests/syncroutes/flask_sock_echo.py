"""flask-sock's echo example as its README shows it, for comparison only: `echo.py` beside it is
the same app on Switchboard, and the tests check the two differ in the import alone."""

from flask import Flask
from flask_sock import Sock

app = Flask(__name__)
sock = Sock(app)


@sock.route("/echo")
def echo(ws):
    while True:
        data = ws.receive()
        ws.send(data)
