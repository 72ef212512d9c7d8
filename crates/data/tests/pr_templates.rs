//! The PR templates on a pull request built from real git diffs.

mod common;

use common::git_patch;
use davinci_data::prepare::render_record;
use davinci_data::records::pr::{
    ChangedFile, Commit, FileStatus, IssueComment, LinkedIssue, PullRequest, Review, ReviewComment, User,
};
use davinci_data::render::diff::{apply_edits, Edit};
use davinci_data::render::{render_pr_general, render_pr_python, Template};

const OLD: &str = "def parse(value):\n    return int(value)\n\n\ndef show(value):\n    return str(value)\n";
const NEW: &str = "def parse(value):\n    if not value:\n        return None\n    return int(value)\n\n\ndef show(value):\n    return str(value)\n";

/// Fails unless every needle occurs in `text`, each after the previous one.
fn assert_in_order(text: &str, needles: &[&str]) {
    let mut at = 0;
    for needle in needles {
        let found = text[at..]
            .find(needle)
            .unwrap_or_else(|| panic!("`{needle}` missing or out of order in:\n{text}"));
        at += found + needle.len();
    }
}

fn user(login: &str) -> User {
    User { login: login.into() }
}

fn sample_pr() -> PullRequest {
    let file = ChangedFile {
        filename: "pkg/parse.py".into(),
        status: FileStatus::Modified,
        previous_filename: None,
        content_before: Some(OLD.into()),
        patch: Some(git_patch(OLD, NEW)),
    };
    let added = ChangedFile {
        filename: "tests/test_parse.py".into(),
        status: FileStatus::Added,
        previous_filename: None,
        content_before: None,
        patch: Some(git_patch("", "from pkg.parse import parse\n\nassert parse('') is None\n")),
    };
    PullRequest {
        repo: "acme/parser".into(),
        number: 42,
        title: "Return None for empty values".into(),
        body: Some("Original body.".into()),
        summary: Some("Refined summary: parse() now returns None for empty input.".into()),
        user: user("alice"),
        state: "closed".into(),
        merged: true,
        linked_issues: vec![LinkedIssue {
            number: 41,
            title: "parse('') raises".into(),
            body: Some("ValueError on empty string".into()),
            user: user("bob"),
        }],
        files: vec![file.clone(), added.clone()],
        commits: vec![Commit {
            sha: "0123456789abcdef".into(),
            message: "fix empty".into(),
            refined_message: Some("Handle empty input in parse".into()),
            author: user("alice"),
            files: vec![file, added],
            ..Default::default()
        }],
        reviews: vec![Review {
            user: user("carol"),
            state: "APPROVED".into(),
            body: Some("LGTM".into()),
            submitted_at: Some("2024-01-02".into()),
            ..Default::default()
        }],
        review_comments: vec![ReviewComment {
            user: user("carol"),
            body: "nice guard".into(),
            path: Some("pkg/parse.py".into()),
            line: Some(2),
            created_at: None,
            ..Default::default()
        }],
        comments: vec![IssueComment {
            user: user("dave"),
            body: "Thanks!".into(),
            created_at: Some("2024-01-01".into()),
        }],
        ..Default::default()
    }
}

#[test]
fn pr_general_has_the_tags_in_order() {
    let text = render_pr_general(&sample_pr());
    let order = [
        "<repository>acme/parser</repository>",
        "<pr_title>Return None for empty values</pr_title>",
        "Refined summary",
        "<issue number=\"41\">",
        "<base_files",
        "<file path=\"pkg/parse.py\">\ndef parse(value):",
        "<pr_commit sha=\"0123456789ab\">",
        "Handle empty input in parse",
        "<commit_file path=\"pkg/parse.py\" status=\"modified\">",
        "<patch>\n@@",
        "<commit_file path=\"tests/test_parse.py\" status=\"added\">",
        "<pr_comment author=\"dave\">\nThanks!",
        "<pr_review author=\"carol\">\n<pr_review_state>APPROVED</pr_review_state>",
        "<pr_review_comment path=\"pkg/parse.py\" line=\"2\">\nnice guard",
        "<pr_status>closed</pr_status>",
        "<pr_is_merged>True</pr_is_merged>",
    ];
    assert_in_order(&text, &order);
    assert!(!text.contains("Original body."), "the refined summary replaces the body");
}

#[test]
fn pr_python_sections_and_edits_that_apply() {
    let text = render_pr_python(&sample_pr()).unwrap();
    let order = [
        "# Repository Context",
        "- pkg/parse.py",
        "# Issue",
        "## #41 parse('') raises",
        "# Pull Request",
        "## Return None for empty values",
        "Refined summary",
        "# Relevant Files Found",
        "## pkg/parse.py\n\n```python\ndef parse",
        "# Edits",
        "## Commit 1: Handle empty input in parse",
        "Edit: pkg/parse.py\nSearch:\n```python\n",
        "Create: tests/test_parse.py",
    ];
    assert_in_order(&text, &order);
    // Read the edit back out of the Markdown and apply it to the old file.
    let block = |label: &str| {
        let start = text.find(&format!("{label}:\n```python\n")).unwrap() + label.len() + 12;
        let end = start + text[start..].find("\n```\n").unwrap() + 1;
        text[start..end].to_string()
    };
    let edit = Edit { search: block("Search"), replace: block("Replace") };
    assert_eq!(apply_edits(OLD, &[edit]).unwrap(), NEW);
}

