// `sqlx::migrate!` embeds the migrations at compile time; rebuild when they change.
// The version recorded on run rows carries the git commit when the build knows it
// (`0.1.0+<12 hex>`, `-dirty` with uncommitted changes; plain `0.1.0` outside a checkout).
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    let version = env!("CARGO_PKG_VERSION");
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).filter(|c| !c.is_empty());
    let full = match commit {
        Some(commit) => {
            // The commit changes with HEAD, and `-dirty` with the index and the tracked files.
            if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
                for file in ["HEAD", "index", "refs/heads", "packed-refs"] {
                    println!("cargo:rerun-if-changed={dir}/{file}");
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
