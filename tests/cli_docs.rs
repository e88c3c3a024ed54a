//! The manual and shell completions are generated from the programs' own
//! clap definitions, committed under `debian/` (the package installs them;
//! a cross build cannot run the target's programs to make them), and
//! checked here against what the definitions produce now, so `--help`, the
//! manual and the completions cannot drift apart. After a change to a
//! command line: `AVSD_UPDATE_DOCS=1 cargo test -p avsd-tests --test cli_docs`.

use std::path::Path;
use std::process::Command;

use clap::CommandFactory;
use clap_complete::Shell;

/// Escape text for roff: backslashes, hyphens (as minus signs, so that
/// options can be copied and searched), and a leading control character.
fn roff(text: &str) -> String {
    let t = text.replace('\\', "\\e").replace('-', "\\-");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

/// avsctl(1): clap_mangen's title, name, synopsis, description and
/// options; one COMMANDS section (clap_mangen would point to a page per
/// subcommand); exit status from `avsctl::exit`.
fn avsctl_page() -> String {
    let cmd = avsctl::cli::Cli::command();
    let man = clap_mangen::Man::new(cmd.clone())
        .section("1")
        .manual("User Commands")
        .source(format!("avsd {}", env!("CARGO_PKG_VERSION")));
    let mut page = Vec::new();
    man.render_title(&mut page).unwrap();
    man.render_name_section(&mut page).unwrap();
    man.render_synopsis_section(&mut page).unwrap();
    man.render_description_section(&mut page).unwrap();
    man.render_options_section(&mut page).unwrap();
    let mut page = String::from_utf8(page).unwrap();
    page.push_str(".SH COMMANDS\n");
    for sub in cmd.get_subcommands() {
        let args: Vec<String> = sub
            .get_arguments()
            .filter(|a| !a.is_hide_set() && a.get_id() != "help")
            .map(|a| match (a.get_long(), a.get_short()) {
                (Some(long), Some(short)) => format!("[\\-{short}|\\-\\-{}]", roff(long)),
                (Some(long), None) => format!("[\\-\\-{}]", roff(long)),
                _ => format!("[\\fI{}\\fR]", roff(a.get_id().as_str()).to_uppercase()),
            })
            .collect();
        page.push_str(&format!(".TP\n.B {}", roff(sub.get_name())));
        if !args.is_empty() {
            page.push_str(&format!(" {}", args.join(" ")));
        }
        page.push('\n');
        let about = sub
            .get_long_about()
            .or(sub.get_about())
            .map(|s| s.to_string())
            .unwrap_or_default();
        page.push_str(&roff(&about));
        page.push('\n');
        for a in sub.get_arguments().filter(|a| a.get_help().is_some()) {
            if let Some(long) = a.get_long() {
                page.push_str(&format!(
                    ".RS\n.TP\n.B \\-\\-{}\n{}\n.RE\n",
                    roff(long),
                    roff(&a.get_help().unwrap().to_string())
                ));
            }
        }
    }
    page.push_str(".SH \"EXIT STATUS\"\n");
    for line in avsctl::exit::HELP.lines().skip(1) {
        let (code, what) = line.trim().split_once("  ").unwrap();
        page.push_str(&format!(".TP\n.B {code}\n{}\n", roff(what)));
    }
    page.push_str(
        ".SH ENVIRONMENT\n.TP\n.B DBUS_SYSTEM_BUS_ADDRESS\n\
         The system bus to use instead of the default.\n\
         .SH SEE ALSO\n.BR avsd (8),\n.BR busctl (1)\n",
    );
    page
}

/// The completions of one program for bash, zsh and fish, by file name.
fn completions(mut cmd: clap::Command, name: &str) -> Vec<(String, Vec<u8>)> {
    [
        (Shell::Bash, format!("{name}.bash")),
        (Shell::Zsh, format!("_{name}")),
        (Shell::Fish, format!("{name}.fish")),
    ]
    .into_iter()
    .map(|(shell, file)| {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cmd, name, &mut out);
        (file, out)
    })
    .collect()
}

