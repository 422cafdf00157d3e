//! The manual's reference parts, checked against the code so they cannot drift:
//! - `docs/plan.schema.json` against the real `plan --json` of every snapshot in `testdata/hosts/`;
//! - the key table of `docs/configuration.md` against the config types, both ways;
//! - `docs/cli.md` against the binary's `--help` (`UPDATE_DOCS=1 cargo test --test docs`
//!   rewrites it after a deliberate change);
//! - man pages and shell completions against the clap definition;
//! - every command BENCHMARKS.md names exists in the repository;
//! - every relative link of the manual points at a file and heading that exist.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Output};

use clap::CommandFactory;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn run(args: &[&str]) -> Output {
    // Help text wraps at the terminal width: pin it, as tests/plan.rs does.
    Command::new(env!("CARGO_BIN_EXE_nodeagent"))
        .env("COLUMNS", "100")
        .env_remove("NODEAGENT_CONFIG")
        .args(args)
        .output()
        .expect("run nodeagent")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

// ---------------------------------------------------------------------------------------------
// plan --json

fn plan_validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(&read("docs/plan.schema.json")).unwrap();
    jsonschema::validator_for(&schema).expect("docs/plan.schema.json compiles")
}

fn schema_errors(v: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc).map(|e| format!("{e} at {}", e.instance_path())).collect()
}

