#!/usr/bin/env python3
"""Real clients of the cluster test: curl against the VIP, every body checked against its known content.

    clients.py long  --url URL --prefix P --count N --size B --chunks C --delay S --out FILE
        N curl processes at once, one connection each (GET URL/data?id=P-i&size=B&chunks=C&delay=S).
        Their bodies are read here as they arrive: digest, byte count, and the longest silence
        between two arrivals (`max_gap`, seconds) — a connection that stalls shows it there.

    clients.py batch --url URL --prefix P --count N --size B --parallel K --out FILE --workdir DIR
        N short connections from one `curl --parallel` (K at a time, `Connection: close`, so each
        transfer is its own connection and its own flow), bodies written to DIR and digested.

    clients.py udp --url udp://HOST:PORT --prefix P --count N --size B --out FILE
        N UDP exchanges one after the other, each from a socket of its own (its own source port, so
        its own flow): one datagram `P-i` newline content.body(P-i, B), to which server.py --udp
        answers with the body; 5 s without the answer is a loss (curl_exit 28, http 0).

With --echo (egress.sh: resources connecting to the external server) every request is instead
`POST URL/echo?id=P-i&chunks=C&delay=S` whose body is content.body(P-i, B) (a file in --workdir):
the server sends back what it received, so the digest checks the bytes in both directions.

Both write one JSON line per connection to FILE:

    {"id": "s1-17", "port": 40312, "bytes": 1048576, "sha256": "...", "expected": "...",
     "curl_exit": 0, "http": 200, "max_gap": 0.61, "seconds": 40.2, "error": ""}

`port` is the client's local port (curl's %{local_port}): with the client address and the VIP it
is the connection's 5-tuple, and it is what the server logs as the peer port.
"""
import argparse
import hashlib
import json
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import content  # noqa: E402

WRITE_OUT = "%{stderr}SYCLIENT %{local_port} %{http_code} %{exitcode} %{size_download} %{url_effective}\\n"


def parse_write_out(stderr: str):
    """(local port, http code, curl exit code, url) from curl's write-out lines, by url id."""
    results = {}
    errors = []
    for line in stderr.replace("\r", "\n").splitlines():
        if "SYCLIENT " not in line:
            if line.strip():
                errors.append(line.strip())
            continue
        _, port, code, exit_code, _, url = line[line.index("SYCLIENT "):].split(" ", 5)
        identifier = url.split("id=", 1)[1].split("&", 1)[0]
        results[identifier] = (int(port or 0), int(code or 0), int(exit_code or 0))
    return results, errors


def query(identifier, size, chunks=1, delay=0.0, echo=False):
    if echo:
        return f"/echo?id={identifier}&chunks={chunks}&delay={delay}"
    return f"/data?id={identifier}&size={size}&chunks={chunks}&delay={delay}"


def upload(arguments, identifier):
    """--echo: curl arguments that POST content.body(identifier, size) from a file in --workdir."""
    if not arguments.echo:
        return []
    os.makedirs(arguments.workdir, exist_ok=True)
    path = os.path.join(arguments.workdir, identifier + ".up")
    with open(path, "wb") as file:
        file.write(content.body(identifier, arguments.size))
    return ["-H", "Expect:", "--data-binary", "@" + path]


def run_long(arguments):
    """One curl per connection, all at once; bodies streamed through pipes and digested here."""
    selector = selectors.DefaultSelector()
    connections = []
    for index in range(arguments.count):
        identifier = f"{arguments.prefix}-{index}"
        command = ["curl", "-sS", "--no-progress-meter", "--http1.1", "-H", "Connection: close", "--connect-timeout", "10",
                   "--max-time", str(arguments.max_time), "--speed-limit", "1", "--speed-time",
                   str(arguments.speed_time), "-o", "-", "-w", WRITE_OUT] + upload(arguments, identifier) + \
                  [arguments.url + query(identifier, arguments.size, arguments.chunks, arguments.delay, arguments.echo)]
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        os.set_blocking(process.stdout.fileno(), False)
        state = {"id": identifier, "process": process, "digest": hashlib.sha256(), "bytes": 0,
                 "start": time.monotonic(), "last": time.monotonic(), "max_gap": 0.0, "open": True}
        selector.register(process.stdout, selectors.EVENT_READ, state)
        connections.append(state)
    open_count = len(connections)
    while open_count > 0:
        for key, _ in selector.select(timeout=1.0):
            state = key.data
            data = os.read(key.fileobj.fileno(), 1 << 16)
            now = time.monotonic()
            if data:
                state["max_gap"] = max(state["max_gap"], now - state["last"])
                state["last"] = now
                state["digest"].update(data)
                state["bytes"] += len(data)
            else:
                selector.unregister(key.fileobj)
                state["open"] = False
                state["end"] = now
                open_count -= 1
    with open(arguments.out, "w") as out:
        for state in connections:
            process = state["process"]
            stderr = process.stderr.read().decode(errors="replace")
            process.wait()
            info, errors = parse_write_out(stderr)
            port, code, _ = info.get(state["id"], (0, 0, 0))
            record = {"id": state["id"], "port": port, "bytes": state["bytes"],
                      "sha256": state["digest"].hexdigest(), "expected": content.digest(state["id"], arguments.size),
                      "curl_exit": process.returncode, "http": code, "max_gap": round(state["max_gap"], 3),
                      "seconds": round(state["end"] - state["start"], 3), "error": " | ".join(errors)}
            out.write(json.dumps(record, sort_keys=True) + "\n")


