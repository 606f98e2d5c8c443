//! The protocol-level client: [`SyncProducer`], which opens its connection, learns the broker's
//! versions ([`Handshake`]) and times each Produce around its own socket calls.
use std::{
    collections::BTreeMap,
    io::{self, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};

use super::{messages::*, wire::*};

/// A producer that speaks Kafka's wire protocol itself (acks=1, one message per request, one
/// request at a time, partition 0) and times each request around its own socket calls, so its
/// measurement has no client library in it: the reference kstall's Produce latency is checked
/// against. It speaks Produce v9 to brokers that refuse the pre-2.1 protocol versions (4.x,
/// KIP-896) and Produce v0 to the others (0.9 to 3.x).
///
/// Which is which, [`SyncProducer::connect`] finds out on a probe connection of its own before
/// the producer's connection, so that connection carries the same requests as it always did on
/// 0.9: Produces only, correlation ids from 1. On 4.x the producer's connection starts with
/// ApiVersions (correlation id 1) and the first Produce is 2.
pub struct SyncProducer {
    stream: TcpStream,
    client_id: String,
    correlation_id: i32,
    produce_version: i16,
    api_versions: Option<BTreeMap<i16, (i16, i16)>>,
    acks: i16,
}

/// How long to wait for the answer to ApiVersions before giving up on the broker.
const API_VERSIONS_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(30);

fn open(bootstrap: &str) -> Result<TcpStream> {
    let stream = TcpStream::connect(bootstrap).with_context(|| format!("cannot connect to {bootstrap}"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    Ok(stream)
}

/// How a client learns which versions a broker speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handshake {
    /// ApiVersions first (KIP-35, every broker since 0.10; 4.x refuses Produce before v3).
    ApiVersions,
    /// None: Produce v0 and Metadata v0, as clients configured for a 0.9 broker do
    /// (librdkafka's `api.version.request=false`). Kafka 0.9.0.1 does not close a connection
    /// on an API it does not know: its network thread throws ArrayIndexOutOfBoundsException
    /// out of the loop over that poll's completed receives, so the ApiVersions is never
    /// answered, and whatever else that poll completed (other connections' requests, and the
    /// sends after which their connections are unmuted) is dropped.
    Kafka0_9,
}

impl SyncProducer {
    /// Connects and, with [`Handshake::ApiVersions`], asks ApiVersions v3 (v0 when the broker
    /// answers UNSUPPORTED_VERSION) on the producer's own connection, then speaks Produce v9
    /// when the broker lists it (else v0 when it lists v0).
    pub fn connect(bootstrap: &str, client_id: &str, handshake: Handshake) -> Result<SyncProducer> {
        let mut stream = open(bootstrap)?;
        if handshake == Handshake::Kafka0_9 {
            return Ok(SyncProducer { stream, client_id: client_id.to_string(), correlation_id: 0, produce_version: 0, api_versions: None, acks: 1 });
        }
        let mut correlation_id = 0;
        let Some(versions) = ask_api_versions(&mut stream, client_id, &mut correlation_id).with_context(|| format!("ApiVersions to {bootstrap}"))?
        else {
            bail!("{bootstrap} closed the connection on ApiVersions without answering (a Kafka 0.9 broker? it predates ApiVersions)");
        };
        let produce_version = match versions.get(&API_PRODUCE) {
            Some(&(min, max)) if min <= 9 && 9 <= max => 9,
            Some(&(min, _)) if min <= 0 => 0,
            Some(&(min, max)) => bail!("{bootstrap} speaks Produce v{min} to v{max}; this producer speaks v0 and v9"),
            None => bail!("{bootstrap} lists no Produce versions in its ApiVersions answer"),
        };
        Ok(SyncProducer { stream, client_id: client_id.to_string(), correlation_id, produce_version, api_versions: Some(versions), acks: 1 })
    }

    /// Sets the acks of the Produce requests that follow: 1 (the default, the leader's write)
    /// or -1 (acks=all: every in-sync replica has it). Produce v9 only; v0 stays acks=1.
    pub fn with_acks(mut self, acks: i16) -> SyncProducer {
        self.acks = acks;
        self
    }

    /// The client side of the producer's connection (its local port names it in /proc/net/tcp).
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.stream.local_addr()
    }

    /// The broker's ApiVersions table (api_key -> (min, max)); None for a 0.9 broker (not asked).
    pub fn api_versions(&self) -> Option<&BTreeMap<i16, (i16, i16)>> {
        self.api_versions.as_ref()
    }

    /// The Produce version this producer speaks to the broker: 9 or 0.
    pub fn produce_version(&self) -> i16 {
        self.produce_version
    }

    /// A Metadata version for [`metadata_request`] the broker accepts: 4 when it speaks v4
    /// (every broker since 1.0, and 4.x, which refuses v0-v3), else 0.
    pub fn metadata_version(&self) -> i16 {
        match self.api_versions.as_ref().and_then(|v| v.get(&API_METADATA)) {
            Some(&(min, max)) if min <= 4 && 4 <= max => 4,
            _ => 0,
        }
    }

    /// Sends one message to partition 0 of `topic` (which must exist) and waits for the
    /// broker's acknowledgement; returns the time from the first byte sent to the last read.
    pub fn produce(&mut self, topic: &str, value: &[u8]) -> Result<Duration> {
        self.correlation_id += 1;
        let request = match self.produce_version {
            9 => produce_v9_acks(self.correlation_id, &self.client_id, topic, value, self.acks),
            _ => produce_v0(self.correlation_id, &self.client_id, topic, value),
        };
        let started = Instant::now();
        self.stream.write_all(&request)?;
        let response = read_frame(&mut self.stream)?;
        let took = started.elapsed();
        let mut r = Reader::new(&response);
        let correlation_id = r.i32()?;
        if correlation_id != self.correlation_id {
            bail!("response for correlation id {correlation_id}, expected {}", self.correlation_id);
        }
        if self.produce_version >= 9 {
            r.skip_tagged_fields()?; // response header v1
        }
        let partitions = decode_produce_response(self.produce_version, r.rest())
            .with_context(|| format!("decoding the Produce v{} response", self.produce_version))?;
        let Some(answer) = partitions.iter().find(|p| p.topic == topic && p.partition == 0) else {
            bail!("the Produce v{} response has no partition 0 of {topic}: {partitions:?}", self.produce_version);
        };
        if answer.error_code != 0 {
            bail!(
                "Produce v{} to {topic} failed with Kafka error code {} ({}){}",
                self.produce_version,
                answer.error_code,
                error_name(answer.error_code),
                answer.error_message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
            );
        }
        Ok(took)
    }
}

/// ApiVersions v3 (then v0 if the broker answers UNSUPPORTED_VERSION) on a new connection.
/// None when the broker closed the connection without answering.
fn ask_api_versions(stream: &mut TcpStream, client_id: &str, correlation_id: &mut i32) -> Result<Option<BTreeMap<i16, (i16, i16)>>> {
    stream.set_read_timeout(Some(API_VERSIONS_TIMEOUT))?;
    let mut version = 3;
    let answer = loop {
        *correlation_id += 1;
        match stream.write_all(&api_versions_request(version, *correlation_id, client_id)) {
            Ok(()) => {}
            Err(e) if closed(&e) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let response = match read_frame_or_closed(stream) {
            Ok(Some(response)) => response,
            Ok(None) => return Ok(None),
            Err(e) => {
                if let Some(io) = e.downcast_ref::<io::Error>()
                    && matches!(io.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
                {
                    bail!("no answer to ApiVersions v{version} in {API_VERSIONS_TIMEOUT:?}");
                }
                return Err(e);
            }
        };
        // The ApiVersions response header is v0 for every version: the correlation id alone.
        let mut r = Reader::new(&response);
        let answered = r.i32()?;
        ensure!(answered == *correlation_id, "ApiVersions answered for correlation id {answered}, expected {correlation_id}");
        let answer = decode_api_versions_response(version, r.rest())?;
        if answer.error_code == UNSUPPORTED_VERSION && version > 0 {
            version = 0;
            continue;
        }
        break answer;
    };
    ensure!(
        answer.error_code == 0,
        "ApiVersions v{version} failed with Kafka error code {} ({})",
        answer.error_code,
        error_name(answer.error_code)
    );
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    Ok(Some(answer.versions))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in broker on loopback: each connection gets the next script, which sees each
    /// request (api key, version, correlation id) and answers a body (None: close).
    type Script = Box<dyn Fn(i16, i16, i32) -> Option<Vec<u8>> + Send>;
    type Seen = Vec<(i16, i16, i32)>;

    fn fake_broker(scripts: Vec<Script>) -> (String, std::thread::JoinHandle<Seen>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for script in scripts {
                let (mut stream, _) = listener.accept().unwrap();
                while let Ok(Some(request)) = read_frame_or_closed(&mut stream) {
                    let mut r = Reader::new(&request);
                    let (key, version, correlation_id) = (r.i16().unwrap(), r.i16().unwrap(), r.i32().unwrap());
                    seen.push((key, version, correlation_id));
                    let Some(body) = script(key, version, correlation_id) else { break };
                    let mut response = ((body.len() + 4) as i32).to_be_bytes().to_vec();
                    response.extend(correlation_id.to_be_bytes());
                    response.extend(body);
                    stream.write_all(&response).unwrap();
                }
            }
            seen
        });
        (address, handle)
    }

    #[test]
    fn negotiates_v9_by_api_versions() {
        let (address, broker) = fake_broker(vec![
            Box::new(|key, version, _| match (key, version) {
                (API_API_VERSIONS, 3) => Some([&UNSUPPORTED_VERSION.to_be_bytes()[..], &1i32.to_be_bytes(), &[0, 18, 0, 0, 0, 2]].concat()),
                (API_API_VERSIONS, 0) => {
                    let mut body = 0i16.to_be_bytes().to_vec();
                    body.extend(2i32.to_be_bytes());
                    body.extend([0, 0, 0, 3, 0, 12, 0, 3, 0, 0, 0, 13]);
                    Some(body)
                }
                (API_PRODUCE, 9) => {
                    let mut body = vec![0]; // response header v1's tagged fields
                    put_compact_array_len(&mut body, 1);
                    put_compact_string(&mut body, "t");
                    put_compact_array_len(&mut body, 1);
                    body.extend([0, 0, 0, 0, 0, 0]); // partition 0, no error
                    body.extend([0u8; 24]);
                    body.extend([1, 0, 0]); // no record errors, no message, tagged fields
                    body.extend([0, 0, 0, 0, 0, 0]); // topic tagged fields, throttle, tagged fields
                    Some(body)
                }
                _ => None,
            }),
        ]);
        let mut producer = SyncProducer::connect(&address, "c", Handshake::ApiVersions).unwrap();
        assert_eq!(producer.produce_version(), 9);
        assert_eq!(producer.metadata_version(), 4);
        assert_eq!(producer.api_versions().unwrap().get(&API_PRODUCE), Some(&(3, 12)));
        producer.produce("t", b"v").unwrap();
        drop(producer);
        assert_eq!(broker.join().unwrap(), [(API_API_VERSIONS, 3, 1), (API_API_VERSIONS, 0, 2), (API_PRODUCE, 9, 3)]);
    }

    #[test]
    fn speaks_v0_to_kafka_0_9_without_asking() {
        let produce_v0_answer = |_, _, _| {
            let mut body = 1i32.to_be_bytes().to_vec();
            put_string(&mut body, "t");
            body.extend(1i32.to_be_bytes());
            body.extend([0u8; 14]);
            Some(body)
        };
        let (address, broker) = fake_broker(vec![Box::new(produce_v0_answer)]);
        let mut producer = SyncProducer::connect(&address, "c", Handshake::Kafka0_9).unwrap();
        assert_eq!((producer.produce_version(), producer.metadata_version()), (0, 0));
        assert!(producer.api_versions().is_none());
        producer.produce("t", b"v").unwrap();
        producer.produce("t", b"v").unwrap();
        drop(producer);
        assert_eq!(broker.join().unwrap(), [(API_PRODUCE, 0, 1), (API_PRODUCE, 0, 2)]);
    }
}
