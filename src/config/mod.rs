//! Typed settings: the embedded `config/default.toml` < `config/default.toml` on disk <
//! `config/$APP_ENV.toml` < `RENEWAL__SECTION__KEY` environment variables.

use std::path::{Path, PathBuf};

use chrono_tz::Tz;

mod log_level;
pub mod sources;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sources::{Provenance, Source, UnknownKey};

const EMBEDDED_DEFAULTS: &str = include_str!("../../config/default.toml");
pub const ENV_PREFIX: &str = "RENEWAL";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration: APP_ENV={env} but {path} does not exist")]
    MissingOverlay { env: String, path: String },
    #[error("configuration: {0}")]
    Schedule(String),
    #[error("configuration: {key} = {value:?}: {problem}")]
    Invalid { key: &'static str, value: String, problem: &'static str },
    #[error("configuration: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Unknown(Vec<UnknownKey>),
    #[error("configuration: --config-dir {0} is not a directory (RENEWAL_CONFIG_DIR or --config-dir must name one)")]
    MissingDir(String),
    #[error("configuration: log.level = {value:?}: {problem}")]
    LogLevel { value: String, problem: String },
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Many(Vec<ConfigError>),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub run: RunSettings,
    pub fees: FeeSettings,
    pub log: LogSettings,
    pub schedule: ScheduleSettings,
    pub shutdown: ShutdownSettings,
    pub metrics: MetricsSettings,
    pub admin: AdminSettings,
    pub api: ApiSettings,
    /// Which source set each value (`config show`).
    #[serde(skip)]
    pub provenance: Provenance,
}

/// Deserializes the merged layers; a value of the wrong type is retried with its default, so
/// every wrong value is named (serde stops at the first), not only the first.
fn every_bad_value(
    merged: config::ConfigBuilder<config::builder::DefaultState>,
    defaults: &config::Config,
) -> Result<Settings, ConfigError> {
    let mut errors = Vec::new();
    let mut patched = merged;
    loop {
        let error = match patched.clone().build()?.try_deserialize::<Settings>() {
            Ok(settings) if errors.is_empty() => return Ok(settings),
            Ok(_) => break,
            Err(e) => e,
        };
        let key = match &error {
            config::ConfigError::Type { key: Some(key), .. } | config::ConfigError::At { key: Some(key), .. } => {
                Some(key.clone())
            }
            _ => None,
        };
        errors.push(ConfigError::Load(error));
        let Some((key, default)) = key.and_then(|k| defaults.get::<config::Value>(&k).ok().map(|v| (k, v))) else {
            break;
        };
        if errors.len() > 64 {
            break;
        }
        patched = patched.set_override(key, default)?;
    }
    Err(if errors.len() == 1 { errors.remove(0) } else { ConfigError::Many(errors) })
}

impl ConfigError {
    /// One line per problem: each unknown key on its own, anything else as one.
    pub fn problems(&self) -> Vec<String> {
        match self {
            Self::Unknown(keys) => keys.iter().map(|k| format!("configuration: {k}")).collect(),
            Self::Many(all) => all.iter().flat_map(Self::problems).collect(),
            other => vec![other.to_string()],
        }
    }
}

/// The sync API (`serve`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ApiSettings {
    pub listen: String,
    pub key_header: String,
    pub keys: KeyList,
    pub idempotency_hours: u32,
    pub paused: bool,
    pub body_limit_bytes: usize,
    pub request_timeout_ms: u64,
    pub max_in_flight: usize,
    pub rate_limit_per_second: u32,
}

