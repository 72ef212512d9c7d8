//! Filters and decontamination, each configurable and counted.

use std::collections::{BTreeMap, HashMap, HashSet};
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
    /// Files of reference text (e.g. benchmark prompts), entries separated by `---` lines;
    /// a sample that holds more than `ngram_threshold` of an entry's n-grams of words is
    /// dropped.
    pub ngram_references: Vec<PathBuf>,
    pub ngram_words: usize,
    /// The share of a reference entry's distinct n-grams a sample may hold (the paper's
    /// tau, 0.10); 0, the default, drops a sample that shares any n-gram at all.
    #[serde(skip_serializing_if = "is_zero")]
    pub ngram_threshold: f64,
}

fn is_zero(value: &f64) -> bool {
    *value == 0.0
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
            ngram_threshold: 0.0,
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
    references: References,
}

/// The reference entries' n-grams: which entries hold each, and how many each holds.
#[derive(Default)]
struct References {
    entries_of: HashMap<u64, Vec<u32>>,
    sizes: Vec<usize>,
}

impl References {
    fn add_entry(&mut self, text: &str, n: usize) {
        let id = self.sizes.len() as u32;
        let distinct: HashSet<u64> = word_ngrams(text, n).collect();
        if distinct.is_empty() {
            return;
        }
        self.sizes.push(distinct.len());
        for ngram in distinct {
            self.entries_of.entry(ngram).or_default().push(id);
        }
    }

    /// Whether `text` holds more than `threshold` of some entry's n-grams (any, at 0).
    fn overlaps(&self, text: &str, n: usize, threshold: f64) -> bool {
        let mut matched = HashSet::new();
        let mut held = vec![0usize; self.sizes.len()];
        for ngram in word_ngrams(text, n) {
            let Some(entries) = self.entries_of.get(&ngram) else { continue };
            if !matched.insert(ngram) {
                continue;
            }
            for &entry in entries {
                let entry = entry as usize;
                held[entry] += 1;
                if held[entry] as f64 > threshold * self.sizes[entry] as f64 {
                    return true;
                }
            }
        }
        false
    }
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
        if !(0.0..1.0).contains(&config.ngram_threshold) {
            return Err(crate::error::DataError::Invalid(format!(
                "ngram_threshold = {} must be in [0, 1)",
                config.ngram_threshold
            )));
        }
        let mut references = References::default();
        for path in &config.ngram_references {
            let path = base.join(path);
            let text = std::fs::read_to_string(&path).map_err(io_at(&path))?;
            for entry in reference_entries(&text) {
                references.add_entry(&entry, config.ngram_words);
            }
        }
        Ok(Self { config, excluded_repos, excluded_ids, references })
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

    /// Whether rendered text holds more than the threshold's share of a reference entry's
    /// n-grams of words.
    pub fn contaminated(&self, text: &str) -> bool {
        !self.references.sizes.is_empty()
            && self.references.overlaps(text, self.config.ngram_words, self.config.ngram_threshold)
    }
}

/// The entries of a reference file: the text between lines that are `---` alone (a CRLF
/// file too).
fn reference_entries(text: &str) -> Vec<String> {
    let mut entries = vec![String::new()];
    for line in text.split_inclusive('\n') {
        if line.trim_end_matches(['\n', '\r']) == "---" {
            entries.push(String::new());
        } else if let Some(entry) = entries.last_mut() {
            entry.push_str(line);
        }
    }
    entries
}

/// SWE-bench style instance ids name their repository: `owner__name-1234`.
fn repo_of_instance(id: &str) -> Option<String> {
    let (owner, rest) = id.split_once("__")?;
    let (name, _) = rest.rsplit_once('-')?;
    Some(format!("{owner}/{name}"))
}

/// Hashes of the n-grams of lowercased words (runs of letters, digits and `_`), streamed:
/// a window of the last `n` words' hashes, so a 50 MB sample costs no more than a short one.
pub fn word_ngrams(text: &str, n: usize) -> impl Iterator<Item = u64> + '_ {
    let n = n.max(1);
    let mut window = std::collections::VecDeque::with_capacity(n);
    let words = text.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|w| !w.is_empty());
    words.filter_map(move |word| {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        word.chars().flat_map(char::to_lowercase).for_each(|c| c.hash(&mut hasher));
        if window.len() == n {
            window.pop_front();
        }
        window.push_back(hasher.finish());
        (window.len() == n).then(|| {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            window.hash(&mut hasher);
            hasher.finish()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Filters with one reference file holding `entries`, at threshold `tau`.
    fn filters(entries: &[String], tau: f64) -> Filters {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ref.txt"), entries.join("\n---\n")).unwrap();
        let config = FilterConfig {
            ngram_references: vec![dir.path().join("ref.txt")],
            ngram_threshold: tau,
            ..FilterConfig::default()
        };
        Filters::new(config, dir.path()).unwrap()
    }

    /// `count` distinct words: `w0 w1 ...`, each 13 of them one n-gram of the entry.
    fn words(from: usize, count: usize) -> String {
        (from..from + count).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn a_sample_is_dropped_above_the_share_of_an_entrys_ngrams_it_holds() {
        // An entry of 112 words holds 100 distinct 13-grams.
        let entry = words(0, 112);
        // A sample quoting 17 of its words holds 5 of them (5%); one quoting 32 holds 20%.
        let (five, twenty) = (words(0, 17), words(50, 32));
        // 7 n-grams (7%) quoted twice are still 7, under tau; counted twice they would be 14.
        let twice = format!("{} and again {}", words(0, 19), words(0, 19));
        assert!(!filters(std::slice::from_ref(&entry), 0.10).contaminated(&twice));
        let sample = |quote: &str| format!("Fix the parser. {quote} Thanks for the review!");
        let paper = filters(std::slice::from_ref(&entry), 0.10);
        assert!(!paper.contaminated(&sample(&five)), "5% of an entry is under tau = 0.10");
        assert!(paper.contaminated(&sample(&twenty)), "20% is over it");
        let strict = filters(std::slice::from_ref(&entry), 0.0);
        assert!(strict.contaminated(&sample(&five)), "at 0, one shared n-gram is enough");
        assert!(!strict.contaminated(&sample(&words(200, 40))), "no shared n-gram");
        // Case and punctuation do not hide a quote.
        let shouted = words(50, 32).to_uppercase().replace(' ', ", ");
        assert!(paper.contaminated(&shouted));
    }

    #[test]
    fn reference_entries_are_split_at_lines_of_three_dashes_only() {
        assert_eq!(reference_entries("a\n---\nb\n"), ["a\n", "b\n"]);
        assert_eq!(reference_entries("a\r\n---\r\nb"), ["a\r\n", "b"]);
        assert_eq!(reference_entries("a\n---\n---\nb"), ["a\n", "", "b"]);
        assert_eq!(reference_entries("x --- y\n----\n"), ["x --- y\n----\n"]);
    }

    #[test]
    fn ngrams_stream_without_holding_the_words() {
        let text = words(0, 20);
        assert_eq!(word_ngrams(&text, 13).count(), 8);
        assert_eq!(word_ngrams("a b", 13).count(), 0);
        let same: Vec<u64> = word_ngrams("Alpha, beta; GAMMA", 2).collect();
        assert_eq!(same, word_ngrams("alpha beta gamma", 2).collect::<Vec<_>>());
    }

    #[test]
    fn a_threshold_outside_zero_to_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for tau in [-0.1, 1.0, f64::NAN] {
            let config = FilterConfig { ngram_threshold: tau, ..FilterConfig::default() };
            assert!(Filters::new(config, dir.path()).is_err(), "{tau}");
        }
    }
}
