//! The invariants ARCHITECTURE.md states as absences, checked on the parsed source tree (syn), so
//! a comment, a string such as "sqlite://" or a line break cannot hide or fake an offence.

use std::fs;
use std::path::{Path, PathBuf};

use syn::punctuated::Punctuated;
use syn::visit::{self, Visit};

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
    files.sort();
    files
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn relative(file: &Path) -> String {
    file.strip_prefix(src()).unwrap_or(file).display().to_string()
}

/// Everything the checks look at in one file, in the order met.
#[derive(Default)]
struct Facts {
    /// Every path named (`use` trees flattened, expressions, types, macro names): `a::b::c`.
    paths: Vec<String>,
    /// `async fn`, `async` blocks and `.await`.
    asyncs: usize,
    /// Method calls by name: `unwrap`, `claim`, ...
    methods: Vec<String>,
    /// Macro names (last segment): `panic`, `todo`, ...
    macros: Vec<String>,
    /// String literals, macro arguments included.
    strings: Vec<String>,
    /// Items other than functions and `use` (structs, enums, impls, ...).
    non_fn_items: usize,
}

impl<'ast> Visit<'ast> for Facts {
    /// Unit-test modules (`#[cfg(test)]`) are not library code.
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        let test_only = item
            .attrs
            .iter()
            .any(|a| a.path().is_ident("cfg") && a.parse_args::<syn::Ident>().is_ok_and(|i| i == "test"));
        if !test_only {
            syn::visit::visit_item_mod(self, item);
        }
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        flatten_use(&item.tree, String::new(), &mut self.paths);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let text: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        self.paths.push(text.join("::"));
        visit::visit_path(self, path);
    }

    fn visit_signature(&mut self, sig: &'ast syn::Signature) {
        if sig.asyncness.is_some() {
            self.asyncs += 1;
        }
        visit::visit_signature(self, sig);
    }

    fn visit_expr_async(&mut self, e: &'ast syn::ExprAsync) {
        self.asyncs += 1;
        visit::visit_expr_async(self, e);
    }

    fn visit_expr_await(&mut self, e: &'ast syn::ExprAwait) {
        self.asyncs += 1;
        visit::visit_expr_await(self, e);
    }

    fn visit_expr_method_call(&mut self, e: &'ast syn::ExprMethodCall) {
        self.methods.push(e.method.to_string());
        visit::visit_expr_method_call(self, e);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        if let Some(last) = mac.path.segments.last() {
            self.macros.push(last.ident.to_string());
        }
        // Arguments of format-like macros are expressions: look inside them too.
        if let Ok(args) = mac.parse_body_with(Punctuated::<syn::Expr, syn::Token![,]>::parse_terminated) {
            for arg in &args {
                self.visit_expr(arg);
            }
        }
        visit::visit_macro(self, mac);
    }

    fn visit_lit_str(&mut self, lit: &'ast syn::LitStr) {
        self.strings.push(lit.value());
    }

    fn visit_item(&mut self, item: &'ast syn::Item) {
        if !matches!(item, syn::Item::Fn(_) | syn::Item::Use(_)) {
            self.non_fn_items += 1;
        }
        visit::visit_item(self, item);
    }
}

fn flatten_use(tree: &syn::UseTree, prefix: String, out: &mut Vec<String>) {
    let join = |name: &str| if prefix.is_empty() { name.to_owned() } else { format!("{prefix}::{name}") };
    match tree {
        syn::UseTree::Path(p) => flatten_use(&p.tree, join(&p.ident.to_string()), out),
        syn::UseTree::Name(n) => out.push(join(&n.ident.to_string())),
        syn::UseTree::Rename(r) => out.push(join(&r.ident.to_string())),
        syn::UseTree::Glob(_) => out.push(join("*")),
        syn::UseTree::Group(g) => g.items.iter().for_each(|t| flatten_use(t, prefix.clone(), out)),
    }
}

fn facts(file: &Path) -> Facts {
    let text = fs::read_to_string(file).expect("read source");
    let syntax = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut facts = Facts::default();
    facts.visit_file(&syntax);
    facts
}

/// `(file, what)` for every file under `dir` (relative to `src/`) that `check` finds fault with.
fn offences(dir: &Path, check: impl Fn(&str, &Facts) -> Vec<String>) -> Vec<String> {
    let mut found = Vec::new();
    for file in rust_files(dir) {
        let name = relative(&file);
        for what in check(&name, &facts(&file)) {
            found.push(format!("src/{name}: {what}"));
        }
    }
    found
}

fn names_crate(path: &str, krate: &str) -> bool {
    path == krate || path.starts_with(&format!("{krate}::"))
}

