//! What the kernel side sends to user space through its ring buffer (one small record per
//! answered request and per stall) and the per-connection state it keeps to produce them.
use crate::framing::{CLIENT_ID_CAP, HEADER_CAPTURE, REQUEST_TAIL, RequestFraming};

/// First field of every ring-buffer record: which struct follows.
pub mod kind {
    pub const REQUEST: u32 = 1;
    pub const STALL: u32 = 2;
}

/// Which Kafka request: from its header as the network thread read it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestId {
    pub correlation_id: i32,
    pub api_key: i16,
    pub api_version: i16,
    pub client_id_len: u16,
    /// The client_id was longer than CLIENT_ID_CAP.
    pub client_id_cut: u8,
    /// 1 when this record names a request (stall records may not).
    pub known: u8,
    pub _pad: u32,
    pub client_id: [u8; CLIENT_ID_CAP],
}

impl RequestId {
    pub const NONE: RequestId = RequestId {
        correlation_id: 0,
        api_key: -1,
        api_version: 0,
        client_id_len: 0,
        client_id_cut: 0,
        known: 0,
        _pad: 0,
        client_id: [0; CLIENT_ID_CAP],
    };
}

/// A request read completely, waiting for its response, in its connection's state.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingRequest {
    pub id: RequestId,
    pub tid: u32,
    pub request_bytes: u32,
    /// When its first bytes reached the socket (sock:sk_data_ready), 0 when unknown.
    pub arrival_ns: u64,
    /// Start of the read that brought its first byte.
    pub read_start_ns: u64,
    /// End of the read that brought its last byte: Kafka's own clock starts about here.
    pub read_done_ns: u64,
    /// Start of the first write of its response, 0 until then.
    pub response_start_ns: u64,
    /// The request's first body bytes as captured (`head_len` of them; the bytes after are
    /// stale): the request header, then, with a short client_id, the first fields of the body
    /// (`body::parse_request_body`).
    pub head: [u8; HEADER_CAPTURE],
    /// The request's last REQUEST_TAIL body bytes when `tail_len` is REQUEST_TAIL (0: the read
    /// that brought its last byte held fewer of them).
    pub tail: [u8; REQUEST_TAIL],
    pub head_len: u8,
    pub tail_len: u8,
    pub _pad: [u8; 6],
}

impl PendingRequest {
    pub const NEW: PendingRequest = PendingRequest {
        id: RequestId::NONE,
        tid: 0,
        request_bytes: 0,
        arrival_ns: 0,
        read_start_ns: 0,
        read_done_ns: 0,
        response_start_ns: 0,
        head: [0; HEADER_CAPTURE],
        tail: [0; REQUEST_TAIL],
        head_len: 0,
        tail_len: 0,
        _pad: [0; 6],
    };
}

/// One broker connection as its network thread sees it, in the slot of its fd (fd modulo
/// CONNECTION_SLOTS), cleared when the broker closes the fd. Kafka's SocketServer serves one
/// request per connection at a time (it mutes the channel from a request's read until its
/// response is sent), so one pending request per connection is all there is to keep.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connection {
    pub requests: RequestFraming,
    /// The socket behind the fd (sock:sock_recv_length), 0 until known.
    pub sk: u64,
    /// Bytes of the response being written still to go; 0 between responses.
    pub response_left: u64,
    /// Size of the response being written, its 4-byte size prefix included.
    pub response_total: u64,
    pub response_correlation_id: i32,
    /// fd + 1 of the connection in this slot; 0 for a free slot.
    pub fd_plus_1: u32,
    /// A response is being written (its request may or may not be known).
    pub responding: u8,
    /// `pending` holds a request read and not yet answered.
    pub has_pending: u8,
    pub _pad: [u8; 6],
    pub pending: PendingRequest,
}

impl Connection {
    pub const NEW: Connection = Connection {
        requests: RequestFraming::NEW,
        sk: 0,
        response_left: 0,
        response_total: 0,
        response_correlation_id: 0,
        fd_plus_1: 0,
        responding: 0,
        has_pending: 0,
        _pad: [0; 6],
        pending: PendingRequest::NEW,
    };
}

/// Data arrival on a socket a network thread reads, in the slot of its address
/// ([`socket_slot`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketState {
    /// The socket (kernel address) in this slot, 0 for a free one.
    pub sk: u64,
    /// First sk_data_ready since the last read, 0 when none.
    pub unread_since_ns: u64,
}

/// Slots of socket state: a power of two.
pub const SOCKET_SLOTS: u32 = 16384;

/// A socket's slot: its address (slab objects a few KiB apart) hashed (Fibonacci hashing) to
/// SOCKET_SLOTS.
pub const fn socket_slot(sk: u64) -> u32 {
    (sk.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SOCKET_SLOTS.trailing_zeros())) as u32
}

/// Slots of connection state, by fd: a JVM's fds are small dense numbers (the lowest free one
/// each time), so the connections of a broker with fewer fds than this never share one.
pub const CONNECTION_SLOTS: u32 = 16384;

pub const fn connection_slot(fd: u32) -> u32 {
    fd % CONNECTION_SLOTS
}