#[test]
fn pr_python_refuses_a_patch_that_does_not_apply() {
    let mut pr = sample_pr();
    pr.commits[0].files[0].content_before = Some("something else entirely\n".into());
    let err = render_pr_python(&pr).unwrap_err();
    assert!(err.contains("pkg/parse.py"), "{err}");
}

#[test]
fn code_fences_outgrow_backticks_in_the_content() {
    use davinci_data::render::pr_python::fenced;
    assert_eq!(fenced("a = 1\n", "x.py"), "```python\na = 1\n```\n");
    assert_eq!(fenced("doc = '''```'''", "README"), "````\ndoc = '''```'''\n````\n");
}

#[test]
fn pr_python_opens_its_edits_with_the_summary_and_creates_empty_files() {
    let mut pr = sample_pr();
    let empty = ChangedFile {
        filename: "pkg/__init__.py".into(),
        status: FileStatus::Added,
        previous_filename: None,
        content_before: None,
        patch: None,
    };
    pr.commits[0].files.push(empty.clone());
    pr.files.push(empty);
    let text = render_pr_python(&pr).unwrap();
    assert_in_order(
        &text,
        &["# Edits", "Refined summary", "## Commit 1:", "Create: pkg/__init__.py\n```python\n```"],
    );
}

#[test]
fn data_show_says_which_edit_does_not_apply_and_why() {
    let mut pr = sample_pr();
    pr.files[0].content_before = Some("something else entirely\n".into());
    pr.commits[0].files[0].content_before = Some("something else entirely\n".into());
    let json = serde_json::to_string(&pr).unwrap();
    let err = render_record(Template::PrPython, Default::default(), &json).unwrap_err().to_string();
    assert!(err.contains("edits do not apply: pkg/parse.py:"), "{err}");
}

#[test]
fn pr_general_interleaves_by_time_and_shows_each_inline_comment_once() {
    let mut pr = sample_pr();
    let commit = |sha: &str, message: &str, date: &str| Commit {
        sha: sha.into(),
        message: message.into(),
        date: Some(date.into()),
        ..Default::default()
    };
    pr.commits = vec![
        commit("aaa", "first try", "2024-01-01T09:00:00Z"),
        commit("bbb", "address review", "2024-01-03T09:00:00Z"),
    ];
    let review = |id: u64, state: &str, at: &str| Review {
        id: Some(id),
        user: user("carol"),
        state: state.into(),
        submitted_at: Some(at.into()),
        ..Default::default()
    };
    pr.reviews = vec![
        review(1, "CHANGES_REQUESTED", "2024-01-02T09:00:00Z"),
        review(2, "COMMENTED", "2024-01-03T10:00:00Z"),
        review(3, "APPROVED", "2024-01-04T09:00:00Z"),
    ];
    let inline = |review: u64, body: &str| ReviewComment {
        pull_request_review_id: Some(review),
        user: user("carol"),
        body: body.into(),
        path: Some("pkg/parse.py".into()),
        ..Default::default()
    };
    pr.review_comments = vec![inline(1, "guard the empty case"), inline(2, "now add a test")];
    pr.comments = vec![IssueComment {
        user: user("dave"),
        body: "Ping?".into(),
        created_at: Some("2024-01-02T12:00:00Z".into()),
    }];
    let text = render_pr_general(&pr);
    assert_in_order(
        &text,
        &[
            "<commit_message>\nfirst try",
            "CHANGES_REQUESTED</pr_review_state>",
            "guard the empty case",
            "<pr_comment author=\"dave\">\nPing?",
            "<commit_message>\naddress review",
            // The whole change stands after the last commit when commits carry no diffs.
            "<commit_file path=\"pkg/parse.py\"",
            "COMMENTED</pr_review_state>",
            "now add a test",
            "APPROVED</pr_review_state>",
        ],
    );
    assert_eq!(text.matches("guard the empty case").count(), 1, "{text}");
    assert_eq!(text.matches("now add a test").count(), 1, "{text}");
}

#[test]
fn an_untitled_pr_shows_its_first_commits_subject() {
    let mut pr = sample_pr();
    pr.title = "  ".into();
    assert!(render_pr_general(&pr).contains("<pr_title>Handle empty input in parse</pr_title>"));
    assert!(render_pr_python(&pr).unwrap().contains("# Pull Request\n\n## Handle empty input in parse\n"));
}
