//! Search/replace edits from real diffs (made by `git diff`), on the cases that break
//! naive converters: whitespace-only changes, end-of-file newlines, repeated lines.

mod common;

use common::git_patch;
use davinci_data::render::diff::{apply_edits, apply_hunks, hunks_to_edits, parse_patch};

fn check(name: &str, old: &str, new: &str) -> usize {
    let patch = git_patch(old, new);
    let hunks = parse_patch(&patch).unwrap_or_else(|e| panic!("{name}: {e}\n{patch}"));
    assert_eq!(apply_hunks(old, &hunks).unwrap(), new, "{name}: applying the patch");
    let edits = hunks_to_edits(old, &hunks).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(apply_edits(old, &edits).unwrap(), new, "{name}: applying the edits");
    edits.len()
}

fn numbered(n: usize) -> String {
    (1..=n).map(|i| format!("line {i}\n")).collect()
}

#[test]
fn edits_reproduce_real_diffs() {
    check("whitespace only", "def f():\n  return 1\n\nx = 2\n", "def f():\n    return 1\n\nx = 2\n");
    check("trailing spaces removed", "a = 1   \nb = 2\n", "a = 1\nb = 2\n");
    check("newline added at end of file", "a\nb", "a\nb\n");
    check("newline removed at end of file", "a\nb\n", "a\nb");
    check("last line changed, no newline either side", "x\ny", "x\nz");
    check(
        "insertion at the top",
        "import os\n\nprint(os.name)\n",
        "import sys\nimport os\n\nprint(os.name)\n",
    );
    check("pure deletion", &numbered(12), &numbered(12).replace("line 5\nline 6\n", ""));
    let far = numbered(40).replace("line 3\n", "line three\n").replace("line 35\n", "line thirty-five\n");
    assert_eq!(check("two hunks", &numbered(40), &far), 2);
    check("file emptied", "only line\n", "");
    check("crlf lines", "a\r\nb\r\nc\r\n", "a\r\nB\r\nc\r\n");
}

#[test]
fn repeated_lines_widen_the_search_until_it_is_unique() {
    let block = "def get(self):\n    if self.x:\n        return None\n    return None\n\n";
    let old = format!("class A:\n{block}class B:\n{block}class C:\n{block}");
    let new = old.replacen(
        "class B:\ndef get(self):\n    if self.x:\n        return None",
        "class B:\ndef get(self):\n    if self.x:\n        return 0",
        1,
    );
    assert_ne!(old, new);
    let patch = git_patch(&old, &new);
    let hunks = parse_patch(&patch).unwrap();
    let edits = hunks_to_edits(&old, &hunks).unwrap();
    assert_eq!(edits.len(), 1);
    assert!(
        edits[0].search.contains("class B:"),
        "the search had to reach the class line: {:?}",
        edits[0].search
    );
    assert_eq!(apply_edits(&old, &edits).unwrap(), new);
}

#[test]
fn a_patch_that_does_not_fit_its_file_is_refused() {
    let patch = git_patch("a\nb\nc\n", "a\nB\nc\n");
    let hunks = parse_patch(&patch).unwrap();
    assert!(apply_hunks("a\nX\nc\n", &hunks).unwrap_err().contains("does not match"));
    assert!(hunks_to_edits("a\nX\nc\n", &hunks).is_err());
    let err = parse_patch("@@ -1,2 +1,2 @@\n a\n-b\n").unwrap_err();
    assert!(err.contains("has 2 old and 1 new lines"), "{err}");
}
