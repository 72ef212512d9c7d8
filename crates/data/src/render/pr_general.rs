//! The `pr-general` template: a pull request in the XML-like layout of The Stack v2's
//! pull-request subset, in chronological order, with the changed files' contents at the
//! PR's base.

use std::fmt::Write;

use crate::records::pr::{ChangedFile, PullRequest};

/// One timeline event after the commits: a review or a discussion comment.
enum Event<'a> {
    Review(&'a crate::records::pr::Review),
    Comment(&'a crate::records::pr::IssueComment),
}

impl Event<'_> {
    fn time(&self) -> &str {
        match self {
            Event::Review(r) => r.submitted_at.as_deref().unwrap_or(""),
            Event::Comment(c) => c.created_at.as_deref().unwrap_or(""),
        }
    }
}

/// Renders a pull request as one plain-text document.
pub fn render_pr_general(pr: &PullRequest) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "<repository>{}</repository>", pr.repo);
    let _ = writeln!(
        out,
        "<pr>\n<pr_title>{}</pr_title>\n<pr_author>{}</pr_author>",
        pr.title.trim(),
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
    for commit in &pr.commits {
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
    if pr.commits.iter().all(|c| c.files.is_empty()) {
        // No per-commit diffs: the PR's whole change stands in for them.
        for file in &pr.files {
            write_file_change(&mut out, file);
        }
    }
    let mut events: Vec<Event> =
        pr.reviews.iter().map(Event::Review).chain(pr.comments.iter().map(Event::Comment)).collect();
    events.sort_by(|a, b| a.time().cmp(b.time()));
    for event in events {
        match event {
            Event::Review(review) => {
                let _ = writeln!(
                    out,
                    "<pr_review author=\"{}\">\n<pr_review_state>{}</pr_review_state>",
                    review.user.login, review.state
                );
                if let Some(body) = review.body.as_deref().map(str::trim).filter(|b| !b.is_empty()) {
                    let _ = writeln!(out, "{body}");
                }
                for comment in pr.review_comments.iter().filter(|c| c.user.login == review.user.login) {
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
    }
    // Inline comments by someone who left no review still belong to the discussion.
    let reviewers: Vec<&str> = pr.reviews.iter().map(|r| r.user.login.as_str()).collect();
    for comment in pr.review_comments.iter().filter(|c| !reviewers.contains(&c.user.login.as_str())) {
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
