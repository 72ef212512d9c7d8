//! `davinci data mine-git`: PR records from a local repository's history, with no API.
//!
//! On the first-parent history of a branch, a merge commit titled `Merge pull request #N
//! from ...` and a squash-merge commit whose title ends in `(#N)` each become a record:
//! title and body from the message, the first parent as base, the changed files with
//! their content at the base and their patch. Uses the `git` command.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde::Serialize;

use crate::error::{DataError, Result};
use crate::records::pr::{BaseRef, ChangedFile, Commit, FileStatus, PullRequest, User};

/// What mining found and skipped.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MineReport {
    pub commits_scanned: u64,
    pub merge_prs: u64,
    pub squash_prs: u64,
    pub skipped: BTreeMap<String, u64>,
}

impl MineReport {
    fn skip(&mut self, reason: &str) {
        *self.skipped.entry(reason.into()).or_default() += 1;
    }
}

/// Options of a mining run.
#[derive(Debug, Clone)]
pub struct MineOptions {
    /// Branch or revision whose first-parent history is read.
    pub rev: String,
    /// `owner/name` recorded in each PR; default: from the `origin` remote when it is a
    /// GitHub URL. Anything else is refused rather than guessed, since decontamination
    /// matches records by this name.
    pub repo_name: Option<String>,
    /// The repository this one is a fork of (`owner/name`), recorded in each PR.
    pub upstream: Option<String>,
    /// Files larger than this at the base are left out (and counted).
    pub max_file_bytes: u64,
}

impl Default for MineOptions {
    fn default() -> Self {
        Self { rev: "HEAD".into(), repo_name: None, upstream: None, max_file_bytes: 1 << 20 }
    }
}

