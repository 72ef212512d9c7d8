//! Filters and decontamination, each configurable and counted.

use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{io_at, Result};
use crate::records::pr::{PullRequest, User};
use crate::records::Trajectory;

/// The twelve repositories behind SWE-Bench Verified, whose PRs the paper drops, each with
/// the names it had before: GitHub redirects an old name, and records mined or downloaded
/// before a move still carry it.
pub const SWE_BENCH_VERIFIED_REPOS: [(&str, &[&str]); 12] = [
    ("astropy/astropy", &[]),
    ("django/django", &[]),
    ("matplotlib/matplotlib", &[]),
    ("mwaskom/seaborn", &[]),
    ("pallets/flask", &["mitsuhiko/flask"]),
    ("psf/requests", &["kennethreitz/requests"]),
    ("pydata/xarray", &[]),
    ("pylint-dev/pylint", &["PyCQA/pylint"]),
    ("pytest-dev/pytest", &[]),
    ("scikit-learn/scikit-learn", &[]),
    ("sphinx-doc/sphinx", &[]),
    ("sympy/sympy", &[]),
];

/// What to do with a sample above the token cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OverLength {
    #[default]
    Drop,
    Truncate,
}

/// Which trajectories to keep by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    #[default]
    Any,
    Pass,
    Fail,
}

/// Filter settings of a dataset. Every field has a default; a recipe names only what it
/// changes, and an unknown key is an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilterConfig {
    /// Keep merged PRs only.
    pub merged_only: bool,
    /// Drop PRs by `[bot]` accounts and by the logins in `bot_logins`.
    pub exclude_bots: bool,
    pub bot_logins: Vec<String>,
    /// File extensions (without the dot) that count as the language of `min_files`/`max_files`.
    pub language_extensions: Vec<String>,
    /// Bounds on the number of changed files of that language (the paper keeps 1-5 Python files).
    pub min_files: Option<usize>,
    pub max_files: Option<usize>,
    /// Token cap of a sample, and what happens above it.
    pub max_tokens: Option<usize>,
    pub over_length: OverLength,
    /// Trajectories by outcome; those that do not say are dropped unless `any`.
    pub outcome: Outcome,
    /// Drop samples whose rendered text was seen before.
    pub dedup: bool,
    /// Drop every record of the SWE-Bench Verified repositories.
    pub exclude_swe_bench_verified: bool,
    pub exclude_repos: Vec<String>,
    pub exclude_instance_ids: Vec<String>,
    /// Files of reference text (e.g. benchmark prompts); a sample sharing an n-gram of
    /// words with any of them is dropped. Entries within a file are separated by `---` lines.
    pub ngram_references: Vec<PathBuf>,
    pub ngram_words: usize,
}

impl Default for FilterConfig {
    fn default() -> Self {
        Self {
            merged_only: true,
            exclude_bots: true,
            bot_logins: Vec::new(),
            language_extensions: Vec::new(),
            min_files: None,
            max_files: None,
            max_tokens: None,
            over_length: OverLength::Drop,
            outcome: Outcome::Any,
            dedup: true,
            exclude_swe_bench_verified: true,
            exclude_repos: Vec::new(),
            exclude_instance_ids: Vec::new(),
            ngram_references: Vec::new(),
            ngram_words: 13,
        }
    }
}

/// Counts per reason, for the closing report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FilterCounts(pub BTreeMap<String, u64>);

impl FilterCounts {
    pub fn add(&mut self, reason: &str) {
        *self.0.entry(reason.to_string()).or_default() += 1;
    }
    pub fn merge(&mut self, other: &FilterCounts) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_default() += v;
        }
    }
}

/// The filters of one dataset, ready to apply.
pub struct Filters {
    pub config: FilterConfig,
    excluded_repos: HashSet<String>,
    excluded_ids: HashSet<String>,
    ngrams: HashSet<u64>,
}

