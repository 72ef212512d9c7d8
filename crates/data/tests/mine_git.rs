//! `mine-git` on a repository the test builds: a merged PR branch, a squash merge, a
//! commit that is no PR, a rename and a binary file.

use std::path::Path;
use std::process::Command;

use davinci_data::filter::{FilterConfig, Filters};
use davinci_data::mine_git::{mine_git, MineOptions};
use davinci_data::records::pr::FileStatus;
use davinci_data::render::render_pr_python;

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"])
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}

fn write(dir: &Path, path: &str, text: &[u8]) {
    std::fs::create_dir_all(dir.join(path).parent().unwrap()).unwrap();
    std::fs::write(dir.join(path), text).unwrap();
}

/// A repository on branch `main` whose first commit holds `files`.
fn initial_commit(repo: &Path, files: &[(&str, &[u8])]) {
    git(repo, &["init", "-q", "-b", "main"]);
    for (path, text) in files {
        write(repo, path, text);
    }
    git(repo, &["add", "."]);
    git(repo, &["commit", "-q", "-m", "Initial commit"]);
}

#[test]
fn merge_and_squash_commits_become_pr_records() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path();
    initial_commit(repo, &[("pkg/core.py", b"def f():\n    return 1\n"), ("pkg/old_name.py", b"X = 1\n")]);

    git(repo, &["checkout", "-q", "-b", "feature"]);
    write(repo, "pkg/core.py", b"def f():\n    return 2\n");
    git(repo, &["commit", "-q", "-am", "Return 2"]);
    git(repo, &["mv", "pkg/old_name.py", "pkg/new_name.py"]);
    write(repo, "logo.png", &[0u8, 159, 146, 150, 0, 1, 2]);
    git(repo, &["add", "."]);
    git(repo, &["commit", "-q", "-m", "Rename module, add logo"]);
    git(repo, &["checkout", "-q", "main"]);
    git(
        repo,
        &[
            "merge",
            "-q",
            "--no-ff",
            "feature",
            "-m",
            "Merge pull request #5 from alice/feature\n\nMake f return 2\n\nIt should be two.",
        ],
    );

    write(repo, "pkg/core.py", b"def f():\n    return 3\n");
    git(repo, &["commit", "-q", "-am", "Return 3 (#7)\n\nSquashed."]);
    write(repo, "README", b"docs\n");
    git(repo, &["add", "."]);
    git(repo, &["commit", "-q", "-m", "Direct commit, no PR"]);

    let options = MineOptions { repo_name: Some("acme/demo".into()), ..MineOptions::default() };
    let (prs, report) = mine_git(repo, &options).unwrap();
    assert_eq!((report.merge_prs, report.squash_prs, report.commits_scanned), (1, 1, 4));
    assert_eq!(report.skipped.get("binary file"), Some(&1));
    assert_eq!(prs.len(), 2);

    let merged = &prs[0];
    assert_eq!(
        (merged.number, merged.title.as_str(), merged.body.as_deref()),
        (5, "Make f return 2", Some("It should be two."))
    );
    assert_eq!(
        merged.commits.iter().map(|c| c.message.as_str()).collect::<Vec<_>>(),
        ["Return 2", "Rename module, add logo"]
    );
    let renamed = merged.files.iter().find(|f| f.status == FileStatus::Renamed).unwrap();
    assert_eq!(
        (renamed.previous_filename.as_deref(), renamed.filename.as_str()),
        (Some("pkg/old_name.py"), "pkg/new_name.py")
    );
    let core = merged.files.iter().find(|f| f.filename == "pkg/core.py").unwrap();
    assert_eq!(core.content_before.as_deref(), Some("def f():\n    return 1\n"));
    assert!(core.patch.as_deref().unwrap().starts_with("@@ -1,2 +1,2 @@"));
    // The mined record renders into edits that apply.
    let text = render_pr_python(merged).unwrap();
    assert!(
        text.contains("Edit: pkg/core.py") && text.contains("Rename: pkg/old_name.py -> pkg/new_name.py"),
        "{text}"
    );

    let tight = MineOptions { max_file_bytes: 10, ..options.clone() };
    let (_, report) = mine_git(repo, &tight).unwrap();
    assert!(report.skipped.get("file too large").copied().unwrap_or(0) >= 2, "{report:?}");

    let squash = &prs[1];
    assert_eq!(
        (squash.number, squash.title.as_str(), squash.body.as_deref()),
        (7, "Return 3", Some("Squashed."))
    );
    assert_eq!(squash.files[0].content_before.as_deref(), Some("def f():\n    return 2\n"));
}

