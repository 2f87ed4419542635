// `sqlx::migrate!` embeds the migrations at compile time; rebuild when they change.
// The version recorded on run rows carries the git commit when the build knows it
// (`0.1.0+<12 hex>`, `-dirty` with uncommitted changes; plain `0.1.0` outside a checkout).
// A container build has no `.git` in its context: it passes the commit as the build argument
// `GIT_COMMIT`, which the Dockerfile exports to this script as `RENEWAL_GIT_COMMIT`.
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    // --no-optional-locks: reading the status must not refresh the index, which would itself
    // count as a change and trigger the next rebuild.
    let out = Command::new("git").arg("--no-optional-locks").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    let version = env!("CARGO_PKG_VERSION");
    println!("cargo:rerun-if-env-changed=RENEWAL_GIT_COMMIT");
    let given = std::env::var("RENEWAL_GIT_COMMIT").ok().map(|c| c.trim().to_owned()).filter(|c| !c.is_empty());
    if let Some(commit) = given {
        let short: String = commit.chars().filter(char::is_ascii_hexdigit).take(12).collect();
        println!("cargo:rustc-env=RENEWAL_VERSION={version}+{short}");
        return;
    }
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).filter(|c| !c.is_empty());
    let full = match commit {
        Some(commit) => {
            // The commit changes with HEAD, and `-dirty` with the index and the tracked files.
            if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
                // Only files that exist: cargo counts a missing one as changed on every build
                // (a checkout without packed-refs then rebuilt the crate each time).
                for file in ["HEAD", "index", "refs/heads", "packed-refs"] {
                    let path = format!("{dir}/{file}");
                    if std::path::Path::new(&path).exists() {
                        println!("cargo:rerun-if-changed={path}");
                    }
                }
            }
            for path in ["src", "config", "Cargo.toml", "build.rs"] {
                println!("cargo:rerun-if-changed={path}");
            }
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
            format!("{version}+{commit}{}", if dirty { "-dirty" } else { "" })
        }
        None => version.to_owned(),
    };
    println!("cargo:rustc-env=RENEWAL_VERSION={full}");
}
