//! deploy/ against the real program (the file-level linters run in deploy/check.sh): every
//! dashboard query answered by a real Prometheus that scraped a real daemon, its values equal to
//! the tables; every metric name in deploy/ found in the daemon's real /metrics and every log
//! field the LogQL queries read found in its real log lines; the manifests' exit codes, grace
//! period, schedule, zone, ports and commands equal the program's.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::TimeZone;
use renewal_worker::app::Exit;

use crate::common::*;
use crate::observability::{get, query_at, start_prometheus, tool};
use crate::schedule::{NIGHT, daemon, eventually, free_port, shift_to};

/// Metrics of other exporters that deploy/ may use (README "Operating it"): none today.
const EXTERNAL_METRICS: [&str; 0] = [];

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(deploy().join(path)).unwrap_or_else(|e| panic!("deploy/{path}: {e}"))
}

fn yaml_docs(path: &str) -> Vec<serde_yaml_ng::Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(&read(path))
        .map(|doc| serde_yaml_ng::Value::deserialize(doc).unwrap_or_else(|e| panic!("deploy/{path}: {e}")))
        .collect()
}

fn yaml(path: &str) -> serde_yaml_ng::Value {
    yaml_docs(path).remove(0)
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read("grafana/renewal.json")).expect("the dashboard is JSON")
}

/// (panel title, expression, datasource type) of every dashboard target.
fn targets() -> Vec<(String, String, String)> {
    let dash = dashboard();
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let kind = target["datasource"]["type"].as_str().or(panel["datasource"]["type"].as_str());
            out.push((
                panel["title"].as_str().unwrap_or_default().to_owned(),
                target["expr"].as_str().expect("an expr").to_owned(),
                kind.expect("a datasource type").to_owned(),
            ));
        }
    }
    out
}

/// Every PromQL expression of deploy/: the dashboard's and the alert rules'.
fn promql() -> Vec<String> {
    let mut exprs: Vec<String> = targets().into_iter().filter(|t| t.2 == "prometheus").map(|t| t.1).collect();
    for group in yaml("prometheus/alerts.yaml")["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            exprs.push(rule["expr"].as_str().expect("a rule expr").to_owned());
        }
    }
    exprs
}

