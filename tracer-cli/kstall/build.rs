//! Builds the kernel-side probes (tracer-ebpf/probes) for the BPF target and leaves the object in
//! OUT_DIR, where src/attach.rs embeds it. Needs the toolchain `cargo xtask setup` installs:
//! Debian's rustc with its own library source, linked into rustup as `debian-bpf`, and bpf-linker.
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    // aya-build passes `-Z build-std=core`, which Debian's stable rustc accepts only with this.
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tracer-ebpf/probes");
    aya_build::build_ebpf(
        [Package { name: "kstall-probes", root_dir: root, ..Default::default() }],
        Toolchain::Custom("debian-bpf"),
    )
}
