#!/usr/bin/env python3
"""Checks of the cluster test: joins what the clients received with what the servers sent.

    check.py connections --label L --results FILE --servers 'DIR/s*.jsonl' --totals FILE
                         [--stall S] [--stall-exempt-host H --exempt-stall S]
                         [--weights b1=1,b2=2,... --tolerance T] [--min-backend b2=20]
    check.py counters --json FILE [--expect 'stage encap:encapsulated>0' ...]
    check.py drops --label L --json FILE [--allow 'stage egress-out:no-connection' ...]
                   [--allow 'stage classify:backend-source-on-uplink<=N' ...]
    check.py multicast --label L --json FILE  (the host's gossip went by multicast, see multicast_check)
    check.py table LOG          (the last counter table of a host's log, rows that are not zero)
    check.py totals FILE        (prints connections=N completed=N broken=N)
    check.py egress --label L --results 'DIR/P-h*.jsonl' --server FILE --address A
                    --ranges 1=20000-29999,... --totals FILE [--stall S] [--killed-host H]
                    [--routed FILE --event-host H]
    check.py egress-totals FILE (prints outbound connections=N completed=N broken=N broken_own_host=M)

A connection is *completed* when every one of these holds, else it is *broken*, with the reasons:
curl exited 0 with HTTP 200; the body has the expected size and its SHA-256 equals the digest of
the known content (content.py) AND the digest the server logged for what it wrote; exactly one
server served it and wrote all of it; the server saw the same client port curl reported; and the
longest silence between two arrivals of data (long connections) is at most --stall seconds
(--exempt-stall for connections owned by --stall-exempt-host). Each broken connection is printed
with its 5-tuple, its backend and the host that owned it (the backend's host).

`egress` (egress.sh) checks outbound connections: resources behind host H (request ids
`P-hH-I`) to the external server (UDP exchanges of clients.py udp too: their results say
curl_exit 0 and http 200 when the echo arrived). A connection is completed when curl exited 0
with HTTP 200, the body it got back equals the known content it sent (SHA-256), exactly one
request with its id reached the server, which read the whole upload intact and wrote all of it
back, saw the egress address as the source and a source port of host H's range, and (--stall)
the longest silence between two arrivals is at most S seconds. Else it is broken; with --killed-host H, broken
connections of host H's resources are counted apart (`broken_own_host`): they may break, no other
may. Every request the server logged, of any prefix, must come from the egress address.
With --routed (lines "ID HOST": the host the router sent each connection's replies to before
the event) and --event-host H (the host drained or killed), it prints how many connections had
their replies routed via host H (of other hosts' resources, and of host H's own), and fails
unless at least one of another host's resources did: then the event really moved replies of
connections that had to survive it.
"""
import argparse
import glob
import json
import sys

CLIENT = "198.18.1.2"
VIP = "198.19.0.1:80"
BACKEND_HOST = {"b1": 1, "b2": 2, "b3": 3, "b4": 4}


def load_lines(path):
    with open(path) as file:
        return [json.loads(line) for line in file if line.strip()]


def server_records(pattern, prefix):
    """Per request id: the servers that started answering it, and how each one ended (if it has)."""
    started, ended = {}, {}
    for path in sorted(glob.glob(pattern)):
        for record in load_lines(path):
            if record["id"].rsplit("-", 1)[0] == prefix:
                (started if record["event"] == "start" else ended).setdefault(record["id"], []).append(record)
    return started, ended


def parse_pairs(text, kind=int):
    pairs = {}
    for item in filter(None, (text or "").split(",")):
        name, value = item.split("=")
        pairs[name] = kind(value)
    return pairs


