#!/usr/bin/env python3
"""A real server behind a Switchyard host: HTTP/1.0, one thread per connection, known content, slowly.

    GET /data?id=ID&size=BYTES&chunks=N&delay=SECONDS
      200, Content-Length BYTES, X-Backend NAME, then content.body(ID, BYTES) in N writes with
      SECONDS of sleep between two writes; the connection closes after the body.

    POST /echo?id=ID&chunks=N&delay=SECONDS   (egress.sh: the external server beyond the router)
      reads the request body (Content-Length bytes), then answers 200 with the same bytes, in N
      writes SECONDS apart, like GET; the log's `received` is the SHA-256 of the body it read.

    --udp: UDP datagrams `ID` newline BODY on the same address and port are echoed (BODY back, one
      datagram), logged like a POST /echo (with "protocol": "udp").

Every response is logged as two JSON lines (each flushed at once) to --log, one when the request
arrives and one when the body is written or the connection failed:

    {"event": "start", "backend": "b1", "id": "s1-17", "client": "198.18.1.2", "port": 40312, ...}
    {"event": "end", "backend": "b1", "id": "s1-17", "client": "198.18.1.2", "port": 40312,
     "bytes": 1048576, "sha256": "...", "complete": true, "error": "", "start": 1700000000.1, "end": 1700000040.3}

`client`/`port` are the peer as the server sees it, which is the client's own address and port
(Switchyard rewrites only the destination), so the log ties every connection to its backend and so
to the host that owns it. Behind the router (egress.sh) it is the source after egress-translate:
the egress address and the port the resource's host gave the connection. `sha256` is the digest of the bytes actually written; `complete` says all
of them were. The server prints `ready` on standard output once it listens.
"""
import argparse
import hashlib
import http.server
import json
import os
import socket
import socketserver
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import content  # noqa: E402


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # bursts of new connections must not overflow the accept queue


def make_log(log_file):
    """A function that appends one JSON line to the log, whole, from any thread."""
    lock = threading.Lock()

    def log(record):
        line = json.dumps(record, sort_keys=True) + "\n"
        with lock:
            log_file.write(line)
            log_file.flush()

    return log


def serve_udp(address, port, backend, log):
    """--udp: each datagram is `ID` newline body; the body goes back to the sender as one
    datagram, logged as a start and an end line like a TCP echo (one datagram, one exchange)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, port))
    while True:
        data, peer = sock.recvfrom(65535)
        identifier, _, body = data.partition(b"\n")
        record = {"event": "start", "backend": backend, "id": identifier.decode(errors="replace"), "client": peer[0],
                  "port": peer[1], "bytes": 0, "sha256": "", "complete": False, "error": "", "start": time.time(),
                  "end": 0.0, "received": hashlib.sha256(body).hexdigest(), "received_bytes": len(body),
                  "protocol": "udp"}
        log(record)
        record = dict(record, event="end")
        try:
            sent = sock.sendto(body, peer)
            record.update(bytes=sent, complete=sent == len(body))
        except OSError as error:
            record["error"] = f"{type(error).__name__}: {error}"
        record.update(sha256=hashlib.sha256(body[:record["bytes"]]).hexdigest(), end=time.time())
        log(record)


def make_handler(backend: str, log):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, format, *args):  # the JSON log is the log
            pass

        def do_GET(self):
            url = urllib.parse.urlparse(self.path)
            query = urllib.parse.parse_qs(url.query)
            if url.path != "/data" or "id" not in query:
                self.send_error(404)
                return
            identifier = query["id"][0]
            size = int(query.get("size", ["4096"])[0])
            self.respond(identifier, content.body(identifier, size), query, {})

        def do_POST(self):
            url = urllib.parse.urlparse(self.path)
            query = urllib.parse.parse_qs(url.query)
            if url.path != "/echo" or "id" not in query:
                self.send_error(404)
                return
            length = int(self.headers.get("Content-Length", "0"))
            try:
                data = self.rfile.read(length)
            except OSError:
                data = b""
            self.respond(query["id"][0], data, query, {"received": hashlib.sha256(data).hexdigest(),
                                                       "received_bytes": len(data)})

        def respond(self, identifier, data, query, extra):
            """200 with `data` in `chunks` writes `delay` seconds apart; the two log lines."""
            size = len(data)
            chunks = max(1, int(query.get("chunks", ["1"])[0]))
            delay = float(query.get("delay", ["0"])[0])
            record = {"event": "start", "backend": backend, "id": identifier, "client": self.client_address[0],
                      "port": self.client_address[1], "bytes": 0, "sha256": "", "complete": False,
                      "error": "", "start": time.time(), "end": 0.0, **extra}
            log(record)
            record = dict(record, event="end")
            sent = hashlib.sha256()
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(size))
                self.send_header("X-Backend", backend)
                self.send_header("Connection", "close")
                self.end_headers()
                for index in range(chunks):
                    part = data[index * size // chunks:(index + 1) * size // chunks]
                    self.wfile.write(part)
                    sent.update(part)
                    record["bytes"] += len(part)
                    if delay > 0 and index < chunks - 1:
                        time.sleep(delay)
                self.wfile.flush()
                record["complete"] = record["bytes"] == size
            except OSError as error:
                record["error"] = f"{type(error).__name__}: {error}"
            record["sha256"] = sent.hexdigest()
            record["end"] = time.time()
            log(record)

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", required=True, help="address:port")
    parser.add_argument("--backend", required=True, help="name in X-Backend and the log")
    parser.add_argument("--log", required=True, help="JSON lines, one per response")
    parser.add_argument("--udp", action="store_true", help="also echo UDP datagrams on the same address and port")
    arguments = parser.parse_args()
    address, port = arguments.listen.rsplit(":", 1)
    with open(arguments.log, "a", buffering=1) as log_file:
        log = make_log(log_file)
        if arguments.udp:
            threading.Thread(target=serve_udp, args=(address, int(port), arguments.backend, log), daemon=True).start()
        server = Server((address, int(port)), make_handler(arguments.backend, log))
        print("ready", flush=True)
        server.serve_forever(poll_interval=0.2)


if __name__ == "__main__":
    main()
