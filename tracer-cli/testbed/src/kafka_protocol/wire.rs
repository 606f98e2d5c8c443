//! Kafka's wire primitives: the encoders of its types (varints zigzag-encoded, compact strings
//! and arrays of the flexible versions, tagged fields), the CRCs record formats carry, a
//! [`Reader`] that fails rather than panics on a short response, and framing (the size prefix
//! and request header v1 or v2, and reading a response frame off a stream).
use std::io::{self, Read};

use anyhow::{Context, Result, bail, ensure};

/// Responses larger than this are taken for a broken stream rather than allocated.
const MAX_RESPONSE: usize = 100 << 20;

/// Unsigned varint (LEB128, 7 bits a byte, low group first), as Kafka's flexible versions
/// encode lengths and tagged fields.
pub fn put_uvarint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Signed varint (zigzag, then [`put_uvarint`]), as record fields use it.
pub fn put_varint(out: &mut Vec<u8>, value: i32) {
    put_varlong(out, value as i64);
}

/// Signed varlong (zigzag, then [`put_uvarint`]); for values in i32 range the bytes are the
/// same as [`put_varint`]'s.
pub fn put_varlong(out: &mut Vec<u8>, value: i64) {
    put_uvarint(out, ((value << 1) ^ (value >> 63)) as u64);
}

/// INT16-length string (header v1's client_id, non-flexible bodies).
pub fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as i16).to_be_bytes());
    out.extend(s.as_bytes());
}

/// COMPACT_STRING: unsigned varint length+1, then the bytes.
pub fn put_compact_string(out: &mut Vec<u8>, s: &str) {
    put_uvarint(out, s.len() as u64 + 1);
    out.extend(s.as_bytes());
}

/// COMPACT_NULLABLE_STRING: as [`put_compact_string`], null as a 0 length byte.
pub fn put_compact_nullable_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => put_compact_string(out, s),
        None => out.push(0),
    }
}

/// A COMPACT_ARRAY's length: unsigned varint count+1 (0 would be a null array).
pub fn put_compact_array_len(out: &mut Vec<u8>, count: usize) {
    put_uvarint(out, count as u64 + 1);
}

/// An empty tagged-field section (count 0), which ends every flexible structure.
pub fn put_empty_tagged_fields(out: &mut Vec<u8>) {
    out.push(0);
}

const fn crc_table(reflected_polynomial: u32) -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ reflected_polynomial } else { crc >> 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

const CRC32_TABLE: [u32; 256] = crc_table(0xEDB8_8320);
const CRC32C_TABLE: [u32; 256] = crc_table(0x82F6_3B78);

fn crc_with(table: &[u32; 256], bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc = table[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// CRC-32 (IEEE), as Kafka's v0/v1 messages carry it.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc_with(&CRC32_TABLE, bytes)
}

/// CRC-32C (Castagnoli), as Kafka's v2 record batches carry it.
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc_with(&CRC32C_TABLE, bytes)
}

/// Reads Kafka's primitive types from a response, failing (not panicking) when it runs short.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// What has not been read yet.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        ensure!(n <= self.remaining(), "response ends at byte {} of {}, {n} more wanted", self.pos, self.buf.len());
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.bytes(N)?.try_into().expect("N bytes"))
    }

    pub fn i8(&mut self) -> Result<i8> {
        Ok(i8::from_be_bytes(self.array()?))
    }

    pub fn i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    pub fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    pub fn uvarint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.array::<1>()?[0];
            value |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        bail!("varint longer than 10 bytes at byte {}", self.pos)
    }

    /// A zigzag varint or varlong.
    pub fn varlong(&mut self) -> Result<i64> {
        let raw = self.uvarint()?;
        Ok((raw >> 1) as i64 ^ -((raw & 1) as i64))
    }

    /// INT16-length nullable string.
    pub fn nullable_string(&mut self) -> Result<Option<String>> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        Ok(Some(String::from_utf8_lossy(self.bytes(len as usize)?).into_owned()))
    }

    /// INT16-length string.
    pub fn string(&mut self) -> Result<String> {
        self.nullable_string()?.context("null where a string was expected")
    }

    pub fn compact_nullable_string(&mut self) -> Result<Option<String>> {
        let len = self.uvarint()?;
        if len == 0 {
            return Ok(None);
        }
        Ok(Some(String::from_utf8_lossy(self.bytes(len as usize - 1)?).into_owned()))
    }

    pub fn compact_string(&mut self) -> Result<String> {
        self.compact_nullable_string()?.context("null where a compact string was expected")
    }

    /// INT32-length array's count; None for a null array.
    pub fn array_len(&mut self) -> Result<Option<usize>> {
        let len = self.i32()?;
        Ok((len >= 0).then_some(len as usize))
    }

    /// COMPACT_ARRAY's count; None for a null array.
    pub fn compact_array_len(&mut self) -> Result<Option<usize>> {
        let len = self.uvarint()?;
        Ok(len.checked_sub(1).map(|n| n as usize))
    }

    /// Skips a tagged-field section (count, then tag, size and data for each).
    pub fn skip_tagged_fields(&mut self) -> Result<()> {
        let count = self.uvarint()?;
        for _ in 0..count {
            let _tag = self.uvarint()?;
            let size = self.uvarint()?;
            self.bytes(size as usize)?;
        }
        Ok(())
    }
}

