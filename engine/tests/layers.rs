//! The engine's module layering, as an executable rule (STYLE.md #13: let tools hold the
//! architecture). `src/lib.rs` draws the layers; this test reads every file under `src/`
//! and fails on an import that goes up:
//!
//! - a top-level module may use modules of lower layers, and modules listed before it in
//!   its own layer;
//! - inside `http` and `session`, a submodule may use only the submodules listed before it
//!   (never the module's root file, which is the top of the module);
//! - only `rt` names glommio or monoio, and only `sys.rs`, `slot.rs` (futures in pooled
//!   blocks) and `rt/glommio.rs` hold `unsafe`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Layers, bottom first; within a layer, a module may use the ones before it.
const LAYERS: &[&[&str]] = &[
    &["sys", "orig_dst", "listen", "rt", "slot"],
    &["conn", "settings", "error", "lifecycle", "io"],
    &[
        "balance",
        "telemetry",
        "identity",
        "policy",
        "discover",
        "upstream",
    ],
    &["ctx"],
    &["http"],
    &["session"],
    &["shard"],
    &["logging", "app", "tools"],
];

/// Submodule order inside the modules whose parts are layered too.
const SUBMODULES: &[(&str, &[&str])] = &[
    ("http", &["conn", "authz", "route", "respond", "h1", "h2"]),
    (
        "session",
        &[
            "then",
            "dest",
            "detect",
            "tls",
            "authz",
            "opaque",
            "transparent",
            "direct",
            "inbound",
            "outbound",
        ],
    ),
];

/// Files outside the layers.
const UNLAYERED: &[&str] = &["lib", "main", "bin"];

// === types ===

/// One source file's place: its top-level module and, if it is inside one, its submodule.
struct Place {
    path: PathBuf,
    module: String,
    sub: Option<String>,
}

// === functions ===

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn place(path: &Path) -> Place {
    let relative = path.strip_prefix(src_dir()).expect("under src");
    let parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    Place {
        path: relative.to_path_buf(),
        module: parts[0].clone(),
        sub: parts.get(1).cloned(),
    }
}

/// (layer, position within the layer) of a top-level module.
fn rank(module: &str) -> Option<(usize, usize)> {
    LAYERS.iter().enumerate().find_map(|(layer, modules)| {
        modules
            .iter()
            .position(|m| *m == module)
            .map(|at| (layer, at))
    })
}

fn sub_rank(module: &str, sub: &str) -> Option<usize> {
    SUBMODULES
        .iter()
        .find(|(m, _)| *m == module)
        .and_then(|(_, subs)| subs.iter().position(|s| *s == sub))
}

/// The source without comments (line comments and doc comments), so that prose naming a
/// module does not count as an import.
fn code_of(source: &str) -> String {
    source
        .lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module paths `code` refers to through `crate::`, as `[module, item?]`, including
/// each name in a `use crate::{a, b::c}` or `use crate::a::{b, c}` group.
fn crate_refs(code: &str) -> Vec<Vec<String>> {
    let mut refs = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        refs.extend(expand(rest, Vec::new()));
    }
    refs
}

/// The paths at the start of `text` (after `prefix`): one path, or one per item of a
/// `{…}` group, keeping at most two segments.
fn expand(text: &str, prefix: Vec<String>) -> Vec<Vec<String>> {
    if let Some(group) = text.strip_prefix('{') {
        let end = group.find('}').unwrap_or(group.len());
        return group[..end]
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty() && *item != "self")
            .flat_map(|item| expand(item, prefix.clone()))
            .collect();
    }
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    if end == 0 {
        return if prefix.is_empty() {
            vec![]
        } else {
            vec![prefix]
        };
    }
    let mut path = prefix;
    path.push(text[..end].to_string());
    match text[end..].strip_prefix("::") {
        Some(next) if path.len() < 2 => expand(next, path),
        _ => vec![path],
    }
}

/// The sibling submodules a file directly inside a module names through `super::`.
fn super_refs(code: &str) -> Vec<String> {
    let mut refs = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("super::") {
        rest = &rest[at + "super::".len()..];
        let names: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => group[..group.find('}').unwrap_or(group.len())]
                .split(',')
                .collect(),
            None => vec![rest],
        };
        for name in names {
            let name = name.trim();
            let end = name
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(name.len());
            if end > 0 {
                refs.push(name[..end].to_string());
            }
        }
    }
    refs
}