/// Compare a committed file with what is generated now (or write it).
fn check(path: &Path, generated: &[u8]) {
    if std::env::var_os("AVSD_UPDATE_DOCS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, generated).unwrap();
    }
    let committed = std::fs::read(path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} drifted from the clap definitions; if the change is intended run \
         AVSD_UPDATE_DOCS=1 cargo test -p avsd-tests --test cli_docs",
        path.display()
    );
}

#[test]
fn shipped_manual_and_completions_are_generated_from_the_command_lines() {
    let debian = support::repo().join("debian");
    check(&debian.join("avsctl.1"), avsctl_page().as_bytes());
    let programs = [
        (avsctl::cli::Cli::command(), "avsctl"),
        (avs_companion::cli::Cli::command(), "avs-companion"),
        (avsd::cli::Cli::command(), "avsd"),
    ];
    for (cmd, name) in programs {
        for (file, text) in completions(cmd, name) {
            check(&debian.join("completions").join(file), &text);
        }
    }
}

/// The subcommands `avsctl --help` lists (from the real binary).
fn help_commands(program: &str) -> Vec<String> {
    let out = Command::new(support::bin(program))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    help.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect()
}

/// The subcommands a man page's COMMANDS (or SUBCOMMANDS) section lists:
/// each item's `.TP` tag, `.B name`.
fn man_commands(page: &str) -> Vec<String> {
    page.split(".SH ")
        .find(|s| s.starts_with("COMMANDS") || s.starts_with("SUBCOMMANDS"))
        .unwrap_or_default()
        .split(".TP\n")
        .skip(1)
        .filter_map(|item| {
            item.strip_prefix(".B ")
                .or_else(|| item.strip_prefix(".BR "))
        })
        .filter_map(|l| l.split_whitespace().next())
        .map(|c| c.replace("\\-", "-").trim_matches('"').to_string())
        // A command's own options are items of a nested list.
        .filter(|c| !c.starts_with('-'))
        .collect()
}

#[test]
fn each_manual_lists_the_commands_and_options_of_its_help() {
    let page = std::fs::read_to_string(support::repo().join("debian/avsctl.1")).unwrap();
    let in_help = help_commands("avsctl");
    assert!(in_help.contains(&"show".to_string()), "{in_help:?}");
    assert_eq!(
        man_commands(&page),
        in_help,
        "avsctl.1 against avsctl --help"
    );

    // avs-companion(8) and avsd(8) are written by hand (they document the
    // config files and the service too): each names every subcommand and
    // long option their program has.
    for (program, page, cmd) in [
        (
            "avs-companion",
            "avs-companion.8",
            avs_companion::cli::Cli::command(),
        ),
        ("avsd", "avsd.8", avsd::cli::Cli::command()),
    ] {
        let page = std::fs::read_to_string(support::repo().join("debian").join(page)).unwrap();
        let plain = page.replace("\\-", "-");
        for sub in help_commands(program) {
            assert!(plain.contains(&sub), "{program}(8) lacks the command {sub}");
        }
        let mut longs = Vec::new();
        collect_longs(&cmd, &mut longs);
        for long in longs {
            assert!(
                plain.contains(&format!("--{long}")),
                "{program}(8) lacks the option --{long}"
            );
        }
    }
    let avsd = Command::new(support::bin("avsd"))
        .arg("--help")
        .output()
        .unwrap();
    let page = std::fs::read_to_string(support::repo().join("debian/avsd.8"))
        .unwrap()
        .replace("\\-", "-");
    for word in String::from_utf8_lossy(&avsd.stdout).split_whitespace() {
        if let Some(long) = word.strip_prefix("--").filter(|l| l.len() > 1) {
            let long = long.trim_end_matches([',', '.', ')']);
            assert!(
                page.contains(&format!("--{long}")),
                "avsd(8) lacks --{long}"
            );
        }
    }
}

fn collect_longs(cmd: &clap::Command, out: &mut Vec<String>) {
    for a in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        if let Some(long) = a.get_long().filter(|l| !matches!(*l, "help" | "version")) {
            out.push(long.to_string());
        }
    }
    for sub in cmd.get_subcommands() {
        collect_longs(sub, out);
    }
}
