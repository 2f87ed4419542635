//! The commands that read and print: each result as a table, JSON (`output::views`) or CSV.

use std::collections::BTreeMap;

use super::{AppError, Exit};
use crate::batch::ReissueOutcome;
use crate::config::Settings;
use crate::domain::card_number::mask;
use crate::output::views::{
    ChargeRow, CheckView, CodeLine, DateView, PlanView, RunRow, RunView, SettingRow, code_lines,
};
use crate::output::{self, Format};
use crate::report;
use crate::store::{CodeCount, RunFilter, RunStatus, RunSummary, Store};

/// What every printing command is told about its output.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ui {
    pub format: Format,
    pub quiet: bool,
}

fn failed(e: String) -> AppError {
    AppError::Failed(e)
}

/// A run's summary, as `run` and `demo` print it (CSV: one line per code).
pub fn run_summary(ui: Ui, s: &RunSummary, card: Option<&ReissueOutcome>) -> Result<(), AppError> {
    match ui.format {
        Format::Table => {
            print!("{}", report::render(s));
            if let Some(card) = card {
                print!("{}", report::render_card(card));
            }
            Ok(())
        }
        Format::Json => output::json(&RunView::of(s, &BTreeMap::new(), card)).map_err(failed),
        Format::Csv => output::csv(&["code", "count", "fee", "message"], &code_rows(&s.counts)).map_err(failed),
    }
}

/// A CSV row is flat (the csv crate writes no nested or flattened fields).
#[derive(serde::Serialize)]
struct CodeRow {
    code: String,
    count: i64,
    fee: i64,
    message: String,
}

/// The JSON's per-code lines, one CSV row each.
fn code_rows(counts: &BTreeMap<String, CodeCount>) -> Vec<CodeRow> {
    code_lines(counts)
        .into_iter()
        .map(|(code, CodeLine { count, fee, message })| CodeRow { code, count, fee, message })
        .collect()
}

/// `report [RUN]` and `report --as-of D`.
pub async fn report<S: Store>(
    ui: Ui,
    store: &S,
    run_id: Option<i64>,
    as_of: Option<chrono::NaiveDate>,
) -> Result<Exit, AppError> {
    let runs = match as_of {
        Some(as_of) => {
            let filter = RunFilter { last: u32::MAX, status: None, as_of: Some(as_of) };
            let mut runs = store.run_history(&filter).await?;
            runs.reverse();
            runs
        }
        None => match store.run_summary(run_id).await? {
            Some(summary) => vec![summary],
            None => {
                return Err(AppError::Usage(match run_id {
                    Some(id) => format!("run {id} not found"),
                    None => "no run recorded yet".to_owned(),
                }));
            }
        },
    };
    if ui.format == Format::Csv {
        let mut rows = Vec::new();
        for run in &runs {
            rows.extend(store.run_charges(run.run_id).await?.into_iter().map(|c| ChargeRow {
                run_id: c.run_id,
                card: mask(&c.card_no),
                card_apply_no: c.card_apply_no,
                amount: c.amount,
                reference: c.reference,
            }));
        }
        output::csv(&["run_id", "card", "card_apply_no", "amount", "reference"], &rows).map_err(failed)?;
        return Ok(Exit::Completed);
    }
    match as_of {
        Some(as_of) => {
            let api = store.api_counts(as_of).await?;
            let view = DateView::of(as_of, &runs, &api);
            match ui.format {
                Format::Json => output::json(&view).map_err(failed)?,
                _ => print!("{}{}", report::render_date(&view), report::render_api(as_of, &api)),
            }
        }
        None => {
            let summary = &runs[0];
            let api = store.api_counts(summary.as_of).await?;
            match ui.format {
                Format::Json => output::json(&RunView::of(summary, &api, None)).map_err(failed)?,
                _ => print!("{}{}", report::render(summary), report::render_api(summary.as_of, &api)),
            }
        }
    }
    Ok(Exit::Completed)
}

/// The columns of `runs --output csv`, in `RunRow`'s field order.
const RUN_ROW_COLUMNS: &[&str] = &[
    "run_id",
    "as_of",
    "trigger",
    "scope",
    "status",
    "abandoned",
    "started_at",
    "duration_ms",
    "read",
    "reissued",
    "ineligible",
    "failed",
    "pending",
    "fee_total",
];

/// `runs`.
pub async fn runs<S: Store>(ui: Ui, store: &S, filter: RunFilter) -> Result<Exit, AppError> {
    let rows: Vec<RunRow> = store.run_history(&filter).await?.iter().map(RunRow::of).collect();
    match ui.format {
        Format::Json => output::json(&rows).map_err(failed)?,
        Format::Csv => output::csv(RUN_ROW_COLUMNS, &rows).map_err(failed)?,
        Format::Table => print!("{}", report::render_runs(&rows)),
    }
    Ok(Exit::Completed)
}

pub fn parse_status(raw: &str) -> Result<RunStatus, AppError> {
    RunStatus::parse(raw).ok_or_else(|| {
        let all: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
        AppError::Usage(format!("--status {raw:?} is not one of {}", all.join(", ")))
    })
}

/// `explain`.
pub fn plan(ui: Ui, as_of: chrono::NaiveDate, plan: &str) -> Result<Exit, AppError> {
    let view = PlanView { as_of, plan: plan.lines().map(str::to_owned).collect() };
    match ui.format {
        Format::Json => output::json(&view).map_err(failed)?,
        Format::Csv => {
            #[derive(serde::Serialize)]
            struct Line<'a> {
                plan: &'a str,
            }
            output::csv(&["plan"], &view.plan.iter().map(|l| Line { plan: l }).collect::<Vec<_>>()).map_err(failed)?;
        }
        Format::Table => println!("{plan}"),
    }
    Ok(Exit::Completed)
}

/// `config show`: every key, its value (secrets redacted) and its source.
pub fn config_show(ui: Ui, settings: &Settings) -> Result<Exit, AppError> {
    let values = settings.redacted();
    let rows: Vec<SettingRow> = crate::config::sources::known_keys(&values)
        .into_iter()
        .map(|key| {
            let value = key.split('.').fold(&values, |v, part| &v[part]).clone();
            let source = settings.provenance.of(&key).to_string();
            SettingRow { key, value, source }
        })
        .collect();
    match ui.format {
        Format::Json => output::json(&rows).map_err(failed)?,
        Format::Csv => {
            #[derive(serde::Serialize)]
            struct Flat<'a> {
                key: &'a str,
                value: String,
                source: &'a str,
            }
            let flat: Vec<Flat> =
                rows.iter().map(|r| Flat { key: &r.key, value: r.value.to_string(), source: &r.source }).collect();
            output::csv(&["key", "value", "source"], &flat).map_err(failed)?;
        }
        Format::Table => print!("{}", report::render_settings(&rows)),
    }
    Ok(Exit::Completed)
}

/// `config check`: the load's verdict (problems is empty when it loaded).
pub fn config_check(ui: Ui, problems: Vec<String>) -> Exit {
    let ok = problems.is_empty();
    match ui.format {
        Format::Json | Format::Csv => {
            let _ = output::json(&CheckView { ok, problems: problems.clone() });
        }
        Format::Table if ok => println!("configuration ok"),
        Format::Table => {}
    }
    for problem in &problems {
        eprintln!("error: {problem}");
    }
    if ok { Exit::Completed } else { Exit::Usage }
}
