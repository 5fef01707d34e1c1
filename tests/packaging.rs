//! SPEC §18, installing: `authgate completions`, `authgate man` and the Debian package
//! of `packaging/deb.sh`, all checked black-box with the tools that consume them (bash,
//! man, dpkg-deb, systemd-analyze).
//!
//! A tool that is missing makes a test fail when `CI=true` (`.ci/run` installs them all)
//! and skip with a SKIPPED line otherwise, like tests/browser_chromium.rs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{TempDir, BIN};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Every leaf command, as the man page and completions must name it.
const COMMANDS: &[&str] = &[
    "serve",
    "check",
    "demo",
    "users",
    "store",
    "keys",
    "token",
    "explain",
    "completions",
    "man",
];

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}

/// `true` when `tool` is installed; when not, a failure under CI and a skip otherwise.
fn require(tool: &str, package: &str) -> bool {
    if which(tool).is_some() {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        !ci,
        "CI=true but `{tool}` is missing: .ci/run installs the `{package}` package; \
         this test must not pass unrun"
    );
    eprintln!("SKIPPED: `{tool}` not installed (apt-get install {package})");
    false
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `cmd`, feeding `stdin`; panics with its output when it cannot be started.
fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    if let Some(input) = stdin {
        let _ = child.stdin.take().unwrap().write_all(input);
    }
    child.wait_with_output().unwrap()
}

