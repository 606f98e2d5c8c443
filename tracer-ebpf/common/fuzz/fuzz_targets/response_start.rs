//! Fuzzes `parse_response_start`, which reads the first 8 bytes of every write a broker's
//! network thread makes (the probe's response framing): from any 8 bytes (the input, padded
//! with zeros) it gives a response length that covers its own 8 bytes, fits in an i32 with no
//! overflow, and is the size field plus 4, with the correlation_id that follows; or nothing
//! when the size field cannot be a Kafka response's.
#![no_main]

use kstall_common::framing::parse_response_start;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut b = [0u8; 8];
    let n = data.len().min(8);
    b[..n].copy_from_slice(&data[..n]);
    let size = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    match parse_response_start(b) {
        Some((total, corr)) => {
            assert!(total >= 8 && total <= i32::MAX as u32, "total {total}");
            assert_eq!(total, size + 4);
            assert_eq!(corr, i32::from_be_bytes([b[4], b[5], b[6], b[7]]));
        }
        None => assert!(size < 4 || size > i32::MAX as u32 - 4, "size {size} refused"),
    }
});
