"""A demo "db": a TCP echo server that answers with its hostname."""

import socket
import socketserver


class Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.sendall(socket.gethostname().encode() + b": " + self.request.recv(1024))


socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("", 5432), Echo).serve_forever()