/// The daemon (`schedule`) and `run --scheduled`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ScheduleSettings {
    /// Slots are unique per (name, instant) in the database: replicas of one schedule share a name.
    pub name: String,
    /// Six fields with seconds, as tokio-cron-scheduler parses them; checked at start.
    pub cron: String,
    /// Unset: `run.time_zone`.
    #[serde(default)]
    pub time_zone: Option<TimeZone>,
    pub catch_up_days: u32,
    pub check_seconds: u64,
    pub paused: bool,
    /// `serve`: run the schedule in the API's process too.
    pub enabled: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ShutdownSettings {
    pub grace_seconds: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct MetricsSettings {
    /// `/metrics`, `/healthz`, `/readyz` of the long-running commands.
    pub listen: String,
    /// Set: a one-shot `run` PUTs its metrics there once when it ends.
    pub pushgateway_url: String,
    /// The `currency` label of money metrics (amounts are in its minor unit).
    pub currency: String,
}

/// The operator's endpoint of the daemon (`POST /runs`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AdminSettings {
    pub listen: String,
    /// `id:secret` entries; the id is what the log names. Empty: the endpoint is off.
    pub keys: KeyList,
}

/// API keys as `id:secret`, parsed at load; secrets never serialise.
#[derive(Debug, Clone, Default)]
pub struct KeyList(pub Vec<NamedKey>);

#[derive(Debug, Clone)]
pub struct NamedKey {
    pub id: String,
    pub secret: SecretString,
}

impl<'de> Deserialize<'de> for KeyList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Vec::<String>::deserialize(d)?;
        raw.iter()
            .filter(|entry| !entry.trim().is_empty())
            .map(|entry| match entry.trim().split_once(':') {
                Some((id, secret)) if !id.is_empty() && secret.len() >= 16 => {
                    Ok(NamedKey { id: id.to_owned(), secret: SecretString::from(secret.to_owned()) })
                }
                _ => Err(serde::de::Error::custom(
                    "a key must be written id:secret, with a secret of at least 16 characters",
                )),
            })
            .collect::<Result<_, _>>()
            .map(KeyList)
    }
}

impl Serialize for KeyList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|k| format!("{}:***", k.id)))
    }
}

