//! The `pr-general` template: a pull request in the XML-like layout of The Stack v2's
//! pull-request subset, with the changed files' contents at the PR's base, then its
//! commits, reviews and comments in the order they happened.

use std::fmt::Write;

use crate::records::pr::{ChangedFile, Commit, IssueComment, PullRequest, Review, ReviewComment};

/// One event of the PR's timeline: a commit, a review with its inline comments, or a
/// discussion comment.
enum Event<'a> {
    Commit(&'a Commit),
    Review(&'a Review, Vec<&'a ReviewComment>),
    Comment(&'a IssueComment),
}

impl Event<'_> {
    /// ISO 8601 times sort as text; an event without one sorts first (old records have no
    /// commit times, and their commits come first as before).
    fn time(&self) -> &str {
        match self {
            Event::Commit(c) => c.date.as_deref(),
            Event::Review(r, _) => r.submitted_at.as_deref(),
            Event::Comment(c) => c.created_at.as_deref(),
        }
        .unwrap_or("")
    }
}

/// Which inline comments each review shows: those that name it, else (records without
/// review ids) those of its author not shown under an earlier review, so each appears
/// once; and the comments no review shows.
fn comments_by_review(pr: &PullRequest) -> (Vec<Vec<&ReviewComment>>, Vec<&ReviewComment>) {
    let mut shown = vec![false; pr.review_comments.len()];
    let per_review = pr
        .reviews
        .iter()
        .map(|review| {
            let mut mine = Vec::new();
            for (i, comment) in pr.review_comments.iter().enumerate() {
                let belongs = match (comment.pull_request_review_id, review.id) {
                    (Some(of), Some(id)) => of == id,
                    (None, _) => comment.user.login == review.user.login,
                    (Some(_), None) => false,
                };
                if belongs && !shown[i] {
                    shown[i] = true;
                    mine.push(comment);
                }
            }
            mine
        })
        .collect();
    let unattached = pr.review_comments.iter().zip(shown).filter(|(_, s)| !s).map(|(c, _)| c).collect();
    (per_review, unattached)
}

/// Renders a pull request as one plain-text document.
pub fn render_pr_general(pr: &PullRequest) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "<repository>{}</repository>", pr.repo);
    let _ = writeln!(
        out,
        "<pr>\n<pr_title>{}</pr_title>\n<pr_author>{}</pr_author>",
        pr.display_title(),
        pr.user.login
    );
    let description = pr.best_description().trim();
    if !description.is_empty() {
        let _ = writeln!(out, "<pr_description>\n{description}\n</pr_description>");
    }
    out.push_str("</pr>\n");
    for issue in &pr.linked_issues {
        let _ = writeln!(
            out,
            "<issue number=\"{}\">\n<issue_title>{}</issue_title>",
            issue.number,
            issue.title.trim()
        );
        if let Some(body) = issue.body.as_deref().map(str::trim).filter(|b| !b.is_empty()) {
            let _ = writeln!(out, "{body}");
        }
        out.push_str("</issue>\n");
    }
    let base_files: Vec<&ChangedFile> = pr.files.iter().filter(|f| f.content_before.is_some()).collect();
    if !base_files.is_empty() {
        let _ = writeln!(out, "<base_files commit=\"{}\">", pr.base.sha);
        for file in base_files {
            let content = file.content_before.as_deref().unwrap_or("");
            let _ = writeln!(out, "<file path=\"{}\">\n{}</file>", file.old_path(), with_newline(content));
        }
        out.push_str("</base_files>\n");
    }
    let (review_comments, unattached) = comments_by_review(pr);
    let mut events: Vec<Event> = pr
        .commits
        .iter()
        .map(Event::Commit)
        .chain(
            pr.reviews.iter().zip(review_comments).map(|(review, comments)| Event::Review(review, comments)),
        )
        .chain(pr.comments.iter().map(Event::Comment))
        .collect();
    events.sort_by(|a, b| a.time().cmp(b.time()));
    let last_commit = events.iter().rposition(|e| matches!(e, Event::Commit(_)));
    let whole_change = pr.commits.iter().all(|c| c.files.is_empty());
    if whole_change && last_commit.is_none() {
        write_whole_change(&mut out, pr);
    }
    for (i, event) in events.iter().enumerate() {
        match event {
            Event::Commit(commit) => {
                let _ = writeln!(
                    out,
                    "<pr_commit sha=\"{}\">\n<commit_message>\n{}\n</commit_message>",
                    short(&commit.sha),
                    commit.best_message().trim()
                );
                for file in &commit.files {
                    write_file_change(&mut out, file);
                }
                out.push_str("</pr_commit>\n");
            }
            Event::Review(review, comments) => {
                let _ = writeln!(
                    out,
                    "<pr_review author=\"{}\">\n<pr_review_state>{}</pr_review_state>",
                    review.user.login, review.state
                );
                if let Some(body) = review.body.as_deref().map(str::trim).filter(|b| !b.is_empty()) {
                    let _ = writeln!(out, "{body}");
                }
                for comment in comments {
                    let place = match (&comment.path, comment.line) {
                        (Some(p), Some(l)) => format!(" path=\"{p}\" line=\"{l}\""),
                        (Some(p), None) => format!(" path=\"{p}\""),
                        _ => String::new(),
                    };
                    let _ = writeln!(
                        out,
                        "<pr_review_comment{place}>\n{}\n</pr_review_comment>",
                        comment.body.trim()
                    );
                }
                out.push_str("</pr_review>\n");
            }
            Event::Comment(comment) => {
                let _ = writeln!(
                    out,
                    "<pr_comment author=\"{}\">\n{}\n</pr_comment>",
                    comment.user.login,
                    comment.body.trim()
                );
            }
        }
        if whole_change && last_commit == Some(i) {
            write_whole_change(&mut out, pr);
        }
    }
    // Inline comments no review shows still belong to the discussion.
    for comment in unattached {
        let path = comment.path.as_deref().unwrap_or("");
        let _ = writeln!(
            out,
            "<pr_review_comment author=\"{}\" path=\"{path}\">\n{}\n</pr_review_comment>",
            comment.user.login,
            comment.body.trim()
        );
    }
    let _ =
        writeln!(out, "<pr_status>{}</pr_status>", if pr.state.is_empty() { "closed" } else { &pr.state });
    let _ = writeln!(out, "<pr_is_merged>{}</pr_is_merged>", if pr.merged { "True" } else { "False" });
    out
}

/// Without per-commit diffs, the PR's whole change stands in for them, after its commits.
fn write_whole_change(out: &mut String, pr: &PullRequest) {
    for file in &pr.files {
        write_file_change(out, file);
    }
}

fn write_file_change(out: &mut String, file: &ChangedFile) {
    let status = format!("{:?}", file.status).to_lowercase();
    let renamed = match &file.previous_filename {
        Some(previous) => format!(" previous_path=\"{previous}\""),
        None => String::new(),
    };
    let _ = writeln!(out, "<commit_file path=\"{}\" status=\"{status}\"{renamed}>", file.filename);
    if let Some(patch) = &file.patch {
        let _ = writeln!(out, "<patch>\n{}</patch>", with_newline(patch));
    }
    out.push_str("</commit_file>\n");
}

fn with_newline(text: &str) -> String {
    if text.is_empty() || text.ends_with('\n') {
        text.to_string()
    } else {
        format!("{text}\n")
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}
