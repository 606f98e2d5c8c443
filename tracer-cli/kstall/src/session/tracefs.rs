//! Locating tracefs and reading tracepoint `format` files, so the probes read event fields at
//! the offsets this kernel uses instead of offsets compiled in.
use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

const MOUNT_POINTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The tracefs mount, mounting it at /sys/kernel/tracing when nothing is mounted yet (as
/// perf and bpftrace do); the caller is root by then.
pub fn locate_or_mount() -> Result<PathBuf> {
    if let Some(found) = MOUNT_POINTS.iter().map(Path::new).find(|p| p.join("events").is_dir()) {
        return Ok(found.to_path_buf());
    }
    let target = Path::new(MOUNT_POINTS[0]);
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tracefs", "nodev"])
        .arg(target)
        .stdin(std::process::Stdio::null())
        .output();
    // mount's complaint goes into kstall's one line, not on lines of its own above it.
    let why = match &mounted {
        Ok(out) if out.status.success() && target.join("events").is_dir() => return Ok(target.to_path_buf()),
        Ok(out) => String::from_utf8_lossy(&out.stderr).lines().next().unwrap_or("").trim().trim_end_matches('.').to_string(),
        Err(e) => format!("cannot run mount: {e}"),
    };
    let why = if why.is_empty() { String::new() } else { format!(" ({why})") };
    bail!(
        "tracefs is not mounted and could not be mounted{why}: run `mount -t tracefs nodev /sys/kernel/tracing` (kernel needs CONFIG_TRACING)"
    )
}

/// One `field:` line of a format file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: usize,
    pub size: usize,
}

/// Fields of an event, parsed from the text of its `format` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFormat {
    pub fields: Vec<Field>,
}

impl EventFormat {
    /// Parses lines like `\tfield:pid_t prev_pid;\toffset:24;\tsize:4;\tsigned:1;`. Array fields
    /// (`char prev_comm[16]`) are named without their brackets. Lines it cannot read are skipped.
    pub fn parse(text: &str) -> EventFormat {
        let fields = text
            .lines()
            .filter_map(|line| {
                let mut decl = None;
                let mut offset = None;
                let mut size = None;
                for part in line.trim().split(';') {
                    let part = part.trim();
                    if let Some(d) = part.strip_prefix("field:") {
                        decl = Some(d);
                    } else if let Some(o) = part.strip_prefix("offset:") {
                        offset = o.parse().ok();
                    } else if let Some(s) = part.strip_prefix("size:") {
                        size = s.parse().ok();
                    }
                }
                let name = decl?.split_whitespace().last()?;
                let name = name.split('[').next()?.trim_start_matches('*');
                Some(Field { name: name.to_string(), offset: offset?, size: size? })
            })
            .collect();
        EventFormat { fields }
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Offset of a field that must exist with the given size.
    pub fn offset_of(&self, event: &str, name: &str, size: usize) -> Result<u32> {
        match self.field(name) {
            Some(f) if f.size == size => Ok(f.offset as u32),
            Some(f) => bail!("tracepoint {event}: field {name} has size {}, kstall expects {size}", f.size),
            None => bail!("tracepoint {event} has no field {name} on this kernel"),
        }
    }
}

/// Events of the running kernel, read from tracefs.
pub struct Tracefs {
    root: PathBuf,
}

impl Tracefs {
    pub fn new(root: PathBuf) -> Tracefs {
        Tracefs { root }
    }

    fn event_dir(&self, category: &str, name: &str) -> PathBuf {
        self.root.join("events").join(category).join(name)
    }

    pub fn has_event(&self, category: &str, name: &str) -> bool {
        self.event_dir(category, name).join("id").exists()
    }

    pub fn format(&self, category: &str, name: &str) -> Result<EventFormat> {
        let path = self.event_dir(category, name).join("format");
        let text = fs::read_to_string(&path).with_context(|| {
            format!("kernel has no tracepoint {category}:{name} (cannot read {})", path.display())
        })?;
        Ok(EventFormat::parse(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Verbatim from /sys/kernel/tracing/events/sched/sched_switch/format on Linux 6.18.
    const SCHED_SWITCH: &str = "name: sched_switch
ID: 326
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:char prev_comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:pid_t prev_pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:int prev_prio;\toffset:28;\tsize:4;\tsigned:1;
\tfield:long prev_state;\toffset:32;\tsize:8;\tsigned:1;
\tfield:char next_comm[16];\toffset:40;\tsize:16;\tsigned:0;
\tfield:pid_t next_pid;\toffset:56;\tsize:4;\tsigned:1;
\tfield:int next_prio;\toffset:60;\tsize:4;\tsigned:1;

print fmt: \"prev_comm=%s prev_pid=%d\", REC->prev_comm, REC->prev_pid
";

    #[test]
    fn parses_sched_switch_offsets() {
        let f = EventFormat::parse(SCHED_SWITCH);
        assert_eq!(f.offset_of("sched_switch", "prev_pid", 4).unwrap(), 24);
        assert_eq!(f.offset_of("sched_switch", "prev_state", 8).unwrap(), 32);
        assert_eq!(f.offset_of("sched_switch", "next_pid", 4).unwrap(), 56);
        assert_eq!(f.field("prev_comm").unwrap().size, 16);
        assert_eq!(f.fields.len(), 11);
    }

    #[test]
    fn pointer_fields_and_sizes() {
        let text = "\tfield:loff_t * offset;\toffset:32;\tsize:8;\tsigned:0;\n\tfield:unsigned char order;\toffset:36;\tsize:1;\tsigned:0;";
        let f = EventFormat::parse(text);
        assert_eq!(f.field("offset").unwrap().offset, 32);
        assert_eq!(f.offset_of("e", "order", 1).unwrap(), 36);
        // Wrong size and missing field are errors, not silent defaults.
        assert!(f.offset_of("e", "order", 4).unwrap_err().to_string().contains("size 1"));
        assert!(f.offset_of("e", "nope", 4).is_err());
    }

    #[test]
    fn garbage_yields_no_fields() {
        let f = EventFormat::parse("name: x\nfield:\nprint fmt: \"\"\n\toffset:8;\tsize:4;");
        assert!(f.fields.is_empty());
    }
}
