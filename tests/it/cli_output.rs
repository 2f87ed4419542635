//! The operator's command line: every `--json` output validates against its schema in
//! docs/schemas/, `runs` and `report` tell the history as the tables hold it, the finance CSV
//! adds up to the ledger, `config show` keeps secrets out, completions and the man page cover
//! every subcommand.

use std::path::Path;
use std::time::Duration;

use renewal_worker::{PAUSE_ENV, PAUSED_MARKER};
use serde_json::Value;

use crate::common::*;

both_backends!(runs_and_report_tell_three_runs_one_interrupted_as_the_tables_hold_them,);

const SUBCOMMANDS: [&str; 14] = [
    "migrate",
    "seed-demo",
    "run",
    "schedule",
    "serve",
    "report",
    "runs",
    "prune",
    "explain",
    "config",
    "demo",
    "completions",
    "man",
    "help",
];

fn schema(name: &str) -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schemas").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).expect("a valid JSON Schema")
}

/// Parses `stdout` as one JSON document and validates it against docs/schemas/`name`.
fn valid(name: &str, stdout: &str) -> Value {
    let value: Value = serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {stdout}"));
    let validator = schema(name);
    let errors: Vec<String> = validator.iter_errors(&value).map(|e| format!("{} at {}", e, e.instance_path)).collect();
    assert!(errors.is_empty(), "{name}: {errors:?}\n{value:#}");
    value
}

#[test]
fn the_schema_files_are_the_ones_the_output_types_generate() {
    for (name, generated) in renewal_worker::output::views::schemas() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schemas").join(name);
        let text = serde_json::to_string_pretty(&generated).unwrap() + "\n";
        if std::env::var_os("UPDATE_SCHEMAS").is_some() {
            std::fs::write(&path, &text).unwrap();
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(on_disk, text, "{name} is stale: run UPDATE_SCHEMAS=1 cargo test --test it schema_files");
    }
}

