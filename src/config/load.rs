//! Reading the configuration: the built-in profiles, one file's text parsed and type-checked on
//! its own (so an error names `file:line:column`, or `file:line` for a value out of bounds), the
//! deep merge of the layers (host profile <- model profile <- config file), then
//! `Config::validate` on the result. It reads files; what the keys mean is `super`'s.

use std::path::{Path, PathBuf};

use super::bounds;
use super::{Config, ConfigError};
use crate::host::snapshot;

/// Profiles shipped in the binary: (kind, name, TOML text).
const BUILTIN: &[(&str, &str, &str)] = &[
    ("hosts", "metax-mxc500-4x64g", include_str!("../../profiles/hosts/metax-mxc500-4x64g.toml")),
    ("hosts", "nvidia", include_str!("../../profiles/hosts/nvidia.toml")),
    ("hosts", "local", include_str!("../../profiles/hosts/local.toml")),
    ("models", "qwen2.5-72b", include_str!("../../profiles/models/qwen2.5-72b.toml")),
    (
        "models",
        "deepseek-r1-distill-qwen-32b",
        include_str!("../../profiles/models/deepseek-r1-distill-qwen-32b.toml"),
    ),
    ("models", "sim", include_str!("../../profiles/models/sim.toml")),
    ("models", "llama-cpp-python", include_str!("../../profiles/models/llama-cpp-python.toml")),
    ("models", "llama-server", include_str!("../../profiles/models/llama-server.toml")),
    ("models", "sglang", include_str!("../../profiles/models/sglang.toml")),
];

/// Where each layer of the effective config came from, for `--print-config`.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub config: Config,
    pub sources: Vec<String>,
    /// The files read from disk (profiles given by path, then the config file): what root must
    /// not take from another user (`trust`). Built-in profiles are not files.
    pub files: Vec<(&'static str, PathBuf)>,
}

/// Line and column (1-based) of byte offset `pos` in `text`.
fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let pos = pos.min(text.len());
    let before = &text[..pos];
    let line = before.matches('\n').count() + 1;
    let column =
        before.rfind('\n').map_or(before.chars().count(), |i| before[i + 1..].chars().count()) + 1;
    (line, column)
}

/// Parses one file's text: type-checked as `Config` (for file:line:column errors) and kept as a
/// table (for merging).
pub fn parse_layer(file: &str, text: &str) -> Result<(Config, toml::Table), ConfigError> {
    let syntax = |e: toml::de::Error| {
        let (line, column) = e.span().map_or((1, 1), |s| line_col(text, s.start));
        ConfigError::Syntax {
            file: file.to_string(),
            line,
            column,
            message: e.message().trim().to_string(),
        }
    };
    let table: toml::Table = toml::from_str(text).map_err(syntax)?;
    let config: Config = toml::from_str(text).map_err(syntax)?;
    if let Some(v) = bounds::violations(&config).into_iter().next() {
        let file = match bounds::line_of(text, v.key) {
            Some(line) => format!("{file}:{line}"),
            None => file.to_string(),
        };
        return Err(ConfigError::OutOfBounds {
            file,
            key: v.key,
            value: bounds::written(&table, v.key).unwrap_or(v.value),
            why: v.why,
        });
    }
    Ok((config, table))
}

/// Deep merge: tables merge key by key, anything else in `over` replaces `base`.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Text of a profile: a built-in name, or a path (contains `/` or ends in `.toml`), relative
/// paths resolved against the config file's directory.
fn profile_text(
    kind: &'static str,
    name: &str,
    base_dir: &Path,
) -> Result<(String, String, Option<PathBuf>), ConfigError> {
    if name.contains('/') || name.ends_with(".toml") {
        let path = base_dir.join(name);
        let text = read_text(&path)?;
        return Ok((path.display().to_string(), text, Some(path)));
    }
    BUILTIN
        .iter()
        .find(|(k, n, _)| *k == kind && *n == name)
        .map(|(k, n, t)| (format!("profiles/{k}/{n}.toml (built in)"), t.to_string(), None))
        .ok_or_else(|| ConfigError::UnknownProfile {
            kind: if kind == "hosts" { "host" } else { "model" },
            name: name.to_string(),
            known: builtin_names(kind).join(", "),
        })
}

/// Names of the built-in profiles of one kind (`hosts` or `models`).
pub fn builtin_names(kind: &str) -> Vec<&'static str> {
    BUILTIN.iter().filter(|(k, _, _)| *k == kind).map(|(_, n, _)| *n).collect()
}