impl KeyList {
    /// The id of the key equal to `presented`, compared in constant time against every key.
    pub fn identify(&self, presented: &str) -> Option<&str> {
        use subtle::ConstantTimeEq;
        let mut found = None;
        for key in &self.0 {
            if bool::from(key.secret.expose_secret().as_bytes().ct_eq(presented.as_bytes())) {
                found = Some(key.id.as_str());
            }
        }
        found
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
    pub busy_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    /// A pooled connection idle longer than this is closed when next acquired (and replaced).
    pub idle_timeout_ms: u64,
    /// A pooled connection older than this is closed when next acquired (and replaced).
    pub max_lifetime_ms: u64,
    pub statement_timeout_ms: u64,
    pub lock_timeout_ms: u64,
    pub idle_in_transaction_timeout_ms: u64,
    pub sqlite_cache_bytes: u64,
    pub sqlite_mmap_bytes: u64,
    pub sqlite_wal_autocheckpoint_pages: u64,
    /// Checkpoints on a connection of their own after each 1,000 cards committed, at most one
    /// per this many milliseconds; 0 leaves them to the writer's autocheckpoint and its close.
    pub sqlite_checkpoint_pause_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RunSettings {
    /// Parsed once, at load: a name that is not an IANA zone is a configuration error.
    pub time_zone: TimeZone,
    pub window_days: u32,
    pub chunk_size: u32,
    pub concurrency: u32,
    pub paused: bool,
    pub max_reissues: u64,
    pub max_fee_total: i64,
    /// A product whose fee is above this is misconfigured: its cards get `003_009`.
    pub max_fee_per_card: i64,
    pub result_retention_days: u32,
    pub default_validity_months: u32,
    pub max_days_ahead: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum FeeMode {
    Ledger,
    Http,
}

/// A setting with a fixed set of values: an unknown one's error lists them all.
macro_rules! choice {
    ($name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(raw: String) -> Result<Self, String> {
                match raw.as_str() {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(format!("{raw:?} is not one of {}", [$($text),+].join(", "))),
                }
            }
        }
    };
}

choice!(FeeMode { Ledger => "ledger", Http => "http" });
choice!(LogFormat { Auto => "auto", Json => "json", Pretty => "pretty" });
choice!(LogDestination { Stderr => "stderr", Stdout => "stdout" });

impl FeeMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ledger => "ledger",
            Self::Http => "http",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct FeeSettings {
    pub mode: FeeMode,
    pub http: HttpFeeSettings,
}

/// The external payment service (`fees.mode = "http"`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct HttpFeeSettings {
    pub url: String,
    /// Sent in `api_key_header` when set. A secret: give it through RENEWAL__FEES__HTTP__API_KEY.
    /// Never printed: it serialises as `***` (or empty when unset).
    #[serde(serialize_with = "serialize_secret")]
    pub api_key: SecretString,
    pub api_key_header: String,
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub max_retries: u32,
    pub retry_total_ms: u64,
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
    pub max_in_flight: u32,
    /// Requests per second across the process; 0 = no limit.
    pub rate_limit_per_second: u32,
    pub max_consecutive_failures: u32,
    /// How long the failure breaker stays open before the next charge may try the service again.
    pub breaker_cool_down_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum LogFormat {
    Auto,
    Json,
    Pretty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum LogDestination {
    Stderr,
    Stdout,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
    pub destination: LogDestination,
    /// Where no progress bar shows a run's progress: a `run_progress` event this often.
    pub progress_seconds: u64,
}

/// The highest `run.max_fee_per_card` accepted: 10^12 per card keeps the sum of a night's fees
/// (millions of cards) inside 64 bits.
const MAX_FEE_PER_CARD_LIMIT: i64 = 1_000_000_000_000;

impl RunSettings {
    /// The rules' configurable bounds.
    pub fn rules(&self) -> crate::domain::eligibility::Rules {
        crate::domain::eligibility::Rules {
            window_days: self.window_days,
            max_fee_per_card: self.max_fee_per_card,
            default_validity_months: self.default_validity_months,
        }
    }
}

impl Settings {
    /// Loads from `config_dir` (default `./config`, or `$RENEWAL_CONFIG_DIR`) and the environment.
    /// A directory named explicitly must exist; `./config` may be absent (the embedded defaults
    /// then stand alone). Every key of every source must be a known setting.
    pub fn load(config_dir: Option<&Path>) -> Result<Self, ConfigError> {
        let explicit = config_dir
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("RENEWAL_CONFIG_DIR").filter(|v| !v.is_empty()).map(PathBuf::from));
        let dir = match explicit {
            Some(dir) if !dir.is_dir() => return Err(ConfigError::MissingDir(dir.display().to_string())),
            Some(dir) => dir,
            None => PathBuf::from("config"),
        };
        let embedded = || config::File::from_str(EMBEDDED_DEFAULTS, config::FileFormat::Toml);
        let mut files = vec![dir.join("default.toml")];
        if let Ok(env) = std::env::var("APP_ENV") {
            let overlay = dir.join(format!("{env}.toml"));
            if !overlay.exists() {
                return Err(ConfigError::MissingOverlay { env, path: overlay.display().to_string() });
            }
            files.push(overlay);
        }
        let environment = || {
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("admin.keys")
                .with_list_parse_key("api.keys")
        };
        // The embedded defaults, parsed once: the known keys, the default layer, and the values a
        // wrongly typed setting is retried with.
        let defaults = config::Config::builder().add_source(embedded()).build()?;
        let typed: Settings = defaults.clone().try_deserialize()?;
        let known = sources::known_keys(&serde_json::to_value(&typed).unwrap_or_default());
        let tree = |config: config::Config| -> Result<Vec<String>, ConfigError> {
            Ok(sources::flatten(&config.try_deserialize::<config::Map<String, config::Value>>()?))
        };
        let keys_of = |builder: config::ConfigBuilder<config::builder::DefaultState>| tree(builder.build()?);
        let mut layers = vec![(Source::Default, tree(defaults.clone())?)];
        let mut builder = config::Config::builder().add_source(embedded());
        for file in files.iter().filter(|f| f.exists()) {
            let source = config::File::from(file.as_path());
            layers.push((
                Source::File(file.display().to_string()),
                keys_of(config::Config::builder().add_source(source.clone()))?,
            ));
            builder = builder.add_source(source);
        }
        let env_names = sources::env_names(ENV_PREFIX);
        for key in keys_of(config::Config::builder().add_source(environment()))? {
            let name = env_names.get(&key).cloned().unwrap_or_else(|| key.to_uppercase().replace('.', "__"));
            layers.push((Source::Env(name), vec![key]));
        }
        let provenance = sources::check(&known, &layers).map_err(ConfigError::Unknown)?;
        let mut settings = every_bad_value(builder.add_source(environment()), &defaults)?;
        settings.provenance = provenance;
        settings.validate()?;
        Ok(settings)
    }

    /// Every problem, not only the first: `config check` names each bad key.
    fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if let Err(problem) = log_level::check(&self.log.level) {
            problems.push(ConfigError::LogLevel { value: self.log.level.clone(), problem });
        }
        let url = &self.database.url;
        if !(url.starts_with("sqlite:") || url.starts_with("postgres:") || url.starts_with("postgresql:")) {
            problems.push(invalid("database.url", redact_url(url), "must start with sqlite: or postgres:"));
        }
        let r = &self.run;
        if !(1..=86_400).contains(&self.log.progress_seconds) {
            problems.push(invalid("log.progress_seconds", self.log.progress_seconds, "must be 1..86400"));
        }
        if !(1..=100_000).contains(&r.chunk_size) {
            problems.push(invalid("run.chunk_size", r.chunk_size, "must be between 1 and 100000"));
        }
        if r.concurrency > 64 {
            problems.push(invalid("run.concurrency", r.concurrency, "must be between 0 (by fee mode) and 64"));
        }
        if r.window_days > 366 {
            problems.push(invalid("run.window_days", r.window_days, "must be at most 366"));
        }
        if r.max_fee_total < 0 {
            problems.push(invalid("run.max_fee_total", r.max_fee_total, "must not be negative"));
        }
        if !(0..=MAX_FEE_PER_CARD_LIMIT).contains(&r.max_fee_per_card) {
            problems.push(invalid("run.max_fee_per_card", r.max_fee_per_card, "must be 0..1000000000000"));
        }
        if !(1..=600).contains(&r.default_validity_months) {
            problems.push(invalid("run.default_validity_months", r.default_validity_months, "must be 1..600"));
        }
        if r.result_retention_days <= r.window_days {
            // Results are how a rerun knows a card was done for its as-of: keep them longer than the window.
            problems.push(invalid("run.result_retention_days", r.result_retention_days, "must exceed run.window_days"));
        }
        for (key, value) in [
            ("database.idle_timeout_ms", self.database.idle_timeout_ms),
            ("database.max_lifetime_ms", self.database.max_lifetime_ms),
        ] {
            if value == 0 {
                problems.push(invalid(key, value, "must be at least 1"));
            }
        }
        if self.database.max_connections == 0 {
            problems.push(invalid("database.max_connections", 0, "must be at least 1"));
        }
        if self.database.sqlite_wal_autocheckpoint_pages == 0 {
            // 0 would turn checkpoints off and let the WAL file grow without bound.
            problems.push(invalid("database.sqlite_wal_autocheckpoint_pages", 0, "must be at least 1"));
        }
        if let Err(e) = self.validate_schedule() {
            problems.push(e);
        }
        if self.fees.mode == FeeMode::Http
            && let Err(e) = self.validate_http()
        {
            problems.push(e);
        }
        match problems.len() {
            0 => Ok(()),
            1 => Err(problems.remove(0)),
            _ => Err(ConfigError::Many(problems)),
        }
    }

    fn validate_http(&self) -> Result<(), ConfigError> {
        let h = &self.fees.http;
        if h.url.is_empty() {
            return Err(invalid("fees.http.url", "", "is required when fees.mode = \"http\""));
        }
        match reqwest::Url::parse(&h.url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            _ => return Err(invalid("fees.http.url", &h.url, "must be an http:// or https:// URL")),
        }
        for (key, value) in [
            ("fees.http.connect_timeout_ms", h.connect_timeout_ms),
            ("fees.http.request_timeout_ms", h.request_timeout_ms),
            ("fees.http.backoff_min_ms", h.backoff_min_ms),
        ] {
            if !(1..=600_000).contains(&value) {
                return Err(invalid(key, value, "must be between 1 and 600000 ms"));
            }
        }
        if h.backoff_max_ms < h.backoff_min_ms {
            return Err(invalid("fees.http.backoff_max_ms", h.backoff_max_ms, "must be at least backoff_min_ms"));
        }
        if !(1..=1024).contains(&h.max_in_flight) {
            return Err(invalid("fees.http.max_in_flight", h.max_in_flight, "must be between 1 and 1024"));
        }
        if !(1..=3_600_000).contains(&h.breaker_cool_down_ms) {
            return Err(invalid(
                "fees.http.breaker_cool_down_ms",
                h.breaker_cool_down_ms,
                "must be between 1 and 3600000 ms",
            ));
        }
        if h.max_consecutive_failures == 0 {
            return Err(invalid("fees.http.max_consecutive_failures", 0, "must be at least 1"));
        }
        if reqwest::header::HeaderName::from_bytes(h.api_key_header.as_bytes()).is_err() {
            return Err(invalid("fees.http.api_key_header", &h.api_key_header, "is not a valid header name"));
        }
        Ok(())
    }

    fn validate_schedule(&self) -> Result<(), ConfigError> {
        let s = &self.schedule;
        if s.name.trim().is_empty() || s.name.len() > 100 {
            return Err(invalid("schedule.name", &s.name, "must be 1 to 100 characters"));
        }
        crate::schedule::CronSchedule::parse(&s.cron, self.schedule_time_zone())
            .map_err(|e| ConfigError::Schedule(e.to_string()))?;
        if s.catch_up_days > 366 {
            return Err(invalid("schedule.catch_up_days", s.catch_up_days, "must be at most 366"));
        }
        if !(1..=3600).contains(&s.check_seconds) {
            return Err(invalid("schedule.check_seconds", s.check_seconds, "must be between 1 and 3600"));
        }
        if !(1..=3600).contains(&self.shutdown.grace_seconds) {
            return Err(invalid("shutdown.grace_seconds", self.shutdown.grace_seconds, "must be between 1 and 3600"));
        }
        for (key, value) in [
            ("metrics.listen", &self.metrics.listen),
            ("admin.listen", &self.admin.listen),
            ("api.listen", &self.api.listen),
        ] {
            if value.parse::<std::net::SocketAddr>().is_err() {
                return Err(invalid(key, value, "must be an address:port such as 127.0.0.1:9464"));
            }
        }
        let push = &self.metrics.pushgateway_url;
        if !push.is_empty() {
            match reqwest::Url::parse(push) {
                Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
                _ => return Err(invalid("metrics.pushgateway_url", push, "must be an http:// or https:// URL")),
            }
        }
        let a = &self.api;
        if reqwest::header::HeaderName::from_bytes(a.key_header.as_bytes()).is_err() {
            return Err(invalid("api.key_header", &a.key_header, "is not a valid header name"));
        }
        if !(1..=24 * 30).contains(&a.idempotency_hours) {
            return Err(invalid("api.idempotency_hours", a.idempotency_hours, "must be between 1 and 720"));
        }
        if !(256..=1_048_576).contains(&a.body_limit_bytes) {
            return Err(invalid("api.body_limit_bytes", a.body_limit_bytes, "must be between 256 and 1048576"));
        }
        if !(100..=600_000).contains(&a.request_timeout_ms) {
            return Err(invalid("api.request_timeout_ms", a.request_timeout_ms, "must be between 100 and 600000"));
        }
        if !(1..=100_000).contains(&a.max_in_flight) {
            return Err(invalid("api.max_in_flight", a.max_in_flight, "must be between 1 and 100000"));
        }
        if self.metrics.currency.len() != 3 || !self.metrics.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(invalid("metrics.currency", &self.metrics.currency, "must be an ISO 4217 code such as KRW"));
        }
        Ok(())
    }