/// The metric names an expression selects: identifiers of the worker's namespace, and any
/// identifier directly followed by a label matcher.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let ours = regex::Regex::new(r"\b(renewal_[a-z0-9_]+)\b").unwrap();
    let selected = regex::Regex::new(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{").unwrap();
    ours.captures_iter(expr).chain(selected.captures_iter(expr)).map(|c| c[1].to_owned()).collect()
}

fn exposition_names(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect()
}

/// A night run by a daemon while a real Prometheus scrapes it from before the run, so its
/// counters are seen rising from 0 (as in production, where the scrape precedes the night).
struct ScrapedNight {
    db: TestDb,
    worker: Spawned,
    metrics: String,
    prometheus: u16,
    _prometheus: (Spawned, tempfile::TempDir),
    /// When Prometheus last sampled the finished night.
    at: f64,
}

async fn scraped_night() -> Option<ScrapedNight> {
    let prometheus = tool("prometheus")?;
    let db = TestDb::new();
    db.seed(600);
    let (metrics_port, admin_port) = (free_port(), free_port());
    let mut cmd = daemon(&db, "0 0 2 * * *", &shift_to(NIGHT), metrics_port);
    cmd.env("RENEWAL__ADMIN__LISTEN", format!("127.0.0.1:{admin_port}"))
        .env("RENEWAL__ADMIN__KEYS", "test:0123456789abcdef0123");
    let worker = Spawned::start(&mut cmd);
    let (prom, prom_port, dir) = start_prometheus(prometheus, metrics_port);
    eventually("Prometheus scraped the idle daemon", Duration::from_secs(60), || async {
        query_at(prom_port, "renewal_runs_total", None).await["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    })
    .await;
    let started = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{admin_port}/runs"))
        .bearer_auth("0123456789abcdef0123")
        .body(format!(r#"{{"as_of":"{AS_OF}"}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 202);
    worker.wait_for_line("manual_run_ended", Duration::from_secs(60));
    let (_, metrics) = get(&format!("http://127.0.0.1:{metrics_port}/metrics")).await;
    let done = r#"renewal_runs_total{trigger="manual",status="completed"}"#;
    eventually("Prometheus saw the night", Duration::from_secs(60), || async {
        query_at(prom_port, done, None).await["data"]["result"][0]["value"][1] == "1"
    })
    .await;
    let stamp = query_at(prom_port, &format!("timestamp({done})"), None).await;
    let at: f64 = stamp["data"]["result"][0]["value"][1].as_str().expect("a sample time").parse().unwrap();
    Some(ScrapedNight { db, worker, metrics, prometheus: prom_port, _prometheus: (prom, dir), at })
}

/// The dashboard's variables as Grafana substitutes them for "All".
fn substituted(expr: &str) -> String {
    expr.replace("$instance", ".*")
}

/// `sum by (label)` results of an expression as (label value, value).
fn by_label(answer: &serde_json::Value, label: &str) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = answer["data"]["result"]
        .as_array()
        .expect("a vector")
        .iter()
        .map(|s| {
            let value: f64 = s["value"][1].as_str().unwrap().parse().unwrap();
            (s["metric"][label].as_str().unwrap_or_default().to_owned(), value)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn panel_expr(title: &str) -> String {
    let found = targets().into_iter().find(|t| t.0 == title && t.2 == "prometheus");
    substituted(&found.unwrap_or_else(|| panic!("no panel {title:?}")).1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_answers_on_a_real_prometheus_and_its_values_equal_the_tables() {
    let Some(night) = scraped_night().await else { return };
    for (title, expr, kind) in targets() {
        if kind != "prometheus" {
            continue;
        }
        let answer = query_at(night.prometheus, &substituted(&expr), Some(night.at)).await;
        assert_eq!(answer["status"], "success", "{title}: {expr}: {answer}");
        let series = answer["data"]["result"].as_array().map_or(0, Vec::len);
        assert!(series >= 1, "{title}: {expr} answers no series: {answer}");
    }
    let pool = night.db.pool().await;
    let ask = |title: &str| {
        let expr = panel_expr(title);
        let prometheus = night.prometheus;
        let at = night.at;
        async move { query_at(prometheus, &expr, Some(at)).await }
    };
    // Runs by status: the night's one completed run, every other status 0.
    let runs = by_label(&ask("Runs by status (per day)").await, "status");
    let completed = runs.iter().find(|r| r.0 == "completed").map(|r| r.1);
    assert_eq!(completed, Some(1.0), "{runs:?}");
    assert!(runs.iter().filter(|r| r.0 != "completed").all(|r| r.1 == 0.0), "{runs:?}");
    // Cards by code: the result rows per code.
    let want: Vec<(String, i64)> =
        sqlx::query_as("SELECT code, count(*) FROM result GROUP BY code ORDER BY code").fetch_all(&pool).await.unwrap();
    let got = by_label(&ask("Cards by code (per night)").await, "code");
    let got: Vec<(String, i64)> = got.into_iter().filter(|g| g.1 != 0.0).map(|(c, v)| (c, v.round() as i64)).collect();
    assert_eq!(got, want, "cards by code equal the result rows");
    // Fees charged: the reissued cards' fees.
    let fees: i64 =
        sqlx::query_scalar("SELECT CAST(coalesce(sum(fee), 0) AS BIGINT) FROM result WHERE code = '000_000'")
            .fetch_one(&pool)
            .await
            .unwrap();
    let got = by_label(&ask("Fees charged (per night)").await, "currency");
    assert_eq!(got, vec![("KRW".to_owned(), fees as f64)]);
    // Since the last success: the run row's finish time.
    let finished: i64 = sqlx::query_scalar(
        "SELECT CAST(strftime('%s', max(finished_at)) AS INTEGER) FROM run WHERE status = 'completed'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let age = by_label(&ask("Since the last successful run").await, "");
    assert!((night.at - age[0].1 - finished as f64).abs() < 1.0, "{age:?} vs finished {finished}");
    let pending: i64 =
        scalar(&night.db, "SELECT count(*) FROM card_application WHERE payment_state = 'PENDING_PAYMENT'").await;
    let got = by_label(&ask("Pending charges").await, "");
    assert_eq!(got[0].1, pending as f64);
    drop(night.worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_names_only_metrics_and_log_fields_the_program_really_emits() {
    let Some(night) = scraped_night().await else { return };
    let real = exposition_names(&night.metrics);
    let mut used = BTreeSet::new();
    for expr in promql() {
        assert!(!expr.replace(' ', "").contains("orvector(0)"), "no `or vector(0)` hides an absent series: {expr}");
        used.extend(metric_names(&expr));
    }
    assert!(used.len() >= 10, "{used:?}");
    for name in &used {
        assert!(
            real.contains(name) || EXTERNAL_METRICS.contains(&name.as_str()),
            "deploy/ uses {name}, which the daemon's /metrics does not have:\n{real:?}"
        );
    }

    // LogQL, parsed with Grafana's grammar: the fields it reads occur in the real log lines.
    let Some(node) = tool("node") else { return };
    let modules = std::env::var("LOGQL_MODULES").ok().filter(|m| Path::new(m).join("@grafana/lezer-logql").is_dir());
    let Some(modules) = modules else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI requires LOGQL_MODULES with @grafana/lezer-logql (deploy/check.sh installs it)"
        );
        eprintln!("skipping the LogQL check: LOGQL_MODULES is not set (deploy/check.sh installs the parser)");
        return;
    };
    let out = std::process::Command::new(node)
        .arg(deploy().join("check/logql-fields.mjs"))
        .arg(deploy().join("grafana/renewal.json"))
        .env("LOGQL_MODULES", modules)
        .output()
        .unwrap();
    assert!(out.status.success(), "the LogQL parses: {}", String::from_utf8_lossy(&out.stdout));
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(parsed["queries"].as_u64() >= Some(3));
    let lines: Vec<serde_json::Value> =
        night.worker.log.lock().unwrap().iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let keys: BTreeSet<String> = lines.iter().filter_map(|l| l.as_object()).flat_map(|o| o.keys().cloned()).collect();
    for field in parsed["fields"].as_array().unwrap() {
        let field = field.as_str().unwrap();
        assert!(keys.contains(field), "the dashboard reads log field {field:?}, which no real log line has: {keys:?}");
    }
    // Stream labels come from the log shipper's configuration, not from the lines.
    let promtail = yaml("loki/promtail.yaml");
    let shipped: BTreeSet<String> = promtail["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|c| c["relabel_configs"].as_sequence().cloned().unwrap_or_default())
        .filter_map(|r| r["target_label"].as_str().map(str::to_owned))
        .collect();
    for label in parsed["stream_labels"].as_array().unwrap() {
        assert!(shipped.contains(label.as_str().unwrap()), "stream label {label} is set by deploy/loki/promtail.yaml");
    }
    drop(night.worker);
}

fn configmap() -> serde_yaml_ng::Value {
    yaml("k8s/configmap.yaml")["data"].clone()
}

fn is_subcommand(name: &str) -> bool {
    std::process::Command::new(binary()).args([name, "--help"]).output().is_ok_and(|o| o.status.success())
}

#[test]
fn the_manifests_match_the_programs_exit_codes_grace_schedule_and_ports() {
    let cron = yaml("k8s/cronjob.yaml");
    let job = &cron["spec"]["jobTemplate"]["spec"];
    let pod = &job["template"]["spec"];
    let container = &pod["containers"][0];
    let fail_at_once: Vec<i64> = job["podFailurePolicy"]["rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "FailJob")
        .flat_map(|r| {
            assert_eq!(r["onExitCodes"]["containerName"], container["name"], "the rule names the worker container");
            r["onExitCodes"]["values"].as_sequence().cloned().unwrap_or_default()
        })
        .filter_map(|v| v.as_i64())
        .collect();
    assert_eq!(
        fail_at_once,
        vec![Exit::Usage as i64, Exit::StoppedForPerson as i64],
        "exit 2 and 5 fail the Job at once"
    );
    assert_eq!(pod["restartPolicy"], "Never", "podFailurePolicy needs restartPolicy Never");
    let args: Vec<&str> = container["args"].as_sequence().unwrap().iter().filter_map(|a| a.as_str()).collect();
    assert_eq!(args, ["run", "--scheduled"]);

    // The grace period: the program's default, the ConfigMap's value, and the pods' kill timer.
    let settings = renewal_worker::config::Settings::load(Some(&config_dir())).unwrap();
    let data = configmap();
    let grace: u64 = data["RENEWAL__SHUTDOWN__GRACE_SECONDS"].as_str().unwrap().parse().unwrap();
    assert_eq!(grace, settings.shutdown.grace_seconds);
    let deployment = yaml_docs("k8s/deployment.yaml");
    for (what, pod) in [("cronjob", pod), ("deployment", &deployment[0]["spec"]["template"]["spec"])] {
        let kill_after = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
        assert!(kill_after > grace, "{what}: terminationGracePeriodSeconds {kill_after} must exceed the grace {grace}");
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{what}");
        let c = &pod["containers"][0]["securityContext"];
        assert_eq!(c["readOnlyRootFilesystem"], true, "{what}");
        assert_eq!(c["capabilities"]["drop"][0], "ALL", "{what}");
    }

    // The CronJob's five fields and zone give the daemon's instants.
    let zone = cron["spec"]["timeZone"].as_str().unwrap();
    assert_eq!(zone, data["RENEWAL__SCHEDULE__TIME_ZONE"].as_str().unwrap(), "timeZone is schedule.time_zone");
    let tz: chrono_tz::Tz = zone.parse().unwrap();
    let six =
        renewal_worker::schedule::CronSchedule::parse(data["RENEWAL__SCHEDULE__CRON"].as_str().unwrap(), tz).unwrap();
    let five = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .dom_and_dow(true)
        .build()
        .parse(cron["spec"]["schedule"].as_str().unwrap())
        .expect("the CronJob's schedule parses as five fields");
    let mut t = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    for _ in 0..400 {
        let ours = six.next_after(t).unwrap().at;
        let theirs = five.find_next_occurrence(&t.with_timezone(&tz), false).unwrap().with_timezone(&chrono::Utc);
        assert_eq!(ours, theirs, "the CronJob and the daemon fire at the same instants");
        t = ours;
    }

    // The Deployment: `schedule`, probes on the program's endpoints and metrics port.
    let dep = &deployment[0]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(dep["args"][0], "schedule");
    let port = data["RENEWAL__METRICS__LISTEN"].as_str().unwrap().rsplit(':').next().unwrap().parse::<u64>().unwrap();
    assert_eq!(dep["ports"][0]["containerPort"].as_u64(), Some(port));
    assert_eq!(dep["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(dep["readinessProbe"]["httpGet"]["path"], "/readyz");
    let service = &deployment[1];
    assert_eq!(service["metadata"]["annotations"]["prometheus.io/port"].as_str(), Some(port.to_string().as_str()));
    assert_eq!(service["metadata"]["annotations"]["prometheus.io/path"], "/metrics");

    // Every command a manifest, the image or compose names is one of the program's.
    let migrate = yaml("k8s/migrate-job.yaml");
    let mut commands = vec![
        args[0].to_owned(),
        dep["args"][0].as_str().unwrap().to_owned(),
        migrate["spec"]["template"]["spec"]["containers"][0]["args"][0].as_str().unwrap().to_owned(),
    ];
    let dockerfile = read("Dockerfile");
    let cmd = dockerfile.lines().find_map(|l| l.strip_prefix("CMD ")).expect("a CMD");
    let cmd: Vec<String> = serde_json::from_str(cmd).expect("CMD in exec form");
    commands.push(cmd[0].clone());
    assert!(dockerfile.lines().any(|l| l.starts_with("USER ") && l[5..].split(':').all(|p| p.parse::<u32>().is_ok())));
    let compose = yaml("compose.yaml");
    for (name, service) in compose["services"].as_mapping().unwrap() {
        if service["image"].as_str().is_some_and(|i| i.starts_with("renewal-worker")) {
            commands
                .push(service["command"][0].as_str().unwrap_or_else(|| panic!("{name:?} has a command")).to_owned());
        }
        for volume in service["volumes"].as_sequence().cloned().unwrap_or_default() {
            let source = volume.as_str().unwrap().split(':').next().unwrap().to_owned();
            if source.starts_with("./") {
                assert!(deploy().join(&source).exists(), "compose mounts {source}, which does not exist");
            }
        }
    }
    let build = &compose["x-worker"]["build"];
    let context = deploy().join(build["context"].as_str().unwrap());
    assert!(context.join(build["dockerfile"].as_str().unwrap()).is_file(), "compose builds deploy/Dockerfile");
    assert!(build["args"]["GIT_COMMIT"].is_string(), "the image build passes the git commit");
    for command in commands {
        assert!(is_subcommand(&command), "{command:?} is a subcommand of renewal-worker");
    }

    // Every RENEWAL__ key the ConfigMap or compose sets is a real setting: `config` shows it.
    let mut keys: Vec<String> =
        data.as_mapping().unwrap().keys().filter_map(|k| k.as_str().map(str::to_owned)).collect();
    for service in compose["services"].as_mapping().unwrap().values() {
        if let Some(env) = service["environment"].as_mapping() {
            keys.extend(env.keys().filter_map(|k| k.as_str().map(str::to_owned)));
        }
    }
    keys.extend(
        compose["x-worker"]["environment"].as_mapping().unwrap().keys().filter_map(|k| k.as_str().map(str::to_owned)),
    );
    let shown: serde_json::Value = serde_json::from_str(&TestDb::new().ok(&["config", "--json"])).unwrap();
    let settings: BTreeSet<String> =
        shown.as_array().unwrap().iter().map(|row| row["key"].as_str().unwrap().to_owned()).collect();
    for key in keys.iter().filter(|k| k.starts_with("RENEWAL__")) {
        let path: Vec<String> = key.trim_start_matches("RENEWAL__").split("__").map(str::to_lowercase).collect();
        assert!(settings.contains(&path.join(".")), "{key} is not a setting");
    }
}

#[test]
fn every_alert_has_a_summary_a_description_and_a_runbook_in_the_readme() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let anchors: BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("### ").or_else(|| l.strip_prefix("## ")))
        .map(|h| {
            h.to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-')
                .collect::<String>()
                .replace(' ', "-")
        })
        .collect();
    let alerts = yaml("prometheus/alerts.yaml");
    let mut names = Vec::new();
    for rule in alerts["groups"][0]["rules"].as_sequence().unwrap() {
        let name = rule["alert"].as_str().unwrap();
        names.push(name.to_owned());
        for key in ["summary", "description", "runbook_url"] {
            assert!(rule["annotations"][key].as_str().is_some_and(|v| !v.is_empty()), "{name} has {key}");
        }
        let url = rule["annotations"]["runbook_url"].as_str().unwrap();
        let anchor = url.rsplit_once('#').map(|(_, a)| a).unwrap_or_default();
        assert!(anchors.contains(anchor), "{name}: runbook #{anchor} is a README section ({anchors:?})");
        assert!(readme.contains(name), "the README lists {name}");
    }
    assert_eq!(names.len(), 5);
}