fn host_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(repo().join("testdata/hosts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 10, "expected the host snapshots under testdata/hosts");
    dirs
}

#[test]
fn plan_json_of_every_snapshot_matches_the_schema() {
    let validator = plan_validator();
    let mut policies = BTreeSet::new();
    for dir in host_dirs() {
        let from = dir.display().to_string();
        // The default plan must succeed; the variants (one GPU per instance, a memory need no
        // node meets, so `--preferred`) may be refused by a host, but what they print must fit.
        let variants: [&[&str]; 3] = [&[], &["--tp", "1"], &["--host-memory-gb", "100000"]];
        for (i, extra) in variants.iter().enumerate() {
            let mut args = vec!["plan", "--from", &from, "--json"];
            args.extend_from_slice(extra);
            let out = run(&args);
            if !out.status.success() {
                assert!(i > 0, "plan {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
                continue;
            }
            let doc: Value = serde_json::from_slice(&out.stdout).expect("plan --json is JSON");
            let errors = schema_errors(&validator, &doc);
            assert!(errors.is_empty(), "plan {args:?} does not match the schema: {errors:#?}");
            for inst in doc["instances"].as_array().unwrap() {
                policies.insert(inst["memory_policy"].as_str().unwrap().to_string());
            }
        }
    }
    // The variants reach the policies the schema describes (a test that only ever saw `bind`
    // would not check the other branches).
    for p in ["bind", "default", "preferred"] {
        assert!(policies.contains(p), "no snapshot produced memory_policy {p:?}: {policies:?}");
    }
}

#[test]
fn plan_schema_is_closed_and_strict() {
    let validator = plan_validator();
    let out = run(&["plan", "--from", "testdata/hosts/seed-4xmxc500", "--json"]);
    let good: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(schema_errors(&validator, &good).is_empty());
    type Mutation = (&'static str, fn(&mut Value));
    let mutations: [Mutation; 6] = [
        ("extra top-level key", |v| {
            v["surprise"] = Value::Bool(true);
        }),
        ("missing warnings", |v| {
            v.as_object_mut().unwrap().remove("warnings");
        }),
        ("extra instance key", |v| {
            v["instances"][0]["surprise"] = Value::Bool(true);
        }),
        ("missing numactl", |v| {
            v["instances"][0].as_object_mut().unwrap().remove("numactl");
        }),
        ("unknown memory policy", |v| {
            v["instances"][0]["memory_policy"] = Value::from("everywhere");
        }),
        ("bad cpulist", |v| {
            v["numa_nodes"][0]["cpus"] = Value::from("zero to fifteen");
        }),
    ];
    for (what, mutate) in mutations {
        let mut bad = good.clone();
        mutate(&mut bad);
        assert!(!schema_errors(&validator, &bad).is_empty(), "the schema accepts: {what}");
    }
}

/// The sketch in docs/probe-and-plan.md names only keys the schema defines.
#[test]
fn plan_contract_sketch_uses_schema_keys() {
    let page = read("docs/probe-and-plan.md");
    let start = page.find("## JSON contract").expect("the JSON contract section");
    let block = &page[start..];
    let block = &block[block.find("```text").unwrap()..];
    let block = &block[..block[3..].find("```").unwrap()];
    let schema = read("docs/plan.schema.json");
    let keys = regex::Regex::new(r#""([a-z_]+)"\s*:"#).unwrap();
    let mut seen = 0;
    for c in keys.captures_iter(block) {
        let key = &c[1];
        seen += 1;
        assert!(
            schema.contains(&format!("\"{key}\":")),
            "the sketch names {key:?}, the schema does not"
        );
    }
    assert!(seen >= 10, "the sketch lost its keys");
}

// ---------------------------------------------------------------------------------------------
// configuration keys

/// The fields a TOML table at `path` accepts, read from the loader's own "unknown field"
/// error (the config types deny unknown fields), so the list comes from the types themselves.
/// `None` when `path` is not a struct: a map (free keys) or a plain value.
fn accepted_fields(path: &[&str]) -> Option<Vec<String>> {
    let header = if path.is_empty() { String::new() } else { format!("[{}]\n", path.join(".")) };
    let text = format!("{header}nodeagent_docs_probe = \"x\"\n");
    let err = match toml::from_str::<nodeagent::config::Config>(&text) {
        Ok(_) => return None, // a map: any key is accepted
        Err(e) => e.message().to_string(),
    };
    if !err.contains("unknown field `nodeagent_docs_probe`") {
        return None; // not a table at all ("invalid type: map, expected ...")
    }
    let expected = &err[err.find("expected").expect("serde lists the expected fields")..];
    let names = regex::Regex::new(r"`([a-z_0-9]+)`").unwrap();
    Some(names.captures_iter(expected).map(|c| c[1].to_string()).collect())
}

/// Every key the config types accept, dotted (`supervise.stop_grace`); a map-valued key
/// (`engine.env`) is one key.
fn config_keys(path: &mut Vec<String>, out: &mut BTreeSet<String>) {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    let fields = accepted_fields(&p).expect("the config root and its sections are structs");
    for f in fields {
        path.push(f);
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        if accepted_fields(&p).is_some() {
            config_keys(path, out);
        } else {
            out.insert(p.join("."));
        }
        path.pop();
    }
}

/// The rows of the key table in docs/configuration.md: key -> example (a TOML value).
fn documented_keys() -> Vec<(String, String)> {
    let page = read("docs/configuration.md");
    let start = page.find("## Every key").expect("docs/configuration.md has `## Every key`");
    let section = &page[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut rows = Vec::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split(" | ").collect();
        let strip = |c: &str| c.trim_matches(|ch| ch == '|' || ch == ' ' || ch == '`').to_string();
        assert!(cells.len() >= 4, "a key row needs key, example, default, meaning: {line}");
        rows.push((strip(cells[0]), strip(cells[1])));
    }
    rows
}

#[test]
fn config_accepts_exactly_the_documented_keys() {
    let mut accepted = BTreeSet::new();
    config_keys(&mut Vec::new(), &mut accepted);
    assert!(accepted.len() > 30, "the key derivation found too little: {accepted:?}");
    assert!(accepted.contains("supervise.stall_timeout") && accepted.contains("container.env"));

    let rows = documented_keys();
    let mut documented = BTreeSet::new();
    for (key, _) in &rows {
        assert!(documented.insert(key.clone()), "{key} is documented twice");
    }
    let missing: Vec<_> = accepted.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&accepted).collect();
    assert!(missing.is_empty(), "config keys without a row in docs/configuration.md: {missing:?}");
    assert!(extra.is_empty(), "docs/configuration.md documents keys the loader refuses: {extra:?}");
}

#[test]
fn config_table_examples_parse_as_one_config() {
    let mut root = toml::Table::new();
    for (key, example) in documented_keys() {
        let value: toml::Table = toml::from_str(&format!("v = {example}"))
            .unwrap_or_else(|e| panic!("{key}: example `{example}` is not a TOML value: {e}"));
        let mut table = &mut root;
        let parts: Vec<&str> = key.split('.').collect();
        for section in &parts[..parts.len() - 1] {
            table = table
                .entry(section.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .unwrap();
        }
        table.insert(parts[parts.len() - 1].to_string(), value["v"].clone());
    }
    let text = toml::to_string(&root).unwrap();
    let parsed = nodeagent::config::parse_layer("docs/configuration.md", &text);
    assert!(parsed.is_ok(), "the examples do not parse as a config: {:?}\n{text}", parsed.err());
    // A wrong example type is caught (the check above can fail).
    let bad = nodeagent::config::parse_layer("x.toml", "[engine]\nport = \"eighty\"\n");
    assert!(bad.is_err());
}

// ---------------------------------------------------------------------------------------------
// command-line reference, man pages, completions

/// Visible command paths: `[]`, `["probe"]`, ..., `["verify", "compare"]`.
fn command_paths() -> Vec<Vec<String>> {
    fn walk(cmd: &clap::Command, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        out.push(path.clone());
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
            path.push(sub.get_name().to_string());
            walk(sub, path, out);
            path.pop();
        }
    }
    let mut out = Vec::new();
    walk(&nodeagent::cli::Cli::command(), &mut Vec::new(), &mut out);
    out
}

fn cli_reference() -> String {
    let mut doc = String::from(
        "# Command-line reference\n\n\
         The `--help` of every command, wrapped at 100 columns. Generated from the clap \
         definitions in\n`src/cli/` by `UPDATE_DOCS=1 cargo test --test docs`; \
         `cargo test --test docs` fails when this\npage is out of date. \
         Man pages: `nodeagent man --out DIR`. Shell completion: `nodeagent completions\n\
         bash|zsh|fish`.\n",
    );
    for path in command_paths() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let out = run(&args);
        assert!(out.status.success(), "{args:?} failed");
        let name = std::iter::once("nodeagent").chain(path.iter().map(String::as_str));
        doc.push_str(&format!(
            "\n## `{}`\n\n```text\n{}```\n",
            name.collect::<Vec<_>>().join(" "),
            stdout(&out)
        ));
    }
    doc
}

#[test]
fn cli_reference_matches_the_help() {
    let actual = cli_reference();
    let path = repo().join("docs/cli.md");
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected != actual {
        let line = expected.lines().zip(actual.lines()).position(|(a, b)| a != b);
        panic!(
            "docs/cli.md is out of date (first difference at line {}); \
             `UPDATE_DOCS=1 cargo test --test docs` rewrites it",
            line.map_or(expected.lines().count().min(actual.lines().count()), |l| l) + 1
        );
    }
}

/// Long option names of the command at `path`.
fn long_options(path: &[String]) -> Vec<String> {
    let mut cmd = nodeagent::cli::Cli::command();
    cmd.build();
    let mut cmd = &cmd;
    for p in path {
        cmd = cmd.find_subcommand(p).unwrap();
    }
    cmd.get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| a.get_long())
        .map(String::from)
        .collect()
}

#[test]
fn man_pages_cover_every_command_and_option() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["man", "--out", &dir.path().display().to_string()]);
    assert!(out.status.success(), "man: {}", String::from_utf8_lossy(&out.stderr));
    for path in command_paths() {
        let name = std::iter::once("nodeagent".to_string()).chain(path.iter().cloned());
        let file = dir.path().join(format!("{}.1", name.collect::<Vec<_>>().join("-")));
        let page = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("no man page {}: {e}", file.display()));
        assert!(page.starts_with(".ie") || page.contains(".TH "), "{}: not roff", file.display());
        for long in long_options(&path) {
            // roff escapes the dashes: `\-\-from`.
            assert!(
                page.contains(&format!("\\-\\-{}", long.replace('-', "\\-"))),
                "{} lacks --{long}",
                file.display()
            );
        }
    }
}

