//! Tidy checks: the docs stay true to the code.

use std::path::{Path, PathBuf};

use ferry_domain::{Guard, Phase};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

#[test]
fn architecture_maps_every_crate_and_phase() {
    let arch = read("ARCHITECTURE.md");
    for entry in std::fs::read_dir(root().join("crates")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            arch.contains(&format!("### `crates/{name}`")),
            "ARCHITECTURE.md has no section for crates/{name}"
        );
    }
    for phase in Phase::ALL {
        assert!(
            arch.contains(&format!("`{phase}`")),
            "ARCHITECTURE.md does not name {phase}"
        );
    }
}

#[test]
fn phase_docs_cover_every_phase_and_guard() {
    let doc = read("docs/phases.md");
    for phase in Phase::ALL {
        assert!(
            doc.contains(&format!("`{phase}`")),
            "docs/phases.md does not name {phase}"
        );
    }
    for guard in Guard::ALL {
        let words = guard.as_str().replace('_', " ");
        assert!(
            doc.contains(&words),
            "docs/phases.md does not explain {words:?}"
        );
    }
}

/// The README's two commands are what a fresh machine runs, and CI runs the same test command:
/// `scripts/test`, which does its own set-up and then runs the whole workspace's tests.
#[test]
fn readme_holds_the_two_commands_ci_runs() {
    let readme = read("README.md");
    let block = readme
        .split("## The two commands")
        .nth(1)
        .and_then(|rest| rest.split("```sh").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("README.md has a ```sh block under \"## The two commands\"");
    let commands: Vec<&str> = block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        commands,
        ["scripts/demo", "scripts/test"],
        "README.md's two commands"
    );
    let ci = read(".ci/run");
    assert!(
        ci.lines()
            .any(|l| l.trim() == "scripts/test" || l.trim().starts_with("scripts/test ")),
        ".ci/run must run the README's test command, scripts/test"
    );
    let script = read("scripts/test");
    assert!(
        script.lines().any(|l| l
            .trim_start()
            .starts_with("cargo test --workspace --all-features")),
        "scripts/test must run the whole workspace's tests"
    );
    let demo = read("scripts/demo");
    assert!(
        demo.contains("cargo run --bin ferry -- demo") && demo.contains("have_initdb"),
        "scripts/demo must install the PostgreSQL server binaries when missing and run the demo"
    );
    for needed in ["initdb", "chromium", "curl", "moto"] {
        assert!(
            script.contains(needed),
            "scripts/test must install {needed} when it is missing"
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(root().join("scripts/test"))
            .unwrap()
            .permissions()
            .mode();
        assert!(mode & 0o111 != 0, "scripts/test must be executable");
    }
}

/// Markdown files under `dir`, recursively, as paths relative to the repository root.
fn markdown_under(dir: &str) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root().join(dir)).unwrap() {
        let entry = entry.unwrap();
        let name = format!("{dir}/{}", entry.file_name().into_string().unwrap());
        if entry.file_type().unwrap().is_dir() {
            out.extend(markdown_under(&name));
        } else if name.ends_with(".md") {
            out.push(name);
        }
    }
    out
}

#[test]
fn every_doc_link_resolves() {
    let docs = ["README.md", "ARCHITECTURE.md"]
        .into_iter()
        .map(String::from)
        .chain(markdown_under("docs"));
    for doc in docs {
        let text = read(&doc);
        let base = root().join(&doc);
        let dir = base.parent().unwrap();
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let target = &rest[..rest.find(')').unwrap()];
            if target.starts_with("http") || target.starts_with('#') {
                continue;
            }
            let path = target.split('#').next().unwrap();
            assert!(dir.join(path).exists(), "{doc}: broken link to {target}");
        }
    }
}

/// Every crash point is placed in the code, documented in docs/proof.md and crashed at by
/// name in the crash tests.
#[test]
fn every_crash_point_is_placed_documented_and_tested() {
    fn sources(dir: &Path, out: &mut String) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut code = String::new();
    for entry in std::fs::read_dir(root().join("crates")).unwrap() {
        let src = entry.unwrap().path().join("src");
        if src.is_dir() && !src.ends_with("ferry-crash/src") {
            sources(&src, &mut code);
        }
    }
    let mut tests = String::new();
    sources(
        &root().join("crates/ferry-cli/tests/crash_points"),
        &mut tests,
    );
    let proof = read("docs/proof.md");
    for (point, _) in ferry_crash::POINTS {
        assert!(
            code.contains(&format!("crash_point!(\"{point}\")")),
            "no crash_point!(\"{point}\") in the code"
        );
        assert!(
            proof.contains(&format!("| `{point}` |")),
            "docs/proof.md lacks {point}"
        );
        assert!(
            tests.contains(&format!("\"{point}\"")),
            "no crash test names {point}"
        );
    }
}
