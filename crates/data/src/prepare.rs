//! `prepare`: records -> render -> filter -> decontaminate -> tokenize -> shards, streaming
//! and parallel over cores, with a report of what each filter removed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::dataset::{Manifest, SourceInfo};
use crate::error::{io_at, DataError, Result};
use crate::filter::{FilterConfig, FilterCounts, Filters, OverLength};
use crate::input::{expand_sources, RecordReader};
use crate::records::{parse_trajectory, PlainText, PullRequest};
use crate::render::{render_chatml, render_pr_general, render_pr_python, ChatMlOptions, LossScope, Template};
use crate::rendered::{Rendered, END_OF_TEXT};
use crate::shard::ShardWriter;
use crate::tokenize::TextTokenizer;

/// One dataset of a recipe: where its records are, how to render and filter them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    pub name: String,
    /// Record files or globs, relative to the recipe's directory.
    pub sources: Vec<String>,
    pub template: Template,
    #[serde(default)]
    pub chatml: ChatMlOptions,
    #[serde(default)]
    pub filters: FilterConfig,
}

/// Bumped whenever a template renders, or text tokenizes, differently for the same
/// settings, so that shards prepared before go stale and are prepared again.
/// 2: Qwen's system turn, tools and tool-call tokens in the `qwen` tool style.
pub const RENDER_VERSION: u32 = 2;

impl DatasetSpec {
    /// Hash of everything that shapes the output besides the sources and the tokenizer:
    /// the template and filter settings, the contents of the n-gram reference files
    /// (relative to `base`), and [`RENDER_VERSION`].
    pub fn settings_hash(&self, base: &Path) -> Result<String> {
        let mut references = Vec::with_capacity(self.filters.ngram_references.len());
        for path in &self.filters.ngram_references {
            let path = base.join(path);
            let bytes = std::fs::read(&path).map_err(io_at(&path))?;
            references.push(hex::encode(Sha256::digest(&bytes)));
        }
        let settings = (RENDER_VERSION, self.template, &self.chatml, &self.filters, references);
        let text = serde_json::to_string(&settings).unwrap_or_default();
        Ok(hex::encode(Sha256::digest(text.as_bytes())))
    }
}

/// How `prepare` runs.
#[derive(Debug, Clone)]
pub struct PrepareOptions {
    /// Fail on the first malformed record instead of reporting and skipping it.
    pub strict: bool,
    /// Tokens per shard.
    pub shard_tokens: usize,
    /// Records handed to the worker threads at once, and their bytes at most (a batch
    /// holds at least one record): many large records are not all read at once.
    pub batch_records: usize,
    pub batch_bytes: usize,
    pub progress: bool,
    /// A dataset that keeps no record is an error unless this is set: an empty source or a
    /// wrong template would otherwise train on nothing without a word.
    pub allow_empty: bool,
    /// The largest share of malformed records a dataset may have before preparing it fails.
    pub max_malformed_share: f64,
}

impl Default for PrepareOptions {
    fn default() -> Self {
        Self {
            strict: false,
            shard_tokens: 64 << 20,
            batch_records: 2048,
            batch_bytes: 32 << 20,
            progress: true,
            allow_empty: false,
            max_malformed_share: 0.25,
        }
    }
}

/// What happened to the records of a dataset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PrepareReport {
    pub records: u64,
    pub malformed: u64,
    pub kept: u64,
    pub truncated: u64,
    pub tokens: u64,
    pub loss_tokens: u64,
    pub removed: FilterCounts,
    /// The first few malformed records, `file:line: message`.
    pub malformed_examples: Vec<String>,
}

/// Why a record is not rendered: the reason a report counts and, where there is more to
/// say, what a person looking at the record wants to know (which edit does not apply).
struct Rejection {
    reason: &'static str,
    detail: Option<String>,
}

impl From<&'static str> for Rejection {
    fn from(reason: &'static str) -> Self {
        Self { reason, detail: None }
    }
}

