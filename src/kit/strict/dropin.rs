//! Drop-ins: `avsd.toml.d/*.toml` read after `avsd.toml`, so a user's
//! settings live in a file of their own and survive upgrades of the
//! shipped, commented main file (no dpkg prompt when only its comments
//! change). Each file is checked on its own, so a bad key is reported with
//! the file and line it is on; then the files are merged, a later file's
//! value replacing an earlier one key by key (tables merge), and the
//! result is validated, each problem placed at the last file that sets
//! the key.

use std::path::{Path, PathBuf};

use toml_edit::Document;

use super::{ConfigError, Problem, StrictConfig, line_of_key, parse_types};

/// Parse `main` (the text of `path`) and the drop-ins `extra` over it.
pub(super) fn layered<T: StrictConfig>(
    path: &Path,
    main: &str,
    extra: &[PathBuf],
) -> Result<T, ConfigError> {
    let mut problems = Vec::new();
    let mut texts: Vec<(Option<PathBuf>, String)> = vec![(None, main.to_string())];
    for file in extra {
        match std::fs::read_to_string(file) {
            Ok(text) => texts.push((Some(file.clone()), text)),
            Err(e) => problems.push(Problem {
                file: Some(file.clone()),
                line: None,
                key: String::new(),
                message: format!("cannot read this drop-in: {e}"),
                fix: "make it readable by the service user, or remove it".to_string(),
            }),
        }
    }
    let mut docs: Vec<(Option<PathBuf>, &str, Document<String>)> = Vec::new();
    for (file, text) in &texts {
        let shown = file.as_deref().unwrap_or(path);
        let found = match parse_types::<T>(shown, text) {
            Ok((_, found, doc)) => {
                docs.push((file.clone(), text, doc));
                found
            }
            Err(e) => e.problems,
        };
        problems.extend(found.into_iter().map(|p| Problem {
            file: file.clone(),
            ..p
        }));
    }
    let fail = |problems| ConfigError {
        file: path.to_path_buf(),
        problems,
    };
    if !problems.is_empty() {
        return Err(fail(problems));
    }
    let mut merged = toml::Table::new();
    for (_, text) in &texts {
        // Each parsed above, so this cannot fail.
        if let Ok(table) = toml::from_str::<toml::Table>(text) {
            merge(&mut merged, table);
        }
    }
    let value: T = match toml::Value::Table(merged).try_into() {
        Ok(v) => v,
        Err(e) => {
            return Err(fail(vec![Problem {
                file: None,
                line: None,
                key: String::new(),
                message: format!("the main file and its drop-ins do not combine: {e}"),
                fix: "set each key in one file only, with the same type".to_string(),
            }]));
        }
    };
    let invalid = value.validate();
    if invalid.is_empty() {
        return Ok(value);
    }
    Err(fail(
        invalid
            .into_iter()
            .map(|i| {
                // The file whose value counted: the last that sets the key.
                let (file, line) = docs
                    .iter()
                    .rev()
                    .find_map(|(file, text, doc)| {
                        line_of_key(text, doc.as_table(), &i.key).map(|l| (file.clone(), Some(l)))
                    })
                    .unwrap_or((None, None));
                Problem {
                    file,
                    line,
                    key: i.key,
                    message: i.message,
                    fix: i.fix,
                }
            })
            .collect(),
    ))
}

/// `over` into `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::super::{Invalid, StrictConfig, load};

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Conf {
        a: Section,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Section {
        x: u32,
        y: String,
    }

    impl StrictConfig for Conf {
        const HELP: &'static [(&'static str, &'static str)] =
            &[("a.x", "a number"), ("a.y", "a string")];
        fn validate(&self) -> Vec<Invalid> {
            if self.a.x > 10 {
                vec![Invalid::new("a.x", "too big", "use 0 to 10")]
            } else {
                Vec::new()
            }
        }
    }

    fn setup(main: &str, dropins: &[(&str, &str)]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, main).unwrap();
        if !dropins.is_empty() {
            std::fs::create_dir(dir.path().join("c.toml.d")).unwrap();
        }
        for (name, text) in dropins {
            std::fs::write(dir.path().join("c.toml.d").join(name), text).unwrap();
        }
        (dir, path)
    }

    #[test]
    fn drop_ins_apply_in_name_order_over_the_main_file_key_by_key() {
        let (_dir, path) = setup(
            "[a]\nx = 1\ny = \"main\"\n",
            &[
                ("20-b.toml", "[a]\nx = 3\n"),
                ("10-a.toml", "[a]\nx = 2\ny = \"ten\"\n"),
                ("30-c.toml.dpkg-old", "[a]\nx = 99\n"),
            ],
        );
        let c: Conf = load(&path).unwrap();
        assert_eq!((c.a.x, c.a.y.as_str()), (3, "ten"));
    }

    #[test]
    fn a_bad_key_in_a_drop_in_names_its_file_and_line() {
        let (dir, path) = setup("[a]\nx = 1\n", &[("10-a.toml", "# mine\n[a]\nz = 2\n")]);
        let e = load::<Conf>(&path).unwrap_err().to_string();
        let place = format!("{}:3:", dir.path().join("c.toml.d/10-a.toml").display());
        assert!(e.contains(&place) && e.contains("`a.z`"), "{e}");
    }

    #[test]
    fn a_value_out_of_range_is_placed_at_the_file_that_set_it() {
        let (dir, path) = setup("[a]\nx = 1\n", &[("10-a.toml", "\n[a]\nx = 11\n")]);
        let e = load::<Conf>(&path).unwrap_err().to_string();
        let place = format!("{}:3:", dir.path().join("c.toml.d/10-a.toml").display());
        assert!(e.contains(&place) && e.contains("too big"), "{e}");
    }
}
