#!/usr/bin/env python3
"""Servers, clients and checks of ipv6-mtu.sh (Tests/Cluster/README.md, "IPv6, MTU and fragments").

    mtu.py serve --backend bN --log FILE --http-ports 8080,8081 --udp-port 9000
        Dual-stack (one AF_INET6 socket per port, IPV6_V6ONLY off) HTTP/1.0 server and UDP sink.
        GET /data?id=I&size=B       200, then content.body(I, B) in one write; logs "download"
        PUT /upload?id=I&size=B     reads the body, logs "upload" with its SHA-256 and whether it is
                                    content.body(I, B); answers 200 with that digest
        UDP datagram "I;..."       logs "udp": its id (the bytes before ';'), length, SHA-256
        Prints `ready` once every socket listens.

    mtu.py transfer --host VIP --port P --prefix X --count N --size B --mode download|upload --out FILE
        N transfers at once (one thread and one connection each, http.client), every body digested.

    mtu.py udp --target VIP --port P --prefix X --count N --size B --order kernel|reverse|middle
               [--ifname eth0 --dst-mac MAC] --out FILE
        N flows, each from its own source port: first a small datagram (the probe, unfragmented),
        then one of B bytes on the same 5-tuple. `kernel`: the kernel fragments it (IPv4 with
        IP_PMTUDISC_DONT). `reverse` / `middle`: this script fragments it (1500-byte frames) and
        sends the fragments from an AF_PACKET socket on IFNAME, last fragment first / the middle
        one first, then the first, then the rest.

    mtu.py check --results FILE... --servers GLOB --label L --totals FILE
        Every transfer complete and intact (client and server digests equal the known content,
        exactly one server saw it, at the client's port); every large datagram arrived exactly
        once, whole, at the backend that got its flow's probe. Appends "N M" to --totals.

    mtu.py drops --json FILE --label L       a host's stage drops and tx failures, on one line
    mtu.py gossip --json FILE --peers N      "ok ..." when the host applied opens from its peers and
                                             heard from and synchronised with each of N peers, else "FAILED ..."
    mtu.py totals FILE [FILE2]               the verdict line
"""
import argparse
import glob
import hashlib
import http.client
import http.server
import ipaddress
import json
import os
import random
import socket
import socketserver
import struct
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import content  # noqa: E402


# ── Servers ─────────────────────────────────────────────────────────────────────────────────────
class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    address_family = socket.AF_INET6
    request_queue_size = 256

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def peer(address):
    """The client's address as it sent (an IPv4 client appears as ::ffff:a.b.c.d)."""
    host = address[0]
    return host[7:] if host.startswith("::ffff:") else host


def serve(arguments):
    lock = threading.Lock()
    log_file = open(arguments.log, "a", buffering=1)

    def log(record):
        with lock:
            log_file.write(json.dumps(dict(record, backend=arguments.backend), sort_keys=True) + "\n")
            log_file.flush()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, format, *args):
            pass

        def params(self):
            url = urllib.parse.urlparse(self.path)
            query = urllib.parse.parse_qs(url.query)
            return url.path, query.get("id", [""])[0], int(query.get("size", ["0"])[0])

        def do_GET(self):
            path, identifier, size = self.params()
            if path != "/data":
                self.send_error(404)
                return
            data = content.body(identifier, size)
            record = {"event": "download", "id": identifier, "client": peer(self.client_address),
                      "port": self.client_address[1], "bytes": 0, "sha256": "", "error": ""}
            try:
                self.send_response(200)
                self.send_header("Content-Length", str(size))
                self.send_header("X-Backend", arguments.backend)
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()
                record.update(bytes=size, sha256=hashlib.sha256(data).hexdigest())
            except OSError as error:
                record["error"] = f"{type(error).__name__}: {error}"
            log(record)

        def do_PUT(self):
            path, identifier, size = self.params()
            length = int(self.headers.get("Content-Length", "0"))
            digest, received = hashlib.sha256(), 0
            record = {"event": "upload", "id": identifier, "client": peer(self.client_address),
                      "port": self.client_address[1], "bytes": 0, "sha256": "", "error": ""}
            try:
                while received < length:
                    part = self.rfile.read(min(65536, length - received))
                    if not part:
                        break
                    digest.update(part)
                    received += len(part)
                record.update(bytes=received, sha256=digest.hexdigest())
                self.send_response(200)
                self.send_header("Content-Length", "64")
                self.send_header("X-Backend", arguments.backend)
                self.end_headers()
                self.wfile.write(digest.hexdigest().encode())
            except OSError as error:
                record["error"] = f"{type(error).__name__}: {error}"
            log(record)

    servers = []
    for port in map(int, arguments.http_ports.split(",")):
        server = Server(("::", port), Handler)
        servers.append(server)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    sink = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sink.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sink.bind(("::", arguments.udp_port))
    print("ready", flush=True)
    while True:
        data, address = sink.recvfrom(65535)
        identifier = data.split(b";", 1)[0].decode(errors="replace")
        log({"event": "udp", "id": identifier, "client": peer(address), "port": address[1], "bytes": len(data),
             "sha256": hashlib.sha256(data).hexdigest()})