enum Outcome {
    Kept { ids: Vec<u32>, loss: Vec<bool>, hash: [u8; 32] },
    Removed(&'static str),
    Malformed(String),
}

/// Renders one record with the dataset's template; `Err` is a malformed record, `Ok(Err)`
/// a record that is dropped (the reason is counted).
fn render(
    spec: &DatasetSpec,
    filters: &Filters,
    text: &str,
) -> std::result::Result<std::result::Result<Rendered, Rejection>, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let all = spec.chatml.loss == LossScope::All || spec.template != Template::Chatml;
    let mut rendered = match spec.template {
        Template::PrGeneral | Template::PrPython => {
            let pr: PullRequest =
                serde_json::from_value(value).map_err(|e| format!("not a PR record: {e}"))?;
            if let Some(reason) = filters.reject_pr(&pr) {
                return Ok(Err(reason.into()));
            }
            let text = match spec.template {
                Template::PrGeneral => render_pr_general(&pr),
                _ => match render_pr_python(&pr) {
                    Ok(text) => text,
                    Err(why) => {
                        return Ok(Err(Rejection { reason: "edits do not apply", detail: Some(why) }));
                    }
                },
            };
            let mut r = Rendered::default();
            r.text(text, true);
            r
        }
        Template::Chatml => {
            let trajectory = parse_trajectory(&value)?;
            if let Some(reason) = filters.reject_trajectory(&trajectory) {
                return Ok(Err(reason.into()));
            }
            render_chatml(&trajectory, spec.chatml)
        }
        Template::Text => {
            let plain: PlainText =
                serde_json::from_value(value).map_err(|e| format!("not a text record: {e}"))?;
            if plain.repo.as_deref().is_some_and(|r| filters.repo_excluded(r)) {
                return Ok(Err("decontamination: excluded repository".into()));
            }
            let mut r = Rendered::default();
            r.text(plain.text, true);
            r
        }
    };
    rendered.special(END_OF_TEXT, all);
    Ok(Ok(rendered))
}

/// One record as its template renders it, special tokens spelled out, filters not
/// applied: for looking at what the model will see.
pub fn render_record(template: Template, chatml: ChatMlOptions, text: &str) -> Result<String> {
    let spec = DatasetSpec {
        name: String::new(),
        sources: Vec::new(),
        template,
        chatml,
        filters: FilterConfig {
            merged_only: false,
            exclude_bots: false,
            exclude_swe_bench_verified: false,
            ..FilterConfig::default()
        },
    };
    let filters = Filters::new(spec.filters.clone(), Path::new("."))?;
    match render(&spec, &filters, text) {
        Ok(Ok(rendered)) => Ok(rendered.to_display_string()),
        Ok(Err(Rejection { reason, detail: None })) => {
            Err(DataError::Invalid(format!("not rendered: {reason}")))
        }
        Ok(Err(Rejection { reason, detail: Some(detail) })) => {
            Err(DataError::Invalid(format!("not rendered: {reason}: {detail}")))
        }
        Err(message) => Err(DataError::Invalid(message)),
    }
}

fn process(spec: &DatasetSpec, filters: &Filters, tokenizer: &TextTokenizer, text: &str) -> Outcome {
    let rendered = match render(spec, filters, text) {
        Err(message) => return Outcome::Malformed(message),
        Ok(Err(rejection)) => return Outcome::Removed(rejection.reason),
        Ok(Ok(r)) => r,
    };
    let display = rendered.to_display_string();
    if filters.contaminated(&display) {
        return Outcome::Removed("decontamination: n-gram overlap");
    }
    let hash: [u8; 32] = Sha256::digest(display.as_bytes()).into();
    match tokenizer.encode(&rendered) {
        Ok((ids, loss)) => Outcome::Kept { ids, loss, hash },
        Err(e) => Outcome::Malformed(e.to_string()),
    }
}