#[test]
fn domain_never_does_io_or_async() {
    let io =
        ["sqlx", "tokio", "reqwest", "axum", "tracing", "std::fs", "std::net", "std::io", "std::env", "std::process"];
    let found = offences(&src().join("domain"), |_, f| {
        let mut out: Vec<String> =
            f.paths.iter().filter(|p| io.iter().any(|c| names_crate(p, c))).map(|p| format!("names {p}")).collect();
        if f.asyncs > 0 {
            out.push(format!("{} async items or awaits", f.asyncs));
        }
        out
    });
    assert!(found.is_empty(), "domain must stay pure:\n{}", found.join("\n"));
}

#[test]
fn only_store_talks_to_the_database() {
    let sql = ["SELECT ", "INSERT INTO", "UPDATE ", "DELETE FROM", "PRAGMA "];
    let found = offences(&src(), |name, f| {
        if name.starts_with("store/") {
            return Vec::new();
        }
        let mut out: Vec<String> =
            f.paths.iter().filter(|p| names_crate(p, "sqlx")).map(|p| format!("names {p}")).collect();
        out.extend(f.strings.iter().filter(|s| sql.iter().any(|k| s.contains(k))).map(|s| format!("SQL text {s:?}")));
        out
    });
    assert!(found.is_empty(), "SQL and sqlx belong in src/store:\n{}", found.join("\n"));
}

#[test]
fn library_code_never_unwraps_or_panics() {
    let found = offences(&src(), |_, f| {
        let mut out: Vec<String> =
            f.methods.iter().filter(|m| *m == "unwrap" || *m == "expect").map(|m| format!(".{m}()")).collect();
        out.extend(
            f.macros
                .iter()
                .filter(|m| ["panic", "unreachable", "todo", "unimplemented"].contains(&m.as_str()))
                .map(|m| format!("{m}!")),
        );
        out
    });
    assert!(found.is_empty(), "no unwrap/expect/panic in src:\n{}", found.join("\n"));
}

#[test]
fn main_stays_a_thin_cli() {
    let main = facts(&src().join("main.rs"));
    let reaching: Vec<&String> = main
        .paths
        .iter()
        .filter(|p| ["sqlx", "store", "batch", "fees"].iter().any(|c| p.split("::").any(|seg| seg == *c)))
        .collect();
    assert!(reaching.is_empty(), "main.rs must not reach the database, the batch or the fees: {reaching:?}");
    assert_eq!(main.non_fn_items, 0, "main.rs holds functions only: types and impls belong in the library");
    assert!(main.paths.iter().any(|p| p == "app::dispatch"), "main.rs hands the command to app::dispatch");
}

/// Claims, debits, marks and result rows are written by the chunk's reissue code alone (and the
/// HTTP settlement that finishes its reservations), so every entry point shares one write path.
#[test]
fn only_the_reissue_path_claims_and_records_results() {
    let writes = ["claim", "unclaim", "debit", "mark", "insert_results", "settle", "release", "add_to_budget"];
    let allowed = ["batch/chunk.rs", "batch/settle.rs", "batch/run.rs", "fees/ledger.rs"];
    let found = offences(&src(), |name, f| {
        if name.starts_with("store/") || allowed.contains(&name) {
            return Vec::new();
        }
        f.methods.iter().filter(|m| writes.contains(&m.as_str())).map(|m| format!("calls .{m}()")).collect()
    });
    assert!(found.is_empty(), "only the reissue path writes claims and results:\n{}", found.join("\n"));
    // And within the batch, the claim and the result rows of a chunk are written by chunk.rs.
    let run = facts(&src().join("batch/run.rs"));
    let in_run: Vec<&String> =
        run.methods.iter().filter(|m| ["claim", "insert_results"].contains(&m.as_str())).collect();
    assert!(in_run.is_empty(), "batch/run.rs drives chunks; chunk.rs claims and records: {in_run:?}");
}

/// The checks above must see what they claim to see: a file with each offence is caught.
#[test]
fn the_checks_catch_what_they_look_for() {
    let source = r#"
        use sqlx::Row;
        // sqlx::query in a comment is no offence
        fn f() { let s = "sqlite://x"; let _ = x.unwrap(); todo!(); format!("SELECT {}", 1); }
        async fn g() { h().await }
        struct S;
        #[cfg(test)]
        mod tests { fn t() { let _ = y.expect("in a unit test"); } }
    "#;
    let syntax = syn::parse_file(source).expect("parses");
    let mut f = Facts::default();
    f.visit_file(&syntax);
    assert!(f.paths.iter().any(|p| p == "sqlx::Row"));
    assert!(f.methods.contains(&"unwrap".to_owned()));
    assert!(!f.methods.contains(&"expect".to_owned()), "unit-test modules are not library code");
    assert!(f.macros.contains(&"todo".to_owned()));
    assert!(f.strings.iter().any(|s| s.starts_with("SELECT ")));
    assert!(f.strings.iter().any(|s| s == "sqlite://x"));
    assert_eq!(f.asyncs, 2);
    assert_eq!(f.non_fn_items, 2, "the struct and the test module");
    assert!(!f.paths.iter().any(|p| p == "sqlx::query"), "comments are not code");
}
