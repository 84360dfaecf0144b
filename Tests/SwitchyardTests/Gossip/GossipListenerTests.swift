import CDPDK
import Foundation
import SwitchyardCluster
import SwitchyardGossip
import SwitchyardTesting
import Testing

/// Listener registration over gossip (LISTENERS, docs/gossip.md): nodes on 127.0.0.1, each with
/// a `ListenerBook`. Every host must end with the same directory generation and digest, whatever
/// is lost, reordered or repeated, and a restarted host's old listeners must go.
@Suite("gossip listeners", .serialized)
struct GossipListenerTests {
    static func web(_ host: Int, _ n: Int, weight: UInt16 = 1) -> ListenerBook.Listener {
        ListenerBook.Listener(vip: IPAddress("198.19.0.1")!, protocolNumber: 6, servicePort: 80,
                              address: IPAddress(bytes: [198, 18, UInt8(110 + host), UInt8(n)]), port: 8080, weight: weight)
    }

    static func attachBooks(_ hosts: [Host]) -> [ListenerBook] {
        hosts.map { host in
            let book = ListenerBook(localHostID: UInt16(host.id), incarnation: host.node.incarnation)
            host.node.listenerBook = book
            return book
        }
    }

    static func agree(_ books: [ListenerBook]) -> Bool {
        let first = books[0]
        return books.allSatisfy { $0.digest == first.digest && $0.generationText == first.generationText }
    }

    /// Three hosts register, re-weight and withdraw listeners in bursts while 30 % of every
    /// host's received datagrams are dropped: all end with the same generation and digest, which
    /// is the truth (each host's last version).
    @Test func threeHostsConvergeOnTheSameGenerationDespiteLoss() throws {
        let bed = try GossipTestbed()
        let hosts = try (1...3).map { try bed.makeNode(host: $0) }
        let books = Self.attachBooks(hosts)
        for host in hosts { host.node.injectedReceiveLoss = 0.3 }
        #expect(pollUntil(hosts, timeout: 10) { hosts.allSatisfy { $0.node.isSynchronised } } != nil)
        for round in 0..<10 {
            for (host, book) in zip(hosts, books) {
                try book.listen(Self.web(host.id, round, weight: UInt16(1 + round % 3)), source: .ctl)
                if round % 3 == 2 { book.unlisten(Self.web(host.id, round - 1)) }
                if round % 4 == 3 { try book.listen(Self.web(host.id, 0, weight: 9), source: .ctl) }
                host.node.announceListenersSoon()
            }
            pollFor(hosts, seconds: 0.01) // changes faster than the messages get through
        }
        let converged = pollUntil(hosts, timeout: 10) { Self.agree(books) }
        #expect(converged != nil, "generations: \(books.map(\.generationText)), digests \(books.map(\.digest))")
        for book in books {
            for (host, other) in zip(hosts, books) {
                #expect(book.sets[UInt16(host.id)] == other.own, "host \(book.localHostID) holds host \(host.id)'s last version")
            }
        }
        let applied = hosts.reduce(UInt64(0)) { $0 + $1.node.counters().value("listeners-applied") }
        #expect(applied > 0)
        print("listeners: 3 hosts, 30 % loss, converged \(String(format: "%.3f", converged ?? -1)) s after the last change, generation \(books[0].generationText), \(applied) sets applied, \(hosts.reduce(UInt64(0)) { $0 + $1.node.counters().value("listeners-stale") }) stale")
    }

    /// Two hosts, fed directly: host 2's versions arrive in every order, some twice: host 1
    /// always ends with the newest. Then host 2 restarts (new incarnation, nothing registered):
    /// its old listeners are gone on host 1.
    @Test func twoHostsAgreeWhateverTheOrderAndARestartReplacesTheOldSet() throws {
        let bed = try GossipTestbed(hosts: 2)
        let one = try bed.makeNode(host: 1)
        let book = ListenerBook(localHostID: 1, incarnation: one.node.incarnation)
        one.node.listenerBook = book
        var sender = TestSender(host: 2)
        sender.verify(with: one.node, from: bed.endpoint(2))
        let versions: [ListenerAnnouncement] = (1...5).map { v in
            ListenerAnnouncement(version: UInt64(v), listeners: (0..<v).map { Self.web(2, $0) })
        }
        let datagrams = versions.map { sender.datagram(.listeners($0)) }
        for index in [3, 0, 4, 1, 4, 2, 0] { _ = one.node.handle(datagrams[index], from: bed.endpoint(2)) }
        #expect(book.sets[2] == ListenerBook.ListenerSet(incarnation: sender.incarnation, version: 5, listeners: versions[4].listeners))
        #expect(one.node.counters().value("listeners-applied") == 2) // 4, then 5; the rest was older
        #expect(one.node.counters().value("listeners-stale") == 3) // versions 1, 2, 3; the repeats are `replayed`

        // A verified peer is challenged at most once per heartbeat interval (20 ms here).
        Thread.sleep(forTimeInterval: 0.05)
        var restarted = TestSender(host: 2, incarnation: sender.incarnation + (1 << 16))
        restarted.verify(with: one.node, from: bed.endpoint(2))
        _ = one.node.handle(restarted.datagram(.listeners(ListenerAnnouncement(version: 0, listeners: []))), from: bed.endpoint(2))
        #expect(book.sets[2]?.listeners == [] && book.sets[2]?.incarnation == restarted.incarnation)
        // The old incarnation's messages are refused before they reach the book.
        _ = one.node.handle(datagrams[4], from: bed.endpoint(2))
        #expect(book.sets[2]?.listeners == [])
    }

    /// Host 1 registers; host 2 learns it within a poll or two, and again after losing it all:
    /// the set is re-sent every digest interval.
    @Test func aLostAnnouncementIsRepairedByTheNextPeriodicOne() throws {
        let bed = try GossipTestbed(hosts: 2)
        let hosts = try (1...2).map { try bed.makeNode(host: $0) }
        let books = Self.attachBooks(hosts)
        #expect(pollUntil(hosts, timeout: 5) { hosts.allSatisfy { $0.node.isSynchronised } } != nil)
        hosts[1].node.injectedReceiveLoss = 0.9 // nearly everything lost for a while
        try books[0].listen(Self.web(1, 1), source: .ctl)
        hosts[0].node.announceListenersSoon()
        pollFor(hosts, seconds: 0.05)
        hosts[1].node.injectedReceiveLoss = 0
        let learnt = pollUntil(hosts, timeout: 3) { books[1].sets[1]?.version == 1 }
        #expect(learnt != nil)
        #expect(pollUntil(hosts, timeout: 3) { Self.agree(books) } != nil)
    }
}