/// Sent when a request's response has been fully written (the last write or sendfile).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestEvent {
    pub kind: u32,
    /// The network thread that wrote the response.
    pub tid: u32,
    pub fd: u32,
    pub request_bytes: u32,
    pub response_bytes: u64,
    pub arrival_ns: u64,
    pub read_start_ns: u64,
    pub read_done_ns: u64,
    pub response_start_ns: u64,
    pub response_done_ns: u64,
    pub id: RequestId,
    /// PendingRequest's `head`, `tail`, `head_len` and `tail_len`: the request's first and last
    /// body bytes, for `body::parse_request_body`.
    pub head: [u8; HEADER_CAPTURE],
    pub tail: [u8; REQUEST_TAIL],
    pub head_len: u8,
    pub tail_len: u8,
    pub _pad: [u8; 6],
}

impl RequestEvent {
    /// A request record with every field zero (RequestId::NONE's id): for tests and literals.
    pub const ZERO: RequestEvent = RequestEvent {
        kind: kind::REQUEST,
        tid: 0,
        fd: 0,
        request_bytes: 0,
        response_bytes: 0,
        arrival_ns: 0,
        read_start_ns: 0,
        read_done_ns: 0,
        response_start_ns: 0,
        response_done_ns: 0,
        id: RequestId::NONE,
        head: [0; HEADER_CAPTURE],
        tail: [0; REQUEST_TAIL],
        head_len: 0,
        tail_len: 0,
        _pad: [0; 6],
    };

    /// The captured first body bytes (request header first).
    pub fn head(&self) -> &[u8] {
        &self.head[..(self.head_len as usize).min(HEADER_CAPTURE)]
    }

    /// The last REQUEST_TAIL body bytes, when captured.
    pub fn tail(&self) -> Option<&[u8; REQUEST_TAIL]> {
        (self.tail_len as usize == REQUEST_TAIL).then_some(&self.tail)
    }
}

/// Sent for every page-cache miss of a network thread (and every sendfile miss), and every
/// network-thread syscall slower than the stall threshold: the thread could serve none of its
/// connections meanwhile.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StallEvent {
    pub kind: u32,
    pub tid: u32,
    pub syscall: u8,
    pub cache: u8,
    pub _pad: [u8; 2],
    /// The socket being written or read (sendfile's out_fd), -1 when none.
    pub socket_fd: i32,
    /// The file read (sendfile's in_fd, pread's fd), -1 when none.
    pub file_fd: i32,
    /// Device of the file read, the kernel's encoding (major << 20 | minor); 0 when none.
    pub dev: u32,
    pub inode: u64,
    /// Page-cache range the call looked up, in bytes: [first_byte, end_byte).
    pub first_byte: u64,
    pub end_byte: u64,
    pub start_ns: u64,
    pub duration_ns: u64,
    /// Time the thread was switched out during the call, and the part of it in D state.
    pub off_cpu_ns: u64,
    pub blocked_ns: u64,
    pub pages_added: u64,
    pub bytes: i64,
    /// The request whose response was being sent on `socket_fd`, when known.
    pub request: RequestId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_have_no_hidden_padding() {
        // Padding the compiler inserts would be uninitialised kernel stack in the ring buffer.
        let fields = 4 + 2 + 2 + 2 + 1 + 1 + 4 + CLIENT_ID_CAP;
        assert_eq!(core::mem::size_of::<RequestId>(), fields);
        let bodies = HEADER_CAPTURE + REQUEST_TAIL + 1 + 1 + 6;
        assert_eq!(core::mem::size_of::<RequestEvent>(), 4 * 4 + 6 * 8 + fields + bodies);
        assert_eq!(core::mem::size_of::<PendingRequest>(), fields + 4 + 4 + 4 * 8 + bodies);
        // The probes copy `head` and `tail` a u64 at a time, between these fields and the
        // framing state's.
        for offset in [
            core::mem::offset_of!(RequestEvent, head),
            core::mem::offset_of!(RequestEvent, tail),
            core::mem::offset_of!(PendingRequest, head),
            core::mem::offset_of!(PendingRequest, tail),
            core::mem::offset_of!(Connection, pending) + core::mem::offset_of!(PendingRequest, head),
            core::mem::offset_of!(Connection, requests) + core::mem::offset_of!(RequestFraming, header),
            core::mem::offset_of!(Connection, requests) + core::mem::offset_of!(RequestFraming, tail),
        ] {
            assert_eq!(offset % 8, 0, "offset {offset}");
        }
        let framing = 4 + 4 + 4 + 1 + 3 + 8 + 8 + 8 + crate::framing::HEADER_BUFFER + REQUEST_TAIL;
        assert_eq!(core::mem::size_of::<RequestFraming>(), framing);
        assert_eq!(core::mem::size_of::<Connection>(), framing + 8 * 3 + 4 + 4 + 8 + core::mem::size_of::<PendingRequest>());
        assert_eq!(core::mem::size_of::<StallEvent>(), 4 + 4 + 4 + 4 + 4 + 4 + 9 * 8 + fields);
    }

    /// Sockets spread over the slots: 4096 sockets a slab object apart (2304 bytes, a tcp_sock)
    /// take nearly as many distinct slots.
    #[test]
    fn socket_slots_spread_slab_neighbours() {
        let base = 0xffff_8881_0000_0000u64;
        let mut slots: std::vec::Vec<u32> = (0..4096u64).map(|i| socket_slot(base + i * 2304)).collect();
        assert!(slots.iter().all(|&s| s < SOCKET_SLOTS));
        slots.sort_unstable();
        slots.dedup();
        assert!(slots.len() > 3600, "{} distinct slots", slots.len());
        assert_eq!(connection_slot(5), connection_slot(5 + CONNECTION_SLOTS));
    }
}