fn ok(cmd: &mut Command, stdin: Option<&[u8]>) -> String {
    let out = run(cmd, stdin);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// `authgate ARGS` from an empty folder with a config path that does not exist: the
/// documentation commands must not need a config (SPEC §18).
fn docs_command(args: &[&str]) -> Output {
    let dir = TempDir::new("docs");
    let mut c = Command::new(BIN);
    c.args(args)
        .current_dir(dir.path())
        .env("AUTHGATE_CONFIG", dir.path().join("no-such-config.toml"));
    run(&mut c, None)
}

fn docs_stdout(args: &[&str]) -> String {
    let out = docs_command(args);
    assert!(
        out.status.success(),
        "authgate {args:?} failed ({}): {}",
        out.status,
        text(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "authgate {args:?} wrote to stderr: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// What bash completes for the words of `line` (the last one being completed), with
/// the completion function that `script` registers for `authgate`.
fn bash_complete(script: &Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        r#"source "$1" || exit 90
spec=$(complete -p authgate) || exit 91
fn=$(sed -n 's/.* -F \([^ ]*\) .*/\1/p' <<<"$spec")
[[ -n $fn ]] || exit 92
COMP_WORDS=({words})
COMP_CWORD={cword}
COMP_LINE="${{COMP_WORDS[*]}}"
COMP_POINT=${{#COMP_LINE}}
COMPREPLY=()
"$fn" authgate "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}"
"#,
        words = quoted.join(" "),
        cword = words.len() - 1
    );
    let out = ok(
        Command::new("bash")
            .arg("--norc")
            .arg("-c")
            .arg(program)
            .arg("bash")
            .arg(script),
        None,
    );
    out.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completion_script_is_valid_bash_and_completes_subcommands() {
    if !require("bash", "bash") {
        return;
    }
    let script = docs_stdout(&["completions", "bash"]);
    ok(Command::new("bash").arg("-n"), Some(script.as_bytes()));
    let dir = TempDir::new("completion");
    let file = dir.path().join("authgate.bash");
    std::fs::write(&file, &script).unwrap();

    let ch = bash_complete(&file, &["authgate", "ch"]);
    assert_eq!(ch, ["check"], "`authgate ch<TAB>`");
    let all = bash_complete(&file, &["authgate", ""]);
    for c in COMMANDS {
        assert!(
            all.iter().any(|w| w == c),
            "`authgate <TAB>` lacks {c}: {all:?}"
        );
    }
    let users = bash_complete(&file, &["authgate", "users", "set-"]);
    assert_eq!(
        users,
        ["set-password", "set-roles"],
        "`authgate users set-<TAB>`"
    );
    let shells = bash_complete(&file, &["authgate", "completions", ""]);
    for s in ["bash", "zsh", "fish"] {
        assert!(
            shells.iter().any(|w| w == s),
            "`authgate completions <TAB>`: {shells:?}"
        );
    }
    assert!(!shells.iter().any(|w| w == "powershell"), "{shells:?}");
}

#[test]
fn zsh_and_fish_scripts_name_every_subcommand() {
    let zsh = docs_stdout(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef authgate"), "{zsh}");
    let fish = docs_stdout(&["completions", "fish"]);
    assert!(fish.contains("complete -c authgate"), "{fish}");
    for c in COMMANDS {
        assert!(zsh.contains(&format!("'{c}:")), "zsh script lacks {c}");
        assert!(
            fish.contains(&format!("-a \"{c}\"")),
            "fish script lacks {c}"
        );
    }
    // The shells themselves are optional here: .ci/run does not install them.
    for (shell, script) in [("zsh", &zsh), ("fish", &fish)] {
        if which(shell).is_some() {
            ok(Command::new(shell).arg("-n"), Some(script.as_bytes()));
        } else {
            eprintln!("note: {shell} not installed, its script was not parsed");
        }
    }
}

#[test]
fn an_unknown_shell_is_one_line_on_stderr_and_exit_2() {
    let out = docs_command(&["completions", "powershell"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("powershell"), "{err}");
}

/// The page as `man` shows it, wide enough that nothing is hyphenated; groff's
/// warnings (a malformed page) fail the test.
fn render_man(page: &Path) -> String {
    let out = run(
        Command::new("man")
            .args(["--warnings", "-l"])
            .arg(page)
            .env("MANWIDTH", "250")
            .env("MAN_KEEP_FORMATTING", "")
            .env("LC_ALL", "C.UTF-8"),
        None,
    );
    assert!(out.status.success(), "man -l failed: {}", text(&out.stderr));
    assert!(
        out.stderr.is_empty(),
        "groff warned about the page: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn assert_man_page(rendered: &str) {
    for section in [
        "NAME",
        "SYNOPSIS",
        "OPTIONS",
        "COMMANDS",
        "ENVIRONMENT",
        "FILES",
    ] {
        assert!(
            rendered.lines().any(|l| l == section),
            "no {section} section:\n{rendered}"
        );
    }
    for c in [
        "authgate serve",
        "authgate check",
        "authgate demo",
        "authgate users add <NAME>",
        "authgate users set-roles <NAME> <ROLES>",
        "authgate users revoke <NAME>",
        "authgate store copy <FROM> <TO>",
        "authgate keys generate --alg <ALG> --out <OUT>",
        "authgate token inspect <TOKEN>",
        "authgate explain <METHOD> <PATH>",
        "authgate completions <SHELL>",
        "authgate man",
    ] {
        assert!(
            rendered.lines().any(|l| l.trim() == c),
            "the page lacks the line `{c}`:\n{rendered}"
        );
    }
    for s in ["--config", "AUTHGATE_CONFIG", "/etc/authgate/gateway.toml"] {
        assert!(rendered.contains(s), "the page lacks {s}:\n{rendered}");
    }
}

#[test]
fn man_page_renders_and_names_every_command() {
    let page = docs_stdout(&["man"]);
    let th = page.lines().find(|l| l.starts_with(".TH "));
    assert!(
        th.is_some_and(|l| l.starts_with(".TH AUTHGATE 1 ")),
        "{page}"
    );
    if !require("man", "man-db") {
        return;
    }
    let dir = TempDir::new("man");
    let file = dir.path().join("authgate.1");
    std::fs::write(&file, &page).unwrap();
    assert_man_page(&render_man(&file));
}

// ---------------------------------------------------------------- the Debian package

/// Every path the package must install (SPEC §18).
const PACKAGE_FILES: &[&str] = &[
    "/usr/bin/authgate",
    "/lib/systemd/system/authgate.service",
    "/etc/authgate/gateway.toml",
    "/usr/share/man/man1/authgate.1.gz",
    "/usr/share/bash-completion/completions/authgate",
    "/usr/share/zsh/vendor-completions/_authgate",
    "/usr/share/fish/vendor_completions.d/authgate.fish",
    "/usr/share/doc/authgate/copyright",
];

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    ok(Command::new("dpkg-deb").args(args).arg(deb), None)
}

#[test]
fn debian_package_installs_the_layout_with_a_conffile_and_a_unit_systemd_accepts() {
    if !require("dpkg-deb", "dpkg") || !require("dpkg", "dpkg") {
        return;
    }
    let dir = TempDir::new("deb");
    let out_dir = dir.path().join("out");
    // The debug binary the tests already have: a release build would take minutes.
    let built = ok(
        Command::new("bash")
            .arg("packaging/deb.sh")
            .args(["--binary", BIN])
            .current_dir(REPO)
            .env("AUTHGATE_DEB_OUT_DIR", &out_dir),
        None,
    );
    let arch = ok(Command::new("dpkg").arg("--print-architecture"), None);
    let arch = arch.trim();
    let version = env!("CARGO_PKG_VERSION");
    let deb = out_dir.join(format!("authgate_{version}_{arch}.deb"));
    assert!(deb.is_file(), "no {} after deb.sh:\n{built}", deb.display());
    let left: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "deb.sh left more than the .deb: {left:?}");

    // Contents: every path, owned by root.
    let listing = dpkg_deb(&["-c"], &deb);
    let paths: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches('.'))
        .collect();
    for want in PACKAGE_FILES {
        assert!(
            paths.contains(want),
            "{want} not in the package:\n{listing}"
        );
    }
    for l in listing.lines() {
        assert!(l.contains(" root/root "), "not owned by root: {l}");
    }
    let mode_of = |path: &str| -> String {
        listing
            .lines()
            .find(|l| l.ends_with(&format!(".{path}")))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(mode_of("/usr/bin/authgate"), "-rwxr-xr-x");
    assert_eq!(mode_of("/etc/authgate/gateway.toml"), "-rw-r--r--");

    // Control fields.
    let field = |name: &str| {
        dpkg_deb(&["-f"], &deb)
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
    };
    assert_eq!(field("Package").as_deref(), Some("authgate"));
    assert_eq!(field("Version").as_deref(), Some(version));
    assert_eq!(field("Architecture").as_deref(), Some(arch));
    let maintainer = field("Maintainer").unwrap_or_default();
    assert!(
        maintainer.contains('<') && maintainer.ends_with('>'),
        "Maintainer: {maintainer}"
    );
    let depends = field("Depends").unwrap_or_default();
    assert!(depends.starts_with("libc6"), "Depends: {depends}");
    assert!(field("Description").is_some_and(|d| !d.is_empty()));

    // Control archive: the conffile, and nothing that starts the service on install.
    let control = dir.path().join("control");
    ok(
        Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control),
        None,
    );
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert_eq!(conffiles, "/etc/authgate/gateway.toml\n");
    assert!(
        !control.join("postinst").exists() && !control.join("preinst").exists(),
        "installing must not enable or start anything"
    );
    for script in ["prerm", "postrm"] {
        let s = std::fs::read_to_string(control.join(script)).unwrap_or_default();
        assert!(
            ![
                "systemctl start",
                "systemctl restart",
                "systemctl enable",
                "deb-systemd"
            ]
            .iter()
            .any(|bad| s.contains(bad)),
            "{script} starts or enables something:\n{s}"
        );
    }

    // The files themselves.
    let root = dir.path().join("root");
    ok(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root),
        None,
    );
    let packaged = root.join("usr/bin/authgate");
    let version_line = ok(Command::new(&packaged).arg("--version"), None);
    assert_eq!(version_line.trim(), format!("authgate {version}"));
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    assert!(
        size(&packaged) < size(Path::new(BIN)),
        "the packaged binary is not stripped ({} bytes, built {})",
        size(&packaged),
        size(Path::new(BIN))
    );
    let same_as = |path: &str, args: &[&str]| {
        let shipped = std::fs::read_to_string(root.join(path.trim_start_matches('/'))).unwrap();
        assert_eq!(
            shipped,
            docs_stdout(args),
            "{path} differs from authgate {args:?}"
        );
    };
    same_as(
        "/usr/share/bash-completion/completions/authgate",
        &["completions", "bash"],
    );
    same_as(
        "/usr/share/zsh/vendor-completions/_authgate",
        &["completions", "zsh"],
    );
    same_as(
        "/usr/share/fish/vendor_completions.d/authgate.fish",
        &["completions", "fish"],
    );
    let copyright = std::fs::read_to_string(root.join("usr/share/doc/authgate/copyright")).unwrap();
    assert!(copyright.contains("License: Apache-2.0"), "{copyright}");
    if require("man", "man-db") {
        // man reads the gzip'd page as installed.
        assert_man_page(&render_man(&root.join("usr/share/man/man1/authgate.1.gz")));
    }

    // The unit: the repo's, with the packaged binary's path.
    let unit_path = root.join("lib/systemd/system/authgate.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    let repo_unit =
        std::fs::read_to_string(Path::new(REPO).join("systemd/authgate.service")).unwrap();
    assert_eq!(
        unit,
        repo_unit.replace("/usr/local/bin/authgate", "/usr/bin/authgate")
    );
    assert!(unit.contains("\nExecStart=/usr/bin/authgate serve -c /etc/authgate/gateway.toml\n"));
    assert!(unit.contains("\nStateDirectory=authgate\n"));

    // The config: production-shaped, and valid as shipped. Its state lives in the
    // unit's StateDirectory, which does not exist here, so check says the key "will be
    // created on first start" (it does not open the store).
    let conf_path = root.join("etc/authgate/gateway.toml");
    let conf = std::fs::read_to_string(&conf_path).unwrap();
    for line in [
        "registration = \"closed\"",
        "store = \"sqlite:/var/lib/authgate/users.db\"",
        "signing_key = \"file:/var/lib/authgate/signing-key.pem\"",
        "listen = \"127.0.0.1:9901\"",
    ] {
        assert!(
            conf.lines().any(|l| l.starts_with(line)),
            "the packaged config lacks `{line}`:\n{conf}"
        );
    }
    assert!(
        !conf.contains("9000") && !conf.lines().any(|l| l.starts_with("[[")),
        "the packaged config names an upstream or route (the demo's?):\n{conf}"
    );
    let checked = ok(
        Command::new(&packaged)
            .arg("check")
            .arg("-c")
            .arg(&conf_path),
        None,
    );
    assert!(checked.contains("configuration OK"), "{checked}");
    assert!(checked.contains("registration closed"), "{checked}");
    assert!(
        checked.contains("admin     http://127.0.0.1:9901"),
        "{checked}"
    );

    // And with its signing key in place: the state directory rooted in the extracted
    // tree (only that prefix changes), the key made by the packaged binary.
    let state = root.join("var/lib/authgate");
    std::fs::create_dir_all(&state).unwrap();
    ok(
        Command::new(&packaged)
            .args(["keys", "generate", "--alg", "EdDSA", "--out"])
            .arg(state.join("signing-key.pem")),
        None,
    );
    let rooted = root.join("etc/authgate/gateway-rooted.toml");
    std::fs::write(
        &rooted,
        conf.replace("/var/lib/authgate", &state.display().to_string()),
    )
    .unwrap();
    let checked = ok(
        Command::new(&packaged).arg("check").arg("-c").arg(&rooted),
        None,
    );
    assert!(checked.contains("EdDSA (kid "), "{checked}");

    // systemd accepts the unit: the repo's own check, pointed at the packaged unit
    // and binary (contract, `systemd-analyze verify`, exposure).
    if require("systemd-analyze", "systemd") {
        let out = ok(
            Command::new("bash")
                .arg("systemd/check.sh")
                .arg(&packaged)
                .current_dir(REPO)
                .env("AUTHGATE_UNIT", &unit_path)
                .env("AUTHGATE_INSTALLED_BIN", "/usr/bin/authgate"),
            None,
        );
        assert!(
            out.contains("verify:  systemd-analyze verify: no errors"),
            "{out}"
        );
        assert!(out.ends_with("check.sh: OK\n"), "{out}");
    }
}
