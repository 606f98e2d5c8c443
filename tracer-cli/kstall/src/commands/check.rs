//! `kstall check`: whether kstall can run on this kernel and what it will see, without touching
//! any broker. It loads and attaches every probe the way a trace would, pointed at no process,
//! then detaches: the verifier's verdict, not a guess from the version number.
use std::path::Path;

use anyhow::{Result, bail};
use serde::Serialize;

use kstall_core::kernel::{EvidenceStatus, SyscallHookStatus};

use super::print_stdout;
use crate::session::attach;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// What `kstall check` found.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub kernel: String,
    pub arch: &'static str,
    /// Every probe loaded and attached.
    pub can_run: bool,
    /// Why not, when it cannot.
    pub error: Option<String>,
    pub attach_ms: Option<f64>,
    /// How the traced syscalls are hooked here, and why not better; null when it cannot run.
    pub syscall_hooks: Option<SyscallHookStatus>,
    /// Hooks attached (`category:event`, `kprobe:function`).
    pub attached: Vec<String>,
    pub evidence: Vec<EvidenceStatus>,
    pub socket_wait_measured: bool,
    /// The kernel's BTF (/sys/kernel/btf/vmlinux): fentry and fexit need it.
    pub btf: bool,
}

/// `hold`: stay attached until a stop is requested, saying so on stderr.
pub fn check(hold: bool) -> CheckReport {
    let mut report = CheckReport {
        kernel: attach::kernel_release(),
        arch: std::env::consts::ARCH,
        can_run: false,
        error: None,
        attach_ms: None,
        syscall_hooks: None,
        attached: Vec::new(),
        evidence: Vec::new(),
        socket_wait_measured: false,
        btf: Path::new("/sys/kernel/btf/vmlinux").exists(),
    };
    // Pointed at no process (no tgid is u32::MAX), the programs run but do nothing.
    match attach::check_privileges().and_then(|()| attach::attach(u32::MAX, std::time::Duration::from_millis(1))) {
        Ok(probes) => {
            report.can_run = true;
            report.attach_ms = Some(probes.attach_time.as_secs_f64() * 1e3);
            report.attached = probes.attached.clone();
            report.syscall_hooks = Some(probes.syscall_hooks.clone());
            report.evidence = probes.evidence.clone();
            report.socket_wait_measured = probes.have_socket_wait;
            if hold {
                eprintln!("kstall: probes attached ({}), pointed at no process; Ctrl-C to detach", probes.syscall_hooks.hooks.as_str());
                while !crate::stop::requested() {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
        }
        Err(e) => report.error = Some(format!("{e:#}").replace('\n', " ")),
    }
    report
}

pub fn render_text(r: &CheckReport) -> String {
    let mut out = format!("kernel {} ({})\n", r.kernel, r.arch);
    match (&r.error, r.attach_ms) {
        (Some(e), _) => out += &format!("kstall cannot run here: {e}\n"),
        (None, Some(ms)) => {
            let kind = |h: &String| h.split_once(':').map_or("", |(k, _)| k).to_string();
            let mut kinds: Vec<(String, usize)> = Vec::new();
            for h in &r.attached {
                // A tracepoint is `category:event`; the other hooks say their kind.
                let k = match kind(h).as_str() {
                    k @ ("kprobe" | "fentry" | "fexit" | "raw_tracepoint") => k.to_string(),
                    _ => "tracepoint".to_string(),
                };
                match kinds.iter_mut().find(|(name, _)| *name == k) {
                    Some((_, n)) => *n += 1,
                    None => kinds.push((k, 1)),
                }
            }
            let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
            out += &format!(
                "kstall can run here: {} probes attached ({}) in {ms:.0} ms, then detached\n",
                r.attached.len(),
                kinds.join(", ")
            );
            if let Some(hooks) = &r.syscall_hooks {
                out += &format!("syscall hooks: {}\n", hooks.hooks.as_str());
                for (better, why) in &hooks.not_used {
                    out += &format!("  not {}: {why}\n", better.as_str());
                }
            }
        }
        (None, None) => {}
    }
    if !r.evidence.is_empty() {
        out += "\nevidence       source\n";
        for e in &r.evidence {
            match &e.missing {
                None => out += &format!("{:<14} {}\n", e.evidence.as_str(), e.hooks.join(", ")),
                Some(why) => {
                    out += &format!("{:<14} missing: {why}\n", e.evidence.as_str());
                    out += &format!("{:<14} without it: {}\n", "", e.cost);
                }
            }
        }
        out += &format!(
            "\nsocket wait: {}\n",
            if r.socket_wait_measured { "measured" } else { "unknown (request latency starts at the read)" }
        );
    }
    out += &format!("kernel BTF: {}\n", if r.btf { "present" } else { "absent (fentry needs it)" });
    out
}

pub fn run(format: Format, hold: bool) -> Result<()> {
    let report = check(hold);
    let text = match format {
        Format::Text => render_text(&report),
        Format::Json => serde_json::to_string_pretty(&report)? + "\n",
    };
    print_stdout(&text)?;
    if let Some(e) = report.error {
        bail!("{e}");
    }
    Ok(())
}
