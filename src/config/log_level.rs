//! `log.level` is an `EnvFilter` directive list. The library accepts a bare word as a target
//! to enable (so `verbose` silences everything else) and any target name at all; both turn a
//! typo into a quiet log. Here a directive must be a level, or `target=level` for a target this
//! binary's code or libraries log under.

/// The levels a directive may name (as `EnvFilter` reads them, case-insensitive).
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// The first path segment of every target that logs in this binary.
const TARGET_ROOTS: [&str; 19] = [
    "renewal",
    "renewal_worker",
    "bench",
    "sqlx",
    "sqlx_core",
    "sqlx_postgres",
    "sqlx_sqlite",
    "hyper",
    "hyper_util",
    "h2",
    "reqwest",
    "rustls",
    "tower",
    "tower_http",
    "axum",
    "tokio",
    "tokio_util",
    "tokio_cron_scheduler",
    "metrics_exporter_prometheus",
];

/// Why `level` is not a directive list this binary accepts.
pub fn check(level: &str) -> Result<(), String> {
    if level.trim().is_empty() {
        return Err(format!("is empty: name a level ({})", LEVELS.join(", ")));
    }
    for directive in level.split(',').map(str::trim) {
        let (target, lvl) = match directive.split_once('=') {
            Some((target, lvl)) => (Some(target.trim()), lvl.trim()),
            None => (None, directive),
        };
        if !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(lvl)) {
            let hint = match super::sources::nearest(&LEVELS.map(String::from), &lvl.to_lowercase()) {
                Some(near) => format!("; did you mean {near}?"),
                None => String::new(),
            };
            return Err(format!("{lvl:?} is not a level (one of {}){hint}", LEVELS.join(", ")));
        }
        if let Some(target) = target {
            let root = target.split("::").next().unwrap_or(target);
            if !TARGET_ROOTS.contains(&root) {
                let hint = match super::sources::nearest(&TARGET_ROOTS.map(String::from), root) {
                    Some(near) => format!("; did you mean {near}?"),
                    None => String::new(),
                };
                return Err(format!("{target:?} is not a target this program logs under{hint}"));
            }
        }
    }
    tracing_subscriber::EnvFilter::try_new(level).map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn levels_and_known_targets_pass() {
        for ok in ["info", "WARN", "info,sqlx=warn", "renewal_worker::batch=debug,info", "off"] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn a_bare_word_or_an_unknown_target_is_refused_with_a_hint() {
        assert_eq!(
            check("verbose").unwrap_err(),
            "\"verbose\" is not a level (one of trace, debug, info, warn, error, off)"
        );
        assert_eq!(
            check("renewal_workr=debug").unwrap_err(),
            "\"renewal_workr\" is not a target this program logs under; did you mean renewal_worker?"
        );
        assert!(check("info,sqlx=loud").unwrap_err().contains("\"loud\" is not a level"));
        assert!(check("").is_err());
    }
}
