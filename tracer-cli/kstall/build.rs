//! Builds the kernel-side probes (tracer-ebpf/probes) for the BPF target and leaves the object in
//! OUT_DIR, where src/attach.rs embeds it. Needs the toolchain `cargo xtask setup` installs:
//! Debian's rustc with its own library source, linked into rustup as `debian-bpf`, and bpf-linker.
//! Also tells `kstall --version` what it is: git commit, target triple, build date.
use std::{path::Path, process::Command};

use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    version_env()?;
    // aya-build passes `-Z build-std=core`, which Debian's stable rustc accepts only with this.
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tracer-ebpf/probes");
    aya_build::build_ebpf(
        [Package { name: "kstall-probes", root_dir: root, ..Default::default() }],
        Toolchain::Custom("debian-bpf"),
    )
}

/// KSTALL_GIT_COMMIT (short hash, `+dirty` when tracked files differ from it, `unknown` outside
/// git), KSTALL_TARGET (the triple built for) and KSTALL_BUILD_DATE (UTC, from
/// SOURCE_DATE_EPOCH when set, for reproducible builds).
fn version_env() -> anyhow::Result<()> {
    let manifest_dir = env!("CARGO_MANIFEST_DIR");
    let workspace = Path::new(manifest_dir).join("../..");
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").arg("-C").arg(&workspace).args(args).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let commit = match git(&["rev-parse", "--short", "HEAD"]) {
        Some(hash) if !hash.is_empty() => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
            // Re-run when a commit, checkout or `git add` moves HEAD or the index.
            if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
                let mut watched = vec!["HEAD".to_string(), "index".to_string(), "packed-refs".to_string()];
                watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
                for f in watched {
                    let path = Path::new(&git_dir).join(f);
                    // A path that does not exist would make cargo re-run this script every build.
                    if path.exists() {
                        println!("cargo:rerun-if-changed={}", path.display());
                    }
                }
            }
            if dirty { format!("{hash}+dirty") } else { hash }
        }
        _ => "unknown".to_string(),
    };
    // The binary's own sources: an edit there changes `+dirty` (cargo then re-runs this script;
    // it watches only what is printed here once anything is).
    for dir in ["tracer-cli/kstall/src", "tracer-cli/core", "tracer-ebpf", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let secs = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v.trim().parse::<i64>().map_err(|_| anyhow::anyhow!("SOURCE_DATE_EPOCH={v:?} is not a count of seconds since 1970: unset it or set it to one (git log -1 --format=%ct)"))?,
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64),
    };
    println!("cargo:rustc-env=KSTALL_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=KSTALL_TARGET={}", std::env::var("TARGET").unwrap_or_default());
    println!("cargo:rustc-env=KSTALL_BUILD_DATE={}", utc_date(secs));
    Ok(())
}

/// `YYYY-MM-DD` of a Unix time (days to civil date, proleptic Gregorian: H. Hinnant's algorithm).
fn utc_date(secs: i64) -> String {
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
