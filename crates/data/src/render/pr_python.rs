//! The `pr-python` template: a pull request as an agent would work through it, in
//! Markdown sections: localization (`# Repository Context`), the issue, the reasoning
//! header (`# Pull Request`), reading (`# Relevant Files Found`), and the change as
//! search/replace edits (`# Edits`) that apply in order to the files' old contents.

use std::fmt::Write;

use super::diff::{apply_hunks, hunks_to_edits, parse_patch};
use crate::records::pr::{ChangedFile, FileStatus, PullRequest};

/// Renders a pull request; fails (naming the file) where a patch does not apply to its
/// file's old content, so that no sample teaches an edit that cannot be made.
pub fn render_pr_python(pr: &PullRequest) -> Result<String, String> {
    let mut out = String::new();
    let paths: Vec<&str> = pr.files.iter().map(|f| f.filename.as_str()).collect();
    let _ = writeln!(out, "# Repository Context\n\nRepository: {}\n\nRelevant file paths:", pr.repo);
    for path in &paths {
        let _ = writeln!(out, "- {path}");
    }
    if !pr.linked_issues.is_empty() {
        out.push_str("\n# Issue\n");
        for issue in &pr.linked_issues {
            let _ = writeln!(out, "\n## #{} {}\n", issue.number, issue.title.trim());
            if let Some(body) = issue.body.as_deref().map(str::trim).filter(|b| !b.is_empty()) {
                let _ = writeln!(out, "{body}");
            }
        }
    }
    let _ = writeln!(out, "\n# Pull Request\n\n## {}\n", pr.display_title());
    let description = pr.best_description().trim();
    if !description.is_empty() {
        let _ = writeln!(out, "{description}");
    }
    let readable: Vec<&ChangedFile> = pr.files.iter().filter(|f| f.content_before.is_some()).collect();
    if !readable.is_empty() {
        out.push_str("\n# Relevant Files Found\n");
        for file in readable {
            let _ = write!(
                out,
                "\n## {}\n\n{}",
                file.old_path(),
                fenced(file.content_before.as_deref().unwrap_or(""), file.old_path())
            );
        }
    }
    out.push_str("\n# Edits\n");
    // What the change does, before its commits, as the paper's samples open their edits:
    // the refined summary, else the title (a description's first paragraph is too often a
    // template's boilerplate).
    let summary =
        pr.summary.as_deref().map(str::trim).filter(|s| !s.is_empty()).unwrap_or(pr.display_title());
    if !summary.is_empty() {
        let _ = writeln!(out, "\n{summary}");
    }
    let per_commit = pr.commits.iter().any(|c| !c.files.is_empty());
    if per_commit {
        for (i, commit) in pr.commits.iter().enumerate() {
            let _ = writeln!(out, "\n## Commit {}: {}\n", i + 1, commit.best_message().trim());
            for file in &commit.files {
                write_file_edits(&mut out, file)?;
            }
        }
    } else {
        let message = pr.commits.first().map(|c| c.best_message()).unwrap_or(pr.display_title());
        let _ = writeln!(out, "\n## Commit 1: {}\n", message.trim());
        for file in &pr.files {
            write_file_edits(&mut out, file)?;
        }
    }
    Ok(out)
}

fn write_file_edits(out: &mut String, file: &ChangedFile) -> Result<(), String> {
    let path = file.filename.as_str();
    let hunks = match &file.patch {
        Some(patch) => parse_patch(patch).map_err(|e| format!("{path}: {e}"))?,
        // GitHub gives no patch for an added empty file (`__init__.py`, `py.typed`): it is
        // created empty. Binary files should not reach a record (mine-git leaves them out).
        None if matches!(file.status, FileStatus::Removed | FileStatus::Renamed | FileStatus::Added) => {
            Vec::new()
        }
        None => return Err(format!("{path}: no patch (binary or too large)")),
    };
    match file.status {
        FileStatus::Removed => {
            let _ = writeln!(out, "Delete: {path}\n");
        }
        FileStatus::Added => {
            let content = apply_hunks("", &hunks).map_err(|e| format!("{path}: {e}"))?;
            let _ = writeln!(out, "Create: {path}\n{}", fenced(&content, path));
        }
        _ => {
            if let Some(previous) = &file.previous_filename {
                let _ = writeln!(out, "Rename: {previous} -> {path}\n");
            }
            if hunks.is_empty() {
                return Ok(());
            }
            let old = file
                .content_before
                .as_deref()
                .ok_or_else(|| format!("{path}: no content before the change"))?;
            for edit in hunks_to_edits(old, &hunks).map_err(|e| format!("{path}: {e}"))? {
                let _ = writeln!(
                    out,
                    "Edit: {path}\nSearch:\n{}Replace:\n{}",
                    fenced(&edit.search, path),
                    fenced(&edit.replace, path)
                );
            }
        }
    }
    Ok(())
}

/// A fenced code block longer than any run of backticks inside `content`, tagged with
/// the language the path's extension names.
pub fn fenced(content: &str, path: &str) -> String {
    let longest_run = content.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest_run.max(2) + 1);
    let language = match path.rsplit('.').next() {
        Some("py") => "python",
        Some("rs") => "rust",
        Some("js") => "javascript",
        Some("ts") => "typescript",
        Some("go") => "go",
        Some("c" | "h") => "c",
        Some("java") => "java",
        _ => "",
    };
    let newline = if content.is_empty() || content.ends_with('\n') { "" } else { "\n" };
    format!("{fence}{language}\n{content}{newline}{fence}\n")
}
