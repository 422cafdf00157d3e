//! The layering is checked against the code: `docs/ARCHITECTURE.md` lists, in its `deps`
//! block, which top-level module imports which; this test reads every file under `src/` (its
//! non-test part), finds the modules it names through `crate::` and `super::` paths, and
//! requires (1) exactly the documented edges between top-level modules, (2) no import cycle
//! between top-level modules nor between the files of one folder, and (3) every source file
//! named in the architecture page.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/supervise/docker.rs` -> `supervise::docker`; `src/config/mod.rs` -> `config`.
fn module_of(src: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> =
        rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts.join("::")
}

/// The code of a file without its unit tests and comments.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(at) => &l[..at],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every module this code names: `crate::a::b` (the file `a::b` when there is one, else `a`)
/// and `super::x` (a sibling file).
fn imports(module: &str, code: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let path = regex::Regex::new(r"\b(crate|super)((?:::[a-z_][a-z0-9_]*)+)").unwrap();
    let parent = module.rsplit_once("::").map(|(p, _)| p.to_string()).unwrap_or_default();
    let mut out = BTreeSet::new();
    for cap in path.captures_iter(code) {
        let names: Vec<&str> = cap[2].trim_start_matches("::").split("::").collect();
        let base = if &cap[1] == "crate" { String::new() } else { parent.clone() };
        let mut best = None;
        for n in 1..=names.len() {
            let candidate = [base.as_str()]
                .into_iter()
                .chain(names[..n].iter().copied())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("::");
            if known.contains(&candidate) {
                best = Some(candidate);
            }
        }
        if let Some(target) = best {
            if target != module {
                out.insert(target);
            }
        }
    }
    out
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap()
}

/// The edges of a cycle, if `edges` has one.
fn cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        stack.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|n| n == next).unwrap();
                    let mut found = stack[from..].to_vec();
                    found.push(next.clone());
                    return Some(found);
                }
                0 => {
                    if let Some(found) = visit(next, edges, state, stack) {
                        return Some(found);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in edges.keys() {
        if state.get(node.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(found) = visit(node, edges, &mut state, &mut Vec::new()) {
                return Some(found);
            }
        }
    }
    None
}

struct Tree {
    files: BTreeMap<String, PathBuf>,
    edges: BTreeMap<String, BTreeSet<String>>,
}

fn tree() -> Tree {
    let src = Path::new(ROOT).join("src");
    let mut paths = Vec::new();
    sources(&src, &mut paths);
    let files: BTreeMap<String, PathBuf> =
        paths.into_iter().map(|p| (module_of(&src, &p), p)).collect();
    let known: BTreeSet<String> = files.keys().cloned().collect();
    let edges = files
        .iter()
        .map(|(m, p)| (m.clone(), imports(m, &code(&std::fs::read_to_string(p).unwrap()), &known)))
        .collect();
    Tree { files, edges }
}

/// The `deps` block of the architecture page: `module: dep, dep` per line.
fn documented() -> BTreeMap<String, BTreeSet<String>> {
    let page = std::fs::read_to_string(Path::new(ROOT).join("docs/ARCHITECTURE.md")).unwrap();
    let start = page.find("```deps\n").expect("docs/ARCHITECTURE.md has a ```deps block") + 8;
    let end = start + page[start..].find("```").unwrap();
    page[start..end]
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (module, deps) = l.split_once(':').expect("a deps line is `module: a, b`");
            let deps = deps
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty() && *d != "-")
                .map(str::to_string)
                .collect();
            (module.trim().to_string(), deps)
        })
        .collect()
}

fn top_level(tree: &Tree) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, tos) in &tree.edges {
        let entry = out.entry(top(from).to_string()).or_default();
        for to in tos {
            if top(to) != top(from) {
                entry.insert(top(to).to_string());
            }
        }
    }
    // `main` is the binary, `lib` the crate root: neither is a layer.
    out.remove("");
    out.remove("main");
    out
}

