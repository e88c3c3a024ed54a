//! CONTRACT.md against what ships: its D-Bus tables against the
//! introspection XML (every interface, member, kind and type, both ways),
//! and its error table against the named errors avsd can return. The XML is
//! checked against the live object by `dbus_api.rs`, so together they keep
//! the written contract from drifting from the daemon.

use std::collections::{BTreeMap, BTreeSet};

use zbus_xml::{ArgDirection, Node, PropertyAccess};

/// Interface name → rows of (member, kind, type) as CONTRACT.md writes them.
type Members = BTreeMap<String, BTreeSet<(String, String, String)>>;

fn read(rel: &str) -> String {
    let path = support::repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The cells of a Markdown table row, trimmed; `None` for other lines.
fn cells(line: &str) -> Option<Vec<String>> {
    let inner = line.trim().strip_prefix('|')?.strip_suffix('|')?;
    Some(inner.split('|').map(|c| c.trim().to_string()).collect())
}

fn unquote(cell: &str) -> String {
    cell.trim_matches('`').to_string()
}

/// The D-Bus tables of CONTRACT.md: each `### Interface `NAME`` heading and
/// the rows of the table under it.
fn contract_members(text: &str) -> Members {
    let mut out = Members::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("### Interface ") {
            let name = unquote(rest.trim());
            out.entry(name.clone()).or_default();
            current = Some(name);
            continue;
        }
        if line.starts_with('#') {
            current = None;
            continue;
        }
        let (Some(iface), Some(row)) = (&current, cells(line)) else {
            continue;
        };
        if row.len() < 3 || !row[0].starts_with('`') {
            continue;
        }
        out.get_mut(iface).expect("heading seen").insert((
            unquote(&row[0]),
            row[1].clone(),
            unquote(&row[2]),
        ));
    }
    out
}

fn arg_list<'a>(args: impl Iterator<Item = (String, Option<&'a str>)>) -> String {
    let parts: Vec<String> = args
        .map(|(ty, name)| match name {
            Some(n) => format!("{ty} {n}"),
            None => ty,
        })
        .collect();
    format!("({})", parts.join(", "))
}

/// The same rows, made from the shipped XML.
fn xml_members(xml: &str) -> Members {
    let node = Node::from_reader(xml.as_bytes()).expect("dbus/org.avsd.Avs1.xml parses");
    let mut out = Members::new();
    for iface in node.interfaces() {
        let name = iface.name().to_string();
        if !name.starts_with("org.avsd.") {
            continue;
        }
        let rows = out.entry(name).or_default();
        for p in iface.properties() {
            let kind = match p.access() {
                PropertyAccess::ReadWrite | PropertyAccess::Write => "property, settable",
                PropertyAccess::Read => "property",
            };
            rows.insert((p.name().to_string(), kind.into(), p.ty().to_string()));
        }
        for m in iface.methods() {
            let dir = |d: ArgDirection| {
                m.args()
                    .iter()
                    .filter(move |a| {
                        a.direction() == Some(d)
                            || (a.direction().is_none() && d == ArgDirection::In)
                    })
                    .map(|a| (a.ty().to_string(), a.name()))
            };
            let ty = format!(
                "{} → {}",
                arg_list(dir(ArgDirection::In)),
                arg_list(dir(ArgDirection::Out))
            );
            rows.insert((m.name().to_string(), "method".into(), ty));
        }
        for s in iface.signals() {
            let ty = arg_list(s.args().iter().map(|a| (a.ty().to_string(), a.name())));
            rows.insert((s.name().to_string(), "signal".into(), ty));
        }
    }
    out
}

#[test]
fn contract_dbus_tables_match_the_shipped_xml() {
    let contract = contract_members(&read("CONTRACT.md"));
    let xml = xml_members(&read("dbus/org.avsd.Avs1.xml"));
    assert!(
        xml.len() >= 8,
        "the XML should hold avsd's interfaces: {:?}",
        xml.keys()
    );
    let mut problems = Vec::new();
    let names: BTreeSet<&String> = contract.keys().chain(xml.keys()).collect();
    for name in names {
        let empty = BTreeSet::new();
        let c = contract.get(name).unwrap_or(&empty);
        let x = xml.get(name).unwrap_or(&empty);
        for row in x.difference(c) {
            problems.push(format!(
                "{name}: in the XML, not in CONTRACT.md: | `{}` | {} | `{}` |",
                row.0, row.1, row.2
            ));
        }
        for row in c.difference(x) {
            problems.push(format!("{name}: in CONTRACT.md, not in the XML: {row:?}"));
        }
    }
    assert!(
        problems.is_empty(),
        "CONTRACT.md and dbus/org.avsd.Avs1.xml disagree (fix the contract, and say why under Changes):\n{}",
        problems.join("\n")
    );
}

