//! Pull-request records, the contextually-native source (schema: `docs/records.md`).

use serde::{Deserialize, Serialize};

/// A GitHub account, as the REST API nests it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct User {
    pub login: String,
}

impl User {
    /// Whether the account is an automation: GitHub marks apps with a `[bot]` suffix.
    pub fn is_bot(&self) -> bool {
        self.login.ends_with("[bot]")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Label {
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BaseRef {
    pub sha: String,
    #[serde(rename = "ref")]
    pub branch: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LinkedIssue {
    pub number: u64,
    pub title: String,
    pub body: Option<String>,
    pub user: User,
}

/// How a file changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileStatus {
    Added,
    #[default]
    Modified,
    Removed,
    Renamed,
    Copied,
    Changed,
    Unchanged,
}

/// One file of a change: its content before and its unified-diff hunks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChangedFile {
    pub filename: String,
    #[serde(default)]
    pub status: FileStatus,
    #[serde(default)]
    pub previous_filename: Option<String>,
    /// The whole file at the base of the change; `None` for an added or binary file.
    #[serde(default)]
    pub content_before: Option<String>,
    /// Hunks as GitHub's API returns them; `None` for binary or too-large diffs.
    #[serde(default)]
    pub patch: Option<String>,
}

impl ChangedFile {
    /// The path the file had before the change.
    pub fn old_path(&self) -> &str {
        self.previous_filename.as_deref().unwrap_or(&self.filename)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Commit {
    pub sha: String,
    pub message: String,
    /// When the commit was authored (ISO 8601; REST: commit.author.date).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    /// LLM-refined message, preferred by the templates when present.
    pub refined_message: Option<String>,
    pub author: User,
    pub files: Vec<ChangedFile>,
}

impl Commit {
    pub fn best_message(&self) -> &str {
        self.refined_message.as_deref().filter(|m| !m.trim().is_empty()).unwrap_or(&self.message)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Review {
    /// REST's review id, which inline comments point to (`pull_request_review_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    pub user: User,
    /// `APPROVED`, `CHANGES_REQUESTED`, `COMMENTED` or `DISMISSED`.
    pub state: String,
    pub body: Option<String>,
    pub submitted_at: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReviewComment {
    /// The review this inline comment belongs to (REST: `pull_request_review_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_request_review_id: Option<u64>,
    pub user: User,
    pub body: String,
    pub path: Option<String>,
    pub line: Option<u64>,
    pub created_at: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IssueComment {
    pub user: User,
    pub body: String,
    pub created_at: Option<String>,
}

/// A pull request with everything the templates render.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PullRequest {
    pub repo: String,
    pub number: u64,
    /// The repository `repo` is a fork of, as `owner/name`, where known: decontamination
    /// drops a fork's PRs when its upstream is excluded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub user: User,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub merged: bool,
    #[serde(default)]
    pub labels: Vec<Label>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub merged_at: Option<String>,
    #[serde(default)]
    pub base: BaseRef,
    /// LLM-refined summary, preferred over `body` when present.
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default)]
    pub linked_issues: Vec<LinkedIssue>,
    #[serde(default)]
    pub files: Vec<ChangedFile>,
    #[serde(default)]
    pub commits: Vec<Commit>,
    #[serde(default)]
    pub reviews: Vec<Review>,
    #[serde(default)]
    pub review_comments: Vec<ReviewComment>,
    #[serde(default)]
    pub comments: Vec<IssueComment>,
}

impl PullRequest {
    /// The description a template shows: the refined summary if any, else the body.
    pub fn best_description(&self) -> &str {
        self.summary.as_deref().filter(|s| !s.trim().is_empty()).or(self.body.as_deref()).unwrap_or("")
    }

    /// The title a template shows: the PR's, else its first commit's subject (a merge
    /// commit without a body leaves a mined PR untitled).
    pub fn display_title(&self) -> &str {
        let first_subject = self.commits.first().and_then(|c| c.best_message().lines().next());
        Some(self.title.trim()).filter(|t| !t.is_empty()).or(first_subject.map(str::trim)).unwrap_or("")
    }

    /// `owner/name#number`, for reports and error messages.
    pub fn id(&self) -> String {
        format!("{}#{}", self.repo, self.number)
    }
}