def check_connections(arguments):
    clients = load_lines(arguments.results)
    prefix = clients[0]["id"].rsplit("-", 1)[0] if clients else ""
    started, ended = server_records(arguments.servers, prefix)
    broken = []
    per_backend = {}
    gaps = []
    for client in clients:
        reasons = []
        served = started.get(client["id"], [])
        backend = served[0]["backend"] if len(served) == 1 else None
        owner = BACKEND_HOST.get(backend)
        if client["curl_exit"] != 0:
            reasons.append(f"curl exit {client['curl_exit']} ({client['error'] or 'no message'})")
        if client["http"] != 200:
            reasons.append(f"HTTP status {client['http']}")
        if client["sha256"] != client["expected"]:
            reasons.append(f"body digest differs from the known content ({client['bytes']} bytes received)")
        if not served:
            reasons.append("no server logged this request")
        elif len(served) > 1:
            reasons.append(f"{len(served)} servers logged this request: {[s['backend'] for s in served]}")
        else:
            per_backend[backend] = per_backend.get(backend, 0) + 1
            record = (ended.get(client["id"]) or [None])[0]
            if record is None:
                reasons.append(f"server {backend} was still writing the body when checked")
            elif not record["complete"]:
                reasons.append(f"server {backend} did not write the whole body ({record['bytes']} bytes; {record['error']})")
            if record and record["sha256"] != client["sha256"]:
                reasons.append(f"received digest differs from what server {backend} sent")
            if served[0]["port"] != client["port"] and client["port"] != 0:
                reasons.append(f"server saw client port {served[0]['port']}, curl used {client['port']}")
        limit = arguments.stall
        if arguments.stall_exempt_host is not None and owner == arguments.stall_exempt_host:
            limit = arguments.exempt_stall
        if limit is not None and client["max_gap"] > limit:
            reasons.append(f"stalled: {client['max_gap']:.1f} s without data (limit {limit} s)")
        gaps.append((client["max_gap"], owner))
        if reasons:
            port = client["port"] or (served[0]["port"] if len(served) == 1 else "?")
            owned = f"backend {backend}, owned by host {owner}" if owner else "owner unknown (no single server served it)"
            broken.append(f"  BROKEN {client['id']}: tcp {CLIENT}:{port} -> {VIP}, {owned}: " + "; ".join(reasons))

    total = len(clients)
    completed = total - len(broken)
    failures = []
    summary = f"{arguments.label}: {total} connections, {completed} completed intact, {len(broken)} broken"
    if gaps and any(g for g, _ in gaps):
        exempt = arguments.stall_exempt_host
        others = [g for g, o in gaps if o != exempt] or [0.0]
        summary += f"; longest silence {max(others):.2f} s"
        if exempt is not None:
            own = [g for g, o in gaps if o == exempt] or [0.0]
            summary += f" (owned by host {exempt}: {max(own):.2f} s, {len(own)} connections)"
    print(summary)
    if per_backend:
        print("  served by: " + ", ".join(f"{b} {per_backend.get(b, 0)}" for b in sorted(BACKEND_HOST)))
    weights = parse_pairs(arguments.weights)
    if weights:
        served_total = sum(per_backend.values())
        weight_total = sum(weights.values())
        parts = []
        for backend in sorted(weights):
            expected = weights[backend] / weight_total
            share = per_backend.get(backend, 0) / served_total if served_total else 0.0
            ok = abs(share - expected) <= arguments.tolerance if weights[backend] else per_backend.get(backend, 0) == 0
            parts.append(f"{backend} {share * 100:.1f}% (want {expected * 100:.1f}%{'' if ok else ', OUT OF TOLERANCE'})")
            if not ok:
                failures.append(f"  SPREAD {backend}: {per_backend.get(backend, 0)} of {served_total} = {share * 100:.1f}%, "
                                f"weight share {expected * 100:.1f}% "
                                + (f"± {arguments.tolerance * 100:.0f} points" if weights[backend] else "(weight 0: none allowed)"))
        print(f"  spread over weights {','.join(f'{b}={w}' for b, w in sorted(weights.items()))} "
              f"(tolerance ± {arguments.tolerance * 100:.0f} points): " + ", ".join(parts))
    for backend, minimum in parse_pairs(arguments.min_backend).items():
        if per_backend.get(backend, 0) < minimum:
            failures.append(f"  TOO FEW on {backend}: {per_backend.get(backend, 0)} connections, the check needs at least {minimum}")
    killed = []
    if arguments.killed_backend:
        # Connections of a backend whose server the scenario killed break because the server is
        # gone: counted apart, as long as that backend served them and nobody else did.
        marker = f"backend {arguments.killed_backend}, "
        killed = [line for line in broken if marker in line]
        broken = [line for line in broken if marker not in line]
        print(f"  {len(killed)} connections of {arguments.killed_backend} broke with its killed server (expected, not counted)")
        total -= len(killed)
    for line in broken[:40]:
        print(line)
    if len(broken) > 40:
        print(f"  ... and {len(broken) - 40} more broken connections")
    for line in failures:
        print(line)
    with open(arguments.totals, "a") as totals:
        totals.write(f"{total} {completed}\n")
    return 0 if not broken and not failures else 1


