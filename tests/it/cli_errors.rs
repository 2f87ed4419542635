//! Bad input gets one clear line on stderr and a documented exit code, never a panic.

use crate::common::*;

/// Runs the command, expects `code`, and returns the one `error:` line (which must exist once).
fn fails(db: &TestDb, args: &[&str], code: i32) -> String {
    let out = db.run_cmd(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{args:?}\nstderr: {}", tail(&stderr));
    assert!(!stderr.contains("panicked"), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "exactly one error line expected:\n{stderr}");
    errors[0].to_owned()
}

/// Usage errors happen before any run starts: stderr is that one line and nothing else.
fn usage_error(db: &TestDb, args: &[&str]) -> String {
    let line = fails(db, args, 2);
    let out = db.run_cmd(args);
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
    line
}

#[test]
fn bad_configuration_values_name_the_key() {
    let db = TestDb::new();
    db.ok(&["migrate"]);
    let cases = [
        ("RENEWAL__RUN__CHUNK_SIZE", "0", "run.chunk_size"),
        ("RENEWAL__RUN__CHUNK_SIZE", "lots", "chunk_size"),
        ("RENEWAL__RUN__TIME_ZONE", "Mars/Olympus", "run.time_zone"),
        ("RENEWAL__RUN__CONCURRENCY", "1000", "run.concurrency"),
        ("RENEWAL__DATABASE__URL", "mysql://x", "database.url"),
        ("RENEWAL__DATABASE__SQLITE_WAL_AUTOCHECKPOINT_PAGES", "0", "database.sqlite_wal_autocheckpoint_pages"),
        ("RENEWAL__FEES__MODE", "cash", "mode"),
        ("APP_ENV", "nowhere", "nowhere.toml"),
    ];
    for (key, value, named) in cases {
        let line = usage_error(&TestDb::new().with_env(key, value), &["run"]);
        assert!(line.contains(named), "{key}={value}: {line}");
    }
}

#[test]
fn a_missing_database_is_a_usage_error_and_is_not_created() {
    let db = TestDb::new();
    let line = usage_error(&db, &["run", "--as-of", AS_OF]);
    assert!(line.contains("does not exist"), "{line}");
    assert!(!db.path.exists(), "run must never create the database");
}

#[test]
fn an_unwritable_database_path_is_one_line() {
    let db = TestDb::new();
    let out = db
        .command(&["migrate"])
        .env("RENEWAL__DATABASE__URL", format!("sqlite://{}/no/such/dir/x.db", db.dir.path().display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("cannot open database"), "{}", errors[0]);
}

#[tokio::test]
async fn unknown_or_malformed_card_and_bad_as_of_are_usage_errors_without_a_run_row() {
    let db = TestDb::new();
    db.seed(300);
    let line = usage_error(&db, &["run", "--as-of", AS_OF, "--card", "4111111111111111"]);
    assert_eq!(line, "error: card 411111******1111 not found");
    let line = usage_error(&db, &["run", "--as-of", AS_OF, "--card", "4111-1111"]);
    assert!(line.contains("16 digits") && !line.contains("4111-1111"), "{line}");
    for bad in ["2026-02-30", "20261120", "tomorrow"] {
        let line = usage_error(&db, &["run", "--as-of", bad]);
        assert!(line.contains("--as-of") && line.contains(bad), "{line}");
    }
    let bad_flag = db.run_cmd(&["run", "--limit", "0"]);
    assert_eq!(bad_flag.status.code(), Some(2));
    assert_eq!(scalar(&db, "SELECT count(*) FROM run").await, 0);
}

#[tokio::test]
async fn a_schema_older_or_newer_than_the_binary_stops_the_run_for_a_person() {
    let db = TestDb::new();
    // An SQLite file with no migrations applied.
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(&db.path).create_if_missing(true))
        .await
        .unwrap();
    sqlx::query("CREATE TABLE unrelated (x INTEGER)").execute(&pool).await.unwrap();
    let line = fails(&db, &["run", "--as-of", AS_OF], 5);
    assert!(line.contains("older than this binary"), "{line}");
    db.ok(&["migrate"]);
    db.ok(&["run", "--as-of", AS_OF]);
    // A newer migration declared additive (expand/contract): an old binary keeps working.
    sqlx::query("INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (99990101000000, 'additive future column', 1, x'00', 0)")
        .execute(&pool)
        .await
        .unwrap();
    db.ok(&["run", "--as-of", AS_OF]);
    db.ok(&["report"]);
    // One that is not declared additive stops the binary.
    sqlx::query("INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (99990102000000, 'drop old columns', 1, x'00', 0)")
        .execute(&pool)
        .await
        .unwrap();
    let line = fails(&db, &["run", "--as-of", AS_OF], 5);
    assert!(line.contains("newer than this binary") && line.contains("not declared additive"), "{line}");
    // A binary's own newest migration missing: older schema.
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version >= 99990101000000").execute(&pool).await.unwrap();
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)")
        .execute(&pool)
        .await
        .unwrap();
    let line = fails(&db, &["run", "--as-of", AS_OF], 5);
    assert!(line.contains("older than this binary"), "{line}");
}