# ── TCP clients ─────────────────────────────────────────────────────────────────────────────────
def transfer(arguments):
    results, lock = [], threading.Lock()

    def one(index):
        identifier = f"{arguments.prefix}-{index}"
        body = content.body(identifier, arguments.size)
        result = {"id": identifier, "mode": arguments.mode, "port": 0, "bytes": 0, "sha256": "",
                  "expected": hashlib.sha256(body).hexdigest(), "http": 0, "error": "", "seconds": 0.0}
        started = time.time()
        try:
            connection = http.client.HTTPConnection(arguments.host, arguments.port, timeout=arguments.timeout)
            connection.connect()
            result["port"] = connection.sock.getsockname()[1]
            path = f"/{'data' if arguments.mode == 'download' else 'upload'}?id={identifier}&size={arguments.size}"
            if arguments.mode == "download":
                connection.request("GET", path)
            else:
                connection.request("PUT", path, body=body, headers={"Content-Length": str(len(body))})
            response = connection.getresponse()
            result["http"] = response.status
            data = response.read()
            if arguments.mode == "download":
                result.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
            else:
                result.update(bytes=len(body), sha256=data.decode(errors="replace"))
            connection.close()
        except OSError as error:
            result["error"] = f"{type(error).__name__}: {error}"
        result["seconds"] = round(time.time() - started, 3)
        with lock:
            results.append(result)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(arguments.count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with open(arguments.out, "w") as out:
        for result in sorted(results, key=lambda r: r["id"]):
            out.write(json.dumps(dict(result, vip=arguments.host, vport=arguments.port), sort_keys=True) + "\n")


# ── UDP clients ─────────────────────────────────────────────────────────────────────────────────
def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xffff) + (total >> 16)
    return ~total & 0xffff


def udp_datagram(source, destination, sport, dport, payload):
    """The UDP header and payload, checksum over the pseudo header of the family."""
    length = 8 + len(payload)
    s, d = ipaddress.ip_address(source), ipaddress.ip_address(destination)
    if s.version == 4:
        pseudo = s.packed + d.packed + struct.pack("!BBH", 0, 17, length)
    else:
        pseudo = s.packed + d.packed + struct.pack("!IxxxB", length, 17)
    header = struct.pack("!HHHH", sport, dport, length, 0)
    value = checksum(pseudo + header + payload) or 0xffff
    return struct.pack("!HHHH", sport, dport, length, value) + payload


def fragments(source, destination, datagram, identification, mtu=1500):
    """The IP packets (without Ethernet) of `datagram` (UDP header + payload), fragmented for mtu."""
    s, d = ipaddress.ip_address(source), ipaddress.ip_address(destination)
    packets = []
    if s.version == 4:
        step = (mtu - 20) // 8 * 8
        for offset in range(0, len(datagram), step):
            part = datagram[offset:offset + step]
            more = 0x2000 if offset + step < len(datagram) else 0
            header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(part), identification & 0xffff,
                                 more | offset // 8, 64, 17, 0, s.packed, d.packed)
            header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
            packets.append(header + part)
    else:
        step = (mtu - 48) // 8 * 8
        for offset in range(0, len(datagram), step):
            part = datagram[offset:offset + step]
            more = 1 if offset + step < len(datagram) else 0
            fragment = struct.pack("!BBHI", 17, 0, offset | more, identification)
            header = struct.pack("!IHBB16s16s", 6 << 28, 8 + len(part), 44, 64, s.packed, d.packed)
            packets.append(header + fragment + part)
    return packets