    /// The schedule's time zone: `schedule.time_zone`, else `run.time_zone`.
    pub fn schedule_time_zone(&self) -> Tz {
        self.schedule.time_zone.unwrap_or(self.run.time_zone).0
    }

    /// The schedule as parsed at load (validated there, so this cannot fail afterwards).
    pub fn cron_schedule(&self) -> Result<crate::schedule::CronSchedule, ConfigError> {
        crate::schedule::CronSchedule::parse(&self.schedule.cron, self.schedule_time_zone())
            .map_err(|e| ConfigError::Schedule(e.to_string()))
    }

    /// The business date's time zone (`run.time_zone`).
    pub fn time_zone(&self) -> Tz {
        self.run.time_zone.0
    }

    /// Chunks in flight at once (`run.concurrency`; 0 = by fee mode). In ledger mode the
    /// database does all the work and two chunks keep it busy; in HTTP mode each chunk waits for
    /// its charges, and more chunks in flight keep the service's `max_in_flight` slots full (the
    /// benchmark: 0.66 of the ideal at 2, 0.87 at 8, no more at 16).
    pub fn chunk_tasks(&self) -> u32 {
        match (self.run.concurrency, self.fees.mode) {
            (0, FeeMode::Ledger) => 2,
            (0, FeeMode::Http) => 8,
            (n, _) => n,
        }
    }