#[tokio::test]
async fn a_bad_fee_service_setting_is_a_configuration_error_without_a_run_row() {
    let db = TestDb::new();
    db.seed(100);
    let out = db
        .command(&["run", "--as-of", AS_OF])
        .env("RENEWAL__FEES__MODE", "http")
        .env("RENEWAL__FEES__HTTP__URL", "http://127.0.0.1:9/charge")
        // A header name with a space cannot be sent.
        .env("RENEWAL__FEES__HTTP__API_KEY_HEADER", "X Bad Header")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", tail(&stderr));
    assert!(stderr.lines().any(|l| l.starts_with("error: configuration")), "{}", tail(&stderr));
    assert_eq!(scalar(&db, "SELECT count(*) FROM run").await, 0);
}

#[test]
fn every_subcommand_has_help() {
    let db = TestDb::new();
    for sub in ["migrate", "seed-demo", "run", "report", "prune", "config", "demo", "explain"] {
        let out = db.ok(&[sub, "--help"]);
        assert!(out.contains("Usage: renewal-worker"), "{sub}: {out}");
    }
    let run_help = db.ok(&["run", "--help"]);
    for flag in ["--as-of", "--dry-run", "--card", "--limit"] {
        assert!(run_help.contains(flag), "{run_help}");
    }
}

#[test]
fn a_missing_postgres_database_is_a_usage_error() {
    if !postgres_available() {
        return;
    }
    let db = TestDb::new().with_env("RENEWAL__DATABASE__URL", "postgres://postgres@127.0.0.1:5432/renewal_no_such_db");
    let line = usage_error(&db, &["run", "--as-of", AS_OF]);
    assert!(line.contains("does not exist") && line.contains("renewal_no_such_db"), "{line}");
}

#[test]
fn unknown_keys_a_missing_config_dir_and_bad_choices_are_refused_by_name() {
    let db = TestDb::new();
    db.ok(&["migrate"]);
    let line = usage_error(&TestDb::new().with_env("RENEWAL__RUN__CHUNKSIZE", "10"), &["run"]);
    assert_eq!(
        line,
        "error: configuration: unknown key run.chunksize (env RENEWAL__RUN__CHUNKSIZE); did you mean run.chunk_size?"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("default.toml"), "[run]\nwindow_dayz = 30\n").unwrap();
    let in_file = TestDb::new().with_env("RENEWAL_CONFIG_DIR", dir.path().to_str().unwrap());
    let line = usage_error(&in_file, &["run"]);
    assert!(line.contains("unknown key run.window_dayz (file ") && line.ends_with("did you mean run.window_days?"));
    let missing = format!("{}/nowhere", dir.path().display());
    let line = usage_error(&TestDb::new(), &["--config-dir", &missing, "run"]);
    assert!(line.contains(&missing) && line.contains("is not a directory"), "{line}");
    let line = usage_error(&TestDb::new().with_env("RENEWAL__LOG__FORMAT", "jsn"), &["run"]);
    assert!(line.contains("\"jsn\" is not one of auto, json, pretty") && line.contains("log.format"), "{line}");
}