def udp(arguments):
    family = socket.AF_INET6 if ":" in arguments.target else socket.AF_INET
    raw = None
    if arguments.order != "kernel":
        raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        raw.bind((arguments.ifname, 0))
        source_mac = raw.getsockname()[4]
        destination_mac = bytes.fromhex(arguments.dst_mac.replace(":", ""))
        ethertype = 0x86dd if family == socket.AF_INET6 else 0x0800
    results = []
    for index in range(arguments.count):
        identifier = f"{arguments.prefix}-{index}"
        sock = socket.socket(family, socket.SOCK_DGRAM)
        if family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, 10, 0)  # IP_MTU_DISCOVER = IP_PMTUDISC_DONT: fragment, no DF
        sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
        sock.connect((arguments.target, arguments.port))
        source, sport = sock.getsockname()[:2]
        probe = f"{identifier}-probe;".encode()
        sock.send(probe)
        time.sleep(0.02)  # the probe opens the flow first
        payload = f"{identifier};".encode()
        payload += content.body(identifier, arguments.size - len(payload))
        frames = 0
        if raw is None:
            sock.send(payload)
        else:
            datagram = udp_datagram(source, arguments.target, sport, arguments.port, payload)
            packets = fragments(source, arguments.target, datagram, random.randint(1, 0xffffffff))
            order = list(range(len(packets)))
            if arguments.order == "reverse":
                order.reverse()
            else:  # middle: the middle fragment, then the first, then the rest
                middle = len(packets) // 2
                order = [middle, 0] + [i for i in order if i not in (0, middle)]
            for i in order:
                raw.send(destination_mac + source_mac + struct.pack("!H", ethertype) + packets[i])
            frames = len(packets)
        results.append({"id": identifier, "udp": True, "client": source, "port": sport, "order": arguments.order,
                        "fragments": frames, "bytes": len(payload), "expected": hashlib.sha256(payload).hexdigest(),
                        "probe": hashlib.sha256(probe).hexdigest()})
        sock.close()
    with open(arguments.out, "w") as out:
        for result in results:
            out.write(json.dumps(dict(result, vip=arguments.target, vport=arguments.port), sort_keys=True) + "\n")


# ── Checks ──────────────────────────────────────────────────────────────────────────────────────
def check(arguments):
    servers = []
    for path in sorted(glob.glob(arguments.servers)):
        servers += [json.loads(line) for line in open(path) if line.strip()]
    by_id = {}
    for record in servers:
        by_id.setdefault(record["id"], []).append(record)
    results = []
    for path in arguments.results:
        results += [json.loads(line) for line in open(path) if line.strip()]
    broken, backends = [], {}
    for r in results:
        reasons = []
        seen = by_id.get(r["id"], [])
        if r.get("udp"):
            probes = by_id.get(r["id"] + "-probe", [])
            if len(probes) != 1:
                reasons.append(f"probe received {len(probes)} times")
            if len(seen) != 1:
                reasons.append(f"datagram received {len(seen)} times")
            for s in seen:
                if s["bytes"] != r["bytes"] or s["sha256"] != r["expected"]:
                    reasons.append(f"datagram at {s['backend']} not whole: {s['bytes']} of {r['bytes']} bytes")
                if s["port"] != r["port"]:
                    reasons.append(f"source port {s['port']} at the server, {r['port']} at the client")
            if len(seen) == 1 and len(probes) == 1 and seen[0]["backend"] != probes[0]["backend"]:
                reasons.append(f"datagram at {seen[0]['backend']}, its flow's probe at {probes[0]['backend']}")
            what = f"udp {r['client']}:{r['port']} -> {r['vip']}:{r['vport']} ({r['order']}, {r['fragments']} fragments sent)"
        else:
            if r["error"] or r["http"] != 200:
                reasons.append(f"http {r['http']} {r['error']}")
            if r["sha256"] != r["expected"]:
                reasons.append(f"{r['mode']} digest differs ({r['bytes']} bytes)")
            if len(seen) != 1:
                reasons.append(f"{len(seen)} servers saw it")
            for s in seen:
                if s["error"] or s["sha256"] != r["expected"]:
                    reasons.append(f"server {s['backend']}: {s['bytes']} bytes, {s['error'] or 'digest differs'}")
                if s["port"] != r["port"]:
                    reasons.append(f"server saw port {s['port']}, client used {r['port']}")
            what = f"tcp {r['mode']} port {r['port']} -> [{r['vip']}]:{r['vport']}"
        if seen:
            backends[seen[0]["backend"]] = backends.get(seen[0]["backend"], 0) + 1
        if reasons:
            broken.append(f"    BROKEN {r['id']}: {what} at {','.join(s['backend'] for s in seen) or '-'}: {'; '.join(reasons)}")
    spread = " ".join(f"{b}={n}" for b, n in sorted(backends.items()))
    print(f"  {arguments.label}: {len(results) - len(broken)} of {len(results)} intact ({spread})")
    for line in broken:
        print(line)
    with open(arguments.totals, "a") as totals_file:
        kind = "udp" if results and results[0].get("udp") else "tcp"
        totals_file.write(f"{kind} {len(results)} {len(results) - len(broken)}\n")
    return 1 if broken or not results else 0


