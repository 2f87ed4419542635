//! Where each setting comes from: the embedded defaults, the files of the configuration
//! directory, `RENEWAL__SECTION__KEY` variables. Every key a source sets is checked against the
//! keys `Settings` has, so a misspelt key is an error that names it and the nearest known key,
//! never a line silently ignored; and `config show` can say which source set each value.

use std::collections::{BTreeMap, BTreeSet};

use config::{Map, Value, ValueKind};

/// One source of settings, as `config show` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `config/default.toml` as compiled into the binary.
    Default,
    /// A file of the configuration directory.
    File(String),
    /// An environment variable.
    Env(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::File(path) => write!(f, "file {path}"),
            Self::Env(name) => write!(f, "env {name}"),
        }
    }
}

/// Which source set each key (the last one to set it wins, as in the merge).
#[derive(Debug, Clone, Default)]
pub struct Provenance(pub BTreeMap<String, Source>);

impl Provenance {
    pub fn of(&self, key: &str) -> Source {
        self.0.get(key).cloned().unwrap_or(Source::Default)
    }
}

/// A key no setting has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKey {
    pub key: String,
    pub source: Source,
    pub nearest: Option<String>,
}

impl std::fmt::Display for UnknownKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown key {} ({})", self.key, self.source)?;
        match &self.nearest {
            Some(nearest) => write!(f, "; did you mean {nearest}?"),
            None => Ok(()),
        }
    }
}

/// The dotted keys of a source's tree; an array is one value, as a table's leaf is.
pub fn flatten(map: &Map<String, Value>) -> Vec<String> {
    let mut keys = Vec::new();
    walk(map, "", &mut keys);
    keys
}

fn walk(map: &Map<String, Value>, prefix: &str, keys: &mut Vec<String>) {
    for (name, value) in map {
        let key = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
        match &value.kind {
            ValueKind::Table(inner) if !inner.is_empty() => walk(inner, &key, keys),
            _ => keys.push(key),
        }
    }
}

/// The dotted keys of the settings' JSON form (every field, `null` ones included).
pub fn known_keys(settings: &serde_json::Value) -> BTreeSet<String> {
    fn walk(value: &serde_json::Value, prefix: &str, keys: &mut BTreeSet<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (name, inner) in map {
                    let key = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
                    walk(inner, &key, keys);
                }
            }
            _ => {
                keys.insert(prefix.to_owned());
            }
        }
    }
    let mut keys = BTreeSet::new();
    walk(settings, "", &mut keys);
    keys
}

/// The variables the environment source reads, by the key each sets.
pub fn env_names(prefix: &str) -> BTreeMap<String, String> {
    let head = format!("{prefix}__");
    std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter_map(|name| {
            let rest = name.strip_prefix(&head)?;
            Some((rest.to_lowercase().replace("__", "."), name.clone()))
        })
        .collect()
}

/// Checks every source's keys against `known` and records which source set each known one.
pub fn check(known: &BTreeSet<String>, sources: &[(Source, Vec<String>)]) -> Result<Provenance, Vec<UnknownKey>> {
    let mut provenance = Provenance::default();
    let mut unknown = Vec::new();
    for (source, keys) in sources {
        for key in keys {
            if known.contains(key) {
                provenance.0.insert(key.clone(), source.clone());
            } else {
                unknown.push(UnknownKey { key: key.clone(), source: source.clone(), nearest: nearest(known, key) });
            }
        }
    }
    if unknown.is_empty() { Ok(provenance) } else { Err(unknown) }
}

/// The known key closest to `key`, when it is close enough to be a typo of it.
pub fn nearest<'a>(known: impl IntoIterator<Item = &'a String>, key: &str) -> Option<String> {
    known
        .into_iter()
        .map(|k| (strsim::damerau_levenshtein(k, key), k))
        .filter(|(distance, k)| *distance <= (k.len() / 3).max(2))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> BTreeSet<String> {
        ["run.chunk_size", "run.concurrency", "log.format", "fees.http.url"].iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn a_misspelt_key_names_the_nearest_known_one() {
        let sources = vec![(Source::Env("RENEWAL__RUN__CHUNKSIZE".into()), vec!["run.chunksize".to_owned()])];
        let unknown = check(&known(), &sources).unwrap_err();
        assert_eq!(
            unknown[0].to_string(),
            "unknown key run.chunksize (env RENEWAL__RUN__CHUNKSIZE); did you mean run.chunk_size?"
        );
    }

    #[test]
    fn a_key_far_from_every_known_one_names_none() {
        assert_eq!(nearest(&known(), "database.password"), None);
    }

    #[test]
    fn the_last_source_that_sets_a_key_is_its_provenance() {
        let sources = vec![
            (Source::Default, vec!["run.chunk_size".to_owned(), "log.format".to_owned()]),
            (Source::File("config/prod.toml".into()), vec!["run.chunk_size".to_owned()]),
        ];
        let provenance = check(&known(), &sources).unwrap();
        assert_eq!(provenance.of("run.chunk_size"), Source::File("config/prod.toml".into()));
        assert_eq!(provenance.of("log.format"), Source::Default);
    }
}
