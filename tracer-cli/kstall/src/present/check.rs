//! `kstall check` in words: whether kstall can run on this kernel, its probes by mechanism,
//! how the syscalls are hooked, and each kind of evidence with its hooks or what it costs.
use kstall_core::kernel::KernelCheck;

pub fn text(r: &KernelCheck) -> String {
    let mut out = format!("kernel {} ({})\n", r.kernel, r.arch);
    if let Some(e) = &r.error {
        out += &format!("kstall cannot run here: {e}\n");
    }
    if let Some(p) = &r.probes {
        let mechanisms: Vec<String> = p.per_mechanism().iter().map(|(m, n)| format!("{n} {}", m.as_str())).collect();
        out += &format!(
            "kstall can run here: {} probes attached ({}) in {:.0} ms, then detached\n",
            p.attached.len(),
            mechanisms.join(", "),
            p.attach_ms
        );
        out += &format!("syscall hooks: {}\n", p.syscall_hooks.hooks.as_str());
        for (better, why) in &p.syscall_hooks.not_used {
            out += &format!("  not {}: {why}\n", better.as_str());
        }
        if !p.evidence.is_empty() {
            out += "\nevidence       source\n";
            for e in &p.evidence {
                match &e.missing {
                    None => out += &format!("{:<14} {}\n", e.evidence.as_str(), e.hooks_text()),
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
    }
    out += &format!("kernel BTF: {}\n", if r.btf { "present" } else { "absent (fentry needs it)" });
    out
}

#[cfg(test)]
mod tests {
    use kstall_core::kernel::{Evidence, EvidenceStatus, Hook, KernelCheck, Mechanism, Probe, ProbeStatus};

    fn probe(mechanism: Mechanism, target: &str, program: &str) -> Probe {
        Probe { hook: Hook::new(mechanism, target), program: program.into() }
    }

    #[test]
    fn counts_probes_per_mechanism_and_names_each_evidence() {
        let mut probes = ProbeStatus::none();
        probes.attached = vec![
            probe(Mechanism::RawTracepoint, "sys_exit", "raw_exit"),
            probe(Mechanism::RawTracepoint, "sys_enter", "raw_enter"),
            probe(Mechanism::Tracepoint, "sched:sched_switch", "sched_switch"),
            probe(Mechanism::Kprobe, "tcp_recvmsg", "sock_recv_kprobe"),
        ];
        probes.attach_ms = 41.6;
        probes.evidence = vec![
            EvidenceStatus { evidence: Evidence::SocketReads, hooks: vec![Hook::new(Mechanism::Kprobe, "tcp_recvmsg")], missing: None, cost: "" },
            EvidenceStatus { evidence: Evidence::FileLookups, hooks: Vec::new(), missing: Some("no tracepoint".into()), cost: "costly" },
        ];
        let check = KernelCheck {
            kernel: "6.1.0".into(),
            arch: "x86_64",
            can_run: true,
            error: None,
            socket_wait_measured: probes.socket_wait_measured(),
            probes: Some(probes),
            btf: true,
        };
        let text = super::text(&check);
        assert!(text.contains("4 probes attached (2 raw_tracepoint, 1 tracepoint, 1 kprobe) in 42 ms"), "{text}");
        assert!(text.contains("socket_reads   kprobe:tcp_recvmsg\n"), "{text}");
        assert!(text.contains("file_lookups   missing: no tracepoint\n") && text.contains("without it: costly"), "{text}");
        assert!(text.contains("socket wait: unknown"), "{text}");
        // The JSON keeps the probe status at the top level, as before.
        let json = serde_json::to_value(&check).unwrap();
        assert_eq!(json["syscall_hooks"]["hooks"], "tracepoint");
        assert_eq!(json["attached"][0], serde_json::json!({"mechanism": "raw_tracepoint", "target": "sys_exit", "program": "raw_exit"}));
    }

    #[test]
    fn says_why_it_cannot_run() {
        let check = KernelCheck {
            kernel: "5.4.0".into(),
            arch: "x86_64",
            can_run: false,
            error: Some("kernel 5.4.0 is too old".into()),
            probes: None,
            socket_wait_measured: false,
            btf: false,
        };
        assert_eq!(super::text(&check), "kernel 5.4.0 (x86_64)\nkstall cannot run here: kernel 5.4.0 is too old\nkernel BTF: absent (fentry needs it)\n");
        let json = serde_json::to_value(&check).unwrap();
        assert!(json.get("attached").is_none() && json["can_run"] == false);
    }
}