#[test]
fn completions_name_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completions", shell]);
        assert!(out.status.success(), "completions {shell} failed");
        let script = stdout(&out);
        for path in command_paths().iter().filter(|p| p.len() == 1) {
            assert!(script.contains(&path[0]), "{shell} completion lacks {}", path[0]);
        }
        for long in ["host-memory-gb", "print-config", "max-failure-rate"] {
            assert!(script.contains(long), "{shell} completion lacks --{long}");
        }
    }
    let bad = run(&["completions", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2), "an unknown shell is bad usage");
}

// ---------------------------------------------------------------------------------------------
// BENCHMARKS.md

/// Every section of BENCHMARKS.md names the command that reproduces it, and that command is
/// committed: a script in `scripts/`, a `cargo test --test NAME` target, or a `make` target.
#[test]
fn benchmarks_claim_only_what_committed_commands_reproduce() {
    let text = read("BENCHMARKS.md");
    let makefile = read("Makefile");
    let sections: Vec<&str> = text.split("\n## ").skip(1).collect();
    assert!(sections.len() >= 4, "BENCHMARKS.md lost its sections");
    let script = regex::Regex::new(r"scripts/[A-Za-z0-9_./-]+\.(?:sh|py)").unwrap();
    let test = regex::Regex::new(r"cargo test --test ([a-z_]+)(?: ([a-z_]+))?").unwrap();
    let make = regex::Regex::new(r"`make ([a-z-]+)").unwrap();
    for section in &sections {
        let title = section.lines().next().unwrap();
        let command = section
            .lines()
            .find(|l| l.starts_with("Command: ") || l.starts_with("Commands: "))
            .unwrap_or_else(|| panic!("BENCHMARKS.md `## {title}` names no `Command:`"));
        let mut found = 0;
        for m in script.find_iter(section) {
            let path = repo().join(m.as_str());
            assert!(path.is_file(), "`## {title}` names {}, which is not committed", m.as_str());
            found += 1;
        }
        for c in test.captures_iter(section) {
            let file = repo().join(format!("tests/{}.rs", &c[1]));
            let body = std::fs::read_to_string(&file)
                .unwrap_or_else(|_| panic!("`## {title}`: no test target {}", &c[1]));
            if let Some(filter) = c.get(2) {
                assert!(
                    body.contains(&format!("fn {}", filter.as_str())),
                    "`## {title}`: tests/{}.rs has no test {}",
                    &c[1],
                    filter.as_str()
                );
            }
            found += 1;
        }
        for c in make.captures_iter(section) {
            assert!(
                makefile.contains(&format!("\n{}:", &c[1])),
                "`## {title}`: no make target {}",
                &c[1]
            );
            found += 1;
        }
        assert!(found > 0, "`## {title}`: its command is not a committed one: {command}");
    }
}