def drops(arguments):
    blocks = json.load(open(arguments.json))
    found = []
    for block in blocks:
        counters = block["counters"]
        if block["scope"].startswith("stage ") and counters.get("drop", 0):
            reasons = [f"{name}={value}" for name, value in sorted(counters.items())
                       if value and name not in block["dispositions"] and name != "in"]
            found.append(f"{block['scope']} drop={counters['drop']} ({', '.join(reasons)})")
        for name in ("tx-full", "ring-full", "shutdown-flushed"):
            if counters.get(name, 0):
                found.append(f"{block['scope']} {name}={counters[name]}")
    print(f"  {arguments.label}: " + ("; ".join(found) if found else "no packet dropped"))
    return 0


def gossip(arguments):
    blocks = json.load(open(arguments.json))
    main = next((b["counters"] for b in blocks if b["scope"] == "gossip"), {})
    peers = {b["scope"][len("gossip peer "):]: b["counters"] for b in blocks if b["scope"].startswith("gossip peer ")}
    ok = main.get("opens-applied", 0) > 0 and len(peers) == arguments.peers and all(
        c.get("messages", 0) > 0 and c.get("synchronised", 0) == 1 for c in peers.values())
    described = ", ".join(f"peer {p}: {c.get('messages', 0)} messages, synchronised {c.get('synchronised', 0)}"
                          for p, c in sorted(peers.items()))
    print(f"{'ok' if ok else 'FAILED'} opens-applied {main.get('opens-applied', 0)}, "
          f"datagrams-received {main.get('datagrams-received', 0)}; {described}")
    return 0


def totals(arguments):
    counts = {"tcp": [0, 0], "udp": [0, 0]}
    try:
        for line in open(arguments.file):
            kind, total, done = line.split()
            counts[kind][0] += int(total)
            counts[kind][1] += int(done)
    except FileNotFoundError:
        pass
    (t, tc), (u, uc) = counts["tcp"], counts["udp"]
    print(f"transfers={t} completed={tc} datagrams={u} whole={uc} broken={t - tc + u - uc}")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    s = commands.add_parser("serve")
    s.add_argument("--backend", required=True)
    s.add_argument("--log", required=True)
    s.add_argument("--http-ports", default="8080,8081")
    s.add_argument("--udp-port", type=int, default=9000)
    t = commands.add_parser("transfer")
    for name in ("--host", "--prefix", "--out"):
        t.add_argument(name, required=True)
    t.add_argument("--port", type=int, default=80)
    t.add_argument("--count", type=int, default=4)
    t.add_argument("--size", type=int, default=2 << 20)
    t.add_argument("--mode", choices=("download", "upload"), required=True)
    t.add_argument("--timeout", type=float, default=60)
    u = commands.add_parser("udp")
    for name in ("--target", "--prefix", "--out"):
        u.add_argument(name, required=True)
    u.add_argument("--port", type=int, default=9000)
    u.add_argument("--count", type=int, default=8)
    u.add_argument("--size", type=int, default=3000)
    u.add_argument("--order", choices=("kernel", "reverse", "middle"), default="kernel")
    u.add_argument("--ifname", default="eth0")
    u.add_argument("--dst-mac", default="")
    c = commands.add_parser("check")
    c.add_argument("--results", nargs="+", required=True)
    c.add_argument("--servers", required=True)
    c.add_argument("--label", required=True)
    c.add_argument("--totals", required=True)
    d = commands.add_parser("drops")
    d.add_argument("--json", required=True)
    d.add_argument("--label", required=True)
    g = commands.add_parser("gossip")
    g.add_argument("--json", required=True)
    g.add_argument("--peers", type=int, required=True)
    o = commands.add_parser("totals")
    o.add_argument("file")
    arguments = parser.parse_args()
    handler = {"serve": serve, "transfer": transfer, "udp": udp, "check": check, "drops": drops, "gossip": gossip,
               "totals": totals}
    sys.exit(handler[arguments.command](arguments) or 0)


if __name__ == "__main__":
    main()