fn git(repo: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .map_err(|e| DataError::Io { path: repo.into(), source: e })?;
    if !out.status.success() {
        return Err(DataError::Invalid(format!(
            "{}: git {} failed: {}",
            repo.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

fn git_text(repo: &Path, args: &[&str]) -> Result<String> {
    Ok(String::from_utf8_lossy(&git(repo, args)?).into_owned())
}

/// Reads the repository's history into PR records, oldest first.
pub fn mine_git(repo: &Path, options: &MineOptions) -> Result<(Vec<PullRequest>, MineReport)> {
    let name = match &options.repo_name {
        Some(n) => checked_name(n, "--repo-name")?,
        None => repo_name(repo)?,
    };
    let upstream = options.upstream.as_deref().map(|n| checked_name(n, "--upstream")).transpose()?;
    let log = git_text(
        repo,
        &["log", "--first-parent", "--reverse", "--format=%H%x00%P%x00%an%x00%aI%x00%B%x1e", &options.rev],
    )?;
    let mut report = MineReport::default();
    let mut prs = Vec::new();
    for entry in log.split('\x1e') {
        let entry = entry.trim_start_matches('\n');
        let fields: Vec<&str> = entry.splitn(5, '\0').collect();
        let [sha, parents, author, date, message] = fields[..] else { continue };
        report.commits_scanned += 1;
        let parents: Vec<&str> = parents.split_whitespace().collect();
        let (subject, body) =
            message.trim().split_once('\n').map_or((message.trim(), ""), |(s, b)| (s, b.trim()));
        let (number, title, body, commits) =
            if let Some(number) = merge_pr_number(subject).filter(|_| parents.len() == 2) {
                // GitHub's merge message: the PR title on the first body line, then its description.
                let (title, description) =
                    body.split_once('\n').map_or((body, ""), |(t, d)| (t.trim(), d.trim()));
                let commits = pr_commits(repo, parents[0], parents[1], options)?;
                report.merge_prs += 1;
                (number, title.to_string(), description.to_string(), commits)
            } else if let Some((number, title)) = squash_pr_number(subject).filter(|_| parents.len() == 1) {
                report.squash_prs += 1;
                let commit = Commit {
                    sha: sha.into(),
                    message: message.trim().into(),
                    date: Some(date.into()),
                    author: User { login: author.into() },
                    ..Default::default()
                };
                (number, title, body.to_string(), vec![commit])
            } else {
                continue;
            };
        let base = parents[0];
        let files = changed_files(repo, base, sha, options, &mut report)?;
        // The PR's author is whoever wrote its first commit: the author of a merge commit
        // is whoever merged it.
        let user = commits.first().map_or_else(|| User { login: author.into() }, |c| c.author.clone());
        let mut pr = PullRequest {
            repo: name.clone(),
            upstream: upstream.clone(),
            number,
            title,
            body: Some(body).filter(|b| !b.is_empty()),
            user,
            state: "closed".into(),
            merged: true,
            merged_at: Some(date.into()),
            base: BaseRef { sha: base.into(), branch: String::new() },
            files,
            commits,
            ..Default::default()
        };
        // A merge without a title (an empty merge message body) records the title the
        // templates would show: its first commit's subject.
        pr.title = pr.display_title().to_string();
        prs.push(pr);
    }
    Ok((prs, report))
}

/// `owner/name` from the `origin` remote, which must be a GitHub URL: a local mirror's path
/// or another host says nothing reliable about the name.
fn repo_name(repo: &Path) -> Result<String> {
    let url = git_text(repo, &["remote", "get-url", "origin"]).ok().map(|u| u.trim().to_string());
    if let Some(name) = url.as_deref().and_then(github_name) {
        return Ok(name);
    }
    let origin = match url {
        Some(url) => format!("its origin remote `{url}`"),
        None => "it (no origin remote)".into(),
    };
    Err(DataError::Invalid(format!(
        "{}: cannot read a GitHub owner/name from {origin}; give it with --repo-name OWNER/NAME \
         (decontamination matches records by this name)",
        repo.display()
    )))
}

/// `owner/name` from a GitHub remote URL (https, ssh or scp-like).
fn github_name(url: &str) -> Option<String> {
    let rest = [
        "https://github.com/",
        "http://github.com/",
        "ssh://git@github.com/",
        "git@github.com:",
        "git://github.com/",
    ]
    .iter()
    .find_map(|prefix| url.strip_prefix(prefix))?;
    let rest = rest.trim_end_matches('/').trim_end_matches(".git");
    is_owner_name(rest).then(|| rest.to_string())
}

/// GitHub's rules: an owner of letters, digits and single hyphens (39 at most), a name of
/// letters, digits, `-`, `_` and `.`.
fn is_owner_name(text: &str) -> bool {
    let Some((owner, name)) = text.split_once('/') else { return false };
    let owner_ok = (1..=39).contains(&owner.len())
        && owner.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !owner.starts_with('-');
    let name_ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    owner_ok && name_ok
}

fn checked_name(name: &str, flag: &str) -> Result<String> {
    if is_owner_name(name) {
        Ok(name.to_string())
    } else {
        Err(DataError::Invalid(format!("{flag} `{name}` is not a GitHub owner/name")))
    }
}

/// `Merge pull request #123 from owner/branch` -> 123.
fn merge_pr_number(subject: &str) -> Option<u64> {
    let rest = subject.strip_prefix("Merge pull request #")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// `Fix the thing (#123)` -> (123, "Fix the thing").
fn squash_pr_number(subject: &str) -> Option<(u64, String)> {
    let trimmed = subject.trim_end();
    let open = trimmed.strip_suffix(')')?.rfind("(#")?;
    let number = trimmed[open + 2..trimmed.len() - 1].parse().ok()?;
    Some((number, trimmed[..open].trim_end().to_string()))
}

/// The commits a merged branch brought in, oldest first (messages only).
/// The commits of a merged PR's branch, oldest first, each with its author, time, message
/// and its own changes (against its parent), so that a template can show the work commit
/// by commit. A branch that merged another branch in keeps its commits without changes: a
/// merge's diff against its first parent would mix in the other branch's work.
fn pr_commits(repo: &Path, base: &str, head: &str, options: &MineOptions) -> Result<Vec<Commit>> {
    let log = git_text(
        repo,
        &["log", "--reverse", "--format=%H%x00%P%x00%an%x00%aI%x00%B%x1e", &format!("{base}..{head}")],
    )?;
    let mut commits = Vec::new();
    let mut parents_of = Vec::new();
    for entry in log.split('\x1e') {
        let fields: Vec<&str> = entry.trim_start_matches('\n').splitn(5, '\0').collect();
        let [sha, parents, author, date, message] = fields[..] else { continue };
        parents_of.push(parents.split_whitespace().map(String::from).collect::<Vec<_>>());
        commits.push(Commit {
            sha: sha.into(),
            message: message.trim().into(),
            date: Some(date.into()),
            author: User { login: author.into() },
            ..Default::default()
        });
    }
    if parents_of.iter().all(|p| p.len() == 1) {
        // Skipped files are counted once, for the PR's own changes.
        let mut uncounted = MineReport::default();
        for (commit, parents) in commits.iter_mut().zip(&parents_of) {
            commit.files = changed_files(repo, &parents[0], &commit.sha, options, &mut uncounted)?;
        }
    }
    Ok(commits)
}

fn changed_files(
    repo: &Path,
    base: &str,
    head: &str,
    options: &MineOptions,
    report: &mut MineReport,
) -> Result<Vec<ChangedFile>> {
    let raw = git(repo, &["diff", "--name-status", "-z", "-M", base, head])?;
    let fields: Vec<String> =
        raw.split(|&b| b == 0).map(|f| String::from_utf8_lossy(f).into_owned()).collect();
    let mut files = Vec::new();
    let mut i = 0;
    while i < fields.len() && !fields[i].is_empty() {
        let code = fields[i].clone();
        let (status, old, new) = match code.chars().next() {
            Some('R') | Some('C') => {
                i += 3;
                (FileStatus::Renamed, Some(fields[i - 2].clone()), fields[i - 1].clone())
            }
            Some(c) => {
                i += 2;
                let status = match c {
                    'A' => FileStatus::Added,
                    'D' => FileStatus::Removed,
                    _ => FileStatus::Modified,
                };
                (status, None, fields[i - 1].clone())
            }
            None => break,
        };
        let old_path = old.clone().unwrap_or_else(|| new.clone());
        let content_before = if status == FileStatus::Added {
            None
        } else {
            let spec = format!("{base}:{old_path}");
            let size: u64 = git_text(repo, &["cat-file", "-s", &spec])?.trim().parse().unwrap_or(0);
            if size > options.max_file_bytes {
                report.skip("file too large");
                continue;
            }
            match String::from_utf8(git(repo, &["show", &spec])?) {
                Ok(text) if !text.contains('\0') => Some(text),
                _ => {
                    report.skip("binary file");
                    continue;
                }
            }
        };
        let mut args = vec!["diff", "--no-color", "-U3", "-M", base, head, "--"];
        if let Some(old) = &old {
            args.push(old);
        }
        args.push(&new);
        let diff = git_text(repo, &args)?;
        if diff.contains("\nBinary files ") || diff.starts_with("Binary files ") {
            report.skip("binary file");
            continue;
        }
        // Keep the hunks only, as GitHub's API gives them.
        let patch = diff.find("\n@@").map(|at| diff[at + 1..].to_string());
        files.push(ChangedFile { filename: new, status, previous_filename: old, content_before, patch });
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::{github_name, is_owner_name};

    #[test]
    fn github_remotes_name_their_repository_and_mirror_paths_do_not() {
        for url in [
            "https://github.com/psf/requests.git",
            "https://github.com/psf/requests",
            "git@github.com:psf/requests.git",
            "ssh://git@github.com/psf/requests.git",
        ] {
            assert_eq!(github_name(url).as_deref(), Some("psf/requests"), "{url}");
        }
        for url in
            ["/work/.mirror/psf+requests/repo.git", "https://gitlab.com/psf/requests.git", "../requests"]
        {
            assert_eq!(github_name(url), None, "{url}");
        }
        assert!(is_owner_name("pylint-dev/pylint") && !is_owner_name("psf+requests/git"));
    }
}
