//! Kafka request latency from the network threads' own reads and writes: per API, per
//! client.id (capped) and listener, and per connection, where strictly one-at-a-time producers
//! show up. Requests answered on controller-plane listeners (the cluster's own traffic) are
//! kept apart, per listener and API.
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use kstall_common::events::RequestEvent;
use serde::Serialize;

use crate::{
    hist::{BucketCount, LatencyRecorder, Percentiles},
    listeners::{Listener, Plane},
    kafka::{self, PRODUCE, RequestFacts},
};

/// Client ids tracked one by one; later ones are counted as "(other)", so a broker with
/// thousands of short-lived client ids cannot grow kstall's memory.
pub const MAX_TRACKED_CLIENTS: usize = 64;
/// Clients shown by name in a summary; the rest are folded into "(other)".
pub const TOP_CLIENTS: usize = 10;
pub const OTHER_CLIENTS: &str = "(other)";
const MAX_TRACKED_CONNECTIONS: usize = 4096;
/// Client ids listed per network thread (the rest counted in `other_clients`).
const CLIENTS_PER_THREAD: usize = 32;
/// Recent response starts kept per connection to count requests in flight at an arrival.
const RECENT_RESPONSES: usize = 16;
/// Produce requests a connection needs before it can be called a synchronous producer.
pub const SYNC_PRODUCER_MIN_REQUESTS: u64 = 20;

/// When a request reached the socket, was read, and was answered (kernel clock, ns).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestTiming {
    /// None when the data's arrival was not seen (first request of a connection, or
    /// pipelined behind another in the same packet).
    pub arrival_ns: Option<u64>,
    pub read_start_ns: u64,
    pub read_done_ns: u64,
    pub response_done_ns: u64,
}

impl RequestTiming {
    pub fn of(e: &RequestEvent) -> RequestTiming {
        RequestTiming {
            arrival_ns: (e.arrival_ns != 0 && e.arrival_ns <= e.read_start_ns).then_some(e.arrival_ns),
            read_start_ns: e.read_start_ns,
            read_done_ns: e.read_done_ns,
            response_done_ns: e.response_done_ns,
        }
    }

    /// The earliest moment the broker is known to have had the request.
    pub fn start_ns(&self) -> u64 {
        self.arrival_ns.unwrap_or(self.read_start_ns)
    }

    /// What a client sees, less the network: socket wait + broker time.
    pub fn total_ns(&self) -> u64 {
        self.response_done_ns.saturating_sub(self.start_ns())
    }

    /// Request fully read to response fully written: what Kafka's RequestMetrics can see.
    pub fn broker_ns(&self) -> u64 {
        self.response_done_ns.saturating_sub(self.read_done_ns)
    }

    /// Time the request's bytes sat in the socket before the network thread read them.
    pub fn socket_wait_ns(&self) -> Option<u64> {
        self.arrival_ns.map(|a| self.read_start_ns.saturating_sub(a))
    }
}

#[derive(Clone, Debug, Default)]
struct ApiTrack {
    total: LatencyRecorder,
    broker: LatencyRecorder,
    socket_wait: LatencyRecorder,
    wait_unknown: u64,
}

/// What stalls added to one request's latency (found by `stalls::Attribution`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delay {
    /// Time stalls of the request's own network thread overlapped its latency window.
    pub added_ns: u64,
    /// The part of `added_ns` that page-cache misses were.
    pub miss_ns: u64,
    /// An acks=all Produce: time stalls of the threads serving followers' Fetch connections
    /// (its own thread left out) overlapped its latency window.
    pub replication_ns: u64,
}

/// One client's requests of one API on one listener, and what stalls did to them.
#[derive(Clone, Debug, Default)]
struct ClientApiTrack {
    total: LatencyRecorder,
    /// Latency of the stalled ones; allocated at the first (a recorder is ~12 KiB).
    stalled: Option<Box<LatencyRecorder>>,
    stalled_by_miss: u64,
    added_ns: u64,
    miss_ns: u64,
    replication_delayed: u64,
    replication_ns: u64,
}

