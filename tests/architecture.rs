//! The invariants ARCHITECTURE.md states as absences, checked on the source tree.

use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).expect("read source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn offenders(dir: &Path, needles: &[&str], skip: impl Fn(&Path) -> bool) -> Vec<String> {
    let mut found = Vec::new();
    for file in rust_files(dir) {
        if skip(&file) {
            continue;
        }
        let text = fs::read_to_string(&file).expect("read source");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for needle in needles {
                if code.contains(needle) {
                    found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
    }
    found
}

#[test]
fn domain_never_does_io_or_async() {
    let found = offenders(
        &src().join("domain"),
        &["sqlx", "tokio", "reqwest", "std::fs", "std::net", "std::io", "async ", ".await", "std::env", "tracing"],
        |_| false,
    );
    assert!(found.is_empty(), "domain must stay pure:\n{}", found.join("\n"));
}

#[test]
fn only_store_talks_to_the_database() {
    let found = offenders(&src(), &["sqlx::", "SELECT ", "INSERT ", "UPDATE ", "DELETE "], |f| {
        f.starts_with(src().join("store"))
    });
    assert!(found.is_empty(), "SQL and sqlx belong in src/store:\n{}", found.join("\n"));
}

#[test]
fn library_code_never_unwraps_or_panics() {
    let found =
        offenders(&src(), &[".unwrap()", ".expect(", "panic!(", "unreachable!(", "todo!(", "unimplemented!("], |_| {
            false
        });
    assert!(found.is_empty(), "no unwrap/expect/panic in src:\n{}", found.join("\n"));
}

#[test]
fn main_stays_a_thin_cli() {
    let main = fs::read_to_string(src().join("main.rs")).expect("main.rs");
    assert!(main.lines().count() < 90, "main.rs should only parse, configure and call into the library");
    assert!(!main.contains("sqlx") && !main.contains("store::"), "main.rs must not reach the database");
}