async fn runs_and_report_tell_three_runs_one_interrupted_as_the_tables_hold_them(kind: Kind) {
    let db = TestDb::of(kind).with_env("RENEWAL__RUN__CHUNK_SIZE", "40");
    db.seed(1_000);
    // Run 1: stopped by SIGTERM at its second chunk's commit (interrupted, exit 4).
    let mut first = Spawned::start(db.command(&["run", "--as-of", AS_OF]).env(PAUSE_ENV, "before_commit:2"));
    first.wait_for_line(PAUSED_MARKER, Duration::from_secs(60));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first.child.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    assert_eq!(first.wait(Duration::from_secs(60)), Some(4));
    // Run 2 finishes the date; run 3 finds nothing left.
    let second = valid("run.json", &db.ok(&["--json", "run", "--as-of", AS_OF]));
    let third = valid("run.json", &db.ok(&["run", "--as-of", AS_OF, "--output", "json"]));
    assert_eq!(third["read"], 0);

    let runs = valid("runs.json", &db.ok(&["runs", "--json"]));
    let rows = runs.as_array().unwrap();
    let statuses: Vec<&str> = rows.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["completed", "completed", "interrupted"], "newest first");
    let pool = db.pool().await;
    for row in rows {
        let id = row["run_id"].as_i64().unwrap();
        let (read, reissued, fee): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*), CAST(coalesce(sum(CASE WHEN code = '000_000' THEN 1 ELSE 0 END), 0) AS BIGINT), \
             CAST(coalesce(sum(CASE WHEN code = '000_000' THEN fee ELSE 0 END), 0) AS BIGINT) FROM result WHERE run_id = $1",
        )
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(
            (row["read"].as_i64(), row["reissued"].as_i64(), row["fee_total"].as_i64()),
            (Some(read), Some(reissued), Some(fee)),
            "run {id}"
        );
    }
    assert_eq!(rows[1]["read"], second["read"]);
    assert!(rows[2]["read"].as_i64().unwrap() > 0, "the interrupted run committed its first chunks");
    let table = db.ok(&["runs", "--last", "2"]);
    assert_eq!(table.lines().count(), 3, "a header and two runs:\n{table}");
    assert!(table.lines().next().unwrap().contains("REISSUED"));
    let interrupted = valid("runs.json", &db.ok(&["runs", "--json", "--status", "interrupted"]));
    assert_eq!(interrupted.as_array().unwrap().len(), 1);
    let csv = db.ok(&["runs", "--output", "csv"]);
    assert!(csv.starts_with("run_id,as_of,trigger,scope,status,abandoned,started_at,"), "{csv}");
    assert_eq!(csv.lines().count(), 4);
    let columns: std::collections::BTreeSet<&str> = csv.lines().next().unwrap().split(',').collect();
    let keys: std::collections::BTreeSet<&str> = rows[0].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(columns, keys, "the CSV has the JSON's columns");
    // A run that charged nothing still gets the header line.
    let empty = db.ok(&["report", &rows[0]["run_id"].to_string(), "--output", "csv"]);
    assert_eq!(empty, "run_id,card,card_apply_no,amount,reference\n");

    // report --as-of: the date's runs summed, which is the date's final state.
    let date = valid("report-as-of.json", &db.ok(&["report", "--as-of", AS_OF, "--json"]));
    let sum = |field: &str| rows.iter().map(|r| r[field].as_i64().unwrap()).sum::<i64>();
    for field in ["read", "reissued", "ineligible", "failed", "fee_total"] {
        assert_eq!(date[field].as_i64(), Some(sum(field)), "{field}");
    }
    assert_eq!(date["runs"].as_array().unwrap().len(), 3);
    let (results, codes): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT code) FROM result WHERE CAST(as_of AS TEXT) = $1 AND trigger = 'run'",
    )
    .bind(AS_OF)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(results > 0);
    assert_eq!(date["read"].as_i64(), Some(results));
    assert_eq!(date["counts"].as_object().unwrap().len() as i64, codes);
    valid("run.json", &db.ok(&["report", "--json"]));
    valid("run.json", &db.ok(&["report", "1", "--json"]));

    // The finance CSV of the run that charged most: its amounts add up to its ledger debits.
    let run_id = rows.iter().max_by_key(|r| r["fee_total"].as_i64()).unwrap()["run_id"].as_i64().unwrap();
    let csv = db.ok(&["report", &run_id.to_string(), "--output", "csv"]);
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("run_id,card,card_apply_no,amount,reference"));
    let amounts: Vec<i64> = lines.map(|l| l.split(',').nth(3).unwrap().parse().unwrap()).collect();
    let debits: i64 = sqlx::query_scalar(
        "SELECT CAST(coalesce(sum(d.amount), 0) AS BIGINT) FROM wallet_debit d \
         JOIN card_application a ON a.id = d.application_id WHERE a.run_id = $1",
    )
    .bind(run_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(!amounts.is_empty() && debits > 0);
    assert_eq!(amounts.iter().sum::<i64>(), debits);
    assert!(!csv.lines().skip(1).any(|l| l.split(',').nth(1).is_some_and(|c| !c.contains("******"))), "cards masked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_and_config_print_valid_json_and_config_show_never_prints_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("default.toml"),
        "[admin]\nkeys = [\"ops:file-secret-0123456789\"]\n[run]\nchunk_size = 500\n",
    )
    .unwrap();
    let db = TestDb::new()
        .with_env("RENEWAL_CONFIG_DIR", dir.path().to_str().unwrap())
        .with_env("RENEWAL__FEES__HTTP__API_KEY", "env-secret-abcdefghij")
        .with_env("RENEWAL__API__KEYS", "client:env-api-secret-0123456789")
        .with_env("RENEWAL__DATABASE__URL", "postgres://app:db-password-xyz@127.0.0.1:1/renewal");
    for format in ["table", "json", "csv"] {
        let out = db.ok(&["config", "show", "--output", format]);
        for secret in
            ["file-secret-0123456789", "env-secret-abcdefghij", "env-api-secret-0123456789", "db-password-xyz"]
        {
            assert!(!out.contains(secret), "{format} printed {secret}:\n{out}");
        }
    }
    let rows = valid("config-show.json", &db.ok(&["config", "--json"]));
    let source = |key: &str| {
        rows.as_array().unwrap().iter().find(|r| r["key"] == key).map(|r| r["source"].as_str().unwrap().to_owned())
    };
    assert_eq!(source("run.chunk_size").unwrap(), format!("file {}", dir.path().join("default.toml").display()));
    assert_eq!(source("fees.http.api_key").as_deref(), Some("env RENEWAL__FEES__HTTP__API_KEY"));
    assert_eq!(source("run.window_days").as_deref(), Some("default"));
    let check = valid("config-check.json", &db.ok(&["config", "check", "--json"]));
    assert_eq!(check["ok"], true);
    let bad = TestDb::new().with_env("RENEWAL__RUN__CHUNKSIZE", "1").run_cmd(&["config", "check", "--json"]);
    assert_eq!(bad.status.code(), Some(2));
    let verdict = valid("config-check.json", &String::from_utf8_lossy(&bad.stdout));
    assert_eq!(verdict["ok"], false);
    assert!(verdict["problems"][0].as_str().unwrap().contains("run.chunksize"));
    // Every bad value is named, not only the first; one `error:` line each.
    let two = TestDb::new()
        .with_env("RENEWAL__RUN__CHUNK_SIZE", "0")
        .with_env("RENEWAL__RUN__CONCURRENCY", "1000")
        .run_cmd(&["config", "check"]);
    assert_eq!(two.status.code(), Some(2));
    let errors: Vec<String> =
        String::from_utf8_lossy(&two.stderr).lines().filter(|l| l.starts_with("error: ")).map(str::to_owned).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("run.chunk_size") && errors[1].contains("run.concurrency"), "{errors:?}");
    // Values of the wrong type too, though serde stops at the first of them.
    let typed = TestDb::new()
        .with_env("RENEWAL__RUN__CHUNK_SIZE", "lots")
        .with_env("RENEWAL__LOG__FORMAT", "jsn")
        .run_cmd(&["config", "check", "--json"]);
    assert_eq!(typed.status.code(), Some(2));
    let verdict = valid("config-check.json", &String::from_utf8_lossy(&typed.stdout));
    let problems: Vec<&str> = verdict["problems"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("chunk_size")) && problems.iter().any(|p| p.contains("log.format")));

    let db = TestDb::new();
    db.seed(300);
    // The run summary as CSV: one row per code, whose counts are the cards read.
    let csv = db.ok(&["run", "--as-of", AS_OF, "--output", "csv"]);
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("code,count,fee,message"));
    let read: i64 = lines.map(|l| l.split(',').nth(1).unwrap().parse::<i64>().unwrap()).sum();
    assert!(read > 0 && read == scalar(&db, "SELECT count(*) FROM result").await, "{csv}");
    let plan = valid("explain.json", &db.ok(&["explain", "--as-of", AS_OF, "--json"]));
    assert!(!plan["plan"].as_array().unwrap().is_empty());
}