def run_udp(arguments):
    """One datagram out, its echo back, per socket; the results in the same format as curl's."""
    host, port = arguments.url.split("://", 1)[1].rsplit(":", 1)
    with open(arguments.out, "w") as out:
        for index in range(arguments.count):
            identifier = f"{arguments.prefix}-{index}"
            body = content.body(identifier, arguments.size)
            start = time.monotonic()
            data, error, local = b"", "", 0
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(5.0)
                sock.connect((host, int(port)))
                local = sock.getsockname()[1]
                try:
                    sock.send(identifier.encode() + b"\n" + body)
                    data = sock.recv(65535)
                except OSError as failure:
                    error = f"{type(failure).__name__}: {failure}"
            record = {"id": identifier, "port": local, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                      "expected": content.digest(identifier, arguments.size), "curl_exit": 28 if error else 0,
                      "http": 0 if error else 200, "max_gap": 0.0, "seconds": round(time.monotonic() - start, 3),
                      "error": error}
            out.write(json.dumps(record, sort_keys=True) + "\n")


def run_batch(arguments):
    """One `curl --parallel` for all connections; bodies to files, digested afterwards."""
    os.makedirs(arguments.workdir, exist_ok=True)
    identifiers = [f"{arguments.prefix}-{index}" for index in range(arguments.count)]
    with tempfile.NamedTemporaryFile("w", dir=arguments.workdir, suffix=".curl", delete=False) as config:
        for index, identifier in enumerate(identifiers):
            if arguments.echo and index > 0:
                # Each POST is its own operation (its own body): `next` starts one, which inherits
                # none of the options before it, so each repeats those of the command line below.
                config.write("next\n")
                config.write(f'header = "Connection: close"\nhttp1.1\nconnect-timeout = 10\n'
                             f'max-time = {arguments.max_time}\nwrite-out = "{WRITE_OUT}"\n')
            config.write(f'url = "{arguments.url}{query(identifier, arguments.size, echo=arguments.echo)}"\n')
            config.write(f'output = "{os.path.join(arguments.workdir, identifier)}"\n')
            if arguments.echo:
                config.write(f'data-binary = "{upload(arguments, identifier)[-1]}"\nheader = "Expect:"\n')
    start = time.monotonic()
    command = ["curl", "-sS", "--no-progress-meter", "--http1.1", "-H", "Connection: close", "--parallel", "--parallel-immediate",
               "--parallel-max", str(arguments.parallel), "--connect-timeout", "10",
               "--max-time", str(arguments.max_time), "-w", WRITE_OUT, "-K", config.name]
    process = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seconds = time.monotonic() - start
    os.unlink(config.name)
    info, errors = parse_write_out(process.stderr.decode(errors="replace"))
    with open(arguments.out, "w") as out:
        for identifier in identifiers:
            path = os.path.join(arguments.workdir, identifier)
            try:
                with open(path, "rb") as body:
                    data = body.read()
                os.unlink(path)
            except FileNotFoundError:
                data = b""
            port, code, exit_code = info.get(identifier, (0, 0, -1))
            record = {"id": identifier, "port": port, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                      "expected": content.digest(identifier, arguments.size), "curl_exit": exit_code, "http": code,
                      "max_gap": 0.0, "seconds": round(seconds, 3),
                      "error": "" if exit_code == 0 else " | ".join(errors[-3:])}
            out.write(json.dumps(record, sort_keys=True) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["long", "batch", "udp"])
    parser.add_argument("--url", required=True, help="http://VIP:PORT")
    parser.add_argument("--prefix", required=True, help="request ids are PREFIX-0 ... PREFIX-(N-1)")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--chunks", type=int, default=1)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--parallel", type=int, default=32)
    parser.add_argument("--max-time", type=int, default=120)
    parser.add_argument("--speed-time", type=int, default=30,
                        help="long: curl gives up on a connection that received nothing for this long")
    parser.add_argument("--out", required=True)
    parser.add_argument("--workdir")
    parser.add_argument("--echo", action="store_true",
                        help="POST the known content to URL/echo and expect it back (needs --workdir)")
    arguments = parser.parse_args()
    if arguments.echo and not arguments.workdir:
        parser.error("--echo needs --workdir")
    if arguments.mode == "long":
        run_long(arguments)
    elif arguments.mode == "udp":
        run_udp(arguments)
    else:
        if not arguments.workdir:
            parser.error("batch needs --workdir")
        run_batch(arguments)


if __name__ == "__main__":
    main()