#[test]
fn top_level_imports_are_exactly_the_documented_ones() {
    let real = top_level(&tree());
    let documented = documented();
    let mut problems = Vec::new();
    for (module, deps) in &real {
        let allowed = documented.get(module).cloned().unwrap_or_default();
        if !documented.contains_key(module) {
            problems.push(format!("{module}: not in the deps block"));
        }
        for dep in deps.difference(&allowed) {
            problems.push(format!("{module} imports {dep}: not documented"));
        }
        for dep in allowed.difference(deps) {
            problems.push(format!("{module} documented to import {dep}: it does not"));
        }
    }
    for module in documented.keys().filter(|m| !real.contains_key(*m)) {
        problems.push(format!("{module}: documented, no such module"));
    }
    assert!(
        problems.is_empty(),
        "docs/ARCHITECTURE.md deps block vs src/:\n{}",
        problems.join("\n")
    );
}

#[test]
fn no_import_cycle_between_modules_or_within_a_folder() {
    let tree = tree();
    let real = top_level(&tree);
    assert_eq!(cycle(&real), None, "a cycle between top-level modules");
    let mut folders: BTreeMap<&str, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (from, tos) in &tree.edges {
        if !from.contains("::") {
            continue;
        }
        let inside =
            tos.iter().filter(|t| t.contains("::") && top(t) == top(from)).cloned().collect();
        folders.entry(top(from)).or_default().insert(from.clone(), inside);
    }
    for (folder, edges) in folders {
        assert_eq!(cycle(&edges), None, "a cycle between the files of src/{folder}/");
    }
}

#[test]
fn every_source_file_is_named_in_the_architecture_page() {
    let page = std::fs::read_to_string(Path::new(ROOT).join("docs/ARCHITECTURE.md")).unwrap();
    let src = Path::new(ROOT).join("src");
    let missing: Vec<String> = tree()
        .files
        .values()
        .map(|p| p.strip_prefix(&src).unwrap().display().to_string())
        .filter(|rel| {
            let path = Path::new(rel);
            // A folder's mod.rs is the folder's own paragraph (`src/host/`); a file is named
            // by its path inside its top folder (`docker/procs.rs` in `src/supervise/`).
            let shown = if path.file_name().unwrap() == "mod.rs" {
                format!("{}/", path.parent().unwrap().display())
            } else {
                let mut parts = path.components();
                if path.components().count() > 1 {
                    parts.next();
                }
                parts.as_path().display().to_string()
            };
            !page.contains(&shown)
        })
        .collect();
    assert!(missing.is_empty(), "not described in docs/ARCHITECTURE.md: {missing:?}");
}

/// No handler in `src/cmd/` calls another: a handler may use only the shared steps, which are
/// no handlers (`source.rs`, `sweep.rs`); `cmd/mod.rs` dispatches to every handler.
#[test]
fn no_handler_calls_another_handler() {
    const SHARED: [&str; 2] = ["cmd::source", "cmd::sweep"];
    let tree = tree();
    let mut calls = Vec::new();
    for (from, tos) in &tree.edges {
        if !from.starts_with("cmd::") || SHARED.contains(&from.as_str()) {
            continue;
        }
        for to in tos.iter().filter(|t| t.starts_with("cmd::") && !SHARED.contains(&t.as_str())) {
            calls.push(format!("{from} -> {to}"));
        }
    }
    assert!(calls.is_empty(), "handlers calling handlers: {calls:?}");
}

/// The checker itself finds what it must: a cycle, and a `super::` sibling.
#[test]
fn the_checker_sees_cycles_and_sibling_imports() {
    let edges: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["a".to_string()])),
    ]
    .into();
    assert!(cycle(&edges).is_some());
    let known: BTreeSet<String> =
        ["x::a", "x::b", "y", "y::z"].iter().map(|s| s.to_string()).collect();
    let found = imports("x::a", "use super::b::Thing; use crate::y::z::W; crate::y::q()", &known);
    assert_eq!(found, BTreeSet::from(["x::b".to_string(), "y::z".to_string(), "y".to_string()]));
}