/// The variants of `AvsError` in avsd's D-Bus module: the named errors.
fn error_names(src: &str) -> BTreeSet<String> {
    let body = src
        .split("pub enum AvsError {")
        .nth(1)
        .and_then(|rest| rest.split("\n}").next())
        .expect("src/avsd/dbus/mod.rs defines `pub enum AvsError`");
    body.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("//") && !l.starts_with("#["))
        .filter_map(|l| l.split('(').next())
        .filter(|n| !n.is_empty() && *n != "ZBus")
        .map(|n| format!("org.avsd.Avs1.Error.{n}"))
        .collect()
}

#[test]
fn contract_error_table_matches_the_errors_avsd_returns() {
    let text = read("CONTRACT.md");
    let section = text
        .split("### Errors")
        .nth(1)
        .and_then(|s| s.split("\n#").next())
        .expect("CONTRACT.md has a ### Errors section");
    let written: BTreeSet<String> = section
        .lines()
        .filter_map(cells)
        .filter(|r| r[0].starts_with("`org.avsd"))
        .map(|r| unquote(&r[0]))
        .collect();
    let real = error_names(&read("src/avsd/dbus/mod.rs"));
    assert!(real.len() >= 5, "AvsError variants found: {real:?}");
    assert_eq!(written, real, "CONTRACT.md's error table against AvsError");
}

/// The meaning cell of each property row: (interface, member) → text.
fn contract_meanings(text: &str) -> BTreeMap<(String, String), String> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("### Interface ") {
            current = Some(unquote(rest.trim()));
            continue;
        }
        if line.starts_with('#') {
            current = None;
            continue;
        }
        if let (Some(iface), Some(row)) = (&current, cells(line))
            && row.len() >= 4
            && row[0].starts_with('`')
        {
            out.insert((iface.clone(), unquote(&row[0])), row[3].clone());
        }
    }
    out
}

/// The words in backticks in `cell` that are values (no dots or spaces).
fn quoted_values(cell: &str) -> BTreeSet<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| !w.is_empty() && !w.contains(['.', ' ']))
        .map(str::to_string)
        .collect()
}

#[test]
fn contract_lists_the_allowed_values_the_xml_annotates() {
    let meanings = contract_meanings(&read("CONTRACT.md"));
    let xml = read("dbus/org.avsd.Avs1.xml");
    let node = Node::from_reader(xml.as_bytes()).expect("dbus/org.avsd.Avs1.xml parses");
    let mut checked = 0;
    let mut problems = Vec::new();
    for iface in node.interfaces() {
        for p in iface.properties() {
            let Some(allowed) = p
                .annotations()
                .iter()
                .find(|a| a.name() == "org.avsd.Avs1.AllowedValues")
            else {
                continue;
            };
            checked += 1;
            let want: BTreeSet<String> = allowed
                .value()
                .split_whitespace()
                .map(str::to_string)
                .collect();
            let key = (iface.name().to_string(), p.name().to_string());
            let got = meanings
                .get(&key)
                .map(|m| quoted_values(m))
                .unwrap_or_default();
            if got != want {
                problems.push(format!(
                    "{}.{}: XML allows {want:?}, CONTRACT.md lists {got:?}",
                    key.0, key.1
                ));
            }
        }
    }
    assert!(checked >= 5, "only {checked} annotated properties found");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn contract_parser_reads_a_table_and_ignores_prose() {
    let text = "### Interface `a.B`\n\nprose | not a row\n| member | kind | type | meaning |\n|---|---|---|---|\n| `X` | property | `s` | m |\n## Next\n| `Y` | method | `() → ()` | outside |\n";
    let m = contract_members(text);
    assert_eq!(m.len(), 1);
    let rows: Vec<_> = m["a.B"].iter().collect();
    assert_eq!(
        rows,
        vec![&("X".to_string(), "property".to_string(), "s".to_string())]
    );
}