/// Every upward import in the engine's sources.
fn violations() -> Vec<String> {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    let mut found = BTreeSet::new();
    for file in files {
        let place = place(&file);
        let code = code_of(&std::fs::read_to_string(&file).expect("readable"));
        let name = place.path.display();
        if UNLAYERED.contains(&place.module.as_str()) {
            continue;
        }
        let Some(own) = rank(&place.module) else {
            found.insert(format!("{name}: module `{}` is in no layer", place.module));
            continue;
        };
        for path in crate_refs(&code) {
            let target = &path[0];
            if *target == place.module {
                // Inside one module: only the layered ones are checked.
                let layered = SUBMODULES.iter().any(|(m, _)| *m == place.module);
                if let (true, Some(sub)) = (layered, &place.sub) {
                    match path.get(1) {
                        Some(to) => {
                            check_sub(&place.module, sub, to, &name.to_string(), &mut found)
                        }
                        None => {
                            found.insert(format!("{name}: uses an item of its module's root"));
                        }
                    }
                }
                continue;
            }
            match rank(target) {
                None => {
                    found.insert(format!("{name}: `crate::{target}` is in no layer"));
                }
                Some(to) if to >= own => {
                    found.insert(format!(
                        "{name}: `{}` (layer {}) uses `crate::{target}` (layer {})",
                        place.module, own.0, to.0
                    ));
                }
                Some(_) => {}
            }
        }
        // Siblings through `super::`, for files directly inside a layered module.
        let direct_child = place.path.components().count() == 2;
        if let (true, Some(sub)) = (direct_child, &place.sub) {
            for to in super_refs(&code) {
                check_sub(&place.module, sub, &to, &name.to_string(), &mut found);
            }
        }
        let names_runtime = code.contains("glommio::") || code.contains("monoio::");
        if names_runtime && place.module != "rt" {
            found.insert(format!("{name}: names glommio or monoio outside `rt`"));
        }
        let unsafe_allowed = ["sys.rs", "slot.rs", "rt/glommio.rs"];
        if code.contains("unsafe ") && !unsafe_allowed.contains(&name.to_string().as_str()) {
            found.insert(format!(
                "{name}: holds `unsafe` outside sys.rs, slot.rs and rt/glommio.rs"
            ));
        }
    }
    found.into_iter().collect()
}

/// Within a layered module, `sub` may use `to` only if `to` comes before it.
fn check_sub(module: &str, sub: &str, to: &str, name: &str, found: &mut BTreeSet<String>) {
    if to == sub || sub_rank(module, sub).is_none() {
        return;
    }
    let below = match (sub_rank(module, sub), sub_rank(module, to)) {
        (Some(from), Some(target)) => target < from,
        // An item of the module's root (`super::Item`).
        _ => false,
    };
    if !below {
        found.insert(format!(
            "{name}: `{module}::{sub}` uses `{module}::{to}`, which is not below it"
        ));
    }
}

#[test]
fn imports_go_down_the_layers() {
    let found = violations();
    assert!(
        found.is_empty(),
        "imports against the layer order (see src/lib.rs):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_checker_sees_an_upward_import() {
    // The parsing the rule relies on, on samples of each form it must catch.
    let code = code_of(
        "use crate::shard::ShardSeed; // crate::app in a comment\n\
         use crate::{http::h1, session};\n\
         use crate::http::{respond, route::route};\n\
         let _ = crate::io::reset(fd);",
    );
    let refs = crate_refs(&code);
    assert_eq!(
        refs,
        vec![
            vec!["shard".to_string(), "ShardSeed".to_string()],
            vec!["http".to_string(), "h1".to_string()],
            vec!["session".to_string()],
            vec!["http".to_string(), "respond".to_string()],
            vec!["http".to_string(), "route".to_string()],
            vec!["io".to_string(), "reset".to_string()],
        ]
    );
    assert!(rank("shard") > rank("http"), "shard sits above http");
    assert!(rank("balance") < rank("upstream"));
    assert_eq!(
        super_refs("use super::{detect, opaque};"),
        ["detect", "opaque"]
    );
    let mut found = BTreeSet::new();
    check_sub("session", "detect", "inbound", "x.rs", &mut found);
    check_sub("session", "inbound", "detect", "x.rs", &mut found);
    check_sub("http", "h1", "Client", "x.rs", &mut found);
    assert_eq!(found.len(), 2, "{found:?}");
}
