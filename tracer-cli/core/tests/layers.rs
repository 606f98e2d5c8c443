//! The user side reads in one direction. Within the analysis core, each module uses only the
//! modules of the layers before it (the order of `ORDER`, which lib.rs describes); in the
//! `kstall` binary, presenters and the session never use each other or the commands (nor does
//! the exporter's HTTP server use the session or the commands). Crate
//! boundaries enforce the rest: the core depends on neither the session nor a presenter.
//! Checked from the sources' `crate::` paths, so a new cycle fails here before review.
use std::{collections::BTreeSet, path::Path};

/// The core's modules, leaves first.
const ORDER: [&str; 16] = [
    "units", "hist", "roles", "kafka", "kernel", "broker", "listeners", "requests", "stalls", "timeline", "finding", "summary",
    "findings", "aggregate", "report", "recording",
];

/// The first path segment of every `crate::…` path in `source`, including each name in a
/// `use crate::{a, b::{…}}` group.
fn crate_paths(source: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = source;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group: those at brace depth 0.
            let (mut depth, mut name, mut expecting) = (0, String::new(), true);
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => expecting = true,
                    c if depth == 0 && expecting && (c.is_alphanumeric() || c == '_') => name.push(c),
                    _ if depth == 0 && expecting && !name.is_empty() => {
                        found.insert(std::mem::take(&mut name));
                        expecting = false;
                    }
                    _ => {}
                }
            }
            if !name.is_empty() {
                found.insert(name);
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            found.insert(name);
        }
    }
    found
}

fn sources(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push((path.display().to_string(), std::fs::read_to_string(&path).unwrap()));
        }
    }
    out
}

#[test]
fn core_modules_use_only_earlier_layers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    for (path, source) in sources(&dir) {
        let module = Path::new(&path).file_stem().unwrap().to_str().unwrap().to_string();
        if module == "lib" {
            continue;
        }
        let rank = ORDER.iter().position(|m| *m == module).unwrap_or_else(|| panic!("{path}: add module {module} to ORDER"));
        for used in crate_paths(&source) {
            let used_rank = ORDER.iter().position(|m| *m == used).unwrap_or_else(|| panic!("{path}: crate::{used} is not a module"));
            assert!(used_rank < rank, "{path}: {module} uses crate::{used}, a later layer: that is a cycle in the making");
        }
        checked += 1;
    }
    assert_eq!(checked, ORDER.len());
}

#[test]
fn presenters_and_session_never_use_each_other() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kstall/src");
    // The exporter's HTTP server (serve) answers from a registry: it neither traces nor parses
    // arguments.
    let forbidden = [("present", ["session", "commands"]), ("session", ["present", "commands"]), ("serve", ["session", "commands"])];
    let mut checked = 0;
    for (folder, not) in forbidden {
        for (path, source) in sources(&dir.join(folder)) {
            for used in crate_paths(&source) {
                assert!(!not.contains(&used.as_str()), "{path}: {folder} uses crate::{used}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 8, "{checked} files");
}

#[test]
fn paths_in_use_groups_are_found() {
    let found = crate_paths("use crate::{\n    hist::{A, b::C},\n    roles::Role,\n    units,\n};\nlet x = crate::kafka::api_name(1);");
    assert_eq!(found.into_iter().collect::<Vec<_>>(), ["hist", "kafka", "roles", "units"]);
}