/// Prepares one dataset into `out` (see `docs/shards.md`); `base` resolves relative
/// source paths.
pub fn prepare_dataset(
    spec: &DatasetSpec,
    base: &Path,
    tokenizer: &TextTokenizer,
    out: &Path,
    options: &PrepareOptions,
) -> Result<(Manifest, PrepareReport)> {
    let filters = Filters::new(spec.filters.clone(), base)?;
    let files = expand_sources(&spec.sources, base)?;
    let mut writer = ShardWriter::new(out, options.shard_tokens)?;
    let mut report = PrepareReport::default();
    let mut seen: HashSet<[u8; 32]> = HashSet::new();
    let mut sources = Vec::new();
    let bar = progress_bar(options.progress, &spec.name);
    for file in &files {
        let mut reader = RecordReader::open(file)?;
        loop {
            let mut batch = Vec::with_capacity(options.batch_records);
            let mut bytes = 0;
            while batch.len() < options.batch_records && bytes < options.batch_bytes {
                match reader.next_record()? {
                    Some(record) => {
                        bytes += record.1.as_ref().map_or(0, String::len);
                        batch.push(record);
                    }
                    None => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            let outcomes: Vec<Outcome> = batch
                .par_iter()
                .map(|(_, text)| match text {
                    Ok(text) => process(spec, &filters, tokenizer, text),
                    Err(why) => Outcome::Malformed(why.clone()),
                })
                .collect();
            for ((line, _), outcome) in batch.iter().zip(outcomes) {
                report.records += 1;
                match outcome {
                    Outcome::Malformed(message) => {
                        let located = DataError::Record { path: file.clone(), line: *line, message };
                        if options.strict {
                            return Err(located);
                        }
                        tracing::warn!("skipping a malformed record: {located}");
                        report.malformed += 1;
                        if report.malformed_examples.len() < 10 {
                            report.malformed_examples.push(located.to_string());
                        }
                    }
                    Outcome::Removed(reason) => report.removed.add(reason),
                    Outcome::Kept { mut ids, mut loss, hash } => {
                        if spec.filters.dedup && !seen.insert(hash) {
                            report.removed.add("exact duplicate");
                            continue;
                        }
                        if let Some(cap) = spec.filters.max_tokens.filter(|&cap| ids.len() > cap) {
                            if spec.filters.over_length == OverLength::Drop {
                                report.removed.add("over the token cap");
                                continue;
                            }
                            ids.truncate(cap);
                            loss.truncate(cap);
                            report.truncated += 1;
                        }
                        report.kept += 1;
                        report.tokens += ids.len() as u64;
                        report.loss_tokens += loss.iter().filter(|&&l| l).count() as u64;
                        writer.push(&ids, &loss)?;
                    }
                }
            }
            bar.set_position(report.records);
            bar.set_message(format!("{} kept, {} tokens", report.kept, report.tokens));
        }
        let (sha256, bytes) = reader.finish()?;
        sources.push(SourceInfo { path: file.to_string_lossy().into_owned(), bytes, sha256 });
    }
    bar.finish_and_clear();
    check_report(spec, &report, options)?;
    let shards = writer.finish()?;
    let manifest = Manifest {
        format: 1,
        name: spec.name.clone(),
        template: serde_json::to_value(spec.template)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        tokenizer_sha256: tokenizer.hash().to_string(),
        settings_sha256: spec.settings_hash(base)?,
        settings: serde_json::to_value(spec).unwrap_or_default(),
        sources,
        shards,
        docs: report.kept,
        tokens: report.tokens,
        loss_tokens: report.loss_tokens,
        report: serde_json::to_value(&report).unwrap_or_default(),
    };
    manifest.write(out)?;
    Ok((manifest, report))
}

/// Refuses a dataset that kept nothing or whose records are mostly malformed, before its
/// manifest makes it look complete, naming it with the counts and the first errors.
fn check_report(spec: &DatasetSpec, report: &PrepareReport, options: &PrepareOptions) -> Result<()> {
    let share = report.malformed as f64 / report.records.max(1) as f64;
    let problem = if report.kept == 0 && !options.allow_empty {
        "kept no record"
    } else if share > options.max_malformed_share {
        "has too many malformed records"
    } else {
        return Ok(());
    };
    let removed: Vec<String> = report.removed.0.iter().map(|(why, n)| format!("{why}: {n}")).collect();
    let mut message = format!(
        "dataset `{}` {problem}: {} records, {} kept, {} malformed ({:.0}%, at most {:.0}% allowed), removed: {}",
        spec.name,
        report.records,
        report.kept,
        report.malformed,
        100.0 * share,
        100.0 * options.max_malformed_share,
        if removed.is_empty() { "none".to_string() } else { removed.join(", ") },
    );
    for example in report.malformed_examples.iter().take(3) {
        message.push_str(&format!("\n  {example}"));
    }
    Err(DataError::Invalid(message))
}

fn progress_bar(enabled: bool, name: &str) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} {prefix}: {pos} records ({per_sec}) {msg} [{elapsed}]",
    ) {
        bar.set_style(style);
    }
    bar.set_prefix(name.to_string());
    bar
}

/// Where a dataset's shards go by default.
pub fn default_output(data_dir: &Path, spec: &DatasetSpec) -> PathBuf {
    data_dir.join(&spec.name)
}