#[test]
fn a_log_level_that_would_silence_the_audit_trail_is_refused_and_error_keeps_it() {
    for (level, named) in
        [("verbose", "\"verbose\" is not a level"), ("renewal_workr=debug", "did you mean renewal_worker")]
    {
        let line = usage_error(&TestDb::new().with_env("RENEWAL__LOG__LEVEL", level), &["run"]);
        assert!(line.starts_with("error: configuration: log.level = ") && line.contains(named), "{line}");
    }
    // The quietest valid level still writes every card's result and the summary.
    let db = TestDb::new().with_env("RENEWAL__LOG__LEVEL", "error");
    db.seed(300);
    let out = db.run_cmd(&["run", "--as-of", AS_OF]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let events: Vec<serde_json::Value> = stderr.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let cards = events.iter().filter(|e| e["event"] == "card_result").count();
    let summary = events.iter().find(|e| e["event"] == "run_summary").expect("a run_summary line at log.level=error");
    assert_eq!(summary["read"].as_u64(), Some(cards as u64), "one card_result per card read");
    assert!(cards > 0);
    assert!(
        events.iter().all(|e| e["level"] != "INFO" || e["target"] == "renewal::card" || e["target"] == "renewal::run")
    );
    // Per-code counts are numbers of their own, one field per code, summing to the cards read.
    let counted: u64 = summary
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("count_"))
        .map(|(_, v)| v.as_u64().expect("a count is a number"))
        .sum();
    assert_eq!(counted, cards as u64);
    assert!(summary.get("counts").is_none());
}

#[test]
fn a_future_as_of_needs_force_and_a_dry_run_takes_any_date() {
    let db = TestDb::new();
    db.seed(200);
    let far = (chrono::Utc::now().date_naive() + chrono::Duration::days(90)).to_string();
    let line = usage_error(&db, &["run", "--as-of", &far]);
    assert!(line.contains(&far) && line.contains("run.max_days_ahead = 0") && line.contains("--force-as-of"), "{line}");
    db.ok(&["run", "--dry-run", "--as-of", &far]);
    let allowed = db.with_env("RENEWAL__RUN__MAX_DAYS_AHEAD", "100");
    allowed.ok(&["run", "--as-of", &far, "--limit", "1"]);
    allowed.ok(&["run", "--as-of", AS_OF, "--limit", "1"]);
}

#[test]
fn seed_demo_on_a_database_with_data_says_what_to_do() {
    let db = TestDb::new();
    db.seed(2_000);
    let wal = std::fs::metadata(format!("{}-wal", db.path.display())).map(|m| m.len()).unwrap_or(0);
    assert_eq!(wal, 0, "the seed left a {wal}-byte WAL");
    let line = usage_error(&db, &["seed-demo", "--cards", "100"]);
    assert!(line.contains("already holds") && line.contains("`demo`"), "{line}");
}

#[test]
fn an_unreachable_postgres_names_the_real_cause_for_run_and_migrate() {
    let db = TestDb::new().with_env("RENEWAL__DATABASE__URL", "postgres://postgres@127.0.0.1:1/renewal");
    for command in ["run", "migrate"] {
        let line = fails(&db, &[command], 1);
        assert!(line.contains("refused") && !line.contains("pool timed out"), "{command}: {line}");
    }
}

/// Reading commands open the file read-only: a read-only copy in a read-only directory can be
/// reported on and dry-run; a run that must write says "permission denied". Run as an
/// unprivileged user (root writes through permissions).
#[test]
fn a_read_only_database_can_be_read_and_a_write_says_permission_denied() {
    use std::os::unix::fs::PermissionsExt;
    let db = TestDb::new();
    db.seed(500);
    db.ok(&["run", "--as-of", AS_OF, "--limit", "50"]);
    let dir = db.dir.path();
    std::fs::set_permissions(&db.path, std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let as_user = |args: &[&str]| {
        let mut cmd = if nix::unistd::geteuid().is_root() {
            let mut c = std::process::Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]).arg(binary());
            c
        } else {
            std::process::Command::new(binary())
        };
        let base = db.command(args);
        cmd.args(args).env_clear().envs(base.get_envs().filter_map(|(k, v)| Some((k, v?))));
        cmd.output().unwrap()
    };
    for args in [&["report"][..], &["runs"], &["explain", "--as-of", AS_OF], &["run", "--dry-run", "--as-of", AS_OF]] {
        let out = as_user(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = as_user(&["run", "--as-of", AS_OF]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("permission denied") && stderr.contains("can still read it"), "{stderr}");
}
