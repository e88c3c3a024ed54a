//! Strict TOML loading shared by every program's config: unknown keys and bad
//! values are errors, every one of them is reported at once, and each report
//! names the file, the line, the key and a fix.
//!
//! serde stops at the first error, so the loader blanks out the offending
//! key (keeping line numbers intact) and parses again until the document is
//! clean; then the type's own `validate` adds semantic problems.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

mod dropin;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml_edit::{Document, Item, Table};

/// A config type that the strict loader can read.
pub trait StrictConfig: DeserializeOwned {
    /// One line per key (`section.key`), saying what it takes; used as the
    /// fix when a value is of the wrong type, and checked against the sample.
    const HELP: &'static [(&'static str, &'static str)];

    /// Semantic checks after parsing (ranges, URLs, files that must exist).
    fn validate(&self) -> Vec<Invalid> {
        Vec::new()
    }
}

/// A semantic problem found by [`StrictConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Dotted key path, e.g. `companion.url`.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub fix: String,
}

impl Invalid {
    /// Build a problem for `key`.
    pub fn new(key: &str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            key: key.to_string(),
            message: message.into(),
            fix: fix.into(),
        }
    }
}

/// One problem in a config file, located as precisely as the parser allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The drop-in file the problem is in; `None`: the main file.
    pub file: Option<PathBuf>,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Dotted key path; empty for whole-file problems.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub fix: String,
}

/// Everything wrong with one config file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file that was read (or could not be).
    pub file: PathBuf,
    /// Every problem found, in file order where lines are known.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "{}: {} problem{} in this config file",
            self.file.display(),
            n,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            let file = p.file.as_deref().unwrap_or(&self.file);
            let place = match p.line {
                Some(line) => format!("{}:{}", file.display(), line),
                None => file.display().to_string(),
            };
            let key = if p.key.is_empty() {
                String::new()
            } else {
                format!(" key `{}`:", p.key)
            };
            writeln!(f, "  {place}:{key} {}", p.message)?;
            writeln!(f, "    fix: {}", p.fix)?;
        }
        Ok(())
    }
}

/// Read and parse `path` strictly, then the drop-ins of [`dropins`] over
/// it (each checked on its own: a bad key there is reported with its file
/// and line).
pub fn load<T: StrictConfig>(path: &Path) -> Result<T, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => match dropins(path) {
            Ok(extra) if extra.is_empty() => parse(path, &text),
            Ok(extra) => dropin::layered(path, &text, &extra),
            Err(problem) => Err(ConfigError {
                file: path.to_path_buf(),
                problems: vec![problem],
            }),
        },
        Err(e) => Err(ConfigError {
            file: path.to_path_buf(),
            problems: vec![Problem {
                file: None,
                line: None,
                key: String::new(),
                message: format!("cannot read the config file: {e}"),
                fix: if e.kind() == std::io::ErrorKind::NotFound {
                    "create it (the package installs a commented sample) or pass --config PATH"
                        .to_string()
                } else {
                    "make it readable by the service user, or pass --config PATH".to_string()
                },
            }],
        }),
    }
}

/// The drop-in directory of a config file: `avsd.toml` → `avsd.toml.d/`.
pub fn dropin_dir(path: &Path) -> PathBuf {
    let mut dir = path.as_os_str().to_owned();
    dir.push(".d");
    PathBuf::from(dir)
}

/// The `*.toml` files of [`dropin_dir`], in the order they apply (by name,
/// as systemd orders its drop-ins); none if the directory is missing.
pub fn dropins(path: &Path) -> Result<Vec<PathBuf>, Problem> {
    let dir = dropin_dir(path);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Problem {
                file: Some(dir),
                line: None,
                key: String::new(),
                message: format!("cannot read the drop-in directory: {e}"),
                fix: "make it readable by the service user, or remove it".to_string(),
            });
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "toml")
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The `--check-config` summary line listing the drop-ins read, if any.
pub fn dropins_line(path: &Path) -> String {
    match dropins(path) {
        Ok(files) if !files.is_empty() => {
            let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            format!("  drop-ins:   {}\n", names.join(", "))
        }
        _ => String::new(),
    }
}