    /// The settings as JSON with secrets removed, for `config` output and run rows.
    pub fn redacted(&self) -> serde_json::Value {
        let mut copy = self.clone();
        copy.database.url = redact_url(&copy.database.url);
        serde_json::to_value(copy).unwrap_or(serde_json::Value::Null)
    }
}

/// An IANA time zone, parsed when the settings load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeZone(pub Tz);

impl<'de> Deserialize<'de> for TimeZone {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse::<Tz>()
            .map(TimeZone)
            .map_err(|_| serde::de::Error::custom(format!("{name:?} is not an IANA time zone")))
    }
}

impl Serialize for TimeZone {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.name())
    }
}

fn serialize_secret<S: serde::Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if secret.expose_secret().is_empty() { "" } else { "***" })
}

fn invalid(key: &'static str, value: impl ToString, problem: &'static str) -> ConfigError {
    ConfigError::Invalid { key, value: value.to_string(), problem }
}

/// A database URL safe to print: a password, in the user info or in a `password=` query
/// parameter, is replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let base = match base.split_once("://").and_then(|(scheme, rest)| Some((scheme, rest.split_once('@')?))) {
        Some((scheme, (userinfo, host))) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
            None => base.to_owned(),
        },
        None => base.to_owned(),
    };
    let Some(query) = query else { return base };
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") || k.eq_ignore_ascii_case("sslpassword") => {
                format!("{k}=***")
            }
            _ => p.to_owned(),
        })
        .collect();
    format!("{base}?{}", params.join("&"))
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_survive_redaction() {
        assert_eq!(redact_url("postgres://app:s3cret@db:5432/renewal"), "postgres://app:***@db:5432/renewal");
        assert_eq!(
            redact_url("postgres://db/renewal?user=app&password=s3cret"),
            "postgres://db/renewal?user=app&password=***"
        );
        assert_eq!(redact_url("sqlite://renewal.db"), "sqlite://renewal.db");
        assert_eq!(redact_url("postgres://app@db/renewal"), "postgres://app@db/renewal");
    }
}