impl ClientApiTrack {
    fn record(&mut self, total_ns: u64, delay: &Delay) {
        self.total.record(total_ns);
        if delay.added_ns > 0 {
            self.stalled.get_or_insert_default().record(total_ns);
            self.stalled_by_miss += (delay.miss_ns > 0) as u64;
            self.added_ns += delay.added_ns;
            self.miss_ns += delay.miss_ns;
        }
        if delay.replication_ns > 0 {
            self.replication_delayed += 1;
            self.replication_ns += delay.replication_ns;
        }
    }

    fn merge(&mut self, other: &ClientApiTrack) {
        self.total.merge(&other.total);
        if let Some(o) = &other.stalled {
            self.stalled.get_or_insert_default().merge(o);
        }
        self.stalled_by_miss += other.stalled_by_miss;
        self.added_ns += other.added_ns;
        self.miss_ns += other.miss_ns;
        self.replication_delayed += other.replication_delayed;
        self.replication_ns += other.replication_ns;
    }
}

#[derive(Clone, Debug, Default)]
struct ClientTrack {
    /// By the listener the requests came in on (None: not known) and API.
    by_api: BTreeMap<(Option<String>, i16), ClientApiTrack>,
    connections: Vec<u32>,
    requests: u64,
    in_flight_sum: u64,
    in_flight_max: u32,
}

impl ClientTrack {
    fn merge(&mut self, other: &ClientTrack) {
        for (key, r) in &other.by_api {
            self.by_api.entry(key.clone()).or_default().merge(r);
        }
        self.connections.extend(&other.connections);
        self.requests += other.requests;
        self.in_flight_sum += other.in_flight_sum;
        self.in_flight_max = self.in_flight_max.max(other.in_flight_max);
    }
}

/// One client connection, keyed by the broker's socket fd (and reset when its client changes).
#[derive(Clone, Debug, Default)]
struct ConnectionTrack {
    client: String,
    /// When the responses to recent requests began to be written. A client waiting for a
    /// response cannot send its next request before that; its bytes can land while the
    /// broker's write is still returning, so the response's end would not do.
    recent_response_start_ns: VecDeque<u64>,
    produce: u64,
    /// Produce requests that arrived while an earlier request was still unanswered.
    produce_pipelined: u64,
    /// Previous response written to this Produce's arrival.
    produce_gap: LatencyRecorder,
    produce_latency: LatencyRecorder,
    last_done_ns: u64,
    last_seen_ns: u64,
}

/// The connections one network thread served, as requests named them.
#[derive(Clone, Debug, Default)]
struct ThreadTrack {
    listener: Option<String>,
    fds: BTreeSet<u32>,
    clients: BTreeSet<String>,
    other_clients: BTreeSet<String>,
    followers: BTreeSet<i32>,
}

/// A network thread's connections: who waits when it is blocked (new connections land on the
/// threads in turn, so it matters beyond today's clients).
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct ThreadConnections {
    pub tid: u32,
    pub listener: Option<String>,
    /// Connections (broker-side fds) it answered requests on during the trace.
    pub connections: usize,
    /// Their client ids (at most 32; `other_clients` counts the rest).
    pub clients: Vec<String>,
    pub other_clients: usize,
    /// Broker ids of the followers whose Fetch connections it served.
    pub followers: Vec<i32>,
}

