//! `completions` and `man` (SPEC §18): the shell completion scripts and the roff man
//! page, both generated from the clap definition in `cli.rs`, so they never drift from
//! it. Neither reads a config file.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::{Cli, CompletionShell};

pub(super) fn completions(shell: CompletionShell) -> anyhow::Result<ExitCode> {
    let shell = match shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "authgate", &mut out);
    write_stdout(&out)
}

pub(super) fn man() -> anyhow::Result<ExitCode> {
    write_stdout(man_page()?.as_bytes())
}

/// One stdout write; a closed pipe (`authgate man | head`) is an error like any other.
fn write_stdout(bytes: &[u8]) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// The whole page: clap_mangen's title, NAME, SYNOPSIS, DESCRIPTION and OPTIONS, then
/// one COMMANDS section with every (nested) subcommand, its usage and its arguments.
/// clap_mangen's own SUBCOMMANDS section would point at `authgate-users(1)` pages,
/// which are not shipped: one page is easier to read and to package.
fn man_page() -> anyhow::Result<String> {
    let mut cmd = Cli::command();
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone()).title("AUTHGATE");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    let rendered = String::from_utf8(out).context("clap_mangen wrote non-UTF-8")?;
    // Each render_* call repeats roff's two-line apostrophe preamble: keep the first.
    const PREAMBLE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";
    let mut parts = rendered.split(PREAMBLE);
    let mut page = parts.next().unwrap_or_default().to_string();
    page.push_str(PREAMBLE);
    page.extend(parts);
    page.push_str(".SH COMMANDS\n");
    for sub in cmd.get_subcommands() {
        commands_section(&mut page, sub);
    }
    page.push_str(EXTRA_SECTIONS);
    page.push_str(&format!(
        ".SH VERSION\n{}\n",
        escape(&format!("v{}", env!("CARGO_PKG_VERSION")))
    ));
    Ok(page)
}

/// Appends one `.TP` entry per leaf command (`authgate users add`), depth first.
fn commands_section(page: &mut String, cmd: &clap::Command) {
    if cmd.is_hide_set() || cmd.get_name() == "help" {
        return;
    }
    if cmd.has_subcommands() {
        for sub in cmd.get_subcommands() {
            commands_section(page, sub);
        }
        return;
    }
    let usage = cmd.clone().render_usage().to_string();
    let usage = usage.trim().trim_start_matches("Usage:").trim();
    // The global options (-c, --log-format) are in OPTIONS already.
    let usage = usage.replace(" [OPTIONS]", "");
    page.push_str(".TP\n");
    page.push_str(&format!("\\fB{}\\fR\n", escape(&usage)));
    if let Some(about) = cmd.get_long_about().or_else(|| cmd.get_about()) {
        page.push_str(&format!("{}\n", escape(&about.to_string())));
    }
    for arg in cmd.get_arguments() {
        if arg.is_hide_set() || arg.is_global_set() || is_builtin(arg) {
            continue;
        }
        let name = match (arg.get_short(), arg.get_long()) {
            (Some(s), Some(l)) => format!("-{s}, --{l} <{}>", value_name(arg)),
            (None, Some(l)) if arg.get_action().takes_values() => {
                format!("--{l} <{}>", value_name(arg))
            }
            (None, Some(l)) => format!("--{l}"),
            (Some(s), None) => format!("-{s}"),
            (None, None) => format!("<{}>", value_name(arg)),
        };
        let mut help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        let values: Vec<String> = arg
            .get_possible_values()
            .iter()
            .map(|v| v.get_name().to_string())
            .collect();
        if !values.is_empty() {
            help = format!("{help} One of: {}.", values.join(", "))
                .trim()
                .to_string();
        }
        // A bare positional is in the usage line already.
        if help.is_empty() && arg.is_positional() {
            continue;
        }
        page.push_str(&format!(".RS\n.TP\n{}\n", escape(&name)));
        if !help.is_empty() {
            page.push_str(&format!("{}\n", escape(&help)));
        }
        page.push_str(".RE\n");
    }
}

fn is_builtin(arg: &clap::Arg) -> bool {
    matches!(arg.get_id().as_str(), "help" | "version")
}

fn value_name(arg: &clap::Arg) -> String {
    arg.get_value_names()
        .and_then(|v| v.first())
        .map(|s| s.to_string())
        .unwrap_or_else(|| arg.get_id().as_str().to_uppercase())
}

/// Text as roff prints it: backslashes and hyphens (so `--config` is not hyphenated or
/// turned into dashes) escaped, and no line starting with a control character.
fn escape(text: &str) -> String {
    text.lines()
        .map(|line| {
            let l = line.replace('\\', "\\e").replace('-', "\\-");
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

const EXTRA_SECTIONS: &str = r#".SH EXIT STATUS
0 on success.
\fBcheck\fR and \fBtoken inspect\fR exit 1 when the config or the token is not valid;
any other failure exits non\-zero with one line on standard error.
.SH ENVIRONMENT
.TP
\fBAUTHGATE_CONFIG\fR
The config file, as \fB\-c\fR.
.TP
\fBAUTHGATE_LOG_FORMAT\fR
\fBtext\fR or \fBjson\fR, as \fB\-\-log\-format\fR.
.TP
\fBAUTHGATE_LOG\fR
The log filter, RUST_LOG syntax (default \fBinfo\fR). Logs go to standard error.
.SH FILES
.TP
\fI/etc/authgate/gateway.toml\fR
The config the systemd unit runs (\fBauthgate.service\fR).
.TP
\fI/var/lib/authgate/\fR
The service's state directory: the SQLite user store and the signing key created on first start.
.SH SIGNALS
\fBSIGHUP\fR reloads the config (an invalid one is logged and the old one keeps serving);
\fBSIGTERM\fR and \fBSIGINT\fR stop accepting and drain in\-flight requests.
.SH SEE ALSO
\fBsystemctl\fR(1), \fBjournalctl\fR(1)
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_protects_hyphens_backslashes_and_leading_dots() {
        assert_eq!(escape("--config a\\b"), "\\-\\-config a\\eb");
        assert_eq!(escape(".hidden\n'quote"), "\\&.hidden\n\\&'quote");
    }

    #[test]
    fn the_page_lists_every_leaf_command_once_and_no_per_command_pages() {
        let page = man_page().unwrap();
        for c in [
            "authgate serve",
            "authgate check",
            "authgate users add",
            "authgate users set\\-roles",
            "authgate store copy",
            "authgate keys generate",
            "authgate token inspect",
            "authgate explain",
            "authgate completions",
            "authgate man",
        ] {
            assert_eq!(
                page.matches(&format!("\\fB{c}")).count(),
                1,
                "{c} in:\n{page}"
            );
        }
        assert!(!page.contains("authgate\\-users(1)"), "{page}");
        assert_eq!(page.matches(".ds Aq \\(aq").count(), 1, "{page}");
    }
}