impl Filters {
    /// Prepares the filters; relative reference paths resolve against `base` (the recipe's
    /// directory).
    pub fn new(config: FilterConfig, base: &std::path::Path) -> Result<Self> {
        let mut excluded_repos: HashSet<String> =
            config.exclude_repos.iter().map(|r| r.to_ascii_lowercase()).collect();
        if config.exclude_swe_bench_verified {
            let names =
                SWE_BENCH_VERIFIED_REPOS.iter().flat_map(|(name, former)| former.iter().chain([name]));
            excluded_repos.extend(names.map(|r| r.to_ascii_lowercase()));
        }
        let excluded_ids = config.exclude_instance_ids.iter().cloned().collect();
        let mut ngrams = HashSet::new();
        for path in &config.ngram_references {
            let path = base.join(path);
            let text = std::fs::read_to_string(&path).map_err(io_at(&path))?;
            for entry in text.split("\n---\n") {
                ngrams.extend(word_ngrams(entry, config.ngram_words));
            }
        }
        Ok(Self { config, excluded_repos, excluded_ids, ngrams })
    }

    /// Whether decontamination drops every record of this repository (`owner/name`).
    pub fn repo_excluded(&self, repo: &str) -> bool {
        self.excluded_repos.contains(&repo.to_ascii_lowercase())
    }

    /// Why a PR is dropped, or `None` to keep it.
    pub fn reject_pr(&self, pr: &PullRequest) -> Option<&'static str> {
        let c = &self.config;
        if self.repo_excluded(&pr.repo) {
            return Some("decontamination: excluded repository");
        }
        if pr.upstream.as_deref().is_some_and(|upstream| self.repo_excluded(upstream)) {
            return Some("decontamination: fork of an excluded repository");
        }
        if c.merged_only && !pr.merged {
            return Some("not merged");
        }
        let is_bot = |user: &User| user.is_bot() || c.bot_logins.iter().any(|b| b == &user.login);
        let bot_commits = !pr.commits.is_empty() && pr.commits.iter().all(|commit| is_bot(&commit.author));
        if c.exclude_bots && (is_bot(&pr.user) || bot_commits) {
            return Some("bot author");
        }
        if !c.language_extensions.is_empty() {
            let count = pr
                .files
                .iter()
                .filter(|f| {
                    f.filename
                        .rsplit_once('.')
                        .is_some_and(|(_, ext)| c.language_extensions.iter().any(|e| e == ext))
                })
                .count();
            if c.min_files.is_some_and(|min| count < min) {
                return Some("too few files of the language");
            }
            if c.max_files.is_some_and(|max| count > max) {
                return Some("too many files of the language");
            }
        }
        None
    }

    /// Why a trajectory is dropped, or `None` to keep it.
    pub fn reject_trajectory(&self, t: &Trajectory) -> Option<&'static str> {
        let repo = t.repo.clone().or_else(|| t.instance_id.as_deref().and_then(repo_of_instance));
        if repo.is_some_and(|r| self.repo_excluded(&r)) {
            return Some("decontamination: excluded repository");
        }
        if t.instance_id.as_ref().is_some_and(|id| self.excluded_ids.contains(id)) {
            return Some("decontamination: excluded instance id");
        }
        match (self.config.outcome, t.resolved) {
            (Outcome::Any, _) | (Outcome::Pass, Some(true)) | (Outcome::Fail, Some(false)) => None,
            (_, None) => Some("outcome unknown"),
            (Outcome::Pass, Some(false)) => Some("failed trajectory"),
            (Outcome::Fail, Some(true)) => Some("passed trajectory"),
        }
    }

    /// Whether rendered text shares an n-gram of words with the reference set.
    pub fn contaminated(&self, text: &str) -> bool {
        !self.ngrams.is_empty()
            && word_ngrams(text, self.config.ngram_words).any(|h| self.ngrams.contains(&h))
    }
}

/// SWE-bench style instance ids name their repository: `owner__name-1234`.
fn repo_of_instance(id: &str) -> Option<String> {
    let (owner, rest) = id.split_once("__")?;
    let (name, _) = rest.rsplit_once('-')?;
    Some(format!("{owner}/{name}"))
}

/// Hashes of the n-grams of lowercased words (runs of letters, digits and `_`).
pub fn word_ngrams(text: &str, n: usize) -> impl Iterator<Item = u64> {
    let words: Vec<String> = text
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let n = n.max(1);
    let count = if words.len() >= n { words.len() - n + 1 } else { 0 };
    (0..count).map(move |i| {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        words[i..i + n].hash(&mut hasher);
        hasher.finish()
    })
}