#[test]
fn completions_and_the_man_page_name_every_subcommand() {
    let db = TestDb::new();
    for shell in ["bash", "zsh", "fish"] {
        let script = db.ok(&["completions", shell]);
        for sub in SUBCOMMANDS {
            assert!(script.contains(sub), "{shell} completions lack {sub}");
        }
    }
    let man = db.ok(&["man"]);
    assert!(man.starts_with(".ie") || man.contains(".TH"), "roff: {}", &man[..man.len().min(200)]);
    for sub in SUBCOMMANDS {
        // roff writes a hyphen as `\-`.
        assert!(man.contains(&sub.replace('-', "\\-")), "the man page lacks {sub}");
    }
}

#[test]
fn report_on_a_killed_run_says_it_looks_abandoned_with_its_owner() {
    let db = TestDb::new().with_env("RENEWAL__RUN__CHUNK_SIZE", "40");
    db.seed(1_000);
    let mut worker = Spawned::start(db.command(&["run", "--as-of", AS_OF]).env(PAUSE_ENV, "before_commit:2"));
    worker.wait_for_line(PAUSED_MARKER, Duration::from_secs(60));
    worker.kill();
    let report = db.ok(&["report"]);
    assert!(report.contains("status running") && report.contains("abandoned: its process is gone"), "{report}");
    assert!(report.contains("owner ") && report.contains("finished -") && report.contains("not finished"), "{report}");
    let json = valid("run.json", &db.ok(&["report", "--json"]));
    assert_eq!((json["status"].as_str(), json["abandoned"].as_bool()), (Some("running"), Some(true)));
    assert!(json["duration_ms"].is_null());
    assert!(db.ok(&["runs"]).contains("running (abandoned)"));
}

#[test]
fn pretty_logs_in_a_pipe_carry_no_colour_and_demo_points_at_its_file() {
    let db = TestDb::new().with_env("RENEWAL__LOG__FORMAT", "pretty");
    db.seed(300);
    let out = db.run_cmd(&["run", "--as-of", AS_OF]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("card_result"), "{}", tail(&stderr));
    assert!(!stderr.contains('\u{1b}'), "colour codes in a pipe:\n{}", tail(&stderr));

    let file = db.dir.path().join("demo.db");
    let stdout = db.ok(&["demo", "--cards", "500", "--db", file.to_str().unwrap()]);
    let hint = format!("export RENEWAL__DATABASE__URL=sqlite://{}", file.display());
    assert!(stdout.lines().last().unwrap().contains(&hint), "{stdout}");
    let quiet = db.ok(&["demo", "--cards", "500", "--db", file.to_str().unwrap(), "--quiet"]);
    assert!(!quiet.contains("export "), "--quiet prints no hint");
    // The hint works: report reads the demo's run.
    let report =
        TestDb::new().with_env("RENEWAL__DATABASE__URL", &format!("sqlite://{}", file.display())).ok(&["report"]);
    assert!(report.starts_with("run 1  as-of"), "{report}");
}