/// A request as a Kafka client frames it: int32 size, then the header v1 (api_key, api_version,
/// correlation_id, client_id as an int16-length string), then `body`.
pub fn request_frame(api_key: i16, api_version: i16, correlation_id: i32, client_id: &str, body: &[u8]) -> Vec<u8> {
    framed(api_key, api_version, correlation_id, client_id, false, body)
}

/// A request with the flexible header v2 (what flexible request versions use): header v1's
/// fields, client_id still an int16-length string, then an empty tagged-field section.
pub fn request_frame_v2(api_key: i16, api_version: i16, correlation_id: i32, client_id: &str, body: &[u8]) -> Vec<u8> {
    framed(api_key, api_version, correlation_id, client_id, true, body)
}

fn framed(api_key: i16, api_version: i16, correlation_id: i32, client_id: &str, tagged_fields: bool, body: &[u8]) -> Vec<u8> {
    let header = 10 + client_id.len() + tagged_fields as usize;
    let mut frame = Vec::with_capacity(4 + header + body.len());
    frame.extend(((header + body.len()) as i32).to_be_bytes());
    frame.extend(api_key.to_be_bytes());
    frame.extend(api_version.to_be_bytes());
    frame.extend(correlation_id.to_be_bytes());
    frame.extend((client_id.len() as i16).to_be_bytes());
    frame.extend(client_id.as_bytes());
    if tagged_fields {
        put_empty_tagged_fields(&mut frame);
    }
    frame.extend(body);
    frame
}

/// Reads one size-prefixed response; returns it without the size.
pub fn read_frame(stream: &mut impl Read) -> Result<Vec<u8>> {
    read_frame_or_closed(stream)?.context("the broker closed the connection")
}

/// As [`read_frame`], with None when the peer closed (or reset) the connection before sending
/// the first byte.
pub(super) fn read_frame_or_closed(stream: &mut impl Read) -> Result<Option<Vec<u8>>> {
    let mut size = [0u8; 4];
    match stream.read_exact(&mut size) {
        Ok(()) => {}
        Err(e) if closed(&e) => return Ok(None),
        Err(e) => return Err(e).context("reading a response's size"),
    }
    let size = i32::from_be_bytes(size);
    ensure!((0..=MAX_RESPONSE as i32).contains(&size), "response size {size}: not a Kafka response");
    let mut body = vec![0u8; size as usize];
    stream.read_exact(&mut body).context("reading a response")?;
    Ok(Some(body))
}