/// Parse `text` (read from `path`) strictly, collecting every problem.
pub fn parse<T: StrictConfig>(path: &Path, text: &str) -> Result<T, ConfigError> {
    let (parsed, mut problems, original) = parse_types::<T>(path, text)?;
    // Semantic checks run on what parsed (bad keys blanked out), so one run
    // reports both kinds; a key already reported is not reported twice.
    if let Some(v) = &parsed {
        let reported: Vec<String> = problems.iter().map(|p| p.key.clone()).collect();
        let invalid: Vec<Invalid> = v
            .validate()
            .into_iter()
            .filter(|i| !reported.contains(&i.key))
            .collect();
        if invalid.is_empty() && problems.is_empty() {
            return Ok(parsed.expect("checked above"));
        }
        problems.extend(invalid.into_iter().map(|i| Problem {
            file: None,
            line: line_of_key(text, original.as_table(), &i.key),
            key: i.key,
            message: i.message,
            fix: i.fix,
        }));
    }
    problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    Err(ConfigError {
        file: path.to_path_buf(),
        problems,
    })
}

/// What one file parses to, before `validate`: the value (bad keys left
/// out), the syntax and type problems, and the document for locating keys.
/// A syntax error is the whole answer.
pub(crate) type Typed<T> = (Option<T>, Vec<Problem>, Document<String>);

pub(crate) fn parse_types<T: StrictConfig>(
    path: &Path,
    text: &str,
) -> Result<Typed<T>, ConfigError> {
    let fail = |problems| ConfigError {
        file: path.to_path_buf(),
        problems,
    };
    // The syntax is checked with the `toml` crate first: toml_edit 0.23
    // panics ("all items have spans") while recovering from some syntax
    // errors, e.g. `==a\n.=-` (found by fuzz/fuzz_targets/config.rs). Both
    // accept the same documents, so `Document::parse` sees only valid ones.
    let syntax = |span: Option<Range<usize>>, message: &str| {
        fail(vec![Problem {
            file: None,
            line: span.map(|s| line_of(text, s.start)),
            key: String::new(),
            message: format!("not valid TOML: {}", first_line(message)),
            fix: "check quoting, brackets and `key = value` syntax on that line".to_string(),
        }])
    };
    if let Err(e) = toml::from_str::<toml::Table>(text) {
        return Err(syntax(e.span(), e.message()));
    }
    let original = match Document::parse(text.to_string()) {
        Ok(doc) => doc,
        Err(e) => return Err(syntax(e.span(), e.message())),
    };
    let mut work = text.to_string();
    let mut problems = Vec::new();
    let mut parsed = None;
    // Each round removes one offending key, so the number of rounds is
    // bounded by the number of keys in the file.
    for _ in 0..=text.len() {
        match toml::from_str::<T>(&work) {
            Ok(v) => {
                parsed = Some(v);
                break;
            }
            Err(e) => {
                let span = e.span();
                let found = span
                    .clone()
                    .and_then(|s| locate(original.as_table(), &s, ""));
                let (key, blank) = match found {
                    Some((key, range)) => (key, Some(range)),
                    None => (String::new(), None),
                };
                problems.push(describe::<T>(text, span, &key, e.message()));
                match blank {
                    Some(range) if !is_blank(&work[range.clone()]) => blank_out(&mut work, range),
                    _ => break,
                }
            }
        }
    }
    Ok((parsed, problems, original))
}

/// The help line for a key, if the type documents it.
pub fn help_for<T: StrictConfig>(key: &str) -> Option<&'static str> {
    T::HELP.iter().find(|(k, _)| *k == key).map(|(_, h)| *h)
}