// ---------------------------------------------------------------------------------------------
// links

/// GitHub's anchor of a heading: lowercase, punctuation dropped, spaces to hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Headings (outside code blocks) and relative links of a Markdown text.
fn headings_and_links(text: &str) -> (BTreeSet<String>, Vec<String>) {
    let link = regex::Regex::new(r"\]\(([^)\s]+)\)").unwrap();
    let (mut anchors, mut links, mut code) = (BTreeSet::new(), Vec::new(), false);
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            code = !code;
            continue;
        }
        if code {
            continue;
        }
        if let Some(h) = line.strip_prefix('#') {
            anchors.insert(anchor(h.trim_start_matches('#')));
        }
        links.extend(link.captures_iter(line).map(|c| c[1].to_string()));
    }
    (anchors, links)
}

#[test]
fn manual_links_point_at_existing_files_and_headings() {
    let mut pages = vec![
        repo().join("README.md"),
        repo().join("CONTRIBUTING.md"),
        repo().join("BENCHMARKS.md"),
    ];
    for e in std::fs::read_dir(repo().join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            pages.push(p);
        }
    }
    let mut anchors: BTreeMap<PathBuf, BTreeSet<String>> = BTreeMap::new();
    let mut all_links = Vec::new();
    for page in &pages {
        let (a, links) = headings_and_links(&std::fs::read_to_string(page).unwrap());
        anchors.insert(page.canonicalize().unwrap(), a);
        all_links.extend(links.into_iter().map(|l| (page.clone(), l)));
    }
    assert!(all_links.len() > 20, "the manual lost its links");
    for (page, l) in all_links {
        if l.starts_with("http://") || l.starts_with("https://") || l.starts_with("mailto:") {
            continue;
        }
        let (file, frag) = l.split_once('#').map_or((l.as_str(), None), |(f, a)| (f, Some(a)));
        let target = if file.is_empty() { page.clone() } else { page.parent().unwrap().join(file) };
        assert!(target.exists(), "{}: link {l} points at nothing", page.display());
        if let Some(frag) = frag {
            let known = anchors.get(&target.canonicalize().unwrap());
            assert!(
                known.is_some_and(|a| a.contains(frag)),
                "{}: link {l}: no heading #{frag} in {}",
                page.display(),
                target.display()
            );
        }
    }
}

#[test]
fn readme_stays_short_and_keeps_the_two_setup_commands_first() {
    let readme = read("README.md");
    assert!(
        readme.len() <= 15 * 1024,
        "README.md is {} bytes; the manual belongs in docs/",
        readme.len()
    );
    let first_block: Vec<&str> =
        readme.lines().skip_while(|l| !l.starts_with("```")).skip(1).take(2).collect();
    assert!(first_block[0].starts_with("make demo "), "{first_block:?}");
    assert!(first_block[1].starts_with("make test "), "{first_block:?}");
    let makefile = read("Makefile");
    assert!(makefile.contains("\ndemo:") && makefile.contains("\ntest:"));
}

/// docs/FAQ.md's "Checking a binding on your own host" shows tests/vm/check-binding.sh, which
/// the serve scenarios of tests/vm.rs run: the two must not drift apart. (Moved here from
/// tests/vm.rs with the section it checks; it needs no VM.)
#[test]
fn manual_shows_the_check_binding_script_the_vm_tests_run() {
    let script = read("tests/vm/check-binding.sh");
    let faq = read("docs/FAQ.md");
    let body: String =
        script.lines().filter(|l| !l.starts_with("# ")).map(|l| format!("{l}\n")).collect();
    assert!(faq.contains(&body), "docs/FAQ.md must show tests/vm/check-binding.sh's code:\n{body}");
}

/// The manual's index links every page and schema in docs/.
#[test]
fn manual_index_lists_every_page() {
    let index = read("docs/README.md");
    for e in std::fs::read_dir(repo().join("docs")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if (name.ends_with(".md") && name != "README.md") || name.ends_with(".json") {
            assert!(index.contains(&format!("({name})")), "docs/README.md does not link {name}");
        }
    }
}
