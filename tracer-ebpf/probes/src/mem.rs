//! Whole-word clears and copies. BPF has no memset or memcpy: LLVM turns a run of zero stores
//! or a struct copy into a call to one, and Rust's core implements them in BPF one byte at a
//! time (a 160-byte copy is ~800 instructions, hundreds of ns on every traced call). Volatile
//! word accesses stay what they are.
use core::ptr::{read_volatile, write_volatile};

/// The widest word `T`'s alignment allows, in bytes.
const fn word_bytes<T>() -> usize {
    if core::mem::align_of::<T>() >= 8 { 8 } else { 4 }
}

/// Sets every byte of `*dst` to zero.
#[inline(always)]
pub(crate) fn zero_words<T>(dst: *mut T) {
    const { assert!(core::mem::size_of::<T>() % 4 == 0 && core::mem::align_of::<T>() >= 4) };
    if word_bytes::<T>() == 8 {
        let words = dst.cast::<u64>();
        for i in 0..core::mem::size_of::<T>() / 8 {
            unsafe { write_volatile(words.add(i), 0) };
        }
    } else {
        let words = dst.cast::<u32>();
        for i in 0..core::mem::size_of::<T>() / 4 {
            unsafe { write_volatile(words.add(i), 0) };
        }
    }
}

/// `*dst = *src`, a word at a time.
#[inline(always)]
pub(crate) fn copy_words<T: Copy>(dst: *mut T, src: *const T) {
    const { assert!(core::mem::size_of::<T>() % 4 == 0 && core::mem::align_of::<T>() >= 4) };
    if word_bytes::<T>() == 8 {
        let (d, s) = (dst.cast::<u64>(), src.cast::<u64>());
        for i in 0..core::mem::size_of::<T>() / 8 {
            unsafe { write_volatile(d.add(i), read_volatile(s.add(i))) };
        }
    } else {
        let (d, s) = (dst.cast::<u32>(), src.cast::<u32>());
        for i in 0..core::mem::size_of::<T>() / 4 {
            unsafe { write_volatile(d.add(i), read_volatile(s.add(i))) };
        }
    }
}

/// `*dst = *src` for byte arrays, a u64 at a time. Both must sit at 8-byte aligned addresses:
/// the byte arrays of the shared records are at 8-byte offsets of 8-byte aligned structs
/// (`kstall_common::events`' layout test checks each one copied).
#[inline(always)]
pub(crate) fn copy_bytes<const N: usize>(dst: *mut [u8; N], src: *const [u8; N]) {
    const { assert!(N % 8 == 0) };
    let (d, s) = (dst.cast::<u64>(), src.cast::<u64>());
    for i in 0..N / 8 {
        unsafe { write_volatile(d.add(i), read_volatile(s.add(i))) };
    }
}