#[test]
fn a_repository_name_that_cannot_be_read_is_refused_not_guessed() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path();
    initial_commit(repo, &[("a.py", b"x = 1\n")]);
    // No origin: the directory's name is not an owner/name.
    let err = mine_git(repo, &MineOptions::default()).unwrap_err().to_string();
    assert!(err.contains("no origin remote") && err.contains("--repo-name"), "{err}");
    // A local mirror's path as origin says nothing reliable either.
    git(repo, &["remote", "add", "origin", "/mirrors/psf+requests/repo.git"]);
    let err = mine_git(repo, &MineOptions::default()).unwrap_err().to_string();
    assert!(err.contains("psf+requests") && err.contains("--repo-name"), "{err}");
    // A GitHub origin names it; so does --repo-name, which must be an owner/name.
    git(repo, &["remote", "set-url", "origin", "git@github.com:psf/requests.git"]);
    mine_git(repo, &MineOptions::default()).unwrap();
    let bad = MineOptions { repo_name: Some("psf requests".into()), ..MineOptions::default() };
    assert!(mine_git(repo, &bad).unwrap_err().to_string().contains("--repo-name `psf requests`"));
    let fork = MineOptions { upstream: Some("nobody/x/y".into()), ..MineOptions::default() };
    assert!(mine_git(repo, &fork).unwrap_err().to_string().contains("--upstream"));
}

#[test]
fn a_merged_pr_is_its_commits_authors_work_commit_by_commit_and_a_bots_pr_is_filtered() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path();
    initial_commit(repo, &[("requirements.txt", b"idna==3.6\nurllib3==2.0\n")]);
    git(repo, &["checkout", "-q", "-b", "bump"]);
    let as_bot = ["-c", "user.name=dependabot[bot]", "commit", "-q", "-am"];
    write(repo, "requirements.txt", b"idna==3.7\nurllib3==2.0\n");
    git(repo, &[&as_bot[..], &["Bump idna from 3.6 to 3.7"]].concat());
    write(repo, "requirements.txt", b"idna==3.7\nurllib3==2.2\n");
    git(repo, &[&as_bot[..], &["Bump urllib3 from 2.0 to 2.2"]].concat());
    git(repo, &["checkout", "-q", "main"]);
    // A person merges it, and the merge message has no title line.
    git(repo, &["merge", "-q", "--no-ff", "bump", "-m", "Merge pull request #9 from acme/bump"]);

    let options = MineOptions { repo_name: Some("acme/app".into()), ..MineOptions::default() };
    let (prs, _) = mine_git(repo, &options).unwrap();
    let pr = &prs[0];
    assert_eq!(pr.user.login, "dependabot[bot]", "the author of the commits, not the merger");
    assert_eq!(pr.title, "Bump idna from 3.6 to 3.7", "an empty title falls back to the first commit");
    let messages: Vec<&str> = pr.commits.iter().map(|c| c.message.as_str()).collect();
    assert_eq!(messages, ["Bump idna from 3.6 to 3.7", "Bump urllib3 from 2.0 to 2.2"]);
    for commit in &pr.commits {
        assert!(commit.date.as_deref().is_some_and(|d| d.contains('T')), "{:?}", commit.date);
        assert_eq!(commit.files.len(), 1, "each commit carries its own change");
    }
    let second = &pr.commits[1].files[0];
    assert_eq!(second.content_before.as_deref(), Some("idna==3.7\nurllib3==2.0\n"), "against its parent");
    // The template shows one block per commit, each with its own message.
    let text = render_pr_python(pr).unwrap();
    assert!(
        text.contains("Bump urllib3 from 2.0 to 2.2") && text.contains("Bump idna from 3.6 to 3.7"),
        "{text}"
    );

    // The bot filter sees through the merge: the PR, and a PR whose commits are all a bot's.
    let filters = Filters::new(FilterConfig::default(), repo).unwrap();
    assert_eq!(filters.reject_pr(pr), Some("bot author"));
    let mut merged_by_a_person = pr.clone();
    merged_by_a_person.user.login = "carol".into();
    assert_eq!(filters.reject_pr(&merged_by_a_person), Some("bot author"));
}
