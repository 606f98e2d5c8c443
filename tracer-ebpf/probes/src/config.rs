//! The settings user space writes at load time (kstall_common::Config).
use kstall_common::Config;

/// Replaced whole by user space before the load (EbpfLoader::override_global, by this name:
/// kstall_common::global::CONFIG). Read it only through `global`, field by field.
#[unsafe(no_mangle)]
pub(crate) static CONFIG: Config = Config::DEFAULT;

#[inline(always)]
pub(crate) fn global<T: Copy>(v: &T) -> T {
    // Volatile so the compiler keeps the load; the loader rewrites the value in .rodata.
    unsafe { core::ptr::read_volatile(v) }
}