fn describe<T: StrictConfig>(
    text: &str,
    span: Option<Range<usize>>,
    key: &str,
    message: &str,
) -> Problem {
    let message = first_line(message).to_string();
    let line = span.map(|s| line_of(text, s.start));
    let fix = if let Some(rest) = message.strip_prefix("unknown field ") {
        let bad = rest.split('`').nth(1).unwrap_or("");
        let allowed: Vec<&str> = rest
            .split_once("expected")
            .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
            .unwrap_or_default();
        match closest(bad, &allowed) {
            Some(best) => format!("did you mean `{best}`? Otherwise remove the line"),
            None if allowed.is_empty() => "remove the line: this section takes no keys".to_string(),
            None => format!(
                "remove the line; this section takes: {}",
                allowed
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    } else if let Some(help) = help_for::<T>(key) {
        format!("set it to {help}")
    } else {
        "see the commented sample config for the value it takes".to_string()
    };
    Problem {
        file: None,
        line,
        key: key.to_string(),
        message,
        fix,
    }
}

/// Find the key whose key-or-value text contains `span`; returns its dotted
/// path and the byte range to blank out to remove it.
fn locate(table: &Table, span: &Range<usize>, prefix: &str) -> Option<(String, Range<usize>)> {
    for (name, item) in table.iter() {
        let path = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}.{name}")
        };
        let key_span = table.key(name).and_then(|k| k.span());
        if let Some(child) = item.as_table() {
            if let Some(hit) = locate(child, span, &path) {
                return Some(hit);
            }
            let extent = table_extent(child, key_span.clone());
            if let Some(ext) = extent
                && overlaps(&ext, span)
            {
                return Some((path, ext));
            }
            continue;
        }
        let value_span = item_span(item);
        let extent = match (key_span, value_span) {
            (Some(k), Some(v)) => Some(k.start.min(v.start)..k.end.max(v.end)),
            (k, v) => k.or(v),
        };
        if let Some(ext) = extent
            && overlaps(&ext, span)
        {
            return Some((path, ext));
        }
    }
    None
}

fn item_span(item: &Item) -> Option<Range<usize>> {
    match item {
        Item::Value(v) => v.span(),
        Item::Table(t) => t.span(),
        Item::ArrayOfTables(a) => a.span(),
        Item::None => None,
    }
}

/// The text a `[section]` covers: its header and all of its entries.
fn table_extent(table: &Table, header: Option<Range<usize>>) -> Option<Range<usize>> {
    let mut ext = table.span().or(header);
    for (name, item) in table.iter() {
        let parts = [
            table.key(name).and_then(|k| k.span()),
            item.as_table().and_then(|t| table_extent(t, None)),
            item_span(item),
        ];
        for r in parts.into_iter().flatten() {
            ext = Some(match ext {
                Some(e) => e.start.min(r.start)..e.end.max(r.end),
                None => r,
            });
        }
    }
    ext
}

fn overlaps(a: &Range<usize>, b: &Range<usize>) -> bool {
    if b.start == b.end {
        return a.start <= b.start && b.start < a.end.max(a.start + 1);
    }
    a.start < b.end && b.start < a.end
}

pub(crate) fn line_of_key(text: &str, table: &Table, key: &str) -> Option<usize> {
    let mut table = table;
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        let span = table.key(part).and_then(|k| k.span());
        match (parts.peek(), table.get(part)) {
            (None, _) => return span.map(|s| line_of(text, s.start)),
            (Some(_), Some(item)) => match item.as_table() {
                Some(t) => table = t,
                None => return span.map(|s| line_of(text, s.start)),
            },
            (Some(_), None) => return None,
        }
    }
    None
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn first_line(s: &str) -> &str {
    s.trim().lines().next().unwrap_or("")
}

fn is_blank(s: &str) -> bool {
    s.chars().all(char::is_whitespace)
}

fn blank_out(text: &mut String, range: Range<usize>) {
    // One space per byte keeps every later offset equal to the original's,
    // so spans from the next parse still index the original document.
    let blanked: String = text[range.clone()]
        .chars()
        .map(|c| {
            if c == '\n' {
                "\n".to_string()
            } else {
                " ".repeat(c.len_utf8())
            }
        })
        .collect();
    text.replace_range(range, &blanked);
}

/// The allowed name nearest to `bad`, if it is a plausible typo.
fn closest<'a>(bad: &str, allowed: &[&'a str]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|a| (edit_distance(bad, a), *a))
        .filter(|(d, a)| *d <= 2.max(a.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Log levels accepted by `log.level`.
pub const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];

/// `[log]`, the same in every program's config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Minimum level; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_string(),
        }
    }
}