def check_counters(arguments):
    blocks = json.load(open(arguments.json))
    failed = False
    for expectation in arguments.expect:
        scope, rest = expectation.split(":", 1)
        for operator in (">=", ">", "=="):
            if operator in rest:
                counter, value = rest.split(operator)
                break
        value = int(value)
        actual = sum(block["counters"].get(counter, 0) for block in blocks if block["scope"] == scope)
        ok = {">": actual > value, ">=": actual >= value, "==": actual == value}[operator]
        print(f"  {arguments.label}: {scope} {counter} = {actual} (want {operator} {value}){'' if ok else ': FAILED'}")
        failed |= not ok
    return 1 if failed else 0


def multicast_check(arguments):
    """A host of multicast.sh: every heartbeat, flow batch, digest and listener set went to the group
    once (multicast-sent = sent-heartbeat + sent-flows + sent-digest + sent-listeners), every other datagram it sent was
    a unicast sync or challenge message, and it received flow batches through the group."""
    blocks = [b for b in json.load(open(arguments.json)) if b["scope"] == "gossip"]
    if not blocks:
        print(f"  {arguments.label}: no gossip counters: FAILED")
        return 1
    c = blocks[0]["counters"]
    get = lambda name: c.get(name, 0)
    broadcasts = get("sent-heartbeat") + get("sent-flows") + get("sent-digest") + get("sent-listeners")
    unicasts = get("sent-sync-request") + get("sent-sync-response") + get("sent-challenge")
    checks = [
        ("multicast-sent == sent-heartbeat + sent-flows + sent-digest + sent-listeners", get("multicast-sent") == broadcasts > 0),
        ("datagrams-sent == multicast-sent + sync and challenge messages",
         get("datagrams-sent") == get("multicast-sent") + unicasts),
        ("multicast-received > 0", get("multicast-received") > 0),
        ("received-flows > 0", get("received-flows") > 0),
        ("opens-applied > 0", get("opens-applied") > 0),
    ]
    failed = [text for text, ok in checks if not ok]
    print(f"  {arguments.label}: multicast-sent={get('multicast-sent')} (heartbeats, batches, digests, listener sets: {broadcasts}), "
          f"unicast={get('datagrams-sent') - get('multicast-sent')} (sync and challenge: {unicasts}), "
          f"multicast-received={get('multicast-received')} of datagrams-received={get('datagrams-received')}, "
          f"received-flows={get('received-flows')}, opens-applied={get('opens-applied')}"
          + ("" if not failed else ": FAILED: " + "; ".join(failed)))
    return 1 if failed else 0


def drop_summary(arguments):
    """What a host dropped or could not send, from its final --stats-json, on one line. Drops of a
    reason given with --allow ('stage egress-out:no-connection') are printed but do not fail; with
    a bound ('stage classify:backend-source-on-uplink<=120') only while there are at most that many
    of that reason."""
    blocks = json.load(open(arguments.json))
    bounds = {}
    for item in arguments.allow:
        key, _, bound = item.partition("<=")
        bounds[key] = int(bound) if bound else None
    drops, allowed = [], []
    for block in blocks:
        counters = block["counters"]
        if block["scope"].startswith("stage ") and counters.get("drop", 0):
            names = [name for name, value in sorted(counters.items())
                     if value and name not in block["dispositions"] and name != "in"]
            reasons = [f"{name}={counters[name]}" for name in names]
            line = f"{block['scope']} drop={counters['drop']} ({', '.join(reasons)})"
            declared = [name for name in names if f"{block['scope']}:{name}" in bounds]
            over = []
            for name in declared:
                bound = bounds[f"{block['scope']}:{name}"]
                if bound is not None and counters[name] > bound:
                    over.append(f"{name} over its bound {bound}")
            if declared and not over and sum(counters[name] for name in declared) == counters["drop"]:
                allowed.append(line + " allowed")
                continue
            drops.append(line + (f": {', '.join(over)}" if over else ""))
        for name in ("tx-full", "ring-full", "shutdown-flushed"):
            if counters.get(name, 0):
                drops.append(f"{block['scope']} {name}={counters[name]}")
    print(f"  {arguments.label}: " + ("; ".join(drops + allowed) if drops or allowed else "no packet dropped"))
    return 1 if drops else 0


