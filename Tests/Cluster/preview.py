#!/usr/bin/env python3
"""Compares what `switchyard ctl preview` predicted for a change with what the change did
(Tests/Cluster/README.md, "Preview checks"; docs/operations.md, "Preview").

    preview.py moved --label L --before FILE --after FILE --servers 'DIR/server-*.jsonl'
                     --since T0 --changed TC --until T1 [--fin S] [--killed-backend bN] [--service web]
        FILE: `ctl preview ... --json` answers of one host. --before: the preview of the change's
        file, asked at T0 before the change; --after: the preview of the file the hosts then run,
        asked on the same host at TC, once the change is applied everywhere, ending at T1
        (times as `date +%s.%N` gives them).
        predicted = the before answer's held_by_entry.backend: live connections whose new pick
        is another backend than the one their entry keeps. moved = the after answer's
        held_by_entry.backend: the connections the applied change left held by their entry (the
        running table picks another backend for them). Both walk the same host's table, whose
        entries are every host's connections (its own, and its peers' learned by gossip).
        The two differ only by the entries that came or went between the two walks:
          opened_during = connections a server started answering in [T0 - 0.5, TC] (one opened
                          later gets the new table's pick: never held by its entry);
          closed_during = connections whose entry can have left the table in [T0, T1]: those that
                          ended (FIN) in [T0 - fin - 3, T1 - fin + 0.5] (an entry stays `fin`
                          seconds after the last packet, and the idle scan runs within about a
                          second, 3 s under load), plus, with --killed-backend, the connections
                          of that backend's server that never ended (killed: their entries close
                          with the connection).
        Only connections from the client (198.18.1.2) count; health checks do not pass the VIP.
        Prints `preview L: predicted=N moved=M opened_during=K closed_during=C (...)`; exit 1
        unless |N - M| <= K + C.

    preview.py flows --label L --preview FILE --servers GLOB --after PREFIX [--before PREFIX]
                     --tolerance T [--service web]
        New flows: per backend, the preview's `share_after` against the share of the spread
        PREFIX's connections (request ids PREFIX-i) that each server answered (backend bN is
        the one of host N); with --before (a spread measured before the change), also the net
        share that moved, sum over backends of max(0, after - before), predicted from the
        preview's share_before/share_after and measured from the two spreads. Exit 1 when a
        difference exceeds T.
"""
import argparse
import glob
import json
import sys

CLIENT = "198.18.1.2"


def load_lines(path):
    with open(path) as file:
        return [json.loads(line) for line in file if line.strip()]


def records(pattern):
    """Every start and end record of the servers' logs for connections from the client."""
    result = []
    for path in sorted(glob.glob(pattern)):
        result += [r for r in load_lines(path) if r.get("client") == CLIENT]
    return result


def service(path, name):
    return [s for s in json.load(open(path))["services"] if s["service"] == name][0]


def moved(arguments):
    before, after = service(arguments.before, arguments.service), service(arguments.after, arguments.service)
    predicted, measured = before["held_by_entry"]["backend"], after["held_by_entry"]["backend"]
    t0, t1, fin = arguments.since, arguments.until, arguments.fin
    every = records(arguments.servers)
    opened = sum(1 for r in every if r["event"] == "start" and t0 - 0.5 <= r["start"] <= arguments.changed)
    closed = sum(1 for r in every if r["event"] == "end" and t0 - fin - 3 <= r["end"] <= t1 - fin + 0.5)
    killed = 0
    if arguments.killed_backend:
        ended = {r["id"] for r in every if r["event"] == "end" and r["backend"] == arguments.killed_backend}
        killed = sum(1 for r in every if r["event"] == "start" and r["backend"] == arguments.killed_backend
                     and r["start"] < t0 - 0.5 and r["id"] not in ended)
    ok = abs(predicted - measured) <= opened + closed + killed
    print(f"preview {arguments.label}: predicted={predicted} moved={measured} opened_during={opened} "
          f"closed_during={closed + killed} (pick_changes={before['pick_changes']['backend']}, "
          f"live connections {before['connections']} before, {after['connections']} after, "
          f"change done {arguments.changed - t0:.1f} s after the first walk began, {t1 - t0:.1f} s between the two walks"
          + (f", {killed} of {arguments.killed_backend}'s killed server" if arguments.killed_backend else "")
          + ")" + ("" if ok else f": FAILED, |predicted - moved| = {abs(predicted - measured)} > {opened + closed + killed}"))
    return 0 if ok else 1


def spread_shares(every, prefix):
    counts = {}
    for r in every:
        if r["event"] == "start" and r["id"].rsplit("-", 1)[0] == prefix:
            counts[r["backend"]] = counts.get(r["backend"], 0) + 1
    total = sum(counts.values())
    return {b: n / total for b, n in counts.items()} if total else {}, total


def flows(arguments):
    web = service(arguments.preview, arguments.service)
    every = records(arguments.servers)
    after, count = spread_shares(every, arguments.after)
    ok = count > 0
    parts = []
    predicted_after, predicted_before = {}, {}
    for backend in web["new_flows"]["backends"]:
        name = f"b{backend['host']}"
        predicted_after[name] = backend["share_after"]
        predicted_before[name] = backend["share_before"]
        measured = after.get(name, 0.0)
        good = abs(measured - backend["share_after"]) <= arguments.tolerance
        ok &= good
        parts.append(f"{name} {backend['share_after'] * 100:.1f}/{measured * 100:.1f}" + ("" if good else " (FAILED)"))
    line = (f"preview {arguments.label} new flows: predicted moving {web['new_flows']['backend_moved'] * 100:.1f} %; "
            f"share after, predicted/measured over {count} connections (%): " + ", ".join(parts))
    if arguments.before:
        before, before_count = spread_shares(every, arguments.before)
        names = set(predicted_after) | set(before) | set(after)
        net_predicted = sum(max(0.0, predicted_after.get(b, 0.0) - predicted_before.get(b, 0.0)) for b in names)
        net_measured = sum(max(0.0, after.get(b, 0.0) - before.get(b, 0.0)) for b in names)
        good = before_count > 0 and abs(net_predicted - net_measured) <= arguments.tolerance
        ok &= good
        line += (f"; net share moved predicted={net_predicted * 100:.1f} % measured={net_measured * 100:.1f} % "
                 f"(spreads {arguments.before} and {arguments.after})" + ("" if good else " (FAILED)"))
    print(line + f" (tolerance ± {arguments.tolerance * 100:.0f} points)")
    return 0 if ok else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    m = commands.add_parser("moved")
    m.add_argument("--label", required=True)
    m.add_argument("--before", required=True)
    m.add_argument("--after", required=True)
    m.add_argument("--servers", required=True)
    m.add_argument("--since", type=float, required=True)
    m.add_argument("--changed", type=float, required=True)
    m.add_argument("--until", type=float, required=True)
    m.add_argument("--fin", type=float, default=10.0)
    m.add_argument("--killed-backend")
    m.add_argument("--service", default="web")
    f = commands.add_parser("flows")
    f.add_argument("--label", required=True)
    f.add_argument("--preview", required=True)
    f.add_argument("--servers", required=True)
    f.add_argument("--after", required=True)
    f.add_argument("--before")
    f.add_argument("--tolerance", type=float, required=True)
    f.add_argument("--service", default="web")
    arguments = parser.parse_args()
    sys.exit({"moved": moved, "flows": flows}[arguments.command](arguments))


if __name__ == "__main__":
    main()
