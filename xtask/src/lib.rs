//! `cargo xtask`'s commands beyond the test fixtures (those are in `kstall-testbed`, which the
//! system tests share): toolchain setup, the bench, and the kernel matrix (Debian kernels in
//! QEMU guests, each running the functional check against the testbed's stand-in broker).
pub mod bench;
pub mod dist;
pub mod guest;
pub mod guest_arm64;
pub mod kernel_check;
pub mod matrix;
pub mod package;
pub mod setup;