def last_table(arguments):
    """The last periodic counter table in a host log, without rows that are zero."""
    lines = open(arguments.log, errors="replace").read().splitlines()
    starts = [i for i, line in enumerate(lines) if "counters after" in line]
    if not starts:
        print("  (no counter table in the log yet)")
        return 0
    table = []
    for line in lines[starts[-1] + 1:]:
        if line.startswith("switchyard:"):
            break
        table.append(line)
    scope = ""
    for line in table:
        words = line.split()
        if not words:
            continue
        if not line.startswith(" "):
            scope = line[:line.find("  ")] if "  " in line else line
        values = [w for w in words if w.isdigit() or w == "-"]
        if line is table[0] or any(w not in ("0", "-") for w in values):
            print("    " + line)
    return 0


def check_egress(arguments):
    clients = []
    for path in sorted(glob.glob(arguments.results)):
        clients.extend(load_lines(path))
    started, ended = {}, {}
    foreign = []
    for record in load_lines(arguments.server):
        if record["event"] == "start":
            started.setdefault(record["id"], []).append(record)
            if record["client"] != arguments.address:
                foreign.append(record)
        else:
            ended.setdefault(record["id"], []).append(record)
    ranges = {host: tuple(map(int, text.split("-"))) for host, text in parse_pairs(arguments.ranges, str).items()}
    broken, broken_own = [], 0
    per_host = {}
    for client in clients:
        host = client["id"].rsplit("-", 2)[1]          # P-hH-I
        low, high = ranges[host[1:]]
        reasons = []
        served = started.get(client["id"], [])
        if client["curl_exit"] != 0:
            reasons.append(f"curl exit {client['curl_exit']} ({client['error'] or 'no message'})")
        if client["http"] != 200:
            reasons.append(f"HTTP status {client['http']}")
        if client["sha256"] != client["expected"]:
            reasons.append(f"body digest differs from the content sent ({client['bytes']} bytes received)")
        seen = "?"
        if not served:
            reasons.append("the server logged no such request")
        elif len(served) > 1:
            reasons.append(f"the server logged this request {len(served)} times")
        else:
            request = served[0]
            seen = f"{request['client']}:{request['port']}"
            stats = per_host.setdefault(host, [0, 65535, 0])
            stats[0] += 1
            stats[1] = min(stats[1], request["port"])
            stats[2] = max(stats[2], request["port"])
            if request["client"] != arguments.address:
                reasons.append(f"the server saw source {request['client']}, not the egress address {arguments.address}")
            if not low <= request["port"] <= high:
                reasons.append(f"the server saw source port {request['port']}, outside host {host[1:]}'s range {low}-{high}")
            if request.get("received") != client["expected"]:
                reasons.append(f"the upload arrived altered ({request.get('received_bytes', 0)} bytes)")
            record = (ended.get(client["id"]) or [None])[0]
            if record is None:
                reasons.append("the server was still writing the body when checked")
            elif not record["complete"]:
                reasons.append(f"the server did not write the whole body ({record['bytes']} bytes; {record['error']})")
        if arguments.stall is not None and client["max_gap"] > arguments.stall and host[1:] != str(arguments.killed_host):
            reasons.append(f"stalled: {client['max_gap']:.1f} s without data (limit {arguments.stall} s)")
        if reasons:
            own = host[1:] == str(arguments.killed_host)
            broken_own += own
            broken.append((own, f"  BROKEN {client['id']}: resource port {client['port']} of host {host[1:]}"
                                f"{' (the killed host)' if own else ''} -> server, seen as {seen}: " + "; ".join(reasons)))
    routed_failure = routed_line = None
    if arguments.routed:
        routes = dict(line.split() for line in open(arguments.routed) if line.strip())
        event = str(arguments.event_host)
        broken_ids = {line.split()[1].rstrip(":") for _, line in broken}
        via = [c["id"] for c in clients if routes.get(c["id"]) == event]
        via_others = [i for i in via if i.rsplit("-", 2)[1] != "h" + event]
        via_own = [i for i in via if i.rsplit("-", 2)[1] == "h" + event]
        others_completed = sum(1 for i in via_others if i not in broken_ids)
        routed_line = (f"  replies routed via host {event} before the event: {len(via_others)} connections of other hosts' "
                       f"resources ({others_completed} completed), {len(via_own)} of host {event}'s own")
        if not via_others:
            routed_failure = f"  NO EVIDENCE: no connection of another host's resources had its replies routed via host {event}"
    total = len(clients)
    completed = total - len(broken)
    print(f"{arguments.label}: {total} outbound connections, {completed} completed intact, {len(broken)} broken"
          + (f" ({broken_own} of them of host {arguments.killed_host}'s resources, which may break)"
             if arguments.killed_host is not None else ""))
    print("  the server saw: " + ", ".join(
        f"host {h[1:]}'s {n} from {arguments.address} ports {low}-{high}" for h, (n, low, high) in sorted(per_host.items())))
    for record in foreign[:10]:
        print(f"  SOURCE {record['id']}: the server saw {record['client']}:{record['port']}, not the egress address")
    others = [line for own, line in broken if not own]
    if arguments.killed_host is not None:
        own_clients = [c for c in clients if c["id"].rsplit("-", 2)[1] == f"h{arguments.killed_host}"]
        gap = max([c["max_gap"] for c in own_clients] or [0.0])
        print(f"  host {arguments.killed_host}'s own resources: {len(own_clients) - broken_own} of {len(own_clients)} "
              f"completed, longest silence {gap:.1f} s")
    if routed_line:
        print(routed_line)
    if routed_failure:
        print(routed_failure)
    for line in (others + [line for own, line in broken if own])[:40]:
        print(line)
    if len(broken) > 40:
        print(f"  ... and {len(broken) - 40} more broken connections")
    with open(arguments.totals, "a") as totals_file:
        totals_file.write(f"{total} {completed} {broken_own}\n")
    return 0 if not others and not foreign and not routed_failure else 1