/// What stalls did to one client's requests of one API: the blast radius, per victim.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct DelayedRow {
    pub api: &'static str,
    pub api_key: i16,
    pub client_id: String,
    pub requests: u64,
    /// Requests a stall of their own network thread overlapped (held, or waiting in the socket).
    pub stalled_requests: u64,
    pub stalled_by_miss: u64,
    /// Time those stalls overlapped them, summed over requests, and its page-cache-miss part.
    pub added_ns: u64,
    pub miss_ns: u64,
    /// acks=all Produce that waited while a follower's Fetch thread was stalled, and that time.
    pub replication_delayed: u64,
    pub replication_ns: u64,
    /// Latency (socket wait + broker time) of the stalled requests and of the others.
    pub stalled: Percentiles,
    pub not_stalled: Percentiles,
    /// Sum of all their latencies (for the share the broker's stalls were of it; not in JSON).
    #[serde(skip)]
    pub latency_sum_ns: u64,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct ApiRow {
    pub api: &'static str,
    pub api_key: i16,
    pub count: u64,
    pub rate_per_s: f64,
    /// Socket wait + broker time.
    pub total: Percentiles,
    pub broker: Percentiles,
    pub socket_wait: Percentiles,
    /// Requests whose arrival was not seen (not in `socket_wait`).
    pub socket_wait_unknown: u64,
    /// `total` per power of two of nanoseconds.
    pub buckets: Vec<BucketCount>,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct ClientRow {
    pub client_id: String,
    /// The listener these requests came in on; null when its network threads' names do not tell.
    pub listener: Option<String>,
    pub api: &'static str,
    pub count: u64,
    pub rate_per_s: f64,
    pub total: Percentiles,
    pub connections: usize,
    /// Requests of this client in flight on one connection when one arrived (itself included).
    pub max_in_flight: u32,
    pub mean_in_flight: f64,
    /// `total` per power of two of nanoseconds, and its sum (for metrics; not in JSON).
    #[serde(skip)]
    pub buckets: Vec<BucketCount>,
    #[serde(skip)]
    pub sum_ns: u64,
}

/// Requests of one API on one controller-plane listener.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct ControllerApiRow {
    pub listener: String,
    pub api: &'static str,
    pub api_key: i16,
    pub count: u64,
    pub rate_per_s: f64,
    /// Socket wait + broker time.
    pub total: Percentiles,
    pub broker: Percentiles,
    /// `total` per power of two of nanoseconds.
    pub buckets: Vec<BucketCount>,
    /// Sum of `total` (for metrics; not in JSON).
    #[serde(skip)]
    pub sum_ns: u64,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct SyncProducer {
    pub client_id: String,
    pub fd: u32,
    pub produce_requests: u64,
    /// Time from a response to the next Produce, median.
    pub median_gap_ns: u64,
    pub median_latency_ns: u64,
    /// The most this connection can produce, one request per round trip.
    pub max_requests_per_s: f64,
}

#[derive(Clone, Debug, Default, Serialize, schemars::JsonSchema)]
pub struct RequestSummary {
    pub apis: Vec<ApiRow>,
    /// The TOP_CLIENTS busiest client ids, the rest folded into "(other)".
    pub clients: Vec<ClientRow>,
    /// Every tracked client id (at most MAX_TRACKED_CLIENTS, then "(other)"), for metrics.
    #[serde(skip)]
    pub all_clients: Vec<ClientRow>,
    /// Tracked client ids folded into the "(other)" rows.
    pub other_client_ids: usize,
    /// Requests of client ids beyond the tracked ones (also in "(other)").
    pub untracked_client_requests: u64,
    pub sync_producers: Vec<SyncProducer>,
    /// Per network thread: its connections' clients and followers.
    pub threads: Vec<ThreadConnections>,
}

#[derive(Default)]
pub struct RequestStats {
    apis: BTreeMap<i16, ApiTrack>,
    clients: HashMap<String, ClientTrack>,
    untracked_client_requests: u64,
    connections: HashMap<u32, ConnectionTrack>,
    /// Controller-plane requests by (listener, API key).
    controller: BTreeMap<(String, i16), ApiTrack>,
    threads: BTreeMap<u32, ThreadTrack>,
}

impl RequestStats {
    /// Accounts one answered request, served by a network thread of `listener` (None: not
    /// known), and what the stalls did to it. A controller-plane listener's requests go to
    /// their own table only.
    pub fn record(&mut self, e: &RequestEvent, listener: Option<&Listener>, facts: &RequestFacts, delay: &Delay) {
        let t = RequestTiming::of(e);
        if let Some(l) = listener.filter(|l| l.plane == Plane::Controller) {
            let track = self.controller.entry((l.name.clone(), e.id.api_key)).or_default();
            track.total.record(t.total_ns());
            track.broker.record(t.broker_ns());
            return;
        }
        let api = self.apis.entry(e.id.api_key).or_default();
        api.total.record(t.total_ns());
        api.broker.record(t.broker_ns());
        match t.socket_wait_ns() {
            Some(w) => api.socket_wait.record(w),
            None => api.wait_unknown += 1,
        }

        let client = kafka::client_id(&e.id);
        let thread = self.threads.entry(e.tid).or_default();
        thread.listener = listener.map(|l| l.name.clone());
        if thread.fds.len() < MAX_TRACKED_CONNECTIONS {
            thread.fds.insert(e.fd);
        }
        if !thread.clients.contains(&client) {
            if thread.clients.len() < CLIENTS_PER_THREAD {
                thread.clients.insert(client.clone());
            } else if thread.other_clients.len() < MAX_TRACKED_CLIENTS {
                thread.other_clients.insert(client.clone());
            }
        }
        if let Some(broker_id) = facts.follower {
            thread.followers.insert(broker_id);
        }
        let conn = self.connection(e.fd, &client, t.response_done_ns);
        let in_flight =
            1 + conn.recent_response_start_ns.iter().filter(|&&start| start > t.start_ns()).count() as u32;
        if e.id.api_key == PRODUCE {
            conn.produce += 1;
            conn.produce_latency.record(t.total_ns());
            if in_flight > 1 {
                conn.produce_pipelined += 1;
            } else if conn.last_done_ns != 0 {
                conn.produce_gap.record(t.start_ns().saturating_sub(conn.last_done_ns));
            }
        }
        if conn.recent_response_start_ns.len() == RECENT_RESPONSES {
            conn.recent_response_start_ns.pop_front();
        }
        conn.recent_response_start_ns.push_back(e.response_start_ns);
        conn.last_done_ns = t.response_done_ns;

        let key = if self.clients.contains_key(&client) || self.clients.len() < MAX_TRACKED_CLIENTS {
            client
        } else {
            self.untracked_client_requests += 1;
            OTHER_CLIENTS.to_string()
        };
        let c = self.clients.entry(key).or_default();
        c.by_api.entry((listener.map(|l| l.name.clone()), e.id.api_key)).or_default().record(t.total_ns(), delay);
        if !c.connections.contains(&e.fd) && c.connections.len() < 64 {
            c.connections.push(e.fd);
        }
        c.requests += 1;
        c.in_flight_sum += in_flight as u64;
        c.in_flight_max = c.in_flight_max.max(in_flight);
    }

    fn connection(&mut self, fd: u32, client: &str, now_ns: u64) -> &mut ConnectionTrack {
        if !self.connections.contains_key(&fd) && self.connections.len() >= MAX_TRACKED_CONNECTIONS {
            // Forget the connection idle the longest.
            if let Some(oldest) = self.connections.iter().min_by_key(|(_, c)| c.last_seen_ns).map(|(fd, _)| *fd) {
                self.connections.remove(&oldest);
            }
        }
        let conn = self.connections.entry(fd).or_default();
        if conn.client != client {
            // The fd now belongs to another client's connection.
            *conn = ConnectionTrack { client: client.to_string(), ..Default::default() };
        }
        conn.last_seen_ns = now_ns;
        conn
    }

    pub fn summary(&self, elapsed_s: f64) -> RequestSummary {
        let rate = |n: u64| if elapsed_s > 0.0 { n as f64 / elapsed_s } else { 0.0 };
        let apis = self
            .apis
            .iter()
            .map(|(&api_key, a)| ApiRow {
                api: kafka::api_name(api_key),
                api_key,
                count: a.total.count(),
                rate_per_s: rate(a.total.count()),
                total: a.total.percentiles(),
                broker: a.broker.percentiles(),
                socket_wait: a.socket_wait.percentiles(),
                socket_wait_unknown: a.wait_unknown,
                buckets: a.total.log2_buckets(),
            })
            .collect();

        let mut ranked: Vec<(&String, &ClientTrack)> =
            self.clients.iter().filter(|(id, _)| id.as_str() != OTHER_CLIENTS).collect();
        ranked.sort_by(|a, b| b.1.requests.cmp(&a.1.requests).then(a.0.cmp(b.0)));
        let mut other = self.clients.get(OTHER_CLIENTS).cloned().unwrap_or_default();
        for (_, c) in ranked.iter().skip(TOP_CLIENTS) {
            other.merge(c);
        }
        let mut shown: Vec<(String, &ClientTrack)> =
            ranked.iter().take(TOP_CLIENTS).map(|(id, c)| ((*id).clone(), *c)).collect();
        if other.requests > 0 {
            shown.push((OTHER_CLIENTS.to_string(), &other));
        }
        let rows_of = |client_id: &str, c: &ClientTrack| -> Vec<ClientRow> {
            c.by_api
                .iter()
                .map(|((listener, api_key), a)| (listener, api_key, &a.total))
                .map(|(listener, api_key, r)| ClientRow {
                    client_id: client_id.to_string(),
                    listener: listener.clone(),
                    api: kafka::api_name(*api_key),
                    count: r.count(),
                    rate_per_s: rate(r.count()),
                    total: r.percentiles(),
                    connections: c.connections.len(),
                    max_in_flight: c.in_flight_max,
                    mean_in_flight: if c.requests > 0 { c.in_flight_sum as f64 / c.requests as f64 } else { 0.0 },
                    buckets: r.log2_buckets(),
                    sum_ns: r.sum_ns(),
                })
                .collect()
        };
        let clients = shown.iter().flat_map(|(id, c)| rows_of(id, c)).collect();
        // Every tracked id as itself: a set that only grows, so per-client counters never
        // go down (the top-N view above would move ids in and out of "(other)").
        let all_clients = self.clients.iter().flat_map(|(id, c)| rows_of(id, c)).collect();

        let mut sync_producers: Vec<SyncProducer> = self
            .connections
            .iter()
            .filter_map(|(&fd, c)| {
                let latency = c.produce_latency.percentiles().p50_ns;
                let gap = c.produce_gap.percentiles().p50_ns;
                let sequential = c.produce >= SYNC_PRODUCER_MIN_REQUESTS && c.produce_pipelined == 0;
                // Sent right after the previous response: bound by the round trip, not idle.
                let eager = gap <= latency.max(1_000_000);
                (sequential && eager).then(|| SyncProducer {
                    client_id: c.client.clone(),
                    fd,
                    produce_requests: c.produce,
                    median_gap_ns: gap,
                    median_latency_ns: latency,
                    max_requests_per_s: 1e9 / (latency + gap).max(1) as f64,
                })
            })
            .collect();
        sync_producers.sort_by(|a, b| b.produce_requests.cmp(&a.produce_requests).then(a.fd.cmp(&b.fd)));
        let threads = self
            .threads
            .iter()
            .map(|(&tid, t)| ThreadConnections {
                tid,
                listener: t.listener.clone(),
                connections: t.fds.len(),
                clients: t.clients.iter().cloned().collect(),
                other_clients: t.other_clients.len(),
                followers: t.followers.iter().copied().collect(),
            })
            .collect();
        RequestSummary {
            apis,
            clients,
            all_clients,
            other_client_ids: ranked.len().saturating_sub(TOP_CLIENTS),
            untracked_client_requests: self.untracked_client_requests,
            sync_producers,
            threads,
        }
    }

    /// Every tracked client's requests per API (listeners merged), with what stalls did to
    /// them, the most delayed first.
    pub fn delayed(&self) -> Vec<DelayedRow> {
        let mut merged: BTreeMap<(&str, i16), ClientApiTrack> = BTreeMap::new();
        for (client, c) in &self.clients {
            for ((_, api_key), a) in &c.by_api {
                merged.entry((client.as_str(), *api_key)).or_default().merge(a);
            }
        }
        let mut rows: Vec<DelayedRow> = merged
            .into_iter()
            .map(|((client, api_key), a)| {
                let stalled = a.stalled.as_deref().cloned().unwrap_or_default();
                DelayedRow {
                    api: kafka::api_name(api_key),
                    api_key,
                    client_id: client.to_string(),
                    requests: a.total.count(),
                    stalled_requests: stalled.count(),
                    stalled_by_miss: a.stalled_by_miss,
                    added_ns: a.added_ns,
                    miss_ns: a.miss_ns,
                    replication_delayed: a.replication_delayed,
                    replication_ns: a.replication_ns,
                    not_stalled: a.total.without(&stalled).percentiles(),
                    stalled: stalled.percentiles(),
                    latency_sum_ns: a.total.sum_ns(),
                }
            })
            .collect();
        rows.sort_by(|a, b| {
            (b.added_ns + b.replication_ns).cmp(&(a.added_ns + a.replication_ns)).then(b.requests.cmp(&a.requests)).then(a.client_id.cmp(&b.client_id))
        });
        rows
    }

    /// The controller plane's requests, per listener and API.
    pub fn controller_summary(&self, elapsed_s: f64) -> Vec<ControllerApiRow> {
        let rate = |n: u64| if elapsed_s > 0.0 { n as f64 / elapsed_s } else { 0.0 };
        self.controller
            .iter()
            .map(|((listener, api_key), a)| ControllerApiRow {
                listener: listener.clone(),
                api: kafka::api_name(*api_key),
                api_key: *api_key,
                count: a.total.count(),
                rate_per_s: rate(a.total.count()),
                total: a.total.percentiles(),
                broker: a.broker.percentiles(),
                buckets: a.total.log2_buckets(),
                sum_ns: a.total.sum_ns(),
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kstall_common::{
        events::{RequestId, kind},
        framing::REQUEST_TAIL,
    };

    use crate::kafka::{FETCH, Topic};

    use crate::listeners::SecurityProtocol;

    fn event(fd: u32, api_key: i16, client: &str, arrival: u64, read: u64, done: u64) -> RequestEvent {
        request_event(7, fd, api_key, client, arrival, read, done)
    }

    /// An answered request as the kernel reports it (for this module's tests and aggregate's).
    pub(crate) fn request_event(tid: u32, fd: u32, api_key: i16, client: &str, arrival: u64, read: u64, done: u64) -> RequestEvent {
        let mut id = RequestId::NONE;
        id.api_key = api_key;
        id.known = 1;
        id.client_id[..client.len()].copy_from_slice(client.as_bytes());
        id.client_id_len = client.len() as u16;
        RequestEvent {
            kind: kind::REQUEST,
            tid,
            fd,
            request_bytes: 100,
            response_bytes: 50,
            arrival_ns: arrival,
            read_start_ns: read,
            read_done_ns: read + 5_000,
            response_start_ns: done - 10_000,
            response_done_ns: done,
            id,
            ..RequestEvent::ZERO
        }
    }

    #[test]
    fn latency_splits_into_socket_wait_and_broker_time() {
        let t = RequestTiming::of(&event(1, 0, "p", 1_000_000, 3_000_000, 10_000_000));
        assert_eq!(t.socket_wait_ns(), Some(2_000_000));
        assert_eq!(t.broker_ns(), 10_000_000 - 3_005_000);
        assert_eq!(t.total_ns(), 9_000_000);
        // Unknown arrival: the clock starts at the read.
        let t = RequestTiming::of(&event(1, 0, "p", 0, 3_000_000, 10_000_000));
        assert_eq!((t.socket_wait_ns(), t.total_ns()), (None, 7_000_000));
    }

    #[test]
    fn one_at_a_time_producer_is_found_and_pipelined_one_is_not() {
        let mut stats = RequestStats::default();
        let ms = 1_000_000;
        // Sync: each Produce arrives 50 us after the previous response.
        let mut done = 0;
        for i in 0..30u64 {
            let arrival = if i == 0 { 10 * ms } else { done + 50_000 };
            done = arrival + 2 * ms;
            stats.record(&event(5, PRODUCE, "sync-producer", arrival, arrival + 10_000, done), None, &RequestFacts::default(), &Delay::default());
        }
        // Pipelined: five requests in flight at once.
        for i in 0..30u64 {
            let arrival = 100 * ms + i * ms;
            stats.record(&event(6, PRODUCE, "async-producer", arrival, arrival + 10_000, arrival + 5 * ms), None, &RequestFacts::default(), &Delay::default());
        }
        let s = stats.summary(1.0);
        assert_eq!(s.sync_producers.len(), 1, "{:?}", s.sync_producers);
        let p = &s.sync_producers[0];
        assert_eq!((p.client_id.as_str(), p.fd, p.produce_requests), ("sync-producer", 5, 30));
        assert!((45_000..=55_000).contains(&p.median_gap_ns), "{p:?}");
        let async_row = s.clients.iter().find(|c| c.client_id == "async-producer").unwrap();
        assert_eq!(async_row.max_in_flight, 5);
        let sync_row = s.clients.iter().find(|c| c.client_id == "sync-producer").unwrap();
        assert_eq!(sync_row.max_in_flight, 1);
    }

    fn listener(name: &str, protocol: SecurityProtocol, plane: Plane) -> Listener {
        Listener { name: name.into(), security_protocol: protocol, plane }
    }

    #[test]
    fn controller_plane_requests_are_kept_apart_from_clients() {
        let data = listener("PLAINTEXT", SecurityProtocol::Plaintext, Plane::Data);
        let controller = listener("CONTROLLER", SecurityProtocol::Plaintext, Plane::Controller);
        let mut stats = RequestStats::default();
        let ms = 1_000_000;
        // The broker's own heartbeats (api 63) and raft fetches, one at a time on one connection,
        // and, to be sure nothing on the controller plane reaches sync-producer detection, a
        // run of strictly sequential Produce requests there too.
        let mut done = 0;
        for i in 0..40u64 {
            let arrival = if i == 0 { 10 * ms } else { done + 50_000 };
            done = arrival + 2 * ms;
            let api = [63, 1, PRODUCE][i as usize % 3];
            stats.record(&event(9, api, "raft-client-1", arrival, arrival + 10_000, done), Some(&controller), &RequestFacts::default(), &Delay::default());
        }
        for i in 0..5u64 {
            stats.record(&event(11, PRODUCE, "app", i * ms, i * ms + 10_000, i * ms + 500_000), Some(&data), &RequestFacts::default(), &Delay::default());
            stats.record(&event(12, 3, "app", i * ms, i * ms + 10_000, i * ms + 300_000), None, &RequestFacts::default(), &Delay::default());
        }
        let s = stats.summary(1.0);
        assert!(s.clients.iter().all(|c| c.client_id == "app"), "{:?}", s.clients);
        assert!(s.all_clients.iter().all(|c| c.client_id == "app"));
        assert!(s.sync_producers.is_empty(), "{:?}", s.sync_producers);
        let apis: Vec<(&str, u64)> = s.apis.iter().map(|a| (a.api, a.count)).collect();
        assert_eq!(apis, [("Produce", 5), ("Metadata", 5)]);
        // Client rows say which listener they came in on (null when not known).
        let rows: Vec<(Option<&str>, &str, u64)> = s.clients.iter().map(|c| (c.listener.as_deref(), c.api, c.count)).collect();
        assert_eq!(rows, [(None, "Metadata", 5), (Some("PLAINTEXT"), "Produce", 5)]);
        let c = stats.controller_summary(1.0);
        let rows: Vec<(&str, &str, u64)> = c.iter().map(|r| (r.listener.as_str(), r.api, r.count)).collect();
        assert_eq!(rows, [("CONTROLLER", "Produce", 13), ("CONTROLLER", "Fetch", 13), ("CONTROLLER", "BrokerHeartbeat", 14)]);
        assert!(c[2].total.p50_ns >= 1_900_000, "{:?}", c[2].total);
    }

    #[test]
    fn client_ids_are_capped() {
        let mut stats = RequestStats::default();
        for i in 0..500u32 {
            let client = format!("client-{i}");
            let n = if i < 3 { 10 } else { 1 };
            for _ in 0..n {
                stats.record(&event(i, 3, &client, 0, 1_000_000, 2_000_000), None, &RequestFacts::default(), &Delay::default());
            }
        }
        let s = stats.summary(1.0);
        assert!(stats.clients.len() <= MAX_TRACKED_CLIENTS + 1);
        let names: Vec<&str> = s.clients.iter().map(|c| c.client_id.as_str()).collect();
        assert_eq!(names.len(), TOP_CLIENTS + 1);
        assert_eq!(&names[..3], ["client-0", "client-1", "client-2"]);
        assert_eq!(names.last(), Some(&OTHER_CLIENTS));
        let total: u64 = s.clients.iter().map(|c| c.count).sum();
        assert_eq!(total, 3 * 10 + 497);
    }

    #[test]
    fn delayed_rows_and_threads_say_who_waited_where() {
        let mut stats = RequestStats::default();
        let ms = 1_000_000;
        let stalled = Delay { added_ns: 5 * ms, miss_ns: 5 * ms, replication_ns: 0 };
        let follower = RequestFacts { follower: Some(2), ..Default::default() };
        for i in 0..10u64 {
            let delay = if i < 3 { stalled } else { Delay::default() };
            let done = if i < 3 { 20 * ms } else { 2 * ms };
            stats.record(&request_event(3, 40, FETCH, "broker-2-fetcher-0", i * 100 * ms, i * 100 * ms + 1, i * 100 * ms + done), None, &follower, &delay);
            stats.record(&request_event(3, 41, 12, "tail-consumer", i * 100 * ms, i * 100 * ms + 1, i * 100 * ms + ms), None, &RequestFacts::default(), &Delay::default());
        }
        let rows = stats.delayed();
        let fetch = &rows[0];
        assert_eq!((fetch.api, fetch.client_id.as_str(), fetch.requests, fetch.stalled_requests, fetch.added_ns), ("Fetch", "broker-2-fetcher-0", 10, 3, 15 * ms));
        let near = |a: u64, b: u64| a.abs_diff(b) <= b / 100;
        assert!(near(fetch.stalled.max_ns, 20 * ms) && near(fetch.not_stalled.max_ns, 2 * ms), "{fetch:?}");
        assert_eq!((rows[1].api, rows[1].stalled_requests), ("Heartbeat", 0));
        let s = stats.summary(1.0);
        assert_eq!(s.threads.len(), 1);
        let t = &s.threads[0];
        assert_eq!((t.tid, t.connections, t.followers.as_slice()), (3, 2, &[2][..]));
        assert_eq!(t.clients, ["broker-2-fetcher-0", "tail-consumer"]);
    }


    #[test]
    fn request_facts_come_from_the_captured_body_bytes() {
        // Produce v3 from client "p": null transactional_id, acks -1, 30 s timeout, topic "hot"
        // partition 0.
        let mut head = vec![0, 0, 0, 3, 0, 0, 0, 7, 0, 1, b'p'];
        head.extend([0xff, 0xff, 0xff, 0xff, 0, 0, 0x75, 0x30, 0, 0, 0, 1, 0, 3, b'h', b'o', b't', 0, 0, 0, 1, 0, 0, 0, 0]);
        let mut e = request_event(1, 5, PRODUCE, "p", 1_000, 2_000, 100_000);
        e.id.api_version = 3;
        e.head[..head.len()].copy_from_slice(&head);
        e.head_len = head.len() as u8;
        let facts = RequestFacts::of(&e);
        assert_eq!(facts, RequestFacts { acks: Some(-1), follower: None, partition: Some((Topic::Name("hot".into()), 0)) });
        // Fetch v17 from a follower: its ReplicaState (broker 2, epoch 9) ends the body.
        let mut e = request_event(1, 5, FETCH, "broker-2-fetcher-0", 1_000, 2_000, 100_000);
        e.id.api_version = 17;
        e.tail = [1, 1, 13, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 9, 0];
        e.tail_len = REQUEST_TAIL as u8;
        assert_eq!(RequestFacts::of(&e).follower, Some(2));
        e.tail_len = 0;
        assert_eq!(RequestFacts::of(&e).follower, None, "no tail: not known, not a follower");
    }
}