/// Loads the config file at `path` (its text `text`), its profiles, merges and validates.
pub fn load_str(file: &str, text: &str, base_dir: &Path) -> Result<Loaded, ConfigError> {
    let (top, top_table) = parse_layer(file, text)?;
    let mut merged = toml::Table::new();
    let mut sources = Vec::new();
    let mut files = Vec::new();
    for (kind, name) in [("hosts", &top.host), ("models", &top.model)] {
        let Some(name) = name else { continue };
        let (pfile, ptext, path) = profile_text(kind, name, base_dir)?;
        if let Some(path) = path {
            files.push((if kind == "hosts" { "host profile" } else { "model profile" }, path));
        }
        let (layer, table) = parse_layer(&pfile, &ptext)?;
        for (key, set) in [("host", layer.host.is_some()), ("model", layer.model.is_some())] {
            if set {
                return Err(ConfigError::KeyInProfile { file: pfile, key });
            }
        }
        merge(&mut merged, table);
        sources.push(pfile);
    }
    merge(&mut merged, top_table);
    sources.push(file.to_string());
    // Each layer type-checked on its own, so the merge only fails on cross-layer conflicts.
    let config: Config = merged.try_into().map_err(|e: toml::de::Error| ConfigError::Invalid {
        file: sources.join(" + "),
        message: e.message().trim().to_string(),
    })?;
    config.validate()?;
    Ok(Loaded { config, sources, files })
}

/// The text of a config or profile file: a regular file (a fifo or a device is refused, never
/// waited on or read without end) of UTF-8 text.
fn read_text(path: &Path) -> Result<String, ConfigError> {
    snapshot::read_input_text(path, snapshot::MAX_SMALL_FILE)
        .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })
}

/// Reads and loads the config file at `path`.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = read_text(path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut loaded = load_str(&path.display().to_string(), &text, base)?;
    loaded.files.push(("config", path.to_path_buf()));
    Ok(loaded)
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::LaunchMode;

    /// Loads `text` as the config file `test.toml` (profile paths relative to `.`).
    pub(in crate::config) fn load_text(text: &str) -> Result<Loaded, ConfigError> {
        load_str("test.toml", text, Path::new("."))
    }

    #[test]
    fn builtin_profiles_all_parse() {
        for (kind, name, text) in BUILTIN {
            parse_layer(&format!("{kind}/{name}"), text).unwrap();
        }
    }

    #[test]
    fn seed_profiles_merge_into_the_seed_command() {
        let l = load_text("host = \"metax-mxc500-4x64g\"\nmodel = \"qwen2.5-72b\"\n").unwrap();
        let c = &l.config;
        assert_eq!(c.mode(), LaunchMode::Container);
        assert_eq!(c.port(), 8000);
        assert_eq!(c.engine.served_model_name.as_deref(), Some("qwen2.5"));
        assert_eq!(c.container.devices, ["/dev/dri", "/dev/mxcd"]);
        assert_eq!(c.container.shm_size.as_deref(), Some("256gb"));
        assert_eq!(c.container.memlock, Some(-1));
        assert!(c.engine.argv.contains(&"--tensor-parallel-size".to_string()));
        assert_eq!(l.sources.len(), 3);
    }

    #[test]
    fn config_overrides_profiles() {
        let l = load_text(
            "host = \"metax-mxc500-4x64g\"\nmodel = \"qwen2.5-72b\"\n[engine]\nport = 8001\n\
             [container]\nshm_size = \"64gb\"\n[supervise]\nready_timeout = \"5m\"\n",
        )
        .unwrap();
        assert_eq!(l.config.port(), 8001);
        assert_eq!(l.config.container.shm_size.as_deref(), Some("64gb"));
        // Untouched keys of the same table survive the merge.
        assert_eq!(l.config.container.memlock, Some(-1));
        assert_eq!(l.config.policy().ready_timeout, Duration::from_secs(300));
        assert_eq!(l.config.policy().stop_grace, Duration::from_secs(60));
    }

    #[test]
    fn unknown_key_gives_file_line_column() {
        let err = load_text("model = \"sim\"\n\n[engine]\nprot = 1\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("test.toml:4:1: unknown field `prot`"), "{msg}");
    }

    #[test]
    fn bad_value_types_and_durations_point_at_the_value() {
        let msg = load_text("[engine]\nport = \"x\"\n").unwrap_err().to_string();
        assert!(msg.starts_with("test.toml:2:8:"), "{msg}");
        let msg = load_text("[supervise]\nstop_grace = \"10 parsecs\"\n").unwrap_err().to_string();
        assert!(msg.starts_with("test.toml:2:14:") && msg.contains("bad duration"), "{msg}");
        let msg = load_text("[binding]\ncpus = \"0-x\"\n").unwrap_err().to_string();
        assert!(msg.starts_with("test.toml:2:8:"), "{msg}");
    }

    #[test]
    fn syntax_error_gives_position() {
        let msg = load_text("model = \"sim\"\n[engine\n").unwrap_err().to_string();
        assert!(msg.starts_with("test.toml:2:"), "{msg}");
    }

    #[test]
    fn unknown_profile_lists_the_known_ones() {
        let msg = load_text("host = \"nope\"\n").unwrap_err().to_string();
        assert!(msg.contains("unknown host profile `nope`") && msg.contains("nvidia"), "{msg}");
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
