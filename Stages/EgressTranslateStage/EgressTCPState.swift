import CDPDK
import SwitchyardCluster

/// TCP state of an egress connection's entry, seen from either direction (the inbound rules of
/// ownership-lookup): RST removes the entry, FIN sets it closing (kept `timeouts.fin`), a packet
/// without SYN establishes an embryonic entry.
@inlinable @inline(__always)
func followTCP(_ table: ConnectionView, entry: UnsafeMutablePointer<FlowEntry>, control: UInt64,
               key: UnsafeMutablePointer<sy_flow_key>, hash: UInt32, position: Int32, flags: UInt8) -> UInt8
{
    let state = FlowEntry.state(control)
    if flags & 0x04 != 0 {
        table.remove(key: key, hash: hash, position: position, control: control, reason: 2)
        return 2
    } else if flags & 0x01 != 0 {
        if state != FlowState.closing.rawValue {
            table.setState(entry, control: control, to: .closing)
            return 1
        }
    } else if flags & 0x02 == 0 && state == FlowState.embryonic.rawValue {
        table.setState(entry, control: control, to: .established)
    }
    return 0
}
