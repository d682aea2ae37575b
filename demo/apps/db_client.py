"""Run inside a web container: reach the db through the local ambassador port."""

import socket

with socket.create_connection(("127.0.0.1", 5432), timeout=3) as conn:
    conn.sendall(b"ping")
    print(conn.recv(1024).decode())