def egress_totals(arguments):
    connections = completed = own = 0
    try:
        for line in open(arguments.file):
            total, done, broken_own = line.split()
            connections += int(total)
            completed += int(done)
            own += int(broken_own)
    except FileNotFoundError:
        pass
    print(f"outbound connections={connections} completed={completed} broken={connections - completed} broken_own_host={own}")
    return 0


def totals(arguments):
    connections = completed = 0
    try:
        for line in open(arguments.file):
            total, done = line.split()
            connections += int(total)
            completed += int(done)
    except FileNotFoundError:
        pass
    print(f"connections={connections} completed={completed} broken={connections - completed}")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    c = commands.add_parser("connections")
    c.add_argument("--label", required=True)
    c.add_argument("--results", required=True)
    c.add_argument("--servers", required=True, help="glob of the servers' JSON logs")
    c.add_argument("--totals", required=True)
    c.add_argument("--stall", type=float)
    c.add_argument("--stall-exempt-host", type=int)
    c.add_argument("--exempt-stall", type=float)
    c.add_argument("--weights")
    c.add_argument("--tolerance", type=float, default=0.08)
    c.add_argument("--min-backend")
    c.add_argument("--killed-backend", help="bN whose server was killed: its broken connections are counted apart")
    k = commands.add_parser("counters")
    k.add_argument("--label", required=True)
    k.add_argument("--json", required=True)
    k.add_argument("--expect", action="append", default=[])
    d = commands.add_parser("drops")
    d.add_argument("--label", required=True)
    d.add_argument("--json", required=True)
    d.add_argument("--allow", action="append", default=[],
                   help="'SCOPE:REASON' drops that do not fail; 'SCOPE:REASON<=N': at most N of them")
    m = commands.add_parser("multicast")
    m.add_argument("--label", required=True)
    m.add_argument("--json", required=True)
    t = commands.add_parser("table")
    t.add_argument("log")
    s = commands.add_parser("totals")
    s.add_argument("file")
    e = commands.add_parser("egress")
    e.add_argument("--label", required=True)
    e.add_argument("--results", required=True, help="glob of the clients' results, ids P-hH-I")
    e.add_argument("--server", required=True, help="the external server's JSON log")
    e.add_argument("--address", required=True, help="the egress address the server must see")
    e.add_argument("--ranges", required=True, help="host=LOW-HIGH,...: each host's egress ports")
    e.add_argument("--totals", required=True)
    e.add_argument("--stall", type=float)
    e.add_argument("--killed-host", type=int)
    e.add_argument("--routed", help="lines 'ID HOST': where the router sent each connection's replies before the event")
    e.add_argument("--event-host", type=int, help="with --routed: the host drained or killed")
    et = commands.add_parser("egress-totals")
    et.add_argument("file")
    arguments = parser.parse_args()
    handler = {"connections": check_connections, "counters": check_counters, "drops": drop_summary,
               "multicast": multicast_check, "table": last_table, "totals": totals, "egress": check_egress,
               "egress-totals": egress_totals}[arguments.command]
    sys.exit(handler(arguments))


if __name__ == "__main__":
    main()