pub(super) fn closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uvarint(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_uvarint(&mut out, v);
        out
    }

    fn varint(v: i32) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, v);
        out
    }

    fn varlong(v: i64) -> Vec<u8> {
        let mut out = Vec::new();
        put_varlong(&mut out, v);
        out
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        // RFC 3720 (iSCSI) B.4: 32 bytes of zeros.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
    }

    #[test]
    fn unsigned_varints() {
        assert_eq!(uvarint(0), [0x00]);
        assert_eq!(uvarint(1), [0x01]);
        assert_eq!(uvarint(127), [0x7f]);
        assert_eq!(uvarint(128), [0x80, 0x01]);
        assert_eq!(uvarint(300), [0xac, 0x02]);
        assert_eq!(uvarint(16_383), [0xff, 0x7f]);
        assert_eq!(uvarint(16_384), [0x80, 0x80, 0x01]);
        assert_eq!(uvarint(u32::MAX as u64), [0xff, 0xff, 0xff, 0xff, 0x0f]);
    }

    #[test]
    fn zigzag_varints() {
        assert_eq!(varint(0), [0x00]);
        assert_eq!(varint(-1), [0x01]);
        assert_eq!(varint(1), [0x02]);
        assert_eq!(varint(-2), [0x03]);
        assert_eq!(varint(63), [0x7e]);
        assert_eq!(varint(-64), [0x7f]);
        assert_eq!(varint(64), [0x80, 0x01]);
        assert_eq!(varint(300), [0xd8, 0x04]);
        assert_eq!(varint(i32::MAX), [0xfe, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(varint(i32::MIN), [0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(varlong(-1), [0x01]);
        assert_eq!(varlong(i64::MIN), [0xff; 9].iter().copied().chain([0x01]).collect::<Vec<_>>());
        for v in [0i64, 1, -1, 127, 128, 300, -300, i32::MAX as i64, i32::MIN as i64, i64::MAX, i64::MIN] {
            assert_eq!(Reader::new(&varlong(v)).varlong().unwrap(), v, "{v}");
        }
        for v in [0u64, 1, 127, 128, 300, u64::MAX] {
            assert_eq!(Reader::new(&uvarint(v)).uvarint().unwrap(), v, "{v}");
        }
    }

    #[test]
    fn compact_types() {
        let mut out = Vec::new();
        put_compact_string(&mut out, "abc");
        put_compact_nullable_string(&mut out, None);
        put_compact_nullable_string(&mut out, Some(""));
        put_compact_array_len(&mut out, 2);
        put_empty_tagged_fields(&mut out);
        assert_eq!(out, [4, b'a', b'b', b'c', 0, 1, 3, 0]);
        let mut r = Reader::new(&out);
        assert_eq!(r.compact_string().unwrap(), "abc");
        assert_eq!(r.compact_nullable_string().unwrap(), None);
        assert_eq!(r.compact_nullable_string().unwrap().as_deref(), Some(""));
        assert_eq!(r.compact_array_len().unwrap(), Some(2));
        r.skip_tagged_fields().unwrap();
        assert_eq!(r.remaining(), 0);
        assert!(r.i8().is_err(), "reading past the end fails");
    }

    #[test]
    fn header_v1_and_v2() {
        let v1 = request_frame(3, 4, 7, "cid", b"BODY");
        assert_eq!(i32::from_be_bytes(v1[..4].try_into().unwrap()) as usize, v1.len() - 4);
        assert_eq!(&v1[4..], [0, 3, 0, 4, 0, 0, 0, 7, 0, 3, b'c', b'i', b'd', b'B', b'O', b'D', b'Y']);
        let v2 = request_frame_v2(3, 9, 7, "cid", b"BODY");
        assert_eq!(i32::from_be_bytes(v2[..4].try_into().unwrap()) as usize, v2.len() - 4);
        assert_eq!(&v2[4..], [0, 3, 0, 9, 0, 0, 0, 7, 0, 3, b'c', b'i', b'd', 0, b'B', b'O', b'D', b'Y']);
    }
}
