#!/usr/bin/env python3
"""Writes davinci's bundled sample data under recipes/data/.

Rerun it from the repository root whenever a record here changes (Python 3 standard
library only; the output is the same on every run):

    python3 scripts/make_sample_data.py

It writes, replacing what is there:

- recipes/data/prs-general.jsonl           pull requests in Go, Rust, JS/TS, C, Java, Python
- recipes/data/prs-python.jsonl            merged Python pull requests (with the two that the
                                           1-5 Python-file filter drops)
- recipes/data/trajectories-chat.jsonl     OpenAI-style chat trajectories with tool calls
- recipes/data/swe-agent/*.traj            SWE-agent trajectory files (one JSON object each)
- recipes/data/trajectories-swesmith.jsonl SWE-smith / SWE-Gym-style trajectories
- recipes/data/trajectories-roletext.jsonl {role, text} trajectories ("ai" = assistant)
- recipes/data/plain-text.jsonl            already-rendered text
- recipes/data/decontamination/humaneval-sample.txt
                                           benchmark-style prompts, separated by `---` lines;
                                           one of them is pasted into a prs-python record so
                                           that the n-gram decontamination has a hit

The shapes are those of docs/records.md. Each pull request keeps here the content of its
files at the base and after every commit; the `patch` of every file, PR-level and
per-commit, is computed here as GitHub's REST API gives it: hunks only (no `diff --git`,
`---` or `+++` lines), with git's headers (`@@ -a,b +c,d @@`, a count of 1 left out as git
does, and the function-context text after the second `@@`), three lines of context, git's
placement of ambiguous insertions (its indent heuristic), `\\ No newline at end of file`
where a side lacks its final newline, and no newline after the last line. On these records
the patches are byte for byte what `git diff -U3` prints.

Then the script checks everything before it writes anything, and stops with an error
otherwise: every hunk header counts its lines right and applying the hunks to
`content_before` gives the content after exactly (PR-level and per commit, where a commit's
files are relative to the previous commit); review comments sit on lines the diff shows;
each edge case the tests rely on is present (listed in the summary it prints); only the one
intended record shares a 13-word n-gram with the benchmark prompts; and the trajectories
have the shapes and outcomes their files promise.

Everything in the records (code, prose, issue and PR numbers, accounts) is invented for
this sample; repository names are real so that the data looks like what the pipeline
meets, and two records come from SWE-bench Verified repositories (django/django,
psf/requests) so that the repository decontamination has something to drop.
"""

import base64
import difflib
import hashlib
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / "recipes" / "data"

NO_NEWLINE = "\\ No newline at end of file"
HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@(?: (.*))?$")
CONTEXT_LINES = 3


class DataError(Exception):
    """A record that is not what it claims to be."""


def fail(message):
    raise DataError(message)


# --------------------------------------------------------------------------------------
# Text helpers for writing the file contents below
# --------------------------------------------------------------------------------------


def src(text):
    """A file's content, written as a literal whose text starts on the line after the quotes."""
    if not text.startswith("\n"):
        fail("src() literals must start with a newline")
    return text[1:]


def tabs(text):
    """Go, Makefile style: every leading group of four spaces becomes a tab."""
    return re.sub(r"(?m)^((?:    )+)", lambda m: "\t" * (len(m.group(1)) // 4), text)


def edit(text, *changes):
    """Applies (old, new) replacements in order; `old` must occur exactly once, unless a
    third element gives which occurrence (0-based) to replace."""
    for change in changes:
        old, new = change[0], change[1]
        count = text.count(old)
        if len(change) > 2:
            nth = change[2]
            if count <= nth:
                fail(f"edit: occurrence {nth} of {old!r} does not exist ({count} found)")
            at = -1
            for _ in range(nth + 1):
                at = text.index(old, at + 1)
            text = text[:at] + new + text[at + len(old):]
        else:
            if count != 1:
                fail(f"edit: {old!r} occurs {count} times, expected once")
            text = text.replace(old, new)
    return text


def no_final_newline(text):
    if not text.endswith("\n"):
        fail("no_final_newline: the text has no final newline to remove")
    return text[:-1]


def sha(*parts):
    return hashlib.sha1("\x00".join(str(p) for p in parts).encode()).hexdigest()


def go_sum_hash(*parts):
    digest = hashlib.sha256("\x00".join(parts).encode()).digest()
    return "h1:" + base64.b64encode(digest).decode()


# --------------------------------------------------------------------------------------
# Unified diffs in GitHub's form, and a strict applier that checks them
# --------------------------------------------------------------------------------------


def split_lines(text):
    """Lines with their terminators; only '\\n' ends a line, the last may have none."""
    if not text:
        return []
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def function_context(old_lines, first):
    """git's default hunk-header context: the nearest line above the hunk's first line
    that starts with an ASCII letter, '_' or '$', cut to 80 bytes, trailing blanks trimmed."""
    for index in range(first - 1, -1, -1):
        line = old_lines[index]
        head = line[:1]
        if head and ((head.isascii() and head.isalpha()) or head in "_$"):
            return line.encode()[:80].decode("utf-8", "ignore").rstrip()
    return ""


def hunk_range(start, count):
    # git writes a range of one line without its count, as GitHub's patches show it.
    return f"{start}" if count == 1 else f"{start},{count}"


def _emit(out, prefix, line):
    if line.endswith("\n"):
        out.append(prefix + line[:-1])
    else:
        out.append(prefix + line)
        out.append(NO_NEWLINE)


# git slides an ambiguous run of added or removed lines (one whose first line equals the
# line after it, say) to where it reads best: xdiff's xdl_change_compact() with the
# indent heuristic, on by default since git 2.14. The constants are xdiff's.
MAX_INDENT = 200
MAX_BLANKS = 20
START_OF_FILE_PENALTY = 1
END_OF_FILE_PENALTY = 21
TOTAL_BLANK_WEIGHT = -30
POST_BLANK_WEIGHT = 6
RELATIVE_INDENT_PENALTY = -4
RELATIVE_INDENT_WITH_BLANK_PENALTY = 10
RELATIVE_OUTDENT_PENALTY = 24
RELATIVE_OUTDENT_WITH_BLANK_PENALTY = 17
RELATIVE_DEDENT_PENALTY = 23
RELATIVE_DEDENT_WITH_BLANK_PENALTY = 17
INDENT_WEIGHT = 60
INDENT_HEURISTIC_MAX_SLIDING = 100


def _indent(line):
    """Width of a line's leading blanks (tabs to multiples of 8); -1 for a blank line."""
    width = 0
    for c in line:
        if c not in " \t\n\r\f\v":
            return width
        if c == " ":
            width += 1
        elif c == "\t":
            width += 8 - width % 8
        if width >= MAX_INDENT:
            return MAX_INDENT
    return -1


def _split_score(recs, split):
    """(effective indent, penalty) of cutting recs before index `split` (xdiff's
    measure_split() and score_add_split())."""
    end_of_file = split >= len(recs)
    indent = -1 if end_of_file else _indent(recs[split])
    pre_blank, pre_indent = 0, -1
    for i in range(split - 1, -1, -1):
        pre_indent = _indent(recs[i])
        if pre_indent != -1:
            break
        pre_blank += 1
        if pre_blank == MAX_BLANKS:
            pre_indent = 0
            break
    post_blank, post_indent = 0, -1
    for i in range(split + 1, len(recs)):
        post_indent = _indent(recs[i])
        if post_indent != -1:
            break
        post_blank += 1
        if post_blank == MAX_BLANKS:
            post_indent = 0
            break

    penalty = 0
    if pre_indent == -1 and pre_blank == 0:
        penalty += START_OF_FILE_PENALTY
    if end_of_file:
        penalty += END_OF_FILE_PENALTY
    post_blank_count = 1 + post_blank if indent == -1 else 0
    total_blank = pre_blank + post_blank_count
    penalty += TOTAL_BLANK_WEIGHT * total_blank
    penalty += POST_BLANK_WEIGHT * post_blank_count
    effective = indent if indent != -1 else post_indent
    any_blanks = total_blank != 0
    if effective == -1 or pre_indent == -1:
        pass
    elif effective > pre_indent:
        penalty += RELATIVE_INDENT_WITH_BLANK_PENALTY if any_blanks else RELATIVE_INDENT_PENALTY
    elif effective == pre_indent:
        pass
    elif post_indent != -1 and post_indent > effective:
        penalty += RELATIVE_OUTDENT_WITH_BLANK_PENALTY if any_blanks else RELATIVE_OUTDENT_PENALTY
    else:
        penalty += RELATIVE_DEDENT_WITH_BLANK_PENALTY if any_blanks else RELATIVE_DEDENT_PENALTY
    return effective, penalty


class _Side:
    """One file of a diff: its lines and which of them changed (xdiff's xdfile_t)."""

    def __init__(self, recs, changed):
        self.recs = recs
        self.changed = changed

    def is_changed(self, i):
        return 0 <= i < len(self.recs) and self.changed[i]

    # Groups are [start, end) runs of changed lines, possibly empty (xdiff's struct xdlgroup).
    def group_init(self):
        end = 0
        while self.is_changed(end):
            end += 1
        return [0, end]

    def group_next(self, g):
        if g[1] == len(self.recs):
            return False
        g[0] = g[1] + 1
        g[1] = g[0]
        while self.is_changed(g[1]):
            g[1] += 1
        return True

    def group_previous(self, g):
        if g[0] == 0:
            return False
        g[1] = g[0] - 1
        g[0] = g[1]
        while self.is_changed(g[0] - 1):
            g[0] -= 1
        return True

    def slide_down(self, g):
        if g[1] < len(self.recs) and self.recs[g[0]] == self.recs[g[1]]:
            self.changed[g[0]] = False
            self.changed[g[1]] = True
            g[0] += 1
            g[1] += 1
            while self.is_changed(g[1]):
                g[1] += 1
            return True
        return False

    def slide_up(self, g):
        if g[0] > 0 and self.recs[g[0] - 1] == self.recs[g[1] - 1]:
            g[0] -= 1
            g[1] -= 1
            self.changed[g[0]] = True
            self.changed[g[1]] = False
            while self.is_changed(g[0] - 1):
                g[0] -= 1
            return True
        return False


def _compact(side, other):
    """xdiff's xdl_change_compact(): slide each group of changed lines of `side` as far
    up and down as it goes, then settle it where it lines up with a change of `other`,
    or else where the indent heuristic scores best."""
    g, go = side.group_init(), other.group_init()
    while True:
        if g[1] != g[0]:
            while True:
                size = g[1] - g[0]
                end_matching_other = -1
                while side.slide_up(g):
                    if not other.group_previous(go):
                        fail("diff: group sync broken sliding up")
                earliest_end = g[1]
                if go[1] > go[0]:
                    end_matching_other = g[1]
                while side.slide_down(g):
                    if not other.group_next(go):
                        fail("diff: group sync broken sliding down")
                    if go[1] > go[0]:
                        end_matching_other = g[1]
                if size == g[1] - g[0]:
                    break
            if g[1] == earliest_end:
                pass
            elif end_matching_other != -1:
                while go[1] == go[0]:
                    if not side.slide_up(g) or not other.group_previous(go):
                        fail("diff: lost the matching group")
            else:
                shift = max(earliest_end, g[1] - size - 1, g[1] - INDENT_HEURISTIC_MAX_SLIDING)
                best_shift, best = -1, None
                while shift <= g[1]:
                    top = _split_score(side.recs, shift)
                    bottom = _split_score(side.recs, shift - size)
                    score = (top[0] + bottom[0], top[1] + bottom[1])
                    if best is not None:
                        cmp = (score[0] > best[0]) - (score[0] < best[0])
                        better = INDENT_WEIGHT * cmp + (score[1] - best[1]) <= 0
                    if best is None or better:
                        best, best_shift = score, shift
                    shift += 1
                while g[1] > best_shift:
                    if not side.slide_up(g) or not other.group_previous(go):
                        fail("diff: best shift unreached")
        if not side.group_next(g):
            break
        if not other.group_next(go):
            fail("diff: group sync broken moving on")


def _changes(old, new):
    """Changed regions (i1, i2, j1, j2) as git finds them: difflib's matching, then
    xdiff's compaction of both sides."""
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    changed_old, changed_new = [False] * len(old), [False] * len(new)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            changed_old[i1:i2] = [True] * (i2 - i1)
            changed_new[j1:j2] = [True] * (j2 - j1)
    side_old, side_new = _Side(old, changed_old), _Side(new, changed_new)
    _compact(side_old, side_new)
    _compact(side_new, side_old)
    changes = []
    i = j = 0
    while i < len(old) or j < len(new):
        if i < len(old) and j < len(new) and not changed_old[i] and not changed_new[j]:
            if old[i] != new[j]:
                fail("diff: unchanged lines do not match")
            i += 1
            j += 1
            continue
        i1, j1 = i, j
        while i < len(old) and changed_old[i]:
            i += 1
        while j < len(new) and changed_new[j]:
            j += 1
        if (i, j) == (i1, j1):
            fail("diff: unpaired unchanged lines")
        changes.append((i1, i, j1, j))
    return changes


def make_patch(before, after):
    """The hunks of `git diff -U3` from `before` to `after` (None = no file), as REST's
    `patch` field: no file header, no final newline. None when nothing changed."""
    old, new = split_lines(before or ""), split_lines(after or "")
    if old == new:
        return None
    groups = []
    for change in _changes(old, new):
        if groups and change[0] - groups[-1][-1][1] <= 2 * CONTEXT_LINES:
            groups[-1].append(change)
        else:
            groups.append([change])
    out = []
    for group in groups:
        first, last = group[0], group[-1]
        s1 = max(first[0] - CONTEXT_LINES, 0)
        s2 = first[2] - (first[0] - s1)
        e1 = min(last[1] + CONTEXT_LINES, len(old))
        e2 = last[3] + (e1 - last[1])
        old_start = s1 + 1 if e1 > s1 else s1
        new_start = s2 + 1 if e2 > s2 else s2
        header = f"@@ -{hunk_range(old_start, e1 - s1)} +{hunk_range(new_start, e2 - s2)} @@"
        context = function_context(old, s1)
        if context:
            header += " " + context
        out.append(header)
        at = s1
        for i1, i2, j1, j2 in group:
            for line in old[at:i1]:
                _emit(out, " ", line)
            for line in old[i1:i2]:
                _emit(out, "-", line)
            for line in new[j1:j2]:
                _emit(out, "+", line)
            at = i2
        for line in old[at:e1]:
            _emit(out, " ", line)
    return "\n".join(out)


def parse_hunks(patch, where):
    """Parses a patch strictly: hunks only, counts checked, markers only after a line."""
    if patch is None or patch == "":
        fail(f"{where}: empty patch")
    lines = patch.split("\n")
    hunks = []
    k = 0
    while k < len(lines):
        match = HUNK_HEADER.match(lines[k])
        if not match:
            fail(f"{where}: patch line {k + 1} is not a hunk header: {lines[k]!r}")
        old_start, new_start = int(match.group(1)), int(match.group(3))
        old_count = int(match.group(2)) if match.group(2) is not None else 1
        new_count = int(match.group(4)) if match.group(4) is not None else 1
        k += 1
        entries = []
        seen_old = seen_new = 0
        while seen_old < old_count or seen_new < new_count:
            if k >= len(lines):
                fail(f"{where}: hunk at -{old_start} ends after {seen_old} old / {seen_new} new lines")
            line = lines[k]
            k += 1
            tag, text = line[:1], line[1:]
            if tag == " ":
                seen_old += 1
                seen_new += 1
            elif tag == "-":
                seen_old += 1
            elif tag == "+":
                seen_new += 1
            else:
                fail(f"{where}: patch line {k} is not a diff line: {line!r}")
            entry = [tag, text + "\n"]
            if k < len(lines) and lines[k] == NO_NEWLINE:
                entry[1] = text
                k += 1
            entries.append(entry)
        if seen_old != old_count or seen_new != new_count:
            fail(
                f"{where}: hunk header says -{old_count} +{new_count} lines, "
                f"the hunk has -{seen_old} +{seen_new}"
            )
        hunks.append((old_start, old_count, new_start, new_count, entries))
    return hunks


def apply_patch(before, patch, where):
    """The file after applying `patch` to `before` (None = no file); every context and
    removed line must match, hunks must be in order, and new-side starts must agree."""
    old = split_lines(before or "")
    out = []
    pos = 0
    for old_start, old_count, new_start, new_count, entries in parse_hunks(patch, where):
        at = old_start - 1 if old_count > 0 else old_start
        if at < pos or at > len(old):
            fail(f"{where}: hunk at old line {old_start} is out of order or past the end")
        out.extend(old[pos:at])
        pos = at
        expected_new_start = len(out) + 1 if new_count > 0 else len(out)
        if new_start != expected_new_start:
            fail(f"{where}: hunk at old line {old_start} says +{new_start}, expected +{expected_new_start}")
        for tag, text in entries:
            if tag in " -":
                if pos >= len(old) or old[pos] != text:
                    got = old[pos] if pos < len(old) else "<end of file>"
                    fail(f"{where}: old line {pos + 1} is {got!r}, the patch has {text!r}")
                pos += 1
            if tag in " +":
                out.append(text)
    out.extend(old[pos:])
    for line in out[:-1]:
        if not line.endswith("\n"):
            fail(f"{where}: a line without a newline is not the last line: {line!r}")
    return "".join(out)


def new_side_lines(patch):
    """Line numbers of the new file that a patch shows (context and added lines)."""
    shown = set()
    for old_start, old_count, new_start, new_count, entries in parse_hunks(patch, "patch"):
        line = new_start
        for tag, _ in entries:
            if tag in " +":
                shown.add(line)
                line += 1
    return shown


def git_diff(path, before, after):
    """A `git diff` of one file with its header, as agents submit it."""
    patch = make_patch(before, after)
    if patch is None:
        fail(f"git_diff {path}: no change")
    if apply_patch(before, patch, f"git_diff {path}") != (after or ""):
        fail(f"git_diff {path}: patch does not reproduce the file")
    index = f"index {sha('blob', before)[:7]}..{sha('blob', after)[:7]} 100644"
    return f"diff --git a/{path} b/{path}\n{index}\n--- a/{path}\n+++ b/{path}\n{patch}\n"


# --------------------------------------------------------------------------------------
# Pull requests: declared as a base and a list of commits, computed and checked
# --------------------------------------------------------------------------------------


def user(login):
    return {"login": login}


def issue(number, title, login, body):
    return {"number": number, "title": title, "body": body, "user": user(login)}


def review(login, state, body, at):
    if state not in ("APPROVED", "CHANGES_REQUESTED", "COMMENTED", "DISMISSED"):
        fail(f"review state {state!r}")
    return {"user": user(login), "state": state, "body": body, "submitted_at": at}


def inline(login, path, anchor, body, at, nth=0):
    """A review comment on the line of `path` (after the PR) that contains `anchor`."""
    return {"login": login, "path": path, "anchor": anchor, "nth": nth, "body": body, "at": at}


def comment(login, body, at):
    return {"user": user(login), "body": body, "created_at": at}


def commit(message, author, changes, renames=None, refined=None):
    """`changes`: path -> content after this commit (None deletes the file); `renames`:
    old path -> new path, applied before the changes."""
    return {"message": message, "author": author, "changes": changes, "renames": renames or {},
            "refined": refined}


def pr(repo, number, title, author, *, body, base, commits, created_at, merged_at=None,
       merged=True, state="closed", labels=(), base_ref="main", summary=None, issues=(),
       reviews=(), review_comments=(), comments=(), commit_files=True):
    return {
        "repo": repo, "number": number, "title": title, "author": author, "body": body,
        "base": base, "commits": commits, "created_at": created_at, "merged_at": merged_at,
        "merged": merged, "state": state, "labels": list(labels), "base_ref": base_ref,
        "summary": summary, "issues": list(issues), "reviews": list(reviews),
        "review_comments": list(review_comments), "comments": list(comments),
        "commit_files": commit_files,
    }


def changed_file(path, previous, before, after, where):
    if before is None and after is None:
        fail(f"{where}: a file with neither side")
    if before is None:
        status = "added"
    elif after is None:
        status = "removed"
    elif previous != path:
        status = "renamed"
    else:
        status = "modified"
    for side in (before, after):
        if side is not None and "\r" in side:
            fail(f"{where}: carriage return in content")
    patch = make_patch(before, after)
    if patch is None and status != "renamed":
        fail(f"{where}: {status} file without a change")
    if patch is not None:
        got = apply_patch(before, patch, where)
        if got != (after or ""):
            fail(f"{where}: applying the patch does not give the content after")
    return {
        "filename": path,
        "status": status,
        "previous_filename": previous if status == "renamed" else None,
        "content_before": before,
        "patch": patch,
    }


def build_pr(spec):
    """The record of docs/records.md, with every file of the PR and of each commit
    computed from the declared contents and checked."""
    where = f"{spec['repo']}#{spec['number']}"
    base = spec["base"]
    state = dict(base)
    origin = {path: path for path in base}  # path now -> path at the base (None: added)
    commits = []
    touched_ever = set()
    for n, c in enumerate(spec["commits"], 1):
        before_commit = dict(state)
        moved = {}
        for old, new in c["renames"].items():
            if old not in state or new in state:
                fail(f"{where} commit {n}: cannot rename {old} to {new}")
            state[new] = state.pop(old)
            origin[new] = origin.pop(old)
            moved[new] = old
        for path, content in c["changes"].items():
            if content is None:
                if path not in state:
                    fail(f"{where} commit {n}: deleting {path}, which does not exist")
                del state[path]
                origin.pop(path)
            else:
                if path not in state:
                    origin[path] = None
                state[path] = content
        files = []
        for path in sorted(set(c["changes"]) | set(moved)):
            previous = moved.get(path, path)
            files.append(changed_file(path, previous, before_commit.get(previous), state.get(path),
                                      f"{where} commit {n} {path}"))
        touched_ever.update(f["filename"] for f in files)
        touched_ever.update(f["previous_filename"] for f in files if f["previous_filename"])
        record = {
            "sha": sha(where, "commit", n, c["message"]),
            "message": c["message"],
            "refined_message": c["refined"],
            "author": user(c["author"]),
        }
        if spec["commit_files"]:
            record["files"] = files
        commits.append(record)
    if set(base) - touched_ever:
        fail(f"{where}: base files never changed: {sorted(set(base) - touched_ever)}")

    files = []
    for path in sorted(state):
        at_base = origin[path]
        before = base.get(at_base) if at_base is not None else None
        if at_base == path and before == state[path]:
            fail(f"{where}: {path} changed and changed back; drop it from the PR")
        files.append(changed_file(path, at_base or path, before, state[path], f"{where} {path}"))
    kept = {o for o in origin.values() if o is not None}
    for path in sorted(set(base) - kept):
        files.append(changed_file(path, path, base[path], None, f"{where} {path}"))
    files.sort(key=lambda f: f["filename"])

    review_comments = []
    for rc in spec["review_comments"]:
        content = state.get(rc["path"])
        if content is None:
            fail(f"{where}: review comment on {rc['path']}, which the PR does not leave")
        numbers = [i for i, line in enumerate(split_lines(content), 1) if rc["anchor"] in line]
        if len(numbers) <= rc["nth"]:
            fail(f"{where}: review comment anchor {rc['anchor']!r} not found in {rc['path']}")
        line = numbers[rc["nth"]]
        patch = next(f["patch"] for f in files if f["filename"] == rc["path"])
        if line not in new_side_lines(patch):
            fail(f"{where}: review comment on {rc['path']}:{line}, a line outside the diff")
        review_comments.append({
            "user": user(rc["login"]), "body": rc["body"], "path": rc["path"], "line": line,
            "created_at": rc["at"],
        })

    if spec["merged"] and (spec["state"] != "closed" or not spec["merged_at"]):
        fail(f"{where}: a merged PR is closed and has merged_at")
    if not spec["merged"] and spec["merged_at"]:
        fail(f"{where}: an unmerged PR has no merged_at")

    return {
        "repo": spec["repo"],
        "number": spec["number"],
        "title": spec["title"],
        "body": spec["body"],
        "user": user(spec["author"]),
        "state": spec["state"],
        "merged": spec["merged"],
        "labels": [{"name": name} for name in spec["labels"]],
        "created_at": spec["created_at"],
        "merged_at": spec["merged_at"],
        "base": {"sha": sha(where, "base"), "ref": spec["base_ref"]},
        "summary": spec["summary"],
        "linked_issues": spec["issues"],
        "files": files,
        "commits": commits,
        "reviews": spec["reviews"],
        "review_comments": review_comments,
        "comments": spec["comments"],
    }


def file_after(changed):
    """A changed file's content after its change, from its patch."""
    if changed["status"] == "removed":
        return None
    if changed["patch"] is None:
        return changed["content_before"]
    return apply_patch(changed["content_before"], changed["patch"], changed["filename"])


# ======================================================================================
# prs-general.jsonl
# ======================================================================================

# --- gin-gonic/gin: two commits over two files, reviews, inline comments ---------------

GIN_FORM = src(r'''
package binding

import (
    "reflect"
    "strconv"
    "strings"
    "time"
)

// unixUnits maps the time_format values accepted for integer timestamps
// to the length of one unit.
var unixUnits = map[string]time.Duration{
    "unix":      time.Second,
    "unixmilli": time.Millisecond,
    "unixmicro": time.Microsecond,
    "unixnano":  time.Nanosecond,
}

func setTimeField(val string, field reflect.StructField, value reflect.Value) error {
    format := field.Tag.Get("time_format")
    if format == "" {
        format = time.RFC3339
    }

    if strings.HasPrefix(format, "unix") {
        n, err := strconv.ParseInt(val, 10, 64)
        if err != nil {
            return err
        }
        unit := unixUnits[format]
        value.Set(reflect.ValueOf(time.Unix(0, n*int64(unit))))
        return nil
    }

    if val == "" {
        value.Set(reflect.ValueOf(time.Time{}))
        return nil
    }

    loc := time.Local
    if isUTC, _ := strconv.ParseBool(field.Tag.Get("time_utc")); isUTC {
        loc = time.UTC
    }

    t, err := time.ParseInLocation(format, val, loc)
    if err != nil {
        return err
    }
    value.Set(reflect.ValueOf(t))
    return nil
}
''')

GIN_FORM_1 = edit(
    GIN_FORM,
    ('import (\n    "reflect"', 'import (\n    "fmt"\n    "reflect"'),
    ("        unit := unixUnits[format]\n",
     "        unit, ok := unixUnits[format]\n"
     "        if !ok {\n"
     '            return fmt.Errorf("binding: unknown time_format %q", format)\n'
     "        }\n"),
)

GIN_FORM_2 = edit(
    GIN_FORM_1,
    ('import (\n    "fmt"', 'import (\n    "errors"\n    "fmt"'),
    ("func setTimeField(",
     '// ErrUnknownTimeFormat is returned for a time_format that starts with "unix"\n'
     "// but names no known unit, such as \"unixms\".\n"
     'var ErrUnknownTimeFormat = errors.New("binding: unknown unix time_format")\n\n'
     "func setTimeField("),
    ('return fmt.Errorf("binding: unknown time_format %q", format)',
     'return fmt.Errorf("%w: %q", ErrUnknownTimeFormat, format)'),
)

GIN_TEST = src(r'''
package binding

import (
    "reflect"
    "testing"
    "time"
)

type timeForm struct {
    Created time.Time `form:"created" time_format:"unix"`
    Updated time.Time `form:"updated" time_format:"unixmilli"`
}

func TestSetTimeFieldUnix(t *testing.T) {
    var f timeForm
    field, _ := reflect.TypeOf(f).FieldByName("Created")
    v := reflect.ValueOf(&f).Elem().FieldByName("Created")

    if err := setTimeField("1700000000", field, v); err != nil {
        t.Fatalf("unexpected error: %v", err)
    }
    if got := f.Created.Unix(); got != 1700000000 {
        t.Errorf("Created.Unix() = %d, want 1700000000", got)
    }
}
''')

GIN_TEST_1 = GIN_TEST + src(r'''

func TestSetTimeFieldUnknownUnit(t *testing.T) {
    type form struct {
        At time.Time `form:"at" time_format:"unixms"`
    }
    var f form
    field, _ := reflect.TypeOf(f).FieldByName("At")
    v := reflect.ValueOf(&f).Elem().FieldByName("At")

    if err := setTimeField("1700000000000", field, v); err == nil {
        t.Fatal("expected an error for an unknown unix unit")
    }
}
''')

GIN_TEST_2 = edit(
    GIN_TEST_1,
    ('import (\n    "reflect"', 'import (\n    "errors"\n    "reflect"'),
    ('    if err := setTimeField("1700000000000", field, v); err == nil {\n'
     '        t.Fatal("expected an error for an unknown unix unit")\n',
     '    err := setTimeField("1700000000000", field, v)\n'
     '    if !errors.Is(err, ErrUnknownTimeFormat) {\n'
     '        t.Fatalf("err = %v, want ErrUnknownTimeFormat", err)\n'),
)

GIN = pr(
    "gin-gonic/gin", 3871, "binding: return an error for unknown unix time_format units", "mrkpl",
    body=(
        "Fixes #3860.\n\n"
        "`setTimeField` looked the unit of a `time_format:\"unix...\"` tag up with a plain map "
        "index, so a typo such as `unixms` or `unixsec` silently used a zero unit and every "
        "timestamp bound to `1970-01-01`. Binding now fails with an error instead, like any "
        "other malformed field.\n\n"
        "A sentinel, `binding.ErrUnknownTimeFormat`, lets callers tell this apart from a parse "
        "error with `errors.Is`.\n\n"
        "- [x] tests added\n- [x] `go test ./binding/...` passes"
    ),
    base={"binding/form_mapping.go": tabs(GIN_FORM), "binding/form_mapping_test.go": tabs(GIN_TEST)},
    commits=[
        commit("binding: reject unknown unix time_format units", "mrkpl",
               {"binding/form_mapping.go": tabs(GIN_FORM_1), "binding/form_mapping_test.go": tabs(GIN_TEST_1)}),
        commit("binding: add ErrUnknownTimeFormat sentinel\n\nAs suggested in review, so that error "
               "middleware can map it to a 400 with errors.Is.", "mrkpl",
               {"binding/form_mapping.go": tabs(GIN_FORM_2), "binding/form_mapping_test.go": tabs(GIN_TEST_2)}),
    ],
    created_at="2024-03-02T18:05:11Z", merged_at="2024-03-04T16:41:30Z",
    labels=["type/bug", "binding"], base_ref="master",
    issues=[issue(
        3860, 'time_format:"unixms" silently binds the zero time', "owainj",
        "## Description\n\nWith the struct tag `time_format:\"unixms\"` (I meant `unixmilli`) every "
        "request binds `1970-01-01 00:00:00 +0000 UTC`. There is no error, so it took us a day to "
        "notice.\n\n## How to reproduce\n\n```go\ntype Req struct {\n\tAt time.Time `form:\"at\" "
        "time_format:\"unixms\"`\n}\n```\n\n`GET /?at=1700000000000` binds `At` to the zero Unix "
        "time.\n\n## Expectations\n\nBinding fails with an error naming the bad format.\n\n"
        "## Environment\n\n- go version: 1.22.1\n- gin version: v1.9.1"
    )],
    reviews=[
        review("lhwang-dev", "CHANGES_REQUESTED",
               "Thanks for the fix! Could this return a sentinel error rather than a bare "
               "`fmt.Errorf`? Our error middleware maps binding errors to 400s and would like to "
               "match on it.", "2024-03-03T09:12:44Z"),
        review("lhwang-dev", "APPROVED", "LGTM, thanks.", "2024-03-04T16:40:02Z"),
    ],
    review_comments=[
        inline("lhwang-dev", "binding/form_mapping.go", "unit, ok := unixUnits[format]",
               "`HasPrefix(format, \"unix\")` already holds here, so a miss can only be a typo: "
               "an error is the right call.", "2024-03-03T09:10:20Z"),
        inline("lhwang-dev", "binding/form_mapping_test.go", "errors.Is(err, ErrUnknownTimeFormat)",
               "Nice, this is exactly what the middleware needs.", "2024-03-04T16:39:11Z"),
    ],
    comments=[
        comment("owainj", "Thanks for picking this up so quickly!", "2024-03-02T19:30:00Z"),
        comment("lhwang-dev", "Merged; this will be in v1.10.0.", "2024-03-04T16:42:05Z"),
    ],
)

# --- spf13/cobra: a renamed file with a small change; commits without their own files --

COBRA_FISH = src(r'''
package cobra

import (
    "fmt"
    "io"
    "strings"
)

// fishEscape quotes a completion description so that fish prints it as is.
func fishEscape(s string) string {
    s = strings.ReplaceAll(s, `\`, `\\`)
    s = strings.ReplaceAll(s, `'`, `\'`)
    return s
}

// writeFishCompletion writes one completion candidate in fish's
// "value<TAB>description" form.
func writeFishCompletion(w io.Writer, value, desc string) error {
    if desc == "" {
        _, err := fmt.Fprintln(w, value)
        return err
    }
    _, err := fmt.Fprintf(w, "%s\t%s\n", value, fishEscape(desc))
    return err
}

// GenFishCompletion writes the fish completion script for the root of c to w.
func (c *Command) GenFishCompletion(w io.Writer, includeDesc bool) error {
    return genFishComp(w, c.Root().Name(), includeDesc)
}
''')

COBRA_FISH_AFTER = edit(
    COBRA_FISH,
    ("// fishEscape quotes a completion description so that fish prints it as is.\n"
     "func fishEscape(s string) string {\n",
     "// fishEscape quotes a completion description so that fish prints it as is.\n"
     "// Tabs and newlines would split the candidate, so they become spaces.\n"
     "func fishEscape(s string) string {\n"
     '    s = strings.NewReplacer("\\t", " ", "\\n", " ").Replace(s)\n'),
)

COBRA_TEST = src(r'''
package cobra

import (
    "bytes"
    "testing"
)

func TestWriteFishCompletion(t *testing.T) {
    var buf bytes.Buffer
    if err := writeFishCompletion(&buf, "serve", "Start the server"); err != nil {
        t.Fatal(err)
    }
    if got, want := buf.String(), "serve\tStart the server\n"; got != want {
        t.Errorf("got %q, want %q", got, want)
    }
}
''')

COBRA_TEST_AFTER = COBRA_TEST + src(r'''

func TestWriteFishCompletionMultilineDesc(t *testing.T) {
    var buf bytes.Buffer
    if err := writeFishCompletion(&buf, "serve", "Start the\nserver\tnow"); err != nil {
        t.Fatal(err)
    }
    if got, want := buf.String(), "serve\tStart the server now\n"; got != want {
        t.Errorf("got %q, want %q", got, want)
    }
}
''')

COBRA = pr(
    "spf13/cobra", 2115,
    "Rename fish_completions.go to completions_fish.go; flatten tabs and newlines in fish descriptions",
    "ruiqi-z",
    body=(
        "The other shells' generators live in `completions_<shell>.go`; this moves the fish one "
        "to match (git still follows the history).\n\n"
        "While there: a description containing a tab or a newline broke fish's "
        "`value<TAB>description` format, and the rest of the description showed up as another "
        "candidate. `fishEscape` now turns both into spaces.\n\nFixes #2108"
    ),
    base={"fish_completions.go": tabs(COBRA_FISH), "completions_fish_test.go": tabs(COBRA_TEST)},
    commits=[
        commit("fish: rename generator file and flatten multi-line descriptions", "ruiqi-z",
               {"completions_fish.go": tabs(COBRA_FISH_AFTER), "completions_fish_test.go": tabs(COBRA_TEST_AFTER)},
               renames={"fish_completions.go": "completions_fish.go"}),
    ],
    commit_files=False,
    created_at="2024-04-09T07:51:40Z", merged_at="2024-04-15T20:02:13Z",
    labels=["area/shell-completion", "kind/bug"],
    issues=[issue(
        2108, "fish: multi-line flag usage shows up as extra completion candidates", "tmarsh",
        "When a flag's usage string contains a newline, fish completion lists the second line as "
        "a separate candidate:\n\n```\n$ mycli --<TAB>\n--config  (Path to the config file)\n"
        "Defaults to ~/.mycli.yaml\n```\n\ncobra v1.8.0, fish 3.7.0."
    )],
    reviews=[review("hkato", "APPROVED",
                    "Thanks! Since git detects the rename, `git blame` keeps working, so fine by me.",
                    "2024-04-15T19:58:31Z")],
)

# --- prometheus/client_golang: a dependabot bump -------------------------------------

def go_mod(net_version):
    return tabs(src(f'''
module github.com/prometheus/client_golang

go 1.20

require (
    github.com/beorn7/perks v1.0.1
    github.com/cespare/xxhash/v2 v2.2.0
    github.com/google/go-cmp v0.6.0
    github.com/prometheus/client_model v0.6.0
    github.com/prometheus/common v0.48.0
    github.com/prometheus/procfs v0.12.0
    golang.org/x/sys v0.18.0
    google.golang.org/protobuf v1.33.0
)

require (
    github.com/jpillora/backoff v1.0.0 // indirect
    github.com/json-iterator/go v1.1.12 // indirect
    golang.org/x/net {net_version} // indirect
    golang.org/x/oauth2 v0.18.0 // indirect
    golang.org/x/text v0.14.0 // indirect
)
'''))


def go_sum(net_version):
    modules = [
        ("github.com/beorn7/perks", "v1.0.1"),
        ("github.com/cespare/xxhash/v2", "v2.2.0"),
        ("github.com/google/go-cmp", "v0.6.0"),
        ("github.com/jpillora/backoff", "v1.0.0"),
        ("github.com/json-iterator/go", "v1.1.12"),
        ("golang.org/x/net", net_version),
        ("golang.org/x/oauth2", "v0.18.0"),
        ("golang.org/x/sys", "v0.18.0"),
        ("golang.org/x/text", "v0.14.0"),
        ("google.golang.org/protobuf", "v1.33.0"),
    ]
    lines = []
    for module, version in modules:
        lines.append(f"{module} {version} {go_sum_hash(module, version)}\n")
        lines.append(f"{module} {version}/go.mod {go_sum_hash(module, version, 'go.mod')}\n")
    return "".join(lines)


DEPENDABOT_BODY = (
    "Bumps [golang.org/x/net](https://github.com/golang/net) from 0.22.0 to 0.23.0.\n"
    "<details>\n<summary>Commits</summary>\n<ul>\n"
    "<li><a href=\"https://github.com/golang/net/commit/c48da13\"><code>c48da13</code></a> "
    "http2: fix TestServerContinuationFlood flakes</li>\n"
    "<li><a href=\"https://github.com/golang/net/commit/762b58d\"><code>762b58d</code></a> "
    "http2: fix tipos in comment</li>\n"
    "<li>See full diff in <a href=\"https://github.com/golang/net/compare/v0.22.0...v0.23.0\">compare view</a></li>\n"
    "</ul>\n</details>\n<br />\n\n\n"
    "[![Dependabot compatibility score](https://dependabot-badges.githubapp.com/badges/compatibility_score"
    "?dependency-name=golang.org/x/net&package-manager=go_modules&previous-version=0.22.0&new-version=0.23.0)]"
    "(https://docs.github.com/en/github/managing-security-vulnerabilities/about-dependabot-security-updates"
    "#about-compatibility-scores)\n\n"
    "Dependabot will resolve any conflicts with this PR as long as you don't alter it yourself. "
    "You can also trigger a rebase manually by commenting `@dependabot rebase`.\n\n"
    "---\n\n<details>\n<summary>Dependabot commands and options</summary>\n<br />\n\n"
    "You can trigger Dependabot actions by commenting on this PR:\n"
    "- `@dependabot rebase` will rebase this PR\n"
    "- `@dependabot recreate` will recreate this PR, overwriting any edits that have been made to it\n"
    "- `@dependabot merge` will merge this PR after your CI passes on it\n"
    "- `@dependabot ignore this dependency` will close this PR and stop Dependabot creating any more "
    "for this dependency (unless you reopen the PR or upgrade to it yourself)\n\n</details>"
)

DEPENDABOT = pr(
    "prometheus/client_golang", 1485, "build(deps): bump golang.org/x/net from 0.22.0 to 0.23.0",
    "dependabot[bot]",
    body=DEPENDABOT_BODY,
    base={"go.mod": go_mod("v0.22.0"), "go.sum": go_sum("v0.22.0")},
    commits=[commit(
        "build(deps): bump golang.org/x/net from 0.22.0 to 0.23.0\n\n"
        "Bumps [golang.org/x/net](https://github.com/golang/net) from 0.22.0 to 0.23.0.\n"
        "- [Commits](https://github.com/golang/net/compare/v0.22.0...v0.23.0)\n\n"
        "---\nupdated-dependencies:\n- dependency-name: golang.org/x/net\n"
        "  dependency-type: indirect\n...\n\n"
        "Signed-off-by: dependabot[bot] <support@github.com>",
        "dependabot[bot]",
        {"go.mod": go_mod("v0.23.0"), "go.sum": go_sum("v0.23.0")},
    )],
    created_at="2024-04-19T19:31:02Z", merged_at="2024-04-22T08:15:47Z",
    labels=["dependencies", "go"],
    reviews=[review("pbarros", "APPROVED", "", "2024-04-22T08:15:12Z")],
)

# --- tokio-rs/tokio: two commits on the same file ------------------------------------

TOKIO_DEADLINE = src(r'''
use std::time::Duration;

use crate::time::Instant;

/// Roughly 30 years: the furthest deadline the timer wheel can hold.
pub(crate) const FAR_FUTURE: Duration = Duration::from_secs(86400 * 365 * 30);

/// Computes the instant at which a timer armed at `now` for `duration` fires.
///
/// Panics if the deadline cannot be represented.
pub(crate) fn deadline_after(now: Instant, duration: Duration) -> Instant {
    now + duration
}

/// Returns how long remains until `deadline`, or zero if it has passed.
pub(crate) fn remaining(now: Instant, deadline: Instant) -> Duration {
    deadline.saturating_duration_since(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_after_deadline_is_zero() {
        let now = Instant::now();
        assert_eq!(remaining(now + Duration::from_secs(1), now), Duration::ZERO);
    }
}
''')

TOKIO_DEADLINE_1 = edit(
    TOKIO_DEADLINE,
    ("/// Panics if the deadline cannot be represented.\n"
     "pub(crate) fn deadline_after(now: Instant, duration: Duration) -> Instant {\n"
     "    now + duration\n",
     "/// A deadline too far in the future to represent is clamped to [`FAR_FUTURE`]\n"
     "/// from now, which the timer treats as \"never\".\n"
     "pub(crate) fn deadline_after(now: Instant, duration: Duration) -> Instant {\n"
     "    now.checked_add(duration).unwrap_or_else(|| now + FAR_FUTURE)\n"),
)

TOKIO_DEADLINE_2 = edit(
    TOKIO_DEADLINE_1,
    ("/// A deadline too far in the future to represent is clamped to [`FAR_FUTURE`]\n"
     "/// from now, which the timer treats as \"never\".\n",
     "/// Durations longer than [`FAR_FUTURE`] are clamped to it, which the timer treats\n"
     "/// as \"never\": even where the sum would not overflow, the wheel could not hold it.\n"),
    ("    now.checked_add(duration).unwrap_or_else(|| now + FAR_FUTURE)\n",
     "    now.checked_add(duration.min(FAR_FUTURE)).unwrap_or(now)\n"),
    ("        assert_eq!(remaining(now + Duration::from_secs(1), now), Duration::ZERO);\n    }\n",
     "        assert_eq!(remaining(now + Duration::from_secs(1), now), Duration::ZERO);\n    }\n\n"
     "    #[test]\n"
     "    fn deadline_of_max_duration_is_clamped() {\n"
     "        let now = Instant::now();\n"
     "        assert_eq!(deadline_after(now, Duration::MAX), now + FAR_FUTURE);\n"
     "    }\n"),
)

TOKIO = pr(
    "tokio-rs/tokio", 6420, "time: clamp far-future deadlines instead of panicking", "samir-b",
    body=(
        "## Motivation\n\n`sleep(Duration::MAX)` is a common way to say \"park forever\", and "
        "it panics with `overflow when adding duration to instant` (#6411).\n\n"
        "## Solution\n\nClamp the duration to `FAR_FUTURE` (about 30 years, the furthest the "
        "timer wheel can hold) before adding it. A second commit follows the review: clamping "
        "the duration first also covers sums that do not overflow but still land past the "
        "wheel's range."
    ),
    base={"tokio/src/time/deadline.rs": TOKIO_DEADLINE},
    commits=[
        commit("time: clamp far-future deadlines instead of panicking", "samir-b",
               {"tokio/src/time/deadline.rs": TOKIO_DEADLINE_1}),
        commit("time: clamp the duration before adding it", "samir-b",
               {"tokio/src/time/deadline.rs": TOKIO_DEADLINE_2}),
    ],
    created_at="2024-03-27T11:02:58Z", merged_at="2024-04-01T09:30:00Z",
    labels=["A-tokio", "M-time"], base_ref="master",
    issues=[issue(
        6411, "`sleep(Duration::MAX)` panics with 'overflow when adding duration to instant'", "yuki-t",
        "**Version**\ntokio v1.36.0\n\n**Platform**\nLinux 6.6 x86_64\n\n**Description**\n\n"
        "```rust\n#[tokio::main]\nasync fn main() {\n    tokio::time::sleep(std::time::Duration::MAX).await;\n}\n```\n\n"
        "panics at `overflow when adding duration to instant`. I expected it to sleep forever."
    )],
    reviews=[
        review("vlad-k", "COMMENTED",
               "Clamping matches what the wheel does internally. But `checked_add` can still "
               "succeed for durations just below the overflow limit, and those land past the "
               "wheel's range. Clamp the duration first?", "2024-03-28T15:44:10Z"),
        review("ada-l", "APPROVED", "Looks good with the second commit.", "2024-04-01T09:12:37Z"),
    ],
    review_comments=[
        inline("vlad-k", "tokio/src/time/deadline.rs", "now.checked_add(duration.min(FAR_FUTURE))",
               "This is what I meant, thanks. `unwrap_or(now)` cannot really happen any more, "
               "but it is a fine fallback.", "2024-03-29T10:05:51Z"),
    ],
    comments=[comment("yuki-t", "Confirmed: this fixes our `sleep(Duration::MAX)` \"park forever\" task.",
                      "2024-03-29T18:20:00Z")],
)

# --- BurntSushi/ripgrep: an open PR, not merged, with a discussion ------------------------

RG_UTIL = src(r'''
//! Small helpers shared by the standard and JSON printers.

/// Trims a single trailing line terminator (`\n` or `\r\n`) from `line`.
pub(crate) fn trim_line_terminator(line: &[u8]) -> &[u8] {
    if let Some(rest) = line.strip_suffix(b"\r\n") {
        rest
    } else if let Some(rest) = line.strip_suffix(b"\n") {
        rest
    } else {
        line
    }
}

/// Returns the 1-based column of a match that starts at byte `start` of `line`.
///
/// Columns are byte offsets, which is what Vim's `%c` in 'errorformat' expects.
pub(crate) fn match_column(line: &[u8], start: usize) -> u64 {
    debug_assert!(start <= line.len());
    (start as u64) + 1
}

/// Returns true if `line` contains only ASCII whitespace.
pub(crate) fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| b.is_ascii_whitespace())
}
''')

RG_UTIL_AFTER = edit(
    RG_UTIL,
    ("/// Returns the 1-based column of a match that starts at byte `start` of `line`.\n"
     "///\n"
     "/// Columns are byte offsets, which is what Vim's `%c` in 'errorformat' expects.\n",
     "/// Returns the 1-based column of a match that starts at byte `start` of `line`.\n"
     "///\n"
     "/// Columns count characters when the text before the match is valid UTF-8, so\n"
     "/// that editors place the cursor on the match in lines with non-ASCII text.\n"),
    ("    (start as u64) + 1\n",
     "    let prefix = &line[..start];\n"
     "    let chars = match std::str::from_utf8(prefix) {\n"
     "        Ok(s) => s.chars().count(),\n"
     "        Err(_) => start,\n"
     "    };\n"
     "    (chars as u64) + 1\n"),
)

RIPGREP = pr(
    "BurntSushi/ripgrep", 2750, "printer: report --vimgrep columns in characters, not bytes", "tmarsh",
    body=(
        "With `--vimgrep`, a match after non-ASCII text gets a column past the match: in "
        "`naïve = 1`, a match on `=` is reported at column 8 instead of 7. This counts "
        "characters instead, falling back to bytes when the prefix is not valid UTF-8."
    ),
    base={"crates/printer/src/util.rs": RG_UTIL},
    commits=[commit("printer: count --vimgrep columns in characters", "tmarsh",
                    {"crates/printer/src/util.rs": RG_UTIL_AFTER})],
    created_at="2024-02-11T13:24:05Z", merged=False, state="open",
    reviews=[review(
        "kjell-s", "COMMENTED",
        "I don't think we should change this. Vim's `%c` is a byte column (see `:help "
        "errorformat`, and `%v` for the virtual column), so with this change Vim would put the "
        "cursor *before* the match on exactly the lines you want to fix.",
        "2024-02-12T02:17:44Z")],
    review_comments=[inline(
        "kjell-s", "crates/printer/src/util.rs", "let chars = match std::str::from_utf8(prefix)",
        "This also makes the column depend on whether the prefix happens to be valid UTF-8, "
        "which ripgrep otherwise never assumes of a haystack.", "2024-02-12T02:16:30Z")],
    comments=[
        comment("tmarsh", "Fair point about Vim, I was testing with a different editor's quickfix "
                "parser. Would you take a `--column-unit=char` flag instead?", "2024-02-12T08:40:12Z"),
        comment("kjell-s", "Probably not: the JSON output already gives byte offsets, and an editor "
                "integration can convert those exactly. I'll leave this open for a bit in case "
                "others have a use case I'm missing.", "2024-02-13T01:03:55Z"),
    ],
)

# --- clap-rs/clap: two added files ---------------------------------------------------

CLAP_TOML = src(r'''
[package]
name = "clap"
version = "4.5.4"
edition = "2021"
rust-version = "1.74"
description = "Command line argument parser"
license = "MIT OR Apache-2.0"

[features]
default = ["std", "color", "help", "usage", "error-context", "suggestions"]
derive = ["clap_builder/derive"]

[[example]]
name = "value_enum"
path = "examples/derive_ref/value_enum.rs"
required-features = ["derive"]

[[example]]
name = "flatten_hand_args"
path = "examples/derive_ref/flatten_hand_args.rs"
required-features = ["derive"]
''')

CLAP_TOML_AFTER = edit(
    CLAP_TOML,
    ('path = "examples/derive_ref/value_enum.rs"\nrequired-features = ["derive"]\n',
     'path = "examples/derive_ref/value_enum.rs"\nrequired-features = ["derive"]\n\n'
     '[[example]]\nname = "value_enum_alias"\npath = "examples/derive_ref/value_enum_alias.rs"\n'
     'required-features = ["derive"]\n'),
)

CLAP_EXAMPLE = src(r'''
use clap::{Parser, ValueEnum};

#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// How much output to print
    #[arg(long, value_enum, default_value_t = Level::Normal)]
    level: Level,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Level {
    /// Print only errors
    #[value(alias = "q", alias = "silent")]
    Quiet,
    /// Print errors and warnings
    Normal,
    /// Print everything
    #[value(aliases = ["v", "debug"])]
    Verbose,
}

fn main() {
    let cli = Cli::parse();
    println!("level: {:?}", cli.level);
}
''')

CLAP_EXAMPLE_MD = src(r'''
Aliases let users type a shorter or an older name for a value. They are accepted
when parsing but not listed in `--help`:

```console
$ value_enum_alias --level q
level: Quiet

$ value_enum_alias --level debug
level: Verbose

$ value_enum_alias --help
Usage: value_enum_alias[EXE] [OPTIONS]

Options:
      --level <LEVEL>  How much output to print [default: normal] [possible values: quiet, normal, verbose]
  -h, --help           Print help
  -V, --version        Print version

```
''')

CLAP = pr(
    "clap-rs/clap", 5420, "docs(derive): Show value aliases on a ValueEnum", "nadia-ok",
    body=(
        "Closes #5401\n\nAdds a reference example for `#[value(alias = ...)]` and "
        "`#[value(aliases = [...])]` on `ValueEnum` variants, with its console transcript so "
        "that it is checked by `trycmd` like the others."
    ),
    base={"Cargo.toml": CLAP_TOML},
    commits=[commit("docs(derive): Show value aliases on a ValueEnum", "nadia-ok", {
        "Cargo.toml": CLAP_TOML_AFTER,
        "examples/derive_ref/value_enum_alias.rs": CLAP_EXAMPLE,
        "examples/derive_ref/value_enum_alias.md": CLAP_EXAMPLE_MD,
    })],
    created_at="2024-03-30T16:12:09Z", merged_at="2024-04-02T14:00:41Z",
    labels=["C-enhancement", "A-docs"], base_ref="master",
    issues=[issue(
        5401, "Document how to alias ValueEnum variants", "pbarros",
        "I wanted `--level debug` to mean `--level verbose` and only found out about "
        "`#[value(alias)]` by reading the derive macro's source. An example next to "
        "`value_enum.rs` would have saved me some time."
    )],
    reviews=[review("mfournier", "APPROVED", "Thanks!", "2024-04-02T13:59:02Z")],
)

# --- astral-sh/ruff: a Rust change and a Python fixture ------------------------------

RUFF_HELPERS = src(r'''
use ruff_python_ast::{self as ast, Stmt};

/// Returns `true` if the last statement of `body` always leaves the enclosing
/// block, so that an `else` after it is unnecessary.
pub(super) fn ends_with_exit(body: &[Stmt]) -> bool {
    match body.last() {
        Some(Stmt::Return(_) | Stmt::Raise(_)) => true,
        Some(Stmt::If(ast::StmtIf { body, elif_else_clauses, .. })) => {
            ends_with_exit(body)
                && elif_else_clauses.iter().all(|clause| ends_with_exit(&clause.body))
        }
        Some(Stmt::With(ast::StmtWith { body, .. })) => ends_with_exit(body),
        Some(Stmt::FunctionDef(ast::StmtFunctionDef { body, .. })) => ends_with_exit(body),
        _ => false,
    }
}
''')

RUFF_HELPERS_AFTER = edit(
    RUFF_HELPERS,
    ("        Some(Stmt::FunctionDef(ast::StmtFunctionDef { body, .. })) => ends_with_exit(body),\n",
     "        // A nested function's `return` leaves that function, not this block.\n"
     "        Some(Stmt::FunctionDef(_) | Stmt::ClassDef(_)) => false,\n"),
)

RUFF_FIXTURE = src(r'''
def elif_after_return(x):
    if x > 0:
        return 1
    elif x < 0:  # RET505
        return -1
    else:
        return 0


def else_after_raise(x):
    if not x:
        raise ValueError("empty")
    else:  # RET506
        return x
''')

RUFF_FIXTURE_AFTER = RUFF_FIXTURE + src(r'''


def nested_function_in_if(x):
    if x:
        def inner():
            return 1
    else:  # OK: the `return` above leaves `inner`, not the `if`
        inner = None
    return inner
''')

RUFF = pr(
    "astral-sh/ruff", 10500,
    "[`flake8-return`] Don't treat a nested function's `return` as leaving the block (`RET505`)",
    "dkowal",
    body=(
        "## Summary\n\nCloses #10488. `ends_with_exit` recursed into a nested `def` at the end "
        "of an `if` body and took its `return` for a return from the enclosing function, so "
        "the `else` was flagged as unnecessary although removing it changes behaviour.\n\n"
        "## Test Plan\n\n`cargo test -p ruff_linter -- flake8_return`, with a new fixture case "
        "(the snapshot is unchanged: the case must not be reported)."
    ),
    base={
        "crates/ruff_linter/src/rules/flake8_return/helpers.rs": RUFF_HELPERS,
        "crates/ruff_linter/resources/test/fixtures/flake8_return/RET505.py": RUFF_FIXTURE,
    },
    commits=[commit("[flake8-return] Don't treat a nested function's return as leaving the block", "dkowal", {
        "crates/ruff_linter/src/rules/flake8_return/helpers.rs": RUFF_HELPERS_AFTER,
        "crates/ruff_linter/resources/test/fixtures/flake8_return/RET505.py": RUFF_FIXTURE_AFTER,
    })],
    created_at="2024-03-21T10:45:00Z", merged_at="2024-03-21T17:20:18Z",
    labels=["bug", "rule"],
    issues=[issue(
        10488, "RET505 false positive when the `if` body ends with a nested function", "owainj",
        "```python\ndef f(x):\n    if x:\n        def inner():\n            return 1\n    else:\n"
        "        inner = None\n    return inner\n```\n\n`ruff check --select RET505` reports "
        "\"Unnecessary `else` after `return` statement\", but the `return` belongs to `inner`."
    )],
    reviews=[review("hkato", "APPROVED", "Nice catch, thanks.", "2024-03-21T17:02:44Z")],
    review_comments=[inline(
        "hkato", "crates/ruff_linter/src/rules/flake8_return/helpers.rs",
        "Some(Stmt::FunctionDef(_) | Stmt::ClassDef(_)) => false,",
        "Good call including `ClassDef`; a class body can't contain a `return` anyway, but "
        "this keeps the intent obvious.", "2024-03-21T17:01:58Z")],
)

# --- expressjs/express: changes requested, then two commits -------------------------

EXPRESS_RESPONSE = src(r'''
'use strict';

/**
 * Module dependencies.
 * @private
 */

var http = require('http');
var statuses = require('statuses');

var res = Object.create(http.ServerResponse.prototype);

module.exports = res;

/**
 * Set the HTTP status code of the response.
 *
 * @param {number} code
 * @return {ServerResponse}
 * @public
 */

res.status = function status(code) {
  this.statusCode = code;
  return this;
};

/**
 * Send the given HTTP status code with its standard message as the body.
 *
 * @param {number} statusCode
 * @return {ServerResponse}
 * @public
 */

res.sendStatus = function sendStatus(statusCode) {
  var body = statuses.message[statusCode] || String(statusCode);

  this.statusCode = statusCode;
  this.type('txt');

  return this.send(body);
};
''')

EXPRESS_RESPONSE_1 = edit(
    EXPRESS_RESPONSE,
    ("res.sendStatus = function sendStatus(statusCode) {\n",
     "res.sendStatus = function sendStatus(statusCode) {\n"
     "  if (!Number.isInteger(statusCode)) {\n"
     "    throw new TypeError('Invalid status code: ' + JSON.stringify(statusCode) +\n"
     "      '. Status code must be an integer.');\n"
     "  }\n\n"),
)

EXPRESS_RESPONSE_2 = edit(
    EXPRESS_RESPONSE_1,
    ("res.status = function status(code) {\n  this.statusCode = code;\n",
     "res.status = function status(code) {\n"
     "  assertStatusCode(code);\n"
     "  this.statusCode = code;\n"),
    ("res.sendStatus = function sendStatus(statusCode) {\n"
     "  if (!Number.isInteger(statusCode)) {\n"
     "    throw new TypeError('Invalid status code: ' + JSON.stringify(statusCode) +\n"
     "      '. Status code must be an integer.');\n"
     "  }\n\n",
     "res.sendStatus = function sendStatus(statusCode) {\n"
     "  assertStatusCode(statusCode);\n\n"),
    ("res.sendStatus = function sendStatus(statusCode) {\n  assertStatusCode(statusCode);\n\n"
     "  var body = statuses.message[statusCode] || String(statusCode);\n\n"
     "  this.statusCode = statusCode;\n  this.type('txt');\n\n  return this.send(body);\n};\n",
     "res.sendStatus = function sendStatus(statusCode) {\n  assertStatusCode(statusCode);\n\n"
     "  var body = statuses.message[statusCode] || String(statusCode);\n\n"
     "  this.statusCode = statusCode;\n  this.type('txt');\n\n  return this.send(body);\n};\n\n"
     "/**\n * Throw a TypeError unless `code` is an integer status code.\n * @private\n */\n\n"
     "function assertStatusCode(code) {\n"
     "  if (!Number.isInteger(code)) {\n"
     "    throw new TypeError('Invalid status code: ' + JSON.stringify(code) +\n"
     "      '. Status code must be an integer.');\n"
     "  }\n"
     "}\n"),
)

EXPRESS_TEST = src(r'''
'use strict'

var express = require('..')
var request = require('supertest')

describe('res', function () {
  describe('.sendStatus(statusCode)', function () {
    it('should send the status code and message as body', function (done) {
      var app = express();

      app.use(function(req, res){
        res.sendStatus(201);
      });

      request(app)
      .get('/')
      .expect(201, 'Created', done);
    })

    it('should work with unknown code', function (done) {
      var app = express();

      app.use(function(req, res){
        res.sendStatus(599);
      });

      request(app)
      .get('/')
      .expect(599, '599', done);
    })
  })
})
''')

EXPRESS_TEST_2 = edit(
    EXPRESS_TEST,
    ("      .expect(599, '599', done);\n    })\n",
     "      .expect(599, '599', done);\n    })\n\n"
     "    it('should raise error for non-integer status code', function (done) {\n"
     "      var app = express();\n\n"
     "      app.use(function(req, res){\n"
     "        res.sendStatus(200.5);\n"
     "      });\n\n"
     "      request(app)\n"
     "      .get('/')\n"
     "      .expect(500, /Invalid status code: 200\\.5/, done);\n"
     "    })\n"),
)

EXPRESS = pr(
    "expressjs/express", 5612, "Throw a TypeError for non-integer status codes in res.status() and res.sendStatus()",
    "ellie-dev",
    body=(
        "Fixes #5598.\n\n`res.sendStatus(200.5)` used to fail deep inside `http` with "
        "`RangeError [ERR_HTTP_INVALID_STATUS_CODE]`, after the body had been chosen. Both "
        "`res.status()` and `res.sendStatus()` now throw a `TypeError` that names the value "
        "before anything is written."
    ),
    base={"lib/response.js": EXPRESS_RESPONSE, "test/res.sendStatus.js": EXPRESS_TEST},
    commits=[
        commit("Throw TypeError for non-integer code in res.sendStatus", "ellie-dev",
               {"lib/response.js": EXPRESS_RESPONSE_1}),
        commit("Validate res.status() too and add tests", "ellie-dev",
               {"lib/response.js": EXPRESS_RESPONSE_2, "test/res.sendStatus.js": EXPRESS_TEST_2}),
    ],
    created_at="2024-04-03T21:14:36Z", merged_at="2024-04-10T18:02:09Z",
    labels=["5.x"], base_ref="5.0",
    issues=[issue(
        5598, "res.sendStatus() with a float gives an opaque ERR_HTTP_INVALID_STATUS_CODE", "samir-b",
        "A computed status code ended up as `200.5` and the error was\n\n```\nRangeError "
        "[ERR_HTTP_INVALID_STATUS_CODE]: Invalid status code: 200.5\n    at ServerResponse.writeHead "
        "(node:_http_server:352:11)\n```\n\nwith no frame from my code. Could express validate "
        "the code where I pass it?"
    )],
    reviews=[
        review("wesleyt", "CHANGES_REQUESTED",
               "Good idea. Can you do the same check in `res.status()`, and add a test for "
               "`sendStatus(200.5)`?", "2024-04-05T07:31:00Z"),
        review("wesleyt", "APPROVED", "", "2024-04-10T18:01:33Z"),
    ],
    review_comments=[inline(
        "wesleyt", "lib/response.js", "function assertStatusCode(code) {",
        "Sharing one helper between both methods keeps the message identical, nice.",
        "2024-04-10T18:00:57Z")],
    comments=[comment("wesleyt", "Landed on the 5.0 branch, will ship in 5.0.0-beta.4.",
                      "2024-04-10T18:03:40Z")],
)

# --- vitejs/vite: a renovate bump ----------------------------------------------------

VITE_PACKAGE = src(r'''
{
  "name": "@vitejs/vite-monorepo",
  "private": true,
  "type": "module",
  "engines": {
    "node": "^18.0.0 || >=20.0.0"
  },
  "scripts": {
    "format": "prettier --write --cache .",
    "lint": "eslint --cache .",
    "typecheck": "tsc -p scripts --noEmit && pnpm -r --parallel run typecheck",
    "test": "run-s test-unit test-serve test-build",
    "test-unit": "vitest run",
    "build": "pnpm -r --filter='./packages/*' run build"
  },
  "devDependencies": {
    "@eslint/js": "^9.0.0",
    "@types/node": "^20.12.5",
    "eslint": "^9.0.0",
    "execa": "^8.0.1",
    "lint-staged": "^15.2.2",
    "npm-run-all2": "^6.1.2",
    "prettier": "3.2.5",
    "rollup": "^4.13.0",
    "simple-git-hooks": "^2.11.1",
    "tsx": "^4.7.2",
    "typescript": "^5.4.4",
    "vitest": "^1.4.0"
  },
  "packageManager": "pnpm@8.15.6"
}
''')

VITE_PACKAGE_AFTER = edit(
    VITE_PACKAGE,
    ('"@types/node": "^20.12.5"', '"@types/node": "^20.12.7"'),
    ('"rollup": "^4.13.0"', '"rollup": "^4.14.3"'),
    ('"typescript": "^5.4.4"', '"typescript": "^5.4.5"'),
    ('"vitest": "^1.4.0"', '"vitest": "^1.5.0"'),
)

RENOVATE_BODY = (
    "[![Mend Renovate](https://app.renovatebot.com/images/banner.svg)](https://renovatebot.com)\n\n"
    "This PR contains the following updates:\n\n"
    "| Package | Change | Age | Adoption | Passing | Confidence |\n"
    "|---|---|---|---|---|---|\n"
    "| [@types/node](https://github.com/DefinitelyTyped/DefinitelyTyped) | [`^20.12.5` -> `^20.12.7`] | age | adoption | passing | confidence |\n"
    "| [rollup](https://rollupjs.org/) | [`^4.13.0` -> `^4.14.3`] | age | adoption | passing | confidence |\n"
    "| [typescript](https://www.typescriptlang.org/) | [`^5.4.4` -> `^5.4.5`] | age | adoption | passing | confidence |\n"
    "| [vitest](https://github.com/vitest-dev/vitest) | [`^1.4.0` -> `^1.5.0`] | age | adoption | passing | confidence |\n\n"
    "---\n\n### Configuration\n\n"
    "📅 **Schedule**: Branch creation - \"before 4am on Monday\" (UTC), Automerge - At any time "
    "(no schedule defined).\n\n"
    "🚦 **Automerge**: Disabled by config. Please merge this manually once you are satisfied.\n\n"
    "♻ **Rebasing**: Whenever PR becomes conflicted, or you tick the rebase/retry checkbox.\n\n"
    "🔕 **Ignore**: Close this PR and you won't be reminded about these updates again.\n\n"
    "---\n\n - [ ] <!-- rebase-check -->If you want to rebase/retry this PR, check this box\n\n"
    "---\n\nThis PR has been generated by [Mend Renovate](https://www.mend.io/free-developer-tools/renovate/)."
)

VITE = pr(
    "vitejs/vite", 16420, "chore(deps): update all non-major dependencies", "renovate[bot]",
    body=RENOVATE_BODY,
    base={"package.json": VITE_PACKAGE},
    commits=[commit("chore(deps): update all non-major dependencies", "renovate[bot]",
                    {"package.json": VITE_PACKAGE_AFTER})],
    created_at="2024-04-15T01:12:47Z", merged_at="2024-04-15T09:40:22Z",
    labels=["dependencies"],
    reviews=[review("pbarros", "APPROVED", "", "2024-04-15T09:39:51Z")],
)

# --- prettier/prettier: a removed file, an added changelog entry ---------------------

PRETTIER_SHIM = src(r'''
/**
 * `--jsx-bracket-same-line` was deprecated in 2.4.0 in favour of
 * `--bracket-same-line`. This shim maps the old option to the new one and
 * prints a warning once per run.
 */

let warned = false;

function mapDeprecatedJsxBracketSameLine(options, logger) {
  if (options.jsxBracketSameLine === undefined) {
    return options;
  }
  if (!warned) {
    logger.warn(
      "`jsxBracketSameLine` is deprecated, use `bracketSameLine` instead.",
    );
    warned = true;
  }
  const { jsxBracketSameLine, ...rest } = options;
  return { ...rest, bracketSameLine: jsxBracketSameLine };
}

export default mapDeprecatedJsxBracketSameLine;
''')

PRETTIER_NORMALIZE = src(r'''
import leven from "leven";
import mapDeprecatedJsxBracketSameLine from "./deprecated-jsx-bracket-same-line.js";

/**
 * Checks parsed CLI options against the known option names and returns the
 * normalized set. Unknown options are dropped with a warning.
 */
function normalizeCliOptions(options, knownNames, { logger }) {
  const normalized = mapDeprecatedJsxBracketSameLine(options, logger);

  for (const name of Object.keys(normalized)) {
    if (knownNames.includes(name)) {
      continue;
    }
    const suggestion = knownNames.find((known) => leven(known, name) < 3);
    logger.warn(
      suggestion
        ? `Ignored unknown option ${name}. Did you mean ${suggestion}?`
        : `Ignored unknown option ${name}.`,
    );
    delete normalized[name];
  }

  return normalized;
}

export default normalizeCliOptions;
''')

PRETTIER_NORMALIZE_AFTER = edit(
    PRETTIER_NORMALIZE,
    ('import mapDeprecatedJsxBracketSameLine from "./deprecated-jsx-bracket-same-line.js";\n', ""),
    ("  const normalized = mapDeprecatedJsxBracketSameLine(options, logger);\n",
     "  const normalized = { ...options };\n"),
)

PRETTIER_CHANGELOG = src(r'''
#### Remove the deprecated `--jsx-bracket-same-line` option (#16021 by @fabian-h)

`--jsx-bracket-same-line` has printed a deprecation warning since Prettier 2.4. It is
now an unknown option; use `--bracket-same-line` instead.

<!-- prettier-ignore -->
```sh
# Prettier 3.2
prettier --jsx-bracket-same-line src/
# [warn] `jsxBracketSameLine` is deprecated, use `bracketSameLine` instead.

# Prettier 4.0
prettier --jsx-bracket-same-line src/
# [warn] Ignored unknown option jsxBracketSameLine.
```
''')

PRETTIER = pr(
    "prettier/prettier", 16021, "Remove the deprecated `--jsx-bracket-same-line` option", "fabian-h",
    body=(
        "## Description\n\nThe option has been deprecated since 2.4 and `next` is the place for "
        "breaking changes. The shim goes, and the old name is now reported like any "
        "other unknown option.\n\n"
        "## Checklist\n\n- [x] I've added tests to confirm my change works.\n"
        "- [x] I've added my changes to the `changelog_unreleased` directory.\n"
        "- [x] I've read the [contributing guidelines](https://github.com/prettier/prettier/blob/main/CONTRIBUTING.md)."
    ),
    base={
        "src/cli/deprecated-jsx-bracket-same-line.js": PRETTIER_SHIM,
        "src/cli/normalize-options.js": PRETTIER_NORMALIZE,
    },
    commits=[commit("Remove the deprecated --jsx-bracket-same-line option", "fabian-h", {
        "src/cli/deprecated-jsx-bracket-same-line.js": None,
        "src/cli/normalize-options.js": PRETTIER_NORMALIZE_AFTER,
        "changelog_unreleased/cli/16021.md": PRETTIER_CHANGELOG,
    })],
    created_at="2024-03-06T12:00:31Z", merged_at="2024-03-08T10:47:15Z",
    labels=["type:breaking change"], base_ref="next",
    reviews=[review("mfournier", "APPROVED",
                    "Good cleanup, thanks. One less special case in the CLI.",
                    "2024-03-08T10:45:00Z")],
)

# --- typescript-eslint/typescript-eslint: closed without merging ---------------------

TSE_NULLABLE = src(r'''
import * as ts from 'typescript';

import { isTypeFlagSet } from './typeFlagUtils';

const NULLISH_FLAGS =
  ts.TypeFlags.Null | ts.TypeFlags.Undefined | ts.TypeFlags.Void;

/**
 * Checks if the given type is nullish, or a union with a nullish member.
 */
export function isNullableType(type: ts.Type): boolean {
  if (type.isUnion()) {
    return type.types.some(part => isTypeFlagSet(part, NULLISH_FLAGS));
  }
  return isTypeFlagSet(type, NULLISH_FLAGS);
}
''')

TSE_NULLABLE_AFTER = edit(
    TSE_NULLABLE,
    ("  ts.TypeFlags.Null | ts.TypeFlags.Undefined | ts.TypeFlags.Void;\n",
     "  ts.TypeFlags.Null | ts.TypeFlags.Undefined | ts.TypeFlags.Void;\n"
     "const MAYBE_NULLISH_FLAGS = ts.TypeFlags.Any | ts.TypeFlags.Unknown;\n"),
    (" * Checks if the given type is nullish, or a union with a nullish member.\n */\n"
     "export function isNullableType(type: ts.Type): boolean {\n",
     " * Checks if the given type is nullish, or a union with a nullish member.\n"
     " * `any` and `unknown` may hold `null` or `undefined`, so they count as nullable.\n */\n"
     "export function isNullableType(type: ts.Type): boolean {\n"
     "  if (isTypeFlagSet(type, MAYBE_NULLISH_FLAGS)) {\n"
     "    return true;\n"
     "  }\n"),
)

TSE = pr(
    "typescript-eslint/typescript-eslint", 8843,
    "fix(eslint-plugin): [no-unnecessary-condition] treat `any` and `unknown` as nullable", "vlad-k",
    body=(
        "## PR Checklist\n\n- [x] Addresses an existing open issue: fixes #8830\n"
        "- [x] Steps in CONTRIBUTING.md were taken\n\n## Overview\n\n"
        "`isNullableType` returned `false` for `any`, so `value?.prop` on a value typed `any` "
        "was reported as an unnecessary optional chain. It now treats `any` and `unknown` as "
        "possibly nullish."
    ),
    base={"packages/eslint-plugin/src/util/isNullableType.ts": TSE_NULLABLE},
    commits=[commit("fix(eslint-plugin): [no-unnecessary-condition] treat any and unknown as nullable",
                    "vlad-k", {"packages/eslint-plugin/src/util/isNullableType.ts": TSE_NULLABLE_AFTER})],
    created_at="2024-04-04T20:33:12Z", merged=False, state="closed",
    labels=["awaiting response"],
    issues=[issue(
        8830, "Bug: [no-unnecessary-condition] false positive for an optional chain on `any`",
        "nadia-ok",
        "### Code\n\n```ts\ndeclare const data: any;\nconst name = data?.user?.name;\n```\n\n"
        "### Expected Result\n\nNo report: `data` may well be `undefined` at runtime.\n\n"
        "### Actual Result\n\n`Unnecessary optional chain on a non-nullish value.`"
    )],
    reviews=[review(
        "ada-l", "CHANGES_REQUESTED",
        "`isNullableType` is shared by six rules; making it return `true` for `any` changes all "
        "of them (for instance `prefer-nullish-coalescing` would start reporting on every `any`). "
        "Could this be handled inside `no-unnecessary-condition` instead?",
        "2024-04-05T08:02:19Z")],
    review_comments=[inline(
        "ada-l", "packages/eslint-plugin/src/util/isNullableType.ts",
        "if (isTypeFlagSet(type, MAYBE_NULLISH_FLAGS)) {",
        "This is the line that leaks into the other rules.", "2024-04-05T08:01:40Z")],
    comments=[
        comment("vlad-k", "Makes sense, I'll redo it in the rule itself.", "2024-04-05T09:15:27Z"),
        comment("vlad-k", "Closing in favour of #8870, which fixes it in `no-unnecessary-condition`.",
                "2024-04-08T19:44:02Z"),
    ],
)

# --- axios/axios: a one-line fix, no review ------------------------------------------

AXIOS_HEADERS = src(r'''
'use strict';

function normalizeHeader(header) {
  return header && String(header).trim().toLowerCase();
}

class AxiosHeaders {
  constructor(headers) {
    this.map = Object.create(null);
    if (headers) {
      for (const [name, value] of Object.entries(headers)) {
        this.set(name, value);
      }
    }
  }

  set(name, value) {
    this.map[normalizeHeader(name)] = [name, value];
    return this;
  }

  get(name) {
    const entry = this.map[normalizeHeader(name)];
    return entry ? entry[1] : undefined;
  }

  has(name) {
    return Object.prototype.hasOwnProperty.call(this.map, name);
  }

  delete(name) {
    return delete this.map[normalizeHeader(name)];
  }
}

export default AxiosHeaders;
''')

AXIOS = pr(
    "axios/axios", 6320, "fix(headers): make AxiosHeaders.has() case-insensitive", "yuki-t",
    body="Fixes #6311: `has()` looked the raw name up while `set()` stores normalized names.",
    base={"lib/core/AxiosHeaders.js": AXIOS_HEADERS},
    commits=[commit("fix(headers): make AxiosHeaders.has() case-insensitive", "yuki-t", {
        "lib/core/AxiosHeaders.js": edit(
            AXIOS_HEADERS,
            ("call(this.map, name);", "call(this.map, normalizeHeader(name));")),
    })],
    commit_files=False,
    created_at="2024-04-12T06:50:18Z", merged_at="2024-04-13T11:05:54Z",
    labels=["type::bug"], base_ref="v1.x",
    issues=[issue(
        6311, "AxiosHeaders.has('Content-Type') is false after set('content-type')", "tmarsh",
        "```js\nconst h = new AxiosHeaders();\nh.set('content-type', 'text/plain');\n"
        "h.get('Content-Type'); // 'text/plain'\nh.has('Content-Type'); // false\n```"
    )],
    comments=[comment("jkarlsson", "Thanks! Released in v1.6.9.", "2024-04-14T10:00:00Z")],
)

# --- redis/redis: C with two hunks, reviews and a discussion ---------------------------

REDIS_LIST = src(r'''
#include "server.h"

/* LPOS helper.
 *
 * Returns the index of the rank-th element equal to 'ele'. A positive rank
 * scans from the head, a negative one from the tail. When maxlen is not 0,
 * at most maxlen elements are compared. Returns -1 when there is no match. */
long listPosGeneric(robj *list, robj *ele, long rank, long maxlen) {
    int from_tail = rank < 0;
    long index = 0, matches = 0, compared = 0;
    listTypeEntry entry;
    listTypeIterator *li;

    if (from_tail) rank = -rank;
    li = listTypeInitIterator(list, from_tail ? -1 : 0,
                              from_tail ? LIST_HEAD : LIST_TAIL);
    while (listTypeNext(li, &entry)) {
        if (maxlen && compared++ == maxlen) break;
        if (listTypeEqual(&entry, ele->ptr, sdslen(ele->ptr)) &&
            ++matches == rank)
        {
            listTypeReleaseIterator(li);
            return index;
        }
        index++;
    }
    listTypeReleaseIterator(li);
    return -1;
}
''')

REDIS_LIST_AFTER = edit(
    REDIS_LIST,
    ("    int from_tail = rank < 0;\n",
     "    int from_tail = rank < 0;\n    long llen = listTypeLength(list);\n"),
    ("            return index;\n",
     "            /* index counts from the end we started at; LPOS reports it\n"
     "             * from the head whichever way we scanned. */\n"
     "            return from_tail ? llen - 1 - index : index;\n"),
)

REDIS_TEST = src(r'''
start_server {tags {"list"}} {
    test {LPOS basic usage} {
        r DEL mylist
        r RPUSH mylist a b c 1 2 3 c c
        assert {[r LPOS mylist a] == 0}
        assert {[r LPOS mylist c] == 2}
    }

    test {LPOS RANK (positive) option} {
        assert {[r LPOS mylist c RANK 1] == 2}
        assert {[r LPOS mylist c RANK 2] == 6}
        assert {[r LPOS mylist c RANK 4] eq ""}
    }

    test {LPOS MAXLEN} {
        assert {[r LPOS mylist 1 MAXLEN 3] eq ""}
        assert {[r LPOS mylist 1 MAXLEN 4] == 3}
    }
}
''')

REDIS_TEST_AFTER = edit(
    REDIS_TEST,
    ("    test {LPOS RANK (positive) option} {\n",
     "    test {LPOS RANK (positive and negative rank) option} {\n"),
    ('        assert {[r LPOS mylist c RANK 4] eq ""}\n',
     '        assert {[r LPOS mylist c RANK 4] eq ""}\n'
     "        assert {[r LPOS mylist c RANK -1] == 7}\n"
     "        assert {[r LPOS mylist c RANK -2] == 6}\n"
     "        assert {[r LPOS mylist c RANK -1 MAXLEN 2] == 7}\n"),
)

REDIS = pr(
    "redis/redis", 13120, "Fix LPOS with negative RANK returning the offset from the tail", "hkato",
    body=(
        "Fix #13111\n\nWith a negative `RANK`, `LPOS` scans from the tail and returned the "
        "number of elements it had skipped, i.e. the offset *from the tail*, while the command "
        "documents indexes from the head. `RPUSH l a b c` then `LPOS l c RANK -1` returned 0 "
        "instead of 2.\n\nThe index is now converted back to a head index before it is returned. "
        "`MAXLEN` is unaffected (it counts compared elements, not indexes)."
    ),
    base={"src/t_list.c": REDIS_LIST, "tests/unit/type/list.tcl": REDIS_TEST},
    commits=[commit("Fix LPOS with negative RANK returning the offset from the tail (#13120)", "hkato",
                    {"src/t_list.c": REDIS_LIST_AFTER, "tests/unit/type/list.tcl": REDIS_TEST_AFTER})],
    created_at="2024-03-11T03:20:44Z", merged_at="2024-03-14T06:58:10Z",
    labels=["release-notes"], base_ref="unstable",
    issues=[issue(
        13111, "[BUG] LPOS with RANK -1 returns 0 for the last element", "samir-b",
        "**Describe the bug**\n\n```\n127.0.0.1:6379> RPUSH l a b c\n(integer) 3\n"
        "127.0.0.1:6379> LPOS l c RANK -1\n(integer) 0\n```\n\n**Expected behavior**\n\n"
        "`(integer) 2`, the index of `c` from the head, as `LPOS l c` gives.\n\n"
        "**Additional information**\n\nredis 7.2.4 on Linux."
    )],
    reviews=[
        review("lior-m", "COMMENTED",
               "Nice catch. Is this broken for both encodings or only listpack?",
               "2024-03-12T08:14:02Z"),
        review("yossig", "APPROVED", "LGTM", "2024-03-14T06:50:51Z"),
    ],
    review_comments=[
        inline("lior-m", "src/t_list.c", "return from_tail ? llen - 1 - index : index;",
               "`listTypeLength` is O(1) for both encodings, so taking it up front is fine.",
               "2024-03-12T08:13:30Z"),
        inline("lior-m", "tests/unit/type/list.tcl", "RANK -1 MAXLEN 2",
               "Good to have MAXLEN combined with a negative rank here too.", "2024-03-12T08:13:47Z"),
    ],
    comments=[
        comment("hkato", "Both: the iterator returns the same order for quicklist and listpack, "
                "and the test runs against both encodings through the list-max-listpack-size "
                "loop.", "2024-03-12T10:02:33Z"),
        comment("yossig", "Should be backported to 7.2.", "2024-03-14T06:58:59Z"),
    ],
)

# --- curl/curl: two commits on one file, the second whitespace-only ---------------------

CURL_OPERATE = src(r'''
static CURLcode etag_setup(struct OperationConfig *config,
                           struct per_transfer *per)
{
  char *etag_name;

  if(!config->etag_save_file)
    return CURLE_OK;

  etag_name = strdup(config->etag_save_file);
  if(!etag_name)
    return CURLE_OUT_OF_MEMORY;

  if(strcmp(etag_name, "-")) {
    FILE *newfile = fopen(etag_name, FOPEN_WRITETEXT);
    if(!newfile) {
      warnf(config->global, "Failed creating file for saving etags: \"%s\". "
          "Skip this transfer", etag_name);
      return CURLE_WRITE_ERROR;
    }
    per->etag_save.stream = newfile;
    per->etag_save.fopened = TRUE;
  }
  else {
    per->etag_save.stream = stdout;
  }
  per->etag_save.filename = etag_name;
  per->etag_save.alloc_filename = TRUE;
  return CURLE_OK;
}
''')

CURL_OPERATE_1 = edit(
    CURL_OPERATE,
    ('          "Skip this transfer", etag_name);\n      return CURLE_WRITE_ERROR;\n',
     '          "Skip this transfer", etag_name);\n      free(etag_name);\n      return CURLE_WRITE_ERROR;\n'),
)

CURL_OPERATE_2 = edit(
    CURL_OPERATE_1,
    ('          "Skip this transfer", etag_name);\n', '            "Skip this transfer", etag_name);\n'),
)

CURL = pr(
    "curl/curl", 13360, "tool_operate: free the etag file name when the file cannot be opened", "owainj",
    body=(
        "`etag_setup()` returned `CURLE_WRITE_ERROR` without freeing the `strdup()`ed name when "
        "`--etag-save` points to a path that cannot be created. Found with valgrind running "
        "test 347 with a read-only directory.\n\nThe second commit only fixes the indentation "
        "of the `warnf()` continuation line.\n\nFixes #13351"
    ),
    base={"src/tool_operate.c": CURL_OPERATE},
    commits=[
        commit("tool_operate: free etag_name on the fopen error path\n\nReported-by: Samir B\n"
               "Fixes #13351", "owainj", {"src/tool_operate.c": CURL_OPERATE_1}),
        commit("tool_operate: align the warnf continuation line", "owainj",
               {"src/tool_operate.c": CURL_OPERATE_2}),
    ],
    created_at="2024-04-11T21:40:12Z", merged_at="2024-04-12T07:31:29Z",
    labels=["cmdline tool"], base_ref="master",
    issues=[issue(
        13351, "memory leak in etag_setup when --etag-save is not writable", "samir-b",
        "### I did this\n\n```\nvalgrind --leak-check=full curl --etag-save /ro/etag.txt "
        "https://example.com/\n```\n\n### I expected the following\n\nNo leak. Instead:\n\n"
        "```\n==4242== 12 bytes in 1 blocks are definitely lost\n==4242==    at strdup\n"
        "==4242==    by etag_setup (tool_operate.c)\n```\n\n### curl/libcurl version\n\n"
        "curl 8.7.1"
    )],
    reviews=[review("jkarlsson", "APPROVED", "Thanks!", "2024-04-12T07:30:02Z")],
)

# --- jqlang/jq: closed without merging, changes requested ----------------------------

JQ_BUILTIN = src(r'''
/* ltrimstr(prefix): remove prefix from the start of a string input.
 * Inputs that are not strings, or that do not start with prefix, pass
 * through unchanged. */
static jv f_ltrimstr(jq_state *jq, jv input, jv prefix) {
  if (jv_get_kind(input) != JV_KIND_STRING ||
      jv_get_kind(prefix) != JV_KIND_STRING) {
    jv_free(prefix);
    return input;
  }

  const char *s = jv_string_value(input);
  const char *p = jv_string_value(prefix);
  size_t plen = jv_string_length_bytes(jv_copy(prefix));

  if (strncmp(s, p, plen) != 0) {
    jv_free(prefix);
    return input;
  }

  jv out = jv_string_sized(s + plen,
                           jv_string_length_bytes(jv_copy(input)) - plen);
  jv_free(prefix);
  jv_free(input);
  return out;
}
''')

JQ_BUILTIN_AFTER = edit(
    JQ_BUILTIN,
    (" * through unchanged. */\nstatic jv f_ltrimstr(jq_state *jq, jv input, jv prefix) {\n",
     " * through unchanged. With an array of prefixes, the first that matches is\n"
     " * removed. */\nstatic jv f_ltrimstr(jq_state *jq, jv input, jv prefix) {\n"
     "  if (jv_get_kind(prefix) == JV_KIND_ARRAY) {\n"
     "    jv_array_foreach(prefix, i, p) {\n"
     "      jv trimmed = f_ltrimstr(jq, jv_copy(input), p);\n"
     "      if (!jv_equal(jv_copy(trimmed), jv_copy(input))) {\n"
     "        jv_free(prefix);\n"
     "        jv_free(input);\n"
     "        return trimmed;\n"
     "      }\n"
     "      jv_free(trimmed);\n"
     "    }\n"
     "    jv_free(prefix);\n"
     "    return input;\n"
     "  }\n"),
)

JQ_TEST = src(r'''
[.[]|ltrimstr("foo")]
["fo","foo","barfoo","foobar","afoo"]
["fo","","barfoo","bar","afoo"]

[.[]|rtrimstr("foo")]
["fo","foo","barfoo","foobar","foob"]
["fo","","bar","foobar","foob"]
''')

JQ_TEST_AFTER = JQ_TEST + src(r'''

[.[]|ltrimstr(["foo","ba"])]
["foobar","barfoo","baz",1]
["bar","rfoo","z",1]
''')

JQ = pr(
    "jqlang/jq", 3050, "Allow ltrimstr to take an array of prefixes", "ruiqi-z",
    body=(
        "`ltrimstr([\"http://\", \"https://\"])` removes whichever prefix matches first. "
        "Today this needs `reduce` or a regex. If this looks OK I'll do `rtrimstr` and the "
        "manual next."
    ),
    base={"src/builtin.c": JQ_BUILTIN, "tests/jq.test": JQ_TEST},
    commits=[commit("builtin: ltrimstr accepts an array of prefixes", "ruiqi-z",
                    {"src/builtin.c": JQ_BUILTIN_AFTER, "tests/jq.test": JQ_TEST_AFTER})],
    created_at="2024-02-26T14:05:50Z", merged=False, state="closed",
    labels=["feature request"], base_ref="master",
    reviews=[review(
        "pkoval", "CHANGES_REQUESTED",
        "Thanks, but I'd rather not overload `ltrimstr`: `ltrimstr(\"a\", \"b\")` already means "
        "\"each of\" through generators, and an array argument meaning \"first of\" is a third "
        "convention. `sub(\"^(https?://)\"; \"\")` covers the URL case.",
        "2024-02-27T06:41:13Z")],
    comments=[
        comment("ruiqi-z", "Fair enough, the generator form is what I was missing. Closing.",
                "2024-02-27T09:12:00Z"),
    ],
)

# --- google/gson: Java with reviews and an inline comment -----------------------------

GSON_WRITER = src(r'''
package com.google.gson.stream;

import java.io.Closeable;
import java.io.Flushable;
import java.io.IOException;
import java.io.Writer;
import java.util.Objects;

/** Writes a JSON value to a stream, one token at a time. (Excerpt.) */
public class JsonWriter implements Closeable, Flushable {
  private final Writer out;
  private Strictness strictness = Strictness.LEGACY_STRICT;

  public JsonWriter(Writer out) {
    this.out = Objects.requireNonNull(out, "out == null");
  }

  public final void setStrictness(Strictness strictness) {
    this.strictness = Objects.requireNonNull(strictness);
  }

  public JsonWriter value(double value) throws IOException {
    if (strictness != Strictness.LENIENT && (Double.isNaN(value) || Double.isInfinite(value))) {
      throw new IllegalArgumentException("Numeric values must be finite, but was " + value);
    }
    beforeValue();
    out.append(Double.toString(value));
    return this;
  }

  public JsonWriter value(Number value) throws IOException {
    if (value == null) {
      return nullValue();
    }
    String string = value.toString();
    beforeValue();
    out.append(string);
    return this;
  }

  public JsonWriter nullValue() throws IOException {
    beforeValue();
    out.write("null");
    return this;
  }

  private void beforeValue() throws IOException {
    // Writes the separator the enclosing array or object needs; omitted here.
  }

  @Override
  public void flush() throws IOException {
    out.flush();
  }

  @Override
  public void close() throws IOException {
    out.close();
  }
}
''')

GSON_WRITER_AFTER = edit(
    GSON_WRITER,
    ("    String string = value.toString();\n    beforeValue();\n",
     "    String string = value.toString();\n"
     "    if (string.equals(\"NaN\") || string.equals(\"Infinity\") || string.equals(\"-Infinity\")) {\n"
     "      if (strictness != Strictness.LENIENT) {\n"
     "        throw new IllegalArgumentException(\"Numeric values must be finite, but was \" + string);\n"
     "      }\n"
     "    }\n"
     "    beforeValue();\n"),
)

GSON_TEST = src(r'''
package com.google.gson.stream;

import static com.google.common.truth.Truth.assertThat;
import static org.junit.Assert.assertThrows;

import java.io.IOException;
import java.io.StringWriter;
import org.junit.Test;

public final class JsonWriterTest {
  @Test
  public void testNonFiniteDoublesWhenStrict() throws IOException {
    JsonWriter writer = new JsonWriter(new StringWriter());
    writer.setStrictness(Strictness.STRICT);
    var e = assertThrows(IllegalArgumentException.class, () -> writer.value(Double.NaN));
    assertThat(e).hasMessageThat().isEqualTo("Numeric values must be finite, but was NaN");
  }
}
''')

GSON_TEST_AFTER = edit(
    GSON_TEST,
    ('    assertThat(e).hasMessageThat().isEqualTo("Numeric values must be finite, but was NaN");\n  }\n',
     '    assertThat(e).hasMessageThat().isEqualTo("Numeric values must be finite, but was NaN");\n  }\n\n'
     "  @Test\n"
     "  public void testNonFiniteNumbersWhenStrict() throws IOException {\n"
     "    JsonWriter writer = new JsonWriter(new StringWriter());\n"
     "    writer.setStrictness(Strictness.STRICT);\n"
     "    Number boxed = Double.valueOf(Double.NEGATIVE_INFINITY);\n"
     "    var e = assertThrows(IllegalArgumentException.class, () -> writer.value(boxed));\n"
     '    assertThat(e).hasMessageThat().isEqualTo("Numeric values must be finite, but was -Infinity");\n'
     "  }\n"),
)

GSON = pr(
    "google/gson", 2650, "Reject non-finite numbers in `JsonWriter.value(Number)` unless lenient", "tmarsh",
    body=(
        "`value(double)` rejects NaN and infinities unless the writer is lenient, but "
        "`value(Number)` wrote them as they are, producing invalid JSON such as `[NaN]` in "
        "strict mode. This applies the same check to the string form of the number.\n\n"
        "Resolves #2641"
    ),
    base={
        "gson/src/main/java/com/google/gson/stream/JsonWriter.java": GSON_WRITER,
        "gson/src/test/java/com/google/gson/stream/JsonWriterTest.java": GSON_TEST,
    },
    commits=[commit("Reject non-finite numbers in JsonWriter.value(Number) unless lenient", "tmarsh", {
        "gson/src/main/java/com/google/gson/stream/JsonWriter.java": GSON_WRITER_AFTER,
        "gson/src/test/java/com/google/gson/stream/JsonWriterTest.java": GSON_TEST_AFTER,
    })],
    created_at="2024-03-17T15:37:21Z", merged_at="2024-03-25T22:10:03Z",
    issues=[issue(
        2641, "JsonWriter.value(Number) writes NaN in strict mode", "ada-l",
        "```java\nJsonWriter w = new JsonWriter(out);\nw.setStrictness(Strictness.STRICT);\n"
        "w.beginArray();\nw.value((Number) Double.NaN);\nw.endArray();\n```\n\nwrites `[NaN]`, "
        "which is not JSON; `w.value(Double.NaN)` throws as expected."
    )],
    reviews=[
        review("eamon-r", "COMMENTED",
               "Comparing the string form also catches `Float` and custom `Number` subclasses "
               "whose `toString()` says NaN, which is what we want. One question inline.",
               "2024-03-19T20:11:48Z"),
        review("eamon-r", "APPROVED", "Thanks for the fix!", "2024-03-25T22:09:30Z"),
    ],
    review_comments=[inline(
        "eamon-r", "gson/src/main/java/com/google/gson/stream/JsonWriter.java",
        'if (string.equals("NaN") || string.equals("Infinity")',
        "Should `LEGACY_STRICT` allow these for backward compatibility? `value(double)` "
        "rejects them there too, so I think rejecting is consistent.", "2024-03-19T20:10:05Z")],
    comments=[comment("tmarsh", "Yes, I kept it consistent with `value(double)`: only `LENIENT` "
                      "lets them through.", "2024-03-20T07:48:19Z")],
)

# --- junit-team/junit5: a Javadoc typo fix, nothing else -----------------------------

JUNIT_TIMEOUT = src(r'''
package org.junit.jupiter.api;

import java.time.Duration;

/**
 * {@code AssertTimeout} is a collection of utility methods that support asserting
 * that the execution of a supplied executable completes before a given timeout is
 * exeeded. (Excerpt.)
 *
 * @since 5.0
 */
class AssertTimeout {

    private AssertTimeout() {
        /* no-op */
    }

    /**
     * Assert that execution of the supplied {@code executable} completes before
     * the given {@code timeout} is exeeded.
     *
     * <p>Note: the {@code executable} runs in the same thread as the calling code,
     * so it is not aborted when the timeout is exeeded; see it's preemptive variant.
     */
    static void assertTimeout(Duration timeout, Executable executable) {
        assertTimeout(timeout, executable, (String) null);
    }
}
''')

JUNIT = pr(
    "junit-team/junit5", 3720, "Fix typos in `AssertTimeout` Javadoc", "nadia-ok",
    body=None,
    base={"junit-jupiter-api/src/main/java/org/junit/jupiter/api/AssertTimeout.java": JUNIT_TIMEOUT},
    commits=[commit("Fix typos in AssertTimeout Javadoc", "nadia-ok", {
        "junit-jupiter-api/src/main/java/org/junit/jupiter/api/AssertTimeout.java": edit(
            JUNIT_TIMEOUT,
            (" * exeeded. (Excerpt.)", " * exceeded. (Excerpt.)"),
            ("{@code timeout} is exeeded.", "{@code timeout} is exceeded."),
            ("timeout is exeeded; see it's preemptive", "timeout is exceeded; see its preemptive"),
        ),
    })],
    commit_files=False,
    created_at="2024-03-01T09:01:09Z", merged_at="2024-03-01T12:44:40Z",
    labels=["theme: documentation"],
    comments=[comment("sbrandt-dev", "Thanks for the fix!", "2024-03-01T12:45:02Z")],
)

# --- django/django: a SWE-bench Verified repository (decontamination drops it) --------

DJANGO_VALIDATORS = src(r'''
import re
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.utils.deconstruct import deconstructible
from django.utils.translation import gettext_lazy as _


@deconstructible
class URLValidator:
    """Validate that a value is an absolute http(s) or ftp(s) URL. (Excerpt.)"""

    schemes = ["http", "https", "ftp", "ftps"]
    message = _("Enter a valid URL.")
    code = "invalid"
    max_length = 2048
    host_re = re.compile(r"^[a-z0-9.-]+$", re.IGNORECASE)

    def __call__(self, value):
        if not isinstance(value, str) or len(value) > self.max_length:
            raise ValidationError(self.message, code=self.code, params={"value": value})
        try:
            parts = urlsplit(value)
        except ValueError:
            raise ValidationError(self.message, code=self.code, params={"value": value})
        if parts.scheme.lower() not in self.schemes:
            raise ValidationError(self.message, code=self.code, params={"value": value})
        if not parts.hostname or not self.host_re.match(parts.hostname):
            raise ValidationError(self.message, code=self.code, params={"value": value})
''')

DJANGO_VALIDATORS_AFTER = edit(
    DJANGO_VALIDATORS,
    ("        try:\n            parts = urlsplit(value)\n        except ValueError:\n",
     "        try:\n            parts = urlsplit(value)\n"
     "            # urlsplit() checks the port only when it is read.\n"
     "            parts.port\n        except ValueError:\n"),
)

DJANGO_TESTS = src(r'''
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.test import SimpleTestCase


class URLValidatorTests(SimpleTestCase):
    def test_valid(self):
        validator = URLValidator()
        for url in [
            "http://example.com",
            "https://example.com:8443/path?q=1",
            "ftp://files.example.org/pub/",
        ]:
            with self.subTest(url=url):
                validator(url)

    def test_invalid(self):
        validator = URLValidator()
        for url in [
            "example.com",
            "mailto:someone@example.com",
            "http://exa mple.com",
        ]:
            with self.subTest(url=url), self.assertRaises(ValidationError):
                validator(url)
''')

DJANGO_TESTS_AFTER = edit(
    DJANGO_TESTS,
    ('            "http://exa mple.com",\n',
     '            "http://exa mple.com",\n'
     '            "http://example.com:99999/",\n'
     '            "http://example.com:-1/",\n'),
)

DJANGO = pr(
    "django/django", 17900, "Fixed #35187 -- Made URLValidator reject out-of-range ports.", "lucia-p",
    body=(
        "ticket-35187\n\n`urlsplit()` only validates the port when `.port` is read, so "
        "`http://example.com:99999/` passed `URLValidator` and later crashed code that used "
        "the port. The validator now reads it and treats the `ValueError` as invalid input."
    ),
    base={"django/core/validators.py": DJANGO_VALIDATORS, "tests/validators/tests.py": DJANGO_TESTS},
    commits=[commit(
        "Fixed #35187 -- Made URLValidator reject out-of-range ports.\n\nThanks Ruiqi Zhang for the report.",
        "lucia-p",
        {"django/core/validators.py": DJANGO_VALIDATORS_AFTER, "tests/validators/tests.py": DJANGO_TESTS_AFTER},
    )],
    created_at="2024-02-20T10:18:31Z", merged_at="2024-02-22T12:03:48Z",
    reviews=[review("felixm", "APPROVED", "Thanks 👍", "2024-02-22T11:40:15Z")],
    comments=[comment("felixm", "@lucia-p Thanks for the patch, I squashed the commits.",
                      "2024-02-22T12:04:20Z")],
)

# --- psf/requests: a SWE-bench Verified repository (decontamination drops it) ---------

REQUESTS_UTILS = src(r'''
import ipaddress
import os
from urllib.parse import urlparse


def _no_proxy_entries(no_proxy):
    """Split a no_proxy value into its non-empty entries."""
    return [entry for entry in no_proxy.replace(" ", "").split(",") if entry]


def _host_matches(host, entry):
    """Return True if host is covered by one no_proxy entry."""
    try:
        network = ipaddress.ip_network(entry, strict=False)
    except ValueError:
        entry = entry.lstrip(".")
        return host == entry or host.endswith("." + entry)
    try:
        return ipaddress.ip_address(host) in network
    except ValueError:
        return False


def should_bypass_proxies(url, no_proxy=None):
    """Return True if requests to url should not go through a proxy."""
    if no_proxy is None:
        no_proxy = os.environ.get("no_proxy") or os.environ.get("NO_PROXY") or ""
    host = urlparse(url).hostname
    if not host:
        return True
    return any(_host_matches(host, entry) for entry in _no_proxy_entries(no_proxy))
''')

REQUESTS_UTILS_AFTER = edit(
    REQUESTS_UTILS,
    ('    """Return True if host is covered by one no_proxy entry."""\n    try:\n'
     "        network = ipaddress.ip_network(entry, strict=False)\n",
     '    """Return True if host is covered by one no_proxy entry."""\n'
     "    if entry.startswith(\"[\") and \"]\" in entry:\n"
     "        # An IPv6 address written as in a URL: [::1] or [::1]:8080.\n"
     "        entry = entry[1:entry.index(\"]\")]\n"
     "    try:\n"
     "        network = ipaddress.ip_network(entry, strict=False)\n"),
)

REQUESTS_TESTS = src(r'''
import pytest

from requests.utils import should_bypass_proxies


@pytest.mark.parametrize(
    "url, no_proxy, expected",
    [
        ("http://example.com/", "example.com", True),
        ("http://api.example.com/", ".example.com", True),
        ("http://example.org/", "example.com", False),
        ("http://192.168.1.5/", "192.168.0.0/16", True),
        ("http://10.0.0.1/", "192.168.0.0/16", False),
    ],
)
def test_should_bypass_proxies(url, no_proxy, expected):
    assert should_bypass_proxies(url, no_proxy=no_proxy) is expected
''')

REQUESTS_TESTS_AFTER = edit(
    REQUESTS_TESTS,
    ('        ("http://10.0.0.1/", "192.168.0.0/16", False),\n',
     '        ("http://10.0.0.1/", "192.168.0.0/16", False),\n'
     '        ("http://[::1]:8080/", "[::1]", True),\n'
     '        ("http://[::1]/", "[::1]:8080", True),\n'
     '        ("http://[fe80::2]/", "fe80::/10", True),\n'),
)

REQUESTS = pr(
    "psf/requests", 6650, "Match bracketed IPv6 addresses in no_proxy", "dkowal",
    body=(
        "Fixes #6644.\n\nAn entry such as `[::1]` or `[::1]:8080` in `no_proxy` never matched, "
        "because the brackets made it neither a network nor a host name that `::1` ends with. "
        "The brackets (and a port after them) are now stripped before the entry is parsed."
    ),
    base={"src/requests/utils.py": REQUESTS_UTILS, "tests/test_utils.py": REQUESTS_TESTS},
    commits=[commit("Match bracketed IPv6 addresses in no_proxy", "dkowal",
                    {"src/requests/utils.py": REQUESTS_UTILS_AFTER, "tests/test_utils.py": REQUESTS_TESTS_AFTER})],
    created_at="2024-03-08T16:40:02Z", merged_at="2024-03-13T19:21:44Z",
    issues=[issue(
        6644, "no_proxy entries in brackets ([::1]) are ignored", "vlad-k",
        "With `NO_PROXY=[::1]`, `requests.get(\"http://[::1]:8000/\")` still goes through "
        "`HTTP_PROXY`. curl accepts the bracketed form, so our environment uses it everywhere.\n\n"
        "## System Information\n\n    $ python -m requests.help\n\n```json\n"
        "{\"requests\": {\"version\": \"2.31.0\"}, \"platform\": {\"system\": \"Linux\"}}\n```"
    )],
    reviews=[review("sethm-dev", "APPROVED", "", "2024-03-13T19:20:58Z")],
    comments=[comment("vlad-k", "Thank you! Confirmed with our setup.", "2024-03-14T08:02:37Z")],
)

# --- pallets/click: an LLM-refined summary and commit messages -----------------------

CLICK_CORE = src(r'''
import typing as t


class Option:
    """An option parameter. (Excerpt: the parts that resolve flag values.)"""

    def __init__(self, name, is_flag=False, flag_value=None, default=None):
        self.name = name
        self.is_flag = is_flag
        self.default = default
        if is_flag and flag_value is None:
            flag_value = not self.default
        self.flag_value = flag_value

    def get_default(self, ctx, call=True):
        value = ctx.lookup_default(self.name, call=False)
        if value is None:
            value = self.default
        if call and callable(value):
            value = value()
        return value

    def resolve_flag(self, ctx, seen: bool) -> t.Any:
        """Return the value of a boolean flag given whether it was passed."""
        if seen:
            return self.flag_value
        return self.get_default(ctx)
''')

CLICK_CORE_AFTER = edit(
    CLICK_CORE,
    ("            flag_value = not self.default\n",
     "            # A callable default is resolved only when parsing, so it says\n"
     "            # nothing about the flag's value: passing the flag means True.\n"
     "            flag_value = True if callable(default) else not default\n"),
)

CLICK_TESTS = src(r'''
import click
import pytest


@pytest.mark.parametrize(
    ("default", "args", "expect"),
    [
        (False, [], False),
        (False, ["--flag"], True),
        (True, [], True),
        (True, ["--flag"], False),
    ],
)
def test_flag_default(runner, default, args, expect):
    @click.command()
    @click.option("--flag", is_flag=True, default=default)
    def cli(flag):
        click.echo(repr(flag), nl=False)

    result = runner.invoke(cli, args)
    assert result.output == repr(expect)
''')

CLICK_TESTS_AFTER = CLICK_TESTS + src(r'''


def test_flag_callable_default(runner):
    @click.command()
    @click.option("--flag", is_flag=True, default=lambda: False)
    def cli(flag):
        click.echo(repr(flag), nl=False)

    assert runner.invoke(cli, []).output == "False"
    assert runner.invoke(cli, ["--flag"]).output == "True"
''')

CLICK_CHANGES = src(r'''
.. currentmodule:: click

Version 8.1.8
-------------

Unreleased

-   Fix the type annotation of ``click.Path`` with ``path_type``. :issue:`2124`
-   ``echo_via_pager`` accepts a generator that yields ``bytes``. :issue:`2127`


Version 8.1.7
-------------

Released 2023-08-17

-   Fix a crash when a ``Choice`` is used with ``multiple=True``. :issue:`2095`
''')

CLICK_CHANGES_AFTER = edit(
    CLICK_CHANGES,
    ("``bytes``. :issue:`2127`\n",
     "``bytes``. :issue:`2127`\n"
     "-   A flag option with a callable default gets ``True`` as its flag value\n"
     "    instead of ``False``. :issue:`2130`\n"),
)

CLICK = pr(
    "pallets/click", 2139, "Fix flag value parsing when default is a callable", "alice",
    body="fixes #2130\n\nflag_value was `not default` which is False for a function. use True then.",
    summary=(
        "When an option is a boolean flag without an explicit `flag_value`, click derives the "
        "value from the default as `not default`. For a callable default (`default=lambda: "
        "False`) that expression is always `False`, because a function is truthy, so passing "
        "the flag produced `False` instead of `True`. The fix derives `True` when the default "
        "is callable, since a callable default is only evaluated at parse time and says nothing "
        "about the flag's own value. A regression test covers both the flag being passed and "
        "omitted, and the changelog records the fix for 8.1.8."
    ),
    base={"src/click/core.py": CLICK_CORE, "tests/test_options.py": CLICK_TESTS, "CHANGES.rst": CLICK_CHANGES},
    commits=[
        commit("fix flag value for callable default", "alice", {"src/click/core.py": CLICK_CORE_AFTER},
               refined=("Derive a flag's value as True when its default is callable\n\n"
                        "`not default` is always False for a function, so a flag whose default "
                        "is a callable produced False when passed. A callable default is only "
                        "resolved at parse time and says nothing about the flag's value.")),
        commit("add test + changelog", "alice",
               {"tests/test_options.py": CLICK_TESTS_AFTER, "CHANGES.rst": CLICK_CHANGES_AFTER},
               refined=("Test flags with a callable default and note the fix in CHANGES\n\n"
                        "The test passes the flag and omits it, checking True and the "
                        "callable's result respectively.")),
    ],
    created_at="2023-04-02T10:11:12Z", merged_at="2023-04-05T08:00:00Z",
    labels=["bug"], base_ref="8.1.x",
    issues=[issue(
        2130, "Flag with callable default is False when passed", "bob",
        "```python\n@click.command()\n@click.option(\"--dry-run\", is_flag=True, default=lambda: "
        "os.environ.get(\"DRY\") == \"1\")\ndef cli(dry_run):\n    assert isinstance(dry_run, bool)\n"
        "    if dry_run:\n        ...\n```\n\n`cli --dry-run` gives `dry_run == False`, and our "
        "deployment script ran for real. Expected `True` when the flag is passed.\n\n"
        "Environment:\n\n- Python version: 3.11\n- Click version: 8.1.7"
    )],
    reviews=[
        review("carol", "CHANGES_REQUESTED", "Please add a test and a changelog entry.",
               "2023-04-03T09:00:00Z"),
        review("carol", "APPROVED", "", "2023-04-05T07:58:00Z"),
    ],
    review_comments=[inline(
        "carol", "src/click/core.py", "flag_value = True if callable(default) else not default",
        "Good that the comment says why a callable is special here; it would look arbitrary otherwise.",
        "2023-04-03T08:59:00Z")],
    comments=[comment("dave", "Thanks, this bit us in a deploy script as well.", "2023-04-04T12:30:00Z")],
)

PRS_GENERAL = [
    GIN, COBRA, DEPENDABOT, TOKIO, RIPGREP, CLAP, RUFF, EXPRESS, VITE, PRETTIER, TSE, AXIOS,
    REDIS, CURL, JQ, GSON, JUNIT, DJANGO, REQUESTS, CLICK,
]


# ======================================================================================
# decontamination/humaneval-sample.txt (benchmark-style prompts, written for this sample)
# ======================================================================================

HUMANEVAL_PROMPTS = [
    src(r'''
from typing import List


def below_threshold_runs(values: List[int], threshold: int) -> List[int]:
    """ Given a list of integers and a threshold, return the lengths of every
    maximal run of consecutive values that are strictly below the threshold,
    in the order in which the runs appear in the list.
    >>> below_threshold_runs([1, 2, 9, 3, 4, 5, 10], 6)
    [2, 3]
    >>> below_threshold_runs([7, 8], 6)
    []
    """
'''),
    src(r'''
def interleave_strings(first: str, second: str) -> str:
    """ Return a new string made by taking characters alternately from the
    two input strings, starting with the first one. When one string is longer
    than the other, append the rest of the longer string at the end.
    >>> interleave_strings('abc', 'xy')
    'axbyc'
    >>> interleave_strings('', 'hello')
    'hello'
    """
'''),
    src(r'''
def digits_product_parity(n: int) -> str:
    """ Given a positive integer n, multiply together all of its decimal digits
    that are not zero, and return 'even' if the product is even and 'odd'
    otherwise. Zero digits are skipped rather than multiplied.
    >>> digits_product_parity(135)
    'odd'
    >>> digits_product_parity(1024)
    'even'
    """
'''),
]

# The prompt that a prs-python record carries verbatim (mahmoud/boltons#350).
EMBEDDED_PROMPT = HUMANEVAL_PROMPTS[1]


# ======================================================================================
# prs-python.jsonl
# ======================================================================================

# --- arrow-py/arrow: a whitespace-only change --------------------------------------------

ARROW_UTIL = src(r'''
"""Small helpers used across arrow's modules."""

import datetime
from typing import Any


def is_timestamp(value: Any) -> bool:
    """Return True if value looks like a Unix timestamp (int or float, not bool)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, (int, float))


def normalize_timestamp(timestamp: float) -> float:
    """Scale a timestamp given in milliseconds or microseconds down to seconds."""
    if timestamp > 1e14:
        timestamp /= 1_000_000
    elif timestamp > 1e11:
        timestamp /= 1_000
    return timestamp


def iso_week_start(day: datetime.date) -> datetime.date:
    """Return the Monday of the ISO week that contains day."""
    return day - datetime.timedelta(
        days=day.weekday()
    )


def clamp_ordinal(ordinal: int) -> int:
    """Keep a proleptic Gregorian ordinal inside what datetime can represent."""
    return max(1, min(ordinal, datetime.date.max.toordinal()))
''')

# The base has trailing blanks and a continuation line indented by three spaces.
ARROW_UTIL_BEFORE = edit(
    ARROW_UTIL,
    ("def normalize_timestamp(timestamp: float) -> float:\n",
     "def normalize_timestamp(timestamp: float) -> float:   \n"),
    ("    elif timestamp > 1e11:\n", "    elif timestamp > 1e11:  \n"),
    ("        timestamp /= 1_000\n    return timestamp\n\n",
     "        timestamp /= 1_000\n    return timestamp\n    \n"),
    ("        days=day.weekday()\n", "       days=day.weekday()\n"),
)

ARROW = pr(
    "arrow-py/arrow", 1160, "Strip trailing whitespace in arrow/util.py", "pbarros",
    body=(
        "Closes #1158.\n\nWhitespace only: trailing blanks on three lines and a continuation "
        "line indented by three spaces. No behaviour change; `pre-commit run --all-files` is "
        "clean again."
    ),
    base={"arrow/util.py": ARROW_UTIL_BEFORE},
    commits=[commit("Strip trailing whitespace and fix a continuation indent", "pbarros",
                    {"arrow/util.py": ARROW_UTIL})],
    created_at="2024-01-28T12:15:09Z", merged_at="2024-01-29T20:40:51Z",
    base_ref="master",
    issues=[issue(
        1158, "pre-commit trailing-whitespace hook fails on arrow/util.py", "ada-l",
        "Running `pre-commit run --all-files` on a fresh clone modifies `arrow/util.py` "
        "(trailing whitespace) and the flake8 hook reports E128 on the `timedelta(` call."
    )],
)

# --- tqdm/tqdm: the last line of a file without a final newline changes ---------------

TQDM_HUMAN = src(r'''
"""
Human-readable formatting helpers for the ``tqdm.contrib`` wrappers.
"""
__all__ = ["format_rate", "format_interval"]


def format_rate(n, elapsed, unit="it"):
    """
    Format a throughput, switching to seconds per item below one item a second.
    """
    if not elapsed:
        return f"?{unit}/s"
    rate = n / elapsed
    if rate >= 1:
        return f"{rate:.2f}{unit}/s"
    return f"{1 / rate:.2f}s/{unit}" if rate else f"?{unit}/s"


def format_interval(t):
    """
    Format a number of seconds as [H:]MM:SS, e.g. 3725 -> '1:02:05'.
    """
    mins, s = divmod(int(t), 60)
    h, m = divmod(mins, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"
''')

TQDM_HUMAN_BEFORE = no_final_newline(TQDM_HUMAN)
TQDM_HUMAN_AFTER = edit(
    TQDM_HUMAN,
    ("    mins, s = divmod(int(t), 60)\n",
     "    sign = \"-\" if t < 0 else \"\"\n    mins, s = divmod(int(abs(t)), 60)\n"),
    ('    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"\n',
     '    return sign + (f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}")\n'),
)

TQDM_TESTS = src(r'''
from tqdm.contrib.human import format_interval, format_rate


def test_format_interval():
    assert format_interval(0) == "00:00"
    assert format_interval(65) == "01:05"
    assert format_interval(3725) == "1:02:05"


def test_format_rate():
    assert format_rate(10, 0) == "?it/s"
    assert format_rate(10, 2) == "5.00it/s"
    assert format_rate(1, 4, unit="B") == "4.00s/B"
''')

TQDM_TESTS_AFTER = edit(
    TQDM_TESTS,
    ('    assert format_interval(3725) == "1:02:05"\n',
     '    assert format_interval(3725) == "1:02:05"\n'
     '    assert format_interval(-5) == "-00:05"\n'
     '    assert format_interval(-3725) == "-1:02:05"\n'),
)

TQDM = pr(
    "tqdm/tqdm", 1530, "fix format_interval for negative intervals", "samir-b",
    body=(
        "- fixes #1527\n\n`format_interval(-5)` returned `-1:59:55` because `divmod` floors "
        "towards negative infinity. Format the absolute value and prepend the sign.\n\n"
        "Also adds the missing newline at the end of `tqdm/contrib/human.py`."
    ),
    base={"tqdm/contrib/human.py": TQDM_HUMAN_BEFORE, "tests/tests_human.py": TQDM_TESTS},
    commits=[commit("fix format_interval for negative intervals", "samir-b",
                    {"tqdm/contrib/human.py": TQDM_HUMAN_AFTER, "tests/tests_human.py": TQDM_TESTS_AFTER})],
    created_at="2024-02-02T17:52:30Z", merged_at="2024-02-10T11:26:07Z",
    base_ref="master", labels=["p2-bug-accepted ⛺"],
    issues=[issue(
        1527, "format_interval(-5) gives '-1:59:55'", "yuki-t",
        "- [x] I have marked all applicable categories:\n  + [x] exception-raising bug\n"
        "  + [x] visual output bug\n\n```python\n>>> from tqdm.contrib.human import format_interval\n"
        ">>> format_interval(-5)\n'-1:59:55'\n```\n\nThis shows up as the remaining time when "
        "the total is underestimated."
    )],
)

# --- Textualize/rich: last line changed, no final newline on either side; a changelog --

RICH_CELLS = no_final_newline(src(r'''
"""Helpers for fitting text into a number of terminal cells."""

from typing import List


def split_cells(text: str, width: int) -> List[str]:
    """Split text into chunks of at most width characters."""
    if width <= 0:
        raise ValueError("width must be positive")
    return [text[i : i + width] for i in range(0, len(text), width)] or [""]


def pad_cells(text: str, width: int, fill: str = " ") -> str:
    """Pad text on the right to width characters; longer text is returned as is."""
    return text + fill * (width - len(text))


def truncate_cells(text: str, width: int, ellipsis: str = "…") -> str:
    """Cut text to width characters, ending with ellipsis when it was cut."""
    if len(text) <= width:
        return text
    return text[: width - 1] + ellipsis
'''))

RICH_CELLS_AFTER = edit(
    RICH_CELLS,
    ("        return text\n    return text[: width - 1] + ellipsis",
     "        return text\n"
     "    if width < len(ellipsis):\n"
     "        return ellipsis[:width]\n"
     "    return text[: width - len(ellipsis)] + ellipsis"),
)

RICH_TESTS = src(r'''
from rich._cell_helpers import pad_cells, split_cells, truncate_cells


def test_split_cells():
    assert split_cells("abcdef", 4) == ["abcd", "ef"]
    assert split_cells("", 3) == [""]


def test_pad_cells():
    assert pad_cells("ab", 4) == "ab  "


def test_truncate_cells():
    assert truncate_cells("hello", 10) == "hello"
    assert truncate_cells("hello world", 6) == "hello…"
''')

RICH_TESTS_AFTER = edit(
    RICH_TESTS,
    ('    assert truncate_cells("hello world", 6) == "hello…"\n',
     '    assert truncate_cells("hello world", 6) == "hello…"\n'
     '    assert truncate_cells("hello world", 6, ellipsis="...") == "hel..."\n'
     '    assert truncate_cells("hello world", 2, ellipsis="...") == ".."\n'),
)

RICH_CHANGELOG = src(r'''
# Changelog

All notable changes to this project will be documented in this file.

The format is based on [Keep a Changelog](https://keepachangelog.com/en/1.0.0/),
and this project adheres to [Semantic Versioning](https://semver.org/spec/v2.0.0.html).

## Unreleased

### Fixed

- Fixed `Table` rendering of empty rows with `show_lines=True` https://github.com/Textualize/rich/pull/3291

## [13.7.1] - 2024-02-28

### Fixed

- Fixed `Text.expand_tabs` not expanding spans https://github.com/Textualize/rich/pull/3271
''')

RICH_CHANGELOG_AFTER = edit(
    RICH_CHANGELOG,
    ("show_lines=True` https://github.com/Textualize/rich/pull/3291\n",
     "show_lines=True` https://github.com/Textualize/rich/pull/3291\n"
     "- Fixed `truncate_cells` exceeding the width with a multi-character ellipsis "
     "https://github.com/Textualize/rich/pull/3300\n"),
)

RICH = pr(
    "Textualize/rich", 3300, "Fix truncate_cells with a multi-character ellipsis", "nadia-ok",
    body=(
        "## Type of changes\n\n- [x] Bug fix\n\n## Checklist\n\n"
        "- [x] I've run the latest black with default args on new code.\n"
        "- [x] I've updated CHANGELOG.md and CONTRIBUTORS.md where appropriate.\n"
        "- [x] I've added tests for new code.\n\n## Description\n\n"
        "Fixes #3296. `truncate_cells` assumed a one-character ellipsis, so "
        "`truncate_cells(text, 6, ellipsis=\"...\")` returned eight characters."
    ),
    base={"rich/_cell_helpers.py": RICH_CELLS, "tests/test_cell_helpers.py": RICH_TESTS,
          "CHANGELOG.md": RICH_CHANGELOG},
    commits=[commit("fix truncate_cells with longer ellipsis", "nadia-ok", {
        "rich/_cell_helpers.py": RICH_CELLS_AFTER, "tests/test_cell_helpers.py": RICH_TESTS_AFTER,
        "CHANGELOG.md": RICH_CHANGELOG_AFTER,
    })],
    created_at="2024-03-04T19:01:55Z", merged_at="2024-03-09T15:12:00Z",
    base_ref="master",
    issues=[issue(
        3296, "[BUG] truncate_cells overflows with ellipsis='...'", "dkowal",
        "**Describe the bug**\n\n```python\n>>> truncate_cells(\"hello world\", 6, ellipsis=\"...\")\n"
        "'hello...'\n```\n\nThat is 8 cells for a width of 6, which wraps my table cells.\n\n"
        "rich 13.7.1, Python 3.12, Linux."
    )],
    reviews=[review("kjell-s", "APPROVED", "Thanks for the fix and the tests.", "2024-03-09T15:11:12Z")],
)

# --- encode/httpx: the edited line also occurs elsewhere in the file --------------------

HTTPX_ENV = src(r'''
"""Reading httpx settings from environment variables."""

import os
import typing

Environ = typing.Mapping[str, str]


def _get(environ: Environ, name: str) -> typing.Optional[str]:
    value = environ.get(name) or environ.get(name.lower())
    if not value:
        return None
    return value.strip()


def get_ssl_cert_file(environ: Environ = os.environ) -> typing.Optional[str]:
    path = _get(environ, "SSL_CERT_FILE")
    if path is None or not os.path.isfile(path):
        return None
    return path


def get_ssl_cert_dir(environ: Environ = os.environ) -> typing.Optional[str]:
    path = _get(environ, "SSL_CERT_DIR")
    if path is None or not os.path.isfile(path):
        return None
    return path


def get_timeout(environ: Environ = os.environ) -> typing.Optional[float]:
    value = _get(environ, "HTTPX_TIMEOUT")
    if value is None:
        return None
    return float(value)
''')

# The second of two identical lines changes.
HTTPX_ENV_AFTER = edit(
    HTTPX_ENV,
    ("    if path is None or not os.path.isfile(path):\n",
     "    if path is None or not os.path.isdir(path):\n", 1),
)

HTTPX_TESTS = src(r'''
from httpx._env import get_ssl_cert_dir, get_ssl_cert_file


def test_ssl_cert_file(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    assert get_ssl_cert_file({"SSL_CERT_FILE": str(bundle)}) == str(bundle)
    assert get_ssl_cert_file({"SSL_CERT_FILE": str(tmp_path / "missing.pem")}) is None
''')

HTTPX_TESTS_AFTER = HTTPX_TESTS + src(r'''


def test_ssl_cert_dir(tmp_path):
    assert get_ssl_cert_dir({"SSL_CERT_DIR": str(tmp_path)}) == str(tmp_path)
    assert get_ssl_cert_dir({"ssl_cert_dir": str(tmp_path)}) == str(tmp_path)
    assert get_ssl_cert_dir({"SSL_CERT_DIR": str(tmp_path / "missing")}) is None
''')

HTTPX = pr(
    "encode/httpx", 3100, "Fix `SSL_CERT_DIR` being ignored", "owainj",
    body=(
        "Closes #3094\n\n`get_ssl_cert_dir()` was a copy of `get_ssl_cert_file()` and kept its "
        "`os.path.isfile()` check, so a directory was never accepted. It now checks "
        "`os.path.isdir()`.\n\n- [x] Added a test."
    ),
    base={"httpx/_env.py": HTTPX_ENV, "tests/test_env.py": HTTPX_TESTS},
    commits=[commit("Fix SSL_CERT_DIR being ignored", "owainj",
                    {"httpx/_env.py": HTTPX_ENV_AFTER, "tests/test_env.py": HTTPX_TESTS_AFTER})],
    created_at="2024-02-14T09:26:40Z", merged_at="2024-02-15T10:03:12Z",
    base_ref="master",
    issues=[issue(
        3094, "SSL_CERT_DIR is never used", "lucia-p",
        "With `SSL_CERT_DIR=/etc/ssl/certs` and `trust_env=True`, httpx still uses certifi's "
        "bundle. `httpx._env.get_ssl_cert_dir()` returns `None` for an existing directory."
    )],
    reviews=[review("mfournier", "APPROVED", "Good catch.", "2024-02-15T10:02:00Z")],
)

# --- python-attrs/attrs: insertion at the top of two files ----------------------------

ATTRS_VERSION = src(r'''
from functools import total_ordering


@total_ordering
class VersionInfo:
    """A version that compares to tuples of the same or a shorter length."""

    def __init__(self, year: int, minor: int, micro: int, releaselevel: str):
        self.year = year
        self.minor = minor
        self.micro = micro
        self.releaselevel = releaselevel

    @classmethod
    def _from_version_string(cls, s: str) -> "VersionInfo":
        """Parse strings like '23.1.0' or '23.2.0.dev0'."""
        v = s.split(".")
        if len(v) == 3:
            v.append("final")
        return cls(year=int(v[0]), minor=int(v[1]), micro=int(v[2]), releaselevel=v[3])

    def _as_tuple(self):
        return (self.year, self.minor, self.micro, self.releaselevel)

    def __eq__(self, other):
        if not isinstance(other, tuple):
            return NotImplemented
        return self._as_tuple()[: len(other)] == other

    def __lt__(self, other):
        if not isinstance(other, tuple):
            return NotImplemented
        return self._as_tuple()[: len(other)] < other
''')

ATTRS_COMPAT = src(r'''
import platform
import sys

PYPY = platform.python_implementation() == "PyPy"
PY_3_10_PLUS = sys.version_info[:2] >= (3, 10)
PY_3_11_PLUS = sys.version_info[:2] >= (3, 11)
PY_3_12_PLUS = sys.version_info[:2] >= (3, 12)
PY_3_13_PLUS = sys.version_info[:2] >= (3, 13)
''')

SPDX = "# SPDX-License-Identifier: MIT\n\n"

ATTRS = pr(
    "python-attrs/attrs", 1250, "Add SPDX license headers to the last two modules", "ada-l",
    body="Fixes #1247. Adds the header the other modules already have; nothing else.",
    base={"src/attr/_version_info.py": ATTRS_VERSION, "src/attr/_compat_flags.py": ATTRS_COMPAT},
    commits=[commit("Add SPDX license headers to the last two modules", "ada-l", {
        "src/attr/_version_info.py": SPDX + ATTRS_VERSION,
        "src/attr/_compat_flags.py": SPDX + ATTRS_COMPAT,
    })],
    created_at="2024-02-24T08:44:03Z", merged_at="2024-02-24T13:19:50Z",
    issues=[issue(
        1247, "Two modules lack the SPDX header", "pbarros",
        "`reuse lint` reports `src/attr/_version_info.py` and `src/attr/_compat_flags.py` as "
        "missing licensing information; every other module starts with "
        "`# SPDX-License-Identifier: MIT`."
    )],
)

# --- pypa/pip: pure deletions, and a news fragment ------------------------------------

PIP_FS = src(r'''
import fnmatch
import os
import shutil
import warnings
from typing import Iterator


def is_writable_dir(path: str) -> bool:
    """Return True if path, or its nearest existing parent, is writable."""
    while not os.path.isdir(path):
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent
    return os.access(path, os.W_OK)


def rmtree_quiet(path: str) -> None:
    """Remove a directory tree, ignoring errors.

    Deprecated: use ``shutil.rmtree(path, ignore_errors=True)``. This helper
    will be removed in pip 24.1.
    """
    warnings.warn(
        "rmtree_quiet() is deprecated and will be removed in pip 24.1",
        DeprecationWarning,
        stacklevel=2,
    )
    shutil.rmtree(path, ignore_errors=True)


def find_files(path: str, pattern: str) -> Iterator[str]:
    """Yield the files under path whose name matches the glob pattern."""
    for root, _dirs, files in os.walk(path):
        for name in fnmatch.filter(files, pattern):
            yield os.path.join(root, name)
''')

PIP_FS_AFTER = edit(
    PIP_FS,
    ("import shutil\nimport warnings\n", ""),
    ('def rmtree_quiet(path: str) -> None:\n    """Remove a directory tree, ignoring errors.\n\n'
     "    Deprecated: use ``shutil.rmtree(path, ignore_errors=True)``. This helper\n"
     '    will be removed in pip 24.1.\n    """\n    warnings.warn(\n'
     '        "rmtree_quiet() is deprecated and will be removed in pip 24.1",\n'
     "        DeprecationWarning,\n        stacklevel=2,\n    )\n"
     "    shutil.rmtree(path, ignore_errors=True)\n\n\n", ""),
)

PIP_TESTS = src(r'''
import os

import pytest

from pip._internal.utils.filesystem_helpers import find_files, is_writable_dir, rmtree_quiet


def test_is_writable_dir_walks_up(tmp_path):
    assert is_writable_dir(os.fspath(tmp_path / "not" / "yet" / "there"))


def test_rmtree_quiet_warns(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.warns(DeprecationWarning):
        rmtree_quiet(os.fspath(tmp_path / "d"))
    assert not (tmp_path / "d").exists()


def test_find_files(tmp_path):
    (tmp_path / "a.whl").write_text("")
    (tmp_path / "b.tar.gz").write_text("")
    assert list(find_files(os.fspath(tmp_path), "*.whl")) == [os.fspath(tmp_path / "a.whl")]
''')

PIP_TESTS_AFTER = edit(
    PIP_TESTS,
    ("import os\n\nimport pytest\n\n", "import os\n\n"),
    ("from pip._internal.utils.filesystem_helpers import find_files, is_writable_dir, rmtree_quiet\n",
     "from pip._internal.utils.filesystem_helpers import find_files, is_writable_dir\n"),
    ("def test_rmtree_quiet_warns(tmp_path):\n"
     "    (tmp_path / \"d\").mkdir()\n"
     "    with pytest.warns(DeprecationWarning):\n"
     "        rmtree_quiet(os.fspath(tmp_path / \"d\"))\n"
     "    assert not (tmp_path / \"d\").exists()\n\n\n", ""),
)

PIP = pr(
    "pypa/pip", 12500, "Remove the deprecated rmtree_quiet() helper", "jkarlsson",
    body=(
        "Closes #12493.\n\n`rmtree_quiet()` has warned since 23.3 that it goes away in 24.1; "
        "nothing in pip calls it any more."
    ),
    base={"src/pip/_internal/utils/filesystem_helpers.py": PIP_FS,
          "tests/unit/test_utils_filesystem_helpers.py": PIP_TESTS},
    commits=[commit("Remove the deprecated rmtree_quiet() helper", "jkarlsson", {
        "src/pip/_internal/utils/filesystem_helpers.py": PIP_FS_AFTER,
        "tests/unit/test_utils_filesystem_helpers.py": PIP_TESTS_AFTER,
        "news/12500.removal.rst": "Remove the ``rmtree_quiet()`` helper, deprecated since pip 23.3.\n",
    })],
    created_at="2024-02-05T22:31:17Z", merged_at="2024-02-07T18:00:03Z",
    issues=[issue(
        12493, "Remove deprecated internals scheduled for 24.1", "sbrandt-dev",
        "Tracking issue. Scheduled for removal in 24.1:\n\n- [ ] `rmtree_quiet()`\n"
        "- [x] `--build-option` on `pip wheel` without a per-requirement form"
    )],
)

# --- psf/black: two separate hunks in one file ----------------------------------------

BLACK_DOCSTRING = src(r'''
"""Helpers for re-indenting docstrings."""

from typing import Final

DOCSTRING_QUOTES: Final = ('"' * 3, "'" * 3)
MAX_DOCSTRING_INDENT: Final = 8


def strip_docstring_quotes(docstring: str) -> str:
    """Remove the surrounding triple quotes of a docstring literal."""
    for quote in DOCSTRING_QUOTES:
        if docstring.startswith(quote) and docstring.endswith(quote):
            return docstring[3:-3]
    return docstring


def common_indent(lines: list[str]) -> int:
    """Return the smallest indentation of the non-blank lines after the first."""
    indents = [len(line) - len(line.lstrip()) for line in lines[1:] if line.strip()]
    return min(indents, default=0)


def reindent_docstring(docstring: str, indent: str) -> str:
    """Re-indent every line after the first to indent."""
    lines = docstring.splitlines()
    if len(lines) < 2:
        return docstring
    strip = min(common_indent(lines), MAX_DOCSTRING_INDENT)
    out = [lines[0]]
    for line in lines[1:]:
        if line.strip():
            out.append(indent + line[strip:])
        else:
            out.append("")
    return "\n".join(out)
''')

BLACK_DOCSTRING_AFTER = edit(
    BLACK_DOCSTRING,
    ("MAX_DOCSTRING_INDENT: Final = 8\n", ""),
    ("    strip = min(common_indent(lines), MAX_DOCSTRING_INDENT)\n",
     "    strip = common_indent(lines)\n"),
)

BLACK_TESTS = src(r'''
from black.docstring_helpers import reindent_docstring


def test_reindent_docstring():
    doc = "Summary.\n\n        Details.\n        More."
    assert reindent_docstring(doc, "    ") == "Summary.\n\n    Details.\n    More."
''')

BLACK_TESTS_AFTER = BLACK_TESTS + src(r'''


def test_reindent_deeply_nested_docstring():
    doc = "Summary.\n\n                Details."
    assert reindent_docstring(doc, "        ") == "Summary.\n\n        Details."
''')

BLACK = pr(
    "psf/black", 4200, "Don't cap the indentation removed from docstrings", "vlad-k",
    body=(
        "### Description\n\nFixes #4194. `reindent_docstring` removed at most 8 columns of "
        "common indentation, so docstrings of methods nested more than two levels deep kept "
        "the rest and moved right on every run.\n\n### Checklist\n\n- [x] Add an entry in "
        "`CHANGES.md` if necessary? (will do after review)\n- [x] Add / update tests if necessary?"
    ),
    base={"src/black/docstring_helpers.py": BLACK_DOCSTRING, "tests/test_docstring_helpers.py": BLACK_TESTS},
    commits=[commit("Don't cap the indentation removed from docstrings", "vlad-k", {
        "src/black/docstring_helpers.py": BLACK_DOCSTRING_AFTER,
        "tests/test_docstring_helpers.py": BLACK_TESTS_AFTER,
    })],
    created_at="2024-02-08T14:28:55Z", merged_at="2024-02-12T16:45:30Z",
    issues=[issue(
        4194, "Docstring indentation grows on every run for deeply nested methods", "tmarsh",
        "**Describe the bug**\n\nA method docstring at 16 spaces of indentation gains 8 "
        "spaces each time black runs, so black is not idempotent on this file.\n\n"
        "**To Reproduce**\n\nRun black twice on a class nested in a class nested in a function "
        "whose method has a multi-line docstring.\n\n**Environment**\n\n- Black's version: 24.1.1"
    )],
    reviews=[review("ellie-dev", "APPROVED", "Thanks, and nice minimal test.", "2024-02-12T16:40:00Z")],
)

# --- jazzband/pip-tools: three commits, the first two on the same file ----------------

PIPTOOLS_UTILS = src(r'''
from __future__ import annotations

import re

_NORMALIZE_RE = re.compile(r"[-_.]+")


def key_from_name(name: str) -> str:
    """Return the normalized key of a project name (PEP 503)."""
    return _NORMALIZE_RE.sub("-", name).lower()


def format_requirement(name: str, version: str | None, extras: set[str]) -> str:
    """Render a pinned requirement line such as ``requests[socks]==2.31.0``."""
    line = key_from_name(name)
    if extras:
        line += "[" + ",".join(extras) + "]"
    if version:
        line += "==" + version
    return line


def is_url_requirement(line: str) -> bool:
    """Return True if a requirement line points at a URL rather than an index."""
    return "://" in line or line.startswith("file:")
''')

PIPTOOLS_UTILS_1 = edit(
    PIPTOOLS_UTILS,
    ('        line += "[" + ",".join(extras) + "]"\n',
     '        line += "[" + ",".join(sorted(extras)) + "]"\n'),
)

PIPTOOLS_UTILS_2 = edit(
    PIPTOOLS_UTILS_1,
    ('    """Render a pinned requirement line such as ``requests[socks]==2.31.0``."""\n',
     '    """Render a pinned requirement line such as ``requests[socks]==2.31.0``.\n\n'
     "    Extras are normalized (PEP 685) and sorted, so that the output does not\n"
     '    depend on set order.\n    """\n'),
    ('        line += "[" + ",".join(sorted(extras)) + "]"\n',
     '        line += "[" + ",".join(sorted({key_from_name(e) for e in extras})) + "]"\n'),
)

PIPTOOLS_TESTS = src(r'''
import pytest

from piptools.utils import format_requirement, key_from_name


@pytest.mark.parametrize(
    ("name", "key"),
    [("Django", "django"), ("zope.interface", "zope-interface"), ("a__b", "a-b")],
)
def test_key_from_name(name, key):
    assert key_from_name(name) == key


def test_format_requirement_pinned():
    assert format_requirement("Requests", "2.31.0", set()) == "requests==2.31.0"
''')

PIPTOOLS_TESTS_3 = PIPTOOLS_TESTS + src(r'''


def test_format_requirement_extras_are_sorted_and_normalized():
    extras = {"socks", "Security", "use_chardet_on_py3"}
    assert (
        format_requirement("requests", "2.31.0", extras)
        == "requests[security,socks,use-chardet-on-py3]==2.31.0"
    )
''')

PIPTOOLS = pr(
    "jazzband/pip-tools", 2050, "Write extras in a stable, normalized order", "lucia-p",
    body=(
        "Fixes #2046\n\nExtras came out in set order, so `pip-compile` could reorder "
        "`requests[socks,security]` between runs and produce noisy diffs. They are now sorted, "
        "and (after review) normalized as PEP 685 asks.\n\n"
        "##### Contributor checklist\n\n- [x] Included tests for the changes.\n"
        "- [x] PR title is short, clear, and ready to be included in the user-facing changelog."
    ),
    base={"piptools/utils.py": PIPTOOLS_UTILS, "tests/test_utils.py": PIPTOOLS_TESTS},
    commits=[
        commit("Sort extras when formatting requirements", "lucia-p",
               {"piptools/utils.py": PIPTOOLS_UTILS_1}),
        commit("Normalize extras per PEP 685", "lucia-p", {"piptools/utils.py": PIPTOOLS_UTILS_2}),
        commit("Test extras order and normalization", "lucia-p", {"tests/test_utils.py": PIPTOOLS_TESTS_3}),
    ],
    created_at="2024-03-12T20:05:14Z", merged_at="2024-03-19T07:33:41Z",
    issues=[issue(
        2046, "pip-compile output order of extras is not deterministic", "hkato",
        "Running `pip-compile` twice without changes sometimes flips "
        "`requests[security,socks]` to `requests[socks,security]`. Seen with "
        "`PYTHONHASHSEED` unset on pip-tools 7.4.1."
    )],
    reviews=[
        review("sbrandt-dev", "CHANGES_REQUESTED",
               "Sorting fixes the flapping. While we're here, PEP 685 says extras compare "
               "normalized; can we normalize them too so `Security` and `security` collapse?",
               "2024-03-14T10:20:00Z"),
        review("sbrandt-dev", "APPROVED", "", "2024-03-19T07:30:12Z"),
    ],
    review_comments=[inline(
        "sbrandt-dev", "piptools/utils.py", "sorted({key_from_name(e) for e in extras})",
        "A set comprehension also drops duplicates that only differ in case. 👍",
        "2024-03-19T07:29:45Z")],
)

# --- mahmoud/boltons: carries a benchmark prompt verbatim (n-gram decontamination) -----

BOLTONS_STRUTILS = src(r'''
"""Small string helpers that the standard library does not provide."""

import re

__all__ = ["slugify_words", "strip_ansi", "ordinal_suffix"]

_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def slugify_words(text, delim="_"):
    """Lowercase text and join its alphanumeric words with delim.

    >>> slugify_words("Hello, World!")
    'hello_world'
    """
    return delim.join(re.findall(r"[a-z0-9]+", text.lower()))


def strip_ansi(text):
    """Remove ANSI color and cursor escape sequences from text."""
    return _ANSI_RE.sub("", text)


def ordinal_suffix(n):
    """Return n with its English ordinal suffix.

    >>> ordinal_suffix(22)
    '22nd'
    """
    if 10 <= n % 100 <= 20:
        suffix = "th"
    else:
        suffix = {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
''')

BOLTONS_STRUTILS_AFTER = edit(
    BOLTONS_STRUTILS,
    ('__all__ = ["slugify_words", "strip_ansi", "ordinal_suffix"]\n',
     '__all__ = ["slugify_words", "strip_ansi", "ordinal_suffix", "interleave_strings"]\n'),
) + "\n\n" + EMBEDDED_PROMPT + src(r'''
    out = []
    for a, b in zip(first, second):
        out.append(a)
        out.append(b)
    shorter = min(len(first), len(second))
    out.append(first[shorter:] or second[shorter:])
    return "".join(out)
''')

BOLTONS_TESTS = src(r'''
from boltons.strutils import ordinal_suffix, slugify_words


def test_slugify_words():
    assert slugify_words("Hello, World!") == "hello_world"
    assert slugify_words("a-b c", delim="-") == "a-b-c"


def test_ordinal_suffix():
    assert [ordinal_suffix(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 112)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "112th",
    ]
''')

BOLTONS_TESTS_AFTER = edit(
    BOLTONS_TESTS,
    ("from boltons.strutils import ordinal_suffix, slugify_words\n",
     "from boltons.strutils import interleave_strings, ordinal_suffix, slugify_words\n"),
) + src(r'''


def test_interleave_strings():
    assert interleave_strings("abc", "xy") == "axbyc"
    assert interleave_strings("", "hello") == "hello"
    assert interleave_strings("ab", "") == "ab"
''')

BOLTONS = pr(
    "mahmoud/boltons", 350, "Add strutils.interleave_strings()", "ruiqi-z",
    body=(
        "Closes #347.\n\nAdds `interleave_strings(first, second)`. I adapted it from a solution "
        "to a coding exercise I had lying around, docstring and doctests included."
    ),
    base={"boltons/strutils.py": BOLTONS_STRUTILS, "tests/test_strutils.py": BOLTONS_TESTS},
    commits=[commit("add strutils.interleave_strings", "ruiqi-z", {
        "boltons/strutils.py": BOLTONS_STRUTILS_AFTER, "tests/test_strutils.py": BOLTONS_TESTS_AFTER,
    })],
    created_at="2024-01-19T23:10:44Z", merged_at="2024-01-22T04:02:19Z",
    base_ref="master",
    issues=[issue(
        347, "strutils: a helper to interleave two strings?", "nadia-ok",
        "I keep writing the zip-and-join dance to interleave two strings when building "
        "obfuscated test fixtures. Would a small helper fit in `strutils`?"
    )],
)

# --- aio-libs/aiohttp: two commits on the same file ----------------------------------

AIOHTTP_CD = src(r'''
"""Parsing of the Content-Disposition header. (Excerpt.)"""

from typing import Dict, Optional, Tuple
from urllib.parse import unquote


def parse_content_disposition(
    header: Optional[str],
) -> Tuple[Optional[str], Dict[str, str]]:
    """Split a Content-Disposition value into its type and parameters."""
    if not header:
        return None, {}
    disptype, *parts = header.split(";")
    params: Dict[str, str] = {}
    for part in parts:
        if "=" not in part:
            continue
        key, value = part.split("=", 1)
        key = key.strip().lower()
        value = value.strip()
        if key.endswith("*"):
            _charset, _lang, value = value.split("'", 2)
            value = unquote(value)
            key = key[:-1]
        params[key] = value
    return disptype.strip().lower(), params


def content_disposition_filename(params: Dict[str, str]) -> Optional[str]:
    """Return the filename parameter, if any."""
    return params.get("filename")
''')

AIOHTTP_CD_1 = edit(
    AIOHTTP_CD,
    ("        value = value.strip()\n",
     "        value = value.strip()\n"
     "        if len(value) >= 2 and value[0] == value[-1] == '\"':\n"
     "            value = value[1:-1].replace('\\\\\"', '\"')\n"),
)

AIOHTTP_CD_2 = edit(
    AIOHTTP_CD_1,
    ("            _charset, _lang, value = value.split(\"'\", 2)\n",
     "            try:\n"
     "                _charset, _lang, value = value.split(\"'\", 2)\n"
     "            except ValueError:\n"
     "                # Not RFC 5987 encoded: ignore the parameter, as browsers do.\n"
     "                continue\n"),
)

AIOHTTP_TESTS = src(r'''
from aiohttp._content_disposition import parse_content_disposition


def test_plain():
    assert parse_content_disposition("inline") == ("inline", {})


def test_extended_filename():
    disptype, params = parse_content_disposition("attachment; filename*=UTF-8''na%C3%AFve.txt")
    assert disptype == "attachment"
    assert params == {"filename": "naïve.txt"}
''')

AIOHTTP_TESTS_1 = AIOHTTP_TESTS + src(r'''


def test_quoted_filename():
    _, params = parse_content_disposition('attachment; filename="report 2024.pdf"')
    assert params == {"filename": "report 2024.pdf"}
''')

AIOHTTP_TESTS_2 = AIOHTTP_TESTS_1 + src(r'''


def test_malformed_extended_parameter_is_ignored():
    _, params = parse_content_disposition("attachment; filename*=report.pdf")
    assert params == {}
''')

AIOHTTP = pr(
    "aio-libs/aiohttp", 8100, "Unquote quoted Content-Disposition parameters", "yuki-t",
    body=(
        "## What do these changes do?\n\n`filename=\"report 2024.pdf\"` was returned with its "
        "quotes. Quoted values are now unquoted (with `\\\"` unescaped). The second commit "
        "also stops a malformed `filename*=` from raising `ValueError`.\n\n"
        "## Are there changes in behavior for the user?\n\nFilenames no longer carry quotes.\n\n"
        "## Related issue number\n\nFixes #8093\n\n## Checklist\n\n- [x] Tests for the changes "
        "are provided\n- [ ] Add a new news fragment into the `CHANGES/` folder"
    ),
    base={"aiohttp/_content_disposition.py": AIOHTTP_CD, "tests/test_content_disposition.py": AIOHTTP_TESTS},
    commits=[
        commit("Unquote quoted Content-Disposition parameters", "yuki-t", {
            "aiohttp/_content_disposition.py": AIOHTTP_CD_1,
            "tests/test_content_disposition.py": AIOHTTP_TESTS_1,
        }),
        commit("Ignore malformed extended parameters instead of raising", "yuki-t", {
            "aiohttp/_content_disposition.py": AIOHTTP_CD_2,
            "tests/test_content_disposition.py": AIOHTTP_TESTS_2,
        }),
    ],
    created_at="2024-02-01T05:44:27Z", merged_at="2024-02-03T18:09:55Z",
    base_ref="master", labels=["bot:chronographer:skip"],
    issues=[issue(
        8093, "BodyPartReader.filename keeps the quotes of a quoted filename", "tmarsh",
        "### Describe the bug\n\nFor `Content-Disposition: attachment; filename=\"a b.txt\"` "
        "the part's filename is `'\"a b.txt\"'`.\n\n### Python Version\n\n3.12.1\n\n"
        "### aiohttp Version\n\n3.9.3"
    )],
    reviews=[review("kjell-s", "APPROVED", "LGTM, thanks for covering the malformed case.",
                    "2024-02-03T18:01:20Z")],
)

# --- celery/celery: one commit, two files --------------------------------------------

CELERY_TIME = src(r'''
"""Helpers for countdowns and ETA values. (Excerpt.)"""

from datetime import datetime, timedelta, timezone


def maybe_timedelta(delta):
    """Convert an int or float number of seconds to a timedelta."""
    if isinstance(delta, (int, float)):
        return timedelta(seconds=delta)
    return delta


def eta_from_countdown(countdown, now=None):
    """Return the aware UTC datetime countdown seconds from now."""
    now = now or datetime.now(timezone.utc)
    return now + maybe_timedelta(countdown)


def remaining_seconds(eta, now=None):
    """Seconds left until eta, never negative."""
    now = now or datetime.now(timezone.utc)
    return max((eta - now).total_seconds(), 0)
''')

CELERY_TIME_AFTER = edit(
    CELERY_TIME,
    ('    """Seconds left until eta, never negative."""\n',
     '    """Seconds left until eta, never negative.\n\n'
     "    A naive eta is taken to be in UTC, as the ``eta`` argument of\n"
     '    ``apply_async`` documents.\n    """\n'
     "    if eta.tzinfo is None:\n"
     "        eta = eta.replace(tzinfo=timezone.utc)\n"),
)

CELERY_TESTS = src(r'''
from datetime import datetime, timedelta, timezone

from celery.utils.time_helpers import eta_from_countdown, remaining_seconds

NOW = datetime(2024, 1, 1, 12, 0, tzinfo=timezone.utc)


def test_eta_from_countdown():
    assert eta_from_countdown(30, now=NOW) == NOW + timedelta(seconds=30)


def test_remaining_seconds():
    assert remaining_seconds(NOW + timedelta(seconds=5), now=NOW) == 5
    assert remaining_seconds(NOW - timedelta(seconds=5), now=NOW) == 0
''')

CELERY_TESTS_AFTER = CELERY_TESTS + src(r'''


def test_remaining_seconds_naive_eta_is_utc():
    naive = datetime(2024, 1, 1, 12, 0, 10)
    assert remaining_seconds(naive, now=NOW) == 10
''')

CELERY = pr(
    "celery/celery", 8800, "Treat a naive ETA as UTC in remaining_seconds()", "hkato",
    body=(
        "*Note*: Before submitting this pull request, please review our contributing guidelines.\n\n"
        "## Description\n\nFixes #8791: a task published with a naive `eta` crashed the worker "
        "with `TypeError: can't subtract offset-naive and offset-aware datetimes`."
    ),
    base={"celery/utils/time_helpers.py": CELERY_TIME, "t/unit/utils/test_time_helpers.py": CELERY_TESTS},
    commits=[commit("Treat a naive ETA as UTC in remaining_seconds()", "hkato", {
        "celery/utils/time_helpers.py": CELERY_TIME_AFTER,
        "t/unit/utils/test_time_helpers.py": CELERY_TESTS_AFTER,
    })],
    commit_files=False,
    created_at="2024-01-24T10:10:10Z", merged_at="2024-01-26T15:55:00Z",
    issues=[issue(
        8791, "Worker crashes on tasks with a naive eta", "owainj",
        "# Checklist\n\n- [x] I have verified that the issue exists against the `main` branch "
        "of Celery.\n\n## Steps to Reproduce\n\n```python\nadd.apply_async((2, 2), "
        "eta=datetime.utcnow() + timedelta(seconds=10))\n```\n\n## Actual Behavior\n\n"
        "```\nTypeError: can't subtract offset-naive and offset-aware datetimes\n```"
    )],
    reviews=[
        review("lior-m", "COMMENTED", "Should we warn on naive datetimes instead of assuming UTC?",
               "2024-01-25T07:12:40Z"),
        review("pkoval", "APPROVED",
               "Assuming UTC matches the documented behaviour of `eta`; a warning can come "
               "separately.", "2024-01-26T15:50:02Z"),
    ],
)

# --- encode/starlette: a new test file ------------------------------------------------

STARLETTE_QS = src(r'''
"""Query-string helpers. (Excerpt.)"""

import typing
from urllib.parse import parse_qsl, urlencode


def parse_query(query_string: str) -> typing.List[typing.Tuple[str, str]]:
    """Parse a query string into (key, value) pairs, keeping blank values."""
    return parse_qsl(query_string, keep_blank_values=True)


def replace_query_params(query_string: str, **params: typing.Any) -> str:
    """Return query_string with the given keys replaced."""
    items = [(k, v) for k, v in parse_query(query_string) if k not in params]
    items.extend((k, str(v)) for k, v in params.items())
    return urlencode(items)
''')

STARLETTE_QS_AFTER = edit(
    STARLETTE_QS,
    ('    """Return query_string with the given keys replaced."""\n',
     '    """Return query_string with the given keys replaced; None removes a key."""\n'),
    ("    items.extend((k, str(v)) for k, v in params.items())\n",
     "    items.extend((k, str(v)) for k, v in params.items() if v is not None)\n"),
)

STARLETTE_TESTS = src(r'''
from starlette._qs import parse_query, replace_query_params


def test_parse_query_keeps_blank_values():
    assert parse_query("a=1&b=") == [("a", "1"), ("b", "")]


def test_replace_query_params():
    assert replace_query_params("a=1&b=2", b=3) == "a=1&b=3"
    assert replace_query_params("a=1", c="x y") == "a=1&c=x+y"


def test_replace_query_params_none_removes_the_key():
    assert replace_query_params("a=1&b=2", b=None) == "a=1"
''')

STARLETTE = pr(
    "encode/starlette", 2400, "Let `replace_query_params(key=None)` remove the key", "ellie-dev",
    body=(
        "# Summary\n\nCloses #2392. Passing `None` wrote the string `None` into the URL; it now "
        "removes the parameter, which is what `URL.include_query_params` callers expected. "
        "Adds `tests/test_qs.py`, the module had no direct tests.\n\n# Checklist\n\n"
        "- [x] I understand that this PR may be closed in case there was no previous discussion.\n"
        "- [x] I've added a test for each change that was introduced, and I tried as much as "
        "possible to make a single atomic change."
    ),
    base={"starlette/_qs.py": STARLETTE_QS},
    commits=[commit("Let replace_query_params(key=None) remove the key", "ellie-dev", {
        "starlette/_qs.py": STARLETTE_QS_AFTER, "tests/test_qs.py": STARLETTE_TESTS,
    })],
    created_at="2024-01-09T13:30:00Z", merged_at="2024-01-11T08:14:27Z",
    base_ref="master",
    issues=[issue(
        2392, "replace_query_params(page=None) writes 'page=None'", "dkowal",
        "`request.url.replace_query_params(page=None)` gives `?page=None`. I expected the "
        "parameter to be removed."
    )],
    reviews=[review("mfournier", "APPROVED", "", "2024-01-11T08:13:58Z")],
)

# --- scrapy/scrapy: two commits on the same file, tests in the first -----------------

SCRAPY_URL = src(r'''
"""URL helpers used by spiders and middlewares. (Excerpt.)"""

from urllib.parse import urlparse


def url_is_from_any_domain(url, domains):
    """Return True if the url belongs to any of the given domains."""
    host = (urlparse(url).hostname or "").lower()
    if not host:
        return False
    domains = [d.lower() for d in domains]
    return any(host == d or host.endswith(d) for d in domains)


def strip_url_fragment(url):
    """Remove the #fragment part of url."""
    return url.split("#", 1)[0]
''')

SCRAPY_URL_1 = edit(
    SCRAPY_URL,
    ('    return any(host == d or host.endswith(d) for d in domains)\n',
     '    return any(host == d or host.endswith("." + d) for d in domains)\n'),
)

SCRAPY_URL_2 = edit(
    SCRAPY_URL_1,
    ("    domains = [d.lower() for d in domains]\n",
     "    # \".example.com\" is a common way of writing \"example.com and subdomains\".\n"
     "    domains = [d.lower().lstrip(\".\") for d in domains]\n"),
)

SCRAPY_TESTS = src(r'''
from scrapy.utils.url_helpers import strip_url_fragment, url_is_from_any_domain


def test_url_is_from_any_domain():
    assert url_is_from_any_domain("http://www.example.com/a", ["example.com"])
    assert url_is_from_any_domain("http://EXAMPLE.com/", ["example.com"])
    assert not url_is_from_any_domain("http://example.org/", ["example.com"])


def test_strip_url_fragment():
    assert strip_url_fragment("http://example.com/a#b") == "http://example.com/a"
''')

SCRAPY_TESTS_1 = edit(
    SCRAPY_TESTS,
    ('    assert not url_is_from_any_domain("http://example.org/", ["example.com"])\n',
     '    assert not url_is_from_any_domain("http://example.org/", ["example.com"])\n'
     '    assert not url_is_from_any_domain("http://notexample.com/", ["example.com"])\n'),
)

SCRAPY_TESTS_2 = edit(
    SCRAPY_TESTS_1,
    ('    assert not url_is_from_any_domain("http://notexample.com/", ["example.com"])\n',
     '    assert not url_is_from_any_domain("http://notexample.com/", ["example.com"])\n'
     '    assert url_is_from_any_domain("http://a.example.com/", [".example.com"])\n'),
)

SCRAPY = pr(
    "scrapy/scrapy", 6200, "Do not match unrelated domains that share a suffix", "pbarros",
    body=(
        "Fixes #6193.\n\n`url_is_from_any_domain(\"http://notexample.com/\", [\"example.com\"])` "
        "was `True`, so `allowed_domains = [\"example.com\"]` let the offsite middleware follow "
        "links to `notexample.com`. A subdomain must now end with `.` + the domain.\n\n"
        "The second commit accepts a leading dot in the domain list, which some projects use."
    ),
    base={"scrapy/utils/url_helpers.py": SCRAPY_URL, "tests/test_utils_url_helpers.py": SCRAPY_TESTS},
    commits=[
        commit("Require a dot before the domain when matching subdomains", "pbarros", {
            "scrapy/utils/url_helpers.py": SCRAPY_URL_1, "tests/test_utils_url_helpers.py": SCRAPY_TESTS_1,
        }),
        commit("Accept a leading dot in domain lists", "pbarros", {
            "scrapy/utils/url_helpers.py": SCRAPY_URL_2, "tests/test_utils_url_helpers.py": SCRAPY_TESTS_2,
        }),
    ],
    created_at="2024-01-15T16:48:00Z", merged_at="2024-01-17T09:26:33Z",
    base_ref="master",
    issues=[issue(
        6193, "OffsiteMiddleware allows domains that merely end with an allowed domain", "samir-b",
        "### Description\n\nWith `allowed_domains = [\"example.com\"]` the spider followed links "
        "to `https://notexample.com/`.\n\n### Versions\n\nScrapy 2.11.0"
    )],
    reviews=[review("ada-l", "APPROVED", "Thanks! Worth a note in the release notes as a "
                    "security-relevant fix.", "2024-01-17T09:20:10Z")],
)

# --- getsentry/sentry-python: one file, one commit -------------------------------------

SENTRY_URL = src(r'''
"""URL scrubbing for breadcrumbs and spans. (Excerpt.)"""

from urllib.parse import urlsplit, urlunsplit

SENSITIVE_QUERY_KEYS = frozenset(["token", "password", "secret", "api_key"])
FILTERED = "[Filtered]"


def sanitize_url(url):
    """Replace credentials and sensitive query values in url with [Filtered]."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "%s:%s@%s" % (FILTERED, FILTERED, netloc.rsplit("@", 1)[1])
    query = "&".join(
        "%s=%s" % (key, FILTERED if key.lower() in SENSITIVE_QUERY_KEYS else value)
        for key, _, value in (pair.partition("=") for pair in parts.query.split("&"))
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
''')

SENTRY_URL_AFTER = edit(
    SENTRY_URL,
    ('    query = "&".join(\n'
     '        "%s=%s" % (key, FILTERED if key.lower() in SENSITIVE_QUERY_KEYS else value)\n'
     '        for key, _, value in (pair.partition("=") for pair in parts.query.split("&"))\n'
     '    )\n',
     '    query = parts.query\n'
     '    if query:\n'
     '        query = "&".join(\n'
     '            "%s=%s" % (key, FILTERED if key.lower() in SENSITIVE_QUERY_KEYS else value)\n'
     '            for key, _, value in (pair.partition("=") for pair in query.split("&"))\n'
     '        )\n'),
)

SENTRY = pr(
    "getsentry/sentry-python", 2700, "fix(utils): Don't add `?=` to URLs without a query", "tmarsh",
    body=(
        "Fixes #2693. `sanitize_url(\"https://example.com/path\")` returned "
        "`https://example.com/path?=`: splitting an empty query gave one empty pair.\n\n"
        "---\n\n## General Notes\n\nThank you for contributing to `sentry-python`!"
    ),
    base={"sentry_sdk/_url_utils.py": SENTRY_URL},
    commits=[commit("fix(utils): Don't add ?= to URLs without a query", "tmarsh",
                    {"sentry_sdk/_url_utils.py": SENTRY_URL_AFTER})],
    created_at="2024-02-19T11:11:11Z", merged_at="2024-02-20T09:00:49Z",
    base_ref="master",
    issues=[issue(
        2693, "Breadcrumb URLs end with '?=' since 1.40", "jkarlsson",
        "### How do you use Sentry?\n\nSentry Saas (sentry.io)\n\n### Steps to Reproduce\n\n"
        "Make an `httpx` request to a URL without a query string.\n\n### Expected Result\n\n"
        "The breadcrumb shows the URL as requested.\n\n### Actual Result\n\n"
        "`GET https://api.example.com/v1/items?=`"
    )],
)

# --- tox-dev/tox: a renamed module, a modified one, a new test file -------------------

TOX_CPU = src(r'''
"""Detect how many CPUs tox may use for parallel runs."""

from __future__ import annotations

import os


def auto_detect_cpus() -> int:
    """Return the number of usable CPUs, at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not available on macOS or Windows
        n = os.cpu_count()
    return n or 1
''')

TOX_CPU_AFTER = edit(
    TOX_CPU,
    ('    """Return the number of usable CPUs, at least 1."""\n    try:\n',
     '    """Return the number of usable CPUs, at least 1.\n\n'
     "    ``TOX_PARALLEL_CPUS`` overrides the detected value, for containers whose CPU\n"
     '    quota is lower than the CPUs they can see.\n    """\n'
     '    override = os.environ.get("TOX_PARALLEL_CPUS", "")\n'
     "    if override.isdigit():\n"
     "        return max(int(override), 1)\n"
     "    try:\n"),
)

TOX_PARALLEL = src(r'''
"""Run tox environments in parallel. (Excerpt.)"""

from __future__ import annotations

from argparse import ArgumentTypeError

from tox.util.cpu_count import auto_detect_cpus

ENV_VAR_KEY = "TOX_PARALLEL_ENV"
OFF_VALUE = 0
DEFAULT_PARALLEL = "auto"


def parse_num_processes(value: str) -> int | None:
    """Parse the value of -p/--parallel: 'all', 'auto' or a number."""
    if value == "all":
        return None
    if value == "auto":
        return auto_detect_cpus()
    try:
        number = int(value)
    except ValueError as exc:
        raise ArgumentTypeError(f"value must be a positive number, got {value!r}") from exc
    if number < 0:
        raise ArgumentTypeError(f"value must be a positive number, got {value!r}")
    return number or None
''')

TOX_TESTS = src(r'''
from __future__ import annotations

import pytest

from tox.util.cpu import auto_detect_cpus


def test_auto_detect_cpus_at_least_one():
    assert auto_detect_cpus() >= 1


@pytest.mark.parametrize(("value", "expected"), [("3", 3), ("0", 1)])
def test_override(monkeypatch, value, expected):
    monkeypatch.setenv("TOX_PARALLEL_CPUS", value)
    assert auto_detect_cpus() == expected


def test_override_ignored_when_not_a_number(monkeypatch):
    monkeypatch.setenv("TOX_PARALLEL_CPUS", "many")
    assert auto_detect_cpus() >= 1
''')

TOX = pr(
    "tox-dev/tox", 3200, "Allow overriding the detected CPU count with TOX_PARALLEL_CPUS", "mfournier",
    body=(
        "Resolves #3191.\n\n`-p auto` uses the CPUs the process may run on, which in a "
        "container with a CPU quota is far more than it may use. `TOX_PARALLEL_CPUS` now "
        "overrides the detected count. The module is renamed to `tox.util.cpu` since it no "
        "longer only counts.\n\n"
        "- [x] ran the linter to address style issues (`tox -e fix`)\n"
        "- [x] wrote descriptive pull request text\n- [x] added/updated test(s)"
    ),
    base={"src/tox/util/cpu_count.py": TOX_CPU, "src/tox/session/cmd/run/parallel.py": TOX_PARALLEL},
    commits=[commit("Allow overriding the detected CPU count with TOX_PARALLEL_CPUS", "mfournier", {
        "src/tox/util/cpu.py": TOX_CPU_AFTER,
        "src/tox/session/cmd/run/parallel.py": edit(
            TOX_PARALLEL, ("from tox.util.cpu_count import", "from tox.util.cpu import")),
        "tests/util/test_cpu.py": TOX_TESTS,
    }, renames={"src/tox/util/cpu_count.py": "src/tox/util/cpu.py"})],
    created_at="2024-01-30T08:00:00Z", merged_at="2024-02-01T21:14:06Z",
    issues=[issue(
        3191, "`-p auto` oversubscribes CPU-limited containers", "lucia-p",
        "## Issue\n\nOn a CI runner with a 2-CPU quota, `os.sched_getaffinity` reports 64 CPUs "
        "and `tox -p auto` starts 64 environments.\n\n## Environment\n\n- OS: Linux (k8s pod)\n"
        "- tox 4.12.1"
    )],
    reviews=[review("kjell-s", "APPROVED", "", "2024-02-01T21:10:44Z")],
)

# --- python-poetry/poetry: six Python files (the 1-5 file filter drops it) ---------------

POETRY_MODULES = {
    "src/poetry/console/commands/show_helpers.py": ("List", "list", src(r'''
from typing import List


def tree_lines(names: List[str], last: bool) -> List[str]:
    """Prefix dependency names with tree-drawing characters."""
    branch = "└── " if last else "├── "
    return [branch + name for name in names]
''')),
    "src/poetry/utils/extras_helpers.py": ("Dict", "dict", src(r'''
from typing import Dict


def group_extras(pairs: list[tuple[str, str]]) -> Dict[str, list[str]]:
    """Group (extra, package) pairs by extra."""
    groups: Dict[str, list[str]] = {}
    for extra, package in pairs:
        groups.setdefault(extra, []).append(package)
    return groups
''')),
    "src/poetry/utils/path_helpers.py": ("List", "list", src(r'''
from pathlib import Path
from typing import List


def relative_parts(path: Path, root: Path) -> List[str]:
    """Return the parts of path below root."""
    return list(path.relative_to(root).parts)
''')),
    "src/poetry/repositories/link_helpers.py": ("Tuple", "tuple", src(r'''
from typing import Tuple


def split_fragment(url: str) -> Tuple[str, str]:
    """Split '#egg=...' style fragments off a URL."""
    base, _, fragment = url.partition("#")
    return base, fragment
''')),
    "src/poetry/mixology/term_helpers.py": ("Set", "set", src(r'''
from typing import Set


def names_of(terms: list[object]) -> Set[str]:
    """Return the package names that a list of terms mentions."""
    return {getattr(term, "name", str(term)) for term in terms}
''')),
    "src/poetry/config/source_helpers.py": ("Dict", "dict", src(r'''
from typing import Dict


def source_map(sources: list[dict[str, str]]) -> Dict[str, str]:
    """Map repository names to their URLs."""
    return {source["name"]: source["url"] for source in sources}
''')),
}


def _builtin_generics(text, old, new):
    only_import = f"from typing import {old}\n\n\n"
    if text.startswith(only_import):
        after = text[len(only_import):]
    else:
        after = edit(text, (f"from typing import {old}\n", ""))
    return after.replace(f"{old}[", f"{new}[")


POETRY = pr(
    "python-poetry/poetry", 9000, "Use built-in generics instead of typing aliases in helpers", "owainj",
    body=(
        "Resolves: #8991\n\nPython 3.9 is the minimum now, so `List[str]` and friends can be "
        "`list[str]`. Mechanical change with `ruff --select UP006 --fix`, checked by hand.\n\n"
        "- [ ] Added **tests** for changed code.\n- [ ] Updated **documentation** for changed code."
    ),
    base={path: text for path, (_, _, text) in POETRY_MODULES.items()},
    commits=[commit("chore: use built-in generics (UP006)", "owainj", {
        path: _builtin_generics(text, old, new) for path, (old, new, text) in POETRY_MODULES.items()
    })],
    commit_files=False,
    created_at="2024-02-16T12:34:56Z", merged_at="2024-02-18T10:11:12Z",
    labels=["area/internal"],
    issues=[issue(
        8991, "Drop typing aliases now that 3.8 support is gone", "pbarros",
        "Now that Python 3.8 is no longer supported we can enable ruff's `UP006` and replace "
        "`typing.List`, `Dict`, `Set` and `Tuple` with the built-in generics."
    )],
    reviews=[review("ada-l", "APPROVED", "", "2024-02-18T10:10:00Z")],
)

# --- pydantic/pydantic: documentation only, no Python file -----------------------------

PYDANTIC_MIGRATION = src(r'''
# Migration Guide

This page lists what to change when upgrading a project from Pydantic V1 to V2.

## Renamed `BaseModel` methods

Most public methods of `BaseModel` now carry a `model_` prefix, so that they cannot clash
with field names:

| Pydantic V1 | Pydantic V2 |
| ----------- | ------------ |
| `__fields__` | `model_fields` |
| `dict()` | `model_dump()` |
| `json()` | `model_dump_json()` |
| `parse_obj()` | `model_validate()` |

See [the validators documentation](concepts/validator.md) for how `@validator` maps to
`@field_validator`.
''')

PYDANTIC_VALIDATORS = src(r'''
# Validators

## Field validators

Use `@field_validator` to run a function on the value of one or more fields, after
Pydantic's own validation of their type (or before it, with `mode='before'`).

```py
from pydantic import BaseModel, field_validator


class Order(BaseModel):
    quantity: int

    @field_validator('quantity')
    @classmethod
    def check_positive(cls, v: int) -> int:
        if v <= 0:
            raise ValueError('quantity must be positive')
        return v
```
''')

PYDANTIC_MKDOCS = src(r'''
site_name: Pydantic
nav:
  - Get Started:
      - Welcome to Pydantic: index.md
      - Why use Pydantic: why.md
      - Migration Guide: migration.md
  - Concepts:
      - Models: concepts/models.md
      - Fields: concepts/fields.md
      - Validators: concepts/validators.md
markdown_extensions:
  - toc:
      permalink: true
  - admonition
''')

PYDANTIC = pr(
    "pydantic/pydantic", 8700, "docs: fix the broken validators link in the migration guide", "sbrandt-dev",
    body=(
        "## Change Summary\n\nThe migration guide linked to `concepts/validator.md`, which does "
        "not exist. Fixes the link, and adds an explicit anchor (which needs the `attr_list` "
        "Markdown extension) so that it lands on the field validators section.\n\n## Related issue number\n\nfix #8694\n\n## Checklist\n\n"
        "* [x] The pull request title is a good summary of the changes\n"
        "* [x] Unit tests for the changes exist (n/a, docs only)"
    ),
    base={"docs/migration.md": PYDANTIC_MIGRATION, "docs/concepts/validators.md": PYDANTIC_VALIDATORS,
          "mkdocs.yml": PYDANTIC_MKDOCS},
    commits=[commit("docs: fix the broken validators link in the migration guide", "sbrandt-dev", {
        "docs/migration.md": edit(
            PYDANTIC_MIGRATION,
            ("(concepts/validator.md)", "(concepts/validators.md#field-validators)")),
        "docs/concepts/validators.md": edit(
            PYDANTIC_VALIDATORS, ("## Field validators\n", "## Field validators { #field-validators }\n")),
        "mkdocs.yml": edit(PYDANTIC_MKDOCS, ("  - admonition\n", "  - admonition\n  - attr_list\n")),
    })],
    created_at="2024-02-01T09:00:00Z", merged_at="2024-02-01T14:40:10Z",
    labels=["documentation"],
    issues=[issue(
        8694, "404 on the validators link in the migration guide", "yuki-t",
        "The link \"the validators documentation\" in docs/migration.md goes to a 404 page."
    )],
)

# --- redis/redis-py: a whole hunk (context included) repeats elsewhere in the file -------

REDISPY_POOL = src(r'''
import os
import threading


class ConnectionPool:
    """Create connections on demand, up to max_connections. (Excerpt.)"""

    def __init__(self, max_connections=50):
        self.max_connections = max_connections
        self.reset()

    def reset(self):
        self._lock = threading.Lock()
        self._created_connections = 0
        self._available_connections = []
        self._in_use_connections = set()
        self.pid = os.getpid()

    def _checkpid(self):
        if self.pid != os.getpid():
            self.reset()


class BlockingConnectionPool(ConnectionPool):
    """Wait up to timeout seconds for a free connection. (Excerpt.)"""

    def __init__(self, max_connections=50, timeout=20):
        self.timeout = timeout
        super().__init__(max_connections)

    def reset(self):
        self._lock = threading.Lock()
        self._created_connections = 0
        self._available_connections = []
        self._in_use_connections = set()
        self.pid = os.getpid()
''')

# Only the second copy of reset() changes; its hunk, context included, matches the first copy.
REDISPY_POOL_AFTER = edit(
    REDISPY_POOL,
    ("import os\nimport threading\n", "import os\nimport queue\nimport threading\n"),
    ("        self._available_connections = []\n",
     "        # get_connection() takes from this queue; it must be rebuilt after a fork.\n"
     "        self.pool = queue.LifoQueue(self.max_connections)\n", 1),
)

REDISPY_TESTS = src(r'''
import os

import pytest

from redis._pool_helpers import BlockingConnectionPool, ConnectionPool


@pytest.mark.parametrize("cls", [ConnectionPool, BlockingConnectionPool])
def test_checkpid_resets_after_fork(cls, monkeypatch):
    pool = cls(max_connections=2)
    monkeypatch.setattr(os, "getpid", lambda: pool.pid + 1)
    pool._checkpid()
    assert pool._created_connections == 0
''')

REDISPY_TESTS_AFTER = REDISPY_TESTS + src(r'''


def test_blocking_pool_reset_rebuilds_queue():
    pool = BlockingConnectionPool(max_connections=3)
    pool.reset()
    assert pool.pool.maxsize == 3
''')

REDISPY = pr(
    "redis/redis-py", 3190, "Rebuild the BlockingConnectionPool queue in reset()", "samir-b",
    body=(
        "### Description of change\n\nFixes #3184. `BlockingConnectionPool.reset()` was a copy of "
        "`ConnectionPool.reset()` and never recreated `self.pool`, so the first command after "
        "`os.fork()` raised `AttributeError: 'BlockingConnectionPool' object has no attribute "
        "'pool'`.\n\n### Pull Request check-list\n\n- [x] Do tests and lints pass with this change?\n"
        "- [x] Is the new or changed code fully tested?"
    ),
    base={"redis/_pool_helpers.py": REDISPY_POOL, "tests/test_pool_helpers.py": REDISPY_TESTS},
    commits=[commit("Rebuild the BlockingConnectionPool queue in reset()", "samir-b", {
        "redis/_pool_helpers.py": REDISPY_POOL_AFTER, "tests/test_pool_helpers.py": REDISPY_TESTS_AFTER,
    })],
    created_at="2024-03-25T14:02:33Z", merged_at="2024-03-28T06:40:00Z",
    base_ref="master",
    issues=[issue(
        3184, "BlockingConnectionPool breaks after fork: no attribute 'pool'", "jkarlsson",
        "**Version**: redis-py 5.0.3\n\n**Description**: With gunicorn's preload, the first "
        "command in a worker fails:\n\n```\nAttributeError: 'BlockingConnectionPool' object has "
        "no attribute 'pool'\n```\n\n`ConnectionPool` works."
    )],
    reviews=[review("lior-m", "APPROVED", "Thanks, good catch.", "2024-03-28T06:35:12Z")],
)

PRS_PYTHON = [
    ARROW, TQDM, RICH, HTTPX, ATTRS, PIP, BLACK, PIPTOOLS, BOLTONS, AIOHTTP, CELERY, STARLETTE,
    SCRAPY, SENTRY, REDISPY, TOX, POETRY, PYDANTIC,
]


# ======================================================================================
# Trajectories
# ======================================================================================


def call(call_id, name, **arguments):
    """An OpenAI tool call; `arguments` is a JSON string, as the API sends it."""
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


def system_msg(text):
    return {"role": "system", "content": text}


def user_msg(text):
    return {"role": "user", "content": text}


def assistant_msg(content, *calls, reasoning=None):
    message = {"role": "assistant", "content": content}
    if reasoning:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = list(calls)
    return message


def tool_msg(call_id, content):
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def cat_n(text, first=1, start=None, end=None):
    """`cat -n` of lines start..end (1-based, inclusive) of text whose first line is
    numbered `first`."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    last = first + len(lines) - 1
    start = max(start or first, first)
    end = min(end or last, last)
    if start > end:
        fail(f"cat_n: lines {start}..{end} are outside {first}..{last}")
    return "\n".join(f"{n:6d}\t{lines[n - first]}" for n in range(start, end + 1))


def viewed(path, text, first=1, start=None, end=None):
    return f"Here's the result of running `cat -n` on {path}:\n" + cat_n(text, first, start, end) + "\n"


def edited(path, text, first, start, end):
    return (
        f"The file {path} has been edited. Here's the result of running `cat -n` on a snippet of "
        f"{path}:\n{cat_n(text, first, start, end)}\n"
        "Review the changes and make sure they are as expected. Edit the file again if necessary."
    )


def line_of(text, anchor, first=1):
    """The number of the only line of text (numbered from `first`) containing anchor."""
    hits = [i for i, line in enumerate(text.split("\n")) if anchor in line]
    if len(hits) != 1:
        fail(f"line_of: {anchor!r} is on {len(hits)} lines")
    return first + hits[0]


def replace_once(text, old, new):
    if text.count(old) != 1:
        fail(f"trajectory edit: {old!r} occurs {text.count(old)} times")
    return text.replace(old, new)


CHAT_SYSTEM = (
    "You are a software engineering agent working in a repository checked out at /testbed. "
    "Use the `bash` tool to run shell commands and the `str_replace_editor` tool to view and "
    "edit files. Make the smallest change that resolves the issue, check it, and then reply "
    "with a short summary of what you changed. Do not modify the existing tests."
)


def issue_prompt(text):
    return (
        f"<issue>\n{text}\n</issue>\n\nThe repository is checked out at /testbed. Resolve the "
        "issue above with a minimal change to the source files."
    )


# --- pallets__click-2651: resolved ---------------------------------------------------

T_CLICK_TYPES = src(r'''
class Choice(ParamType):
    """A parameter that accepts one of a fixed list of strings. (Excerpt.)"""

    name = "choice"

    def __init__(self, choices, case_sensitive=True):
        self.choices = list(choices)
        self.case_sensitive = case_sensitive

    def convert(self, value, param, ctx):
        candidate = value
        lookup = {choice: choice for choice in self.choices}

        if not self.case_sensitive:
            candidate = candidate.casefold()
            lookup = {choice.casefold(): choice for choice in self.choices}

        if candidate in lookup:
            return candidate

        listed = ", ".join(map(repr, self.choices))
        self.fail(f"{value!r} is not one of {listed}.", param, ctx)
''')
T_CLICK_FIRST = 212
T_CLICK_TYPES_FIXED = replace_once(T_CLICK_TYPES, "            return candidate\n",
                                   "            return lookup[candidate]\n")

TRAJ_CLICK = {
    "instance_id": "pallets__click-2651",
    "repo": "pallets/click",
    "resolved": True,
    "messages": [
        system_msg(CHAT_SYSTEM),
        user_msg(issue_prompt(
            "Choice(case_sensitive=False) passes the user's spelling to the callback\n\n"
            "```python\n@click.command()\n@click.option(\"--fruit\", type=click.Choice([\"Apple\", "
            "\"Pear\"], case_sensitive=False))\ndef cli(fruit):\n    click.echo(fruit)\n```\n\n"
            "`cli --fruit APPLE` prints `apple`. I expected the canonical choice, `Apple`, so that "
            "I can compare it against my list."
        )),
        assistant_msg(
            "I'll find where `Choice` converts its value.",
            call("call_01", "bash", command="grep -rn \"class Choice\" src/click"),
            reasoning="The printed value is lowercase, so the conversion returns a normalized "
                      "string instead of the original choice. Find Choice.convert.",
        ),
        tool_msg("call_01", f"src/click/types.py:{T_CLICK_FIRST}:class Choice(ParamType):"),
        assistant_msg(
            "",
            call("call_02", "str_replace_editor", command="view", path="/testbed/src/click/types.py",
                 view_range=[T_CLICK_FIRST, line_of(T_CLICK_TYPES, "self.fail(", T_CLICK_FIRST)]),
        ),
        tool_msg("call_02", viewed("/testbed/src/click/types.py", T_CLICK_TYPES, T_CLICK_FIRST)),
        assistant_msg(
            "`convert` returns the casefolded candidate. The `lookup` dict already maps the "
            "normalized spelling to the original choice, so it should return `lookup[candidate]`.",
            call("call_03", "str_replace_editor", command="str_replace", path="/testbed/src/click/types.py",
                 old_str="        if candidate in lookup:\n            return candidate\n",
                 new_str="        if candidate in lookup:\n            return lookup[candidate]\n"),
            reasoning="For case_sensitive=True the lookup is the identity, so returning "
                      "lookup[candidate] changes nothing there.",
        ),
        tool_msg("call_03", edited("/testbed/src/click/types.py", T_CLICK_TYPES_FIXED, T_CLICK_FIRST,
                                   line_of(T_CLICK_TYPES_FIXED, "if not self.case_sensitive", T_CLICK_FIRST),
                                   line_of(T_CLICK_TYPES_FIXED, "self.fail(", T_CLICK_FIRST))),
        assistant_msg(
            "Now I'll reproduce the example from the issue.",
            call("call_04", "bash", command=(
                "cd /testbed && python -c \"import click\n"
                "@click.command()\n"
                "@click.option('--fruit', type=click.Choice(['Apple', 'Pear'], case_sensitive=False))\n"
                "def cli(fruit):\n    click.echo(fruit)\n"
                "cli(['--fruit', 'APPLE'])\""
            )),
        ),
        tool_msg("call_04", "Apple"),
        assistant_msg(
            "That prints `Apple`. Running the existing tests for `Choice`:",
            call("call_05", "bash", command="cd /testbed && python -m pytest tests/test_types.py tests/test_options.py -q -k choice"),
        ),
        tool_msg("call_05", "........                                                                 [100%]\n"
                            "8 passed, 94 deselected in 0.31s"),
        assistant_msg(
            "Fixed in `src/click/types.py`: `Choice.convert` now returns the canonical choice "
            "(`lookup[candidate]`) instead of the casefolded input, so with "
            "`case_sensitive=False` the callback gets `Apple` for `APPLE`. Case-sensitive "
            "choices behave as before, and the existing choice tests pass."
        ),
    ],
}

# --- encode__httpx-3150: not resolved; an assistant turn with null content --------------

T_HTTPX_MODELS = src(r'''
class Headers(typing.MutableMapping[str, str]):
    """Case-insensitive multi-dict of HTTP headers. (Excerpt.)"""

    def __init__(self, raw: typing.Iterable[typing.Tuple[str, str]] = ()) -> None:
        self._list = [(key.lower(), value) for key, value in raw]

    def get_list(self, key: str) -> typing.List[str]:
        """Return every value of a header, in the order received."""
        key = key.lower()
        return [value for k, value in self._list if k == key]

    def __getitem__(self, key: str) -> str:
        values = self.get_list(key)
        if not values:
            raise KeyError(key)
        return ", ".join(values)
''')
T_HTTPX_FIRST = 140
T_HTTPX_MODELS_FIXED = replace_once(
    T_HTTPX_MODELS,
    '        return ", ".join(values)\n',
    '        if key.lower() == "set-cookie":\n'
    "            # Cookies may contain commas; joining them is ambiguous.\n"
    "            return values[0]\n"
    '        return ", ".join(values)\n',
)

TRAJ_HTTPX = {
    "instance_id": "encode__httpx-3150",
    "repo": "encode/httpx",
    "resolved": False,
    "messages": [
        system_msg(CHAT_SYSTEM),
        user_msg(issue_prompt(
            "`response.headers[\"set-cookie\"]` joins several cookies with \", \"\n\n"
            "A response with two `Set-Cookie` headers gives `a=1; Expires=Wed, 01 Jan 2025 "
            "00:00:00 GMT, b=2`, which can't be split back because `Expires` contains a comma. "
            "Reading the header should not produce an ambiguous value."
        )),
        assistant_msg(
            None,
            call("call_a1", "bash", command="grep -n \"def __getitem__\\|def get_list\" /testbed/httpx/_models.py"),
        ),
        tool_msg("call_a1", f"{line_of(T_HTTPX_MODELS, 'def get_list', T_HTTPX_FIRST)}:"
                            "    def get_list(self, key: str) -> typing.List[str]:\n"
                            f"{line_of(T_HTTPX_MODELS, 'def __getitem__', T_HTTPX_FIRST)}:"
                            "    def __getitem__(self, key: str) -> str:"),
        assistant_msg(
            "",
            call("call_a2", "str_replace_editor", command="view", path="/testbed/httpx/_models.py",
                 view_range=[T_HTTPX_FIRST, line_of(T_HTTPX_MODELS, 'return ", ".join', T_HTTPX_FIRST)]),
        ),
        tool_msg("call_a2", viewed("/testbed/httpx/_models.py", T_HTTPX_MODELS, T_HTTPX_FIRST)),
        assistant_msg(
            "I'll make `__getitem__` return only the first value for `set-cookie`, since the "
            "joined form is ambiguous.",
            call("call_a3", "str_replace_editor", command="str_replace", path="/testbed/httpx/_models.py",
                 old_str='            raise KeyError(key)\n        return ", ".join(values)\n',
                 new_str='            raise KeyError(key)\n        if key.lower() == "set-cookie":\n'
                         "            # Cookies may contain commas; joining them is ambiguous.\n"
                         "            return values[0]\n"
                         '        return ", ".join(values)\n'),
            reasoning="Returning the first cookie loses the others, but callers who want all of "
                      "them can use get_list. That seems like the least surprising change.",
        ),
        tool_msg("call_a3", edited("/testbed/httpx/_models.py", T_HTTPX_MODELS_FIXED, T_HTTPX_FIRST,
                                   line_of(T_HTTPX_MODELS_FIXED, "def __getitem__", T_HTTPX_FIRST),
                                   line_of(T_HTTPX_MODELS_FIXED, 'return ", ".join', T_HTTPX_FIRST))),
        assistant_msg(
            "`headers[\"set-cookie\"]` now returns the first cookie instead of an ambiguous joined "
            "string; all cookies remain available through `headers.get_list(\"set-cookie\")`."
        ),
    ],
}

# --- abetlen__llama-cpp-python-1402: resolved; a tool output holds <|im_end|> ---------

T_CHATML = src(r'''
from dataclasses import dataclass, field
from typing import Dict, List, Optional

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"


@dataclass
class ChatFormatterResponse:
    prompt: str
    stop: Optional[List[str]] = field(default=None)


def format_chatml(messages: List[Dict[str, str]]) -> ChatFormatterResponse:
    """Render OpenAI-style messages as a ChatML prompt."""
    parts = []
    for message in messages:
        parts.append(f"{IM_START}{message['role']}\n{message['content']}{IM_END}\n")
    parts.append(f"{IM_START}assistant\n")
    return ChatFormatterResponse(prompt="".join(parts))
''')
T_CHATML_FIXED = replace_once(T_CHATML, 'ChatFormatterResponse(prompt="".join(parts))',
                              'ChatFormatterResponse(prompt="".join(parts), stop=[IM_END])')

CHATML_SNIPPET = (
    "cd /testbed && python -c \"from llama_cpp.chat_formats.chatml import format_chatml\n"
    "r = format_chatml([{'role': 'system', 'content': 'You are helpful.'}, {'role': 'user', 'content': 'Hi'}])\n"
    "print(r.prompt)\nprint('stop =', r.stop)\""
)

TRAJ_CHATML = {
    "instance_id": "abetlen__llama-cpp-python-1402",
    "repo": "abetlen/llama-cpp-python",
    "resolved": True,
    "messages": [
        system_msg(CHAT_SYSTEM),
        user_msg(issue_prompt(
            "chat_format=\"chatml\" never stops generating\n\nWith `chat_format=\"chatml\"`, "
            "`create_chat_completion` keeps going after the assistant's answer and writes a "
            "fake `user` turn of its own. Other formats stop at their end-of-turn token."
        )),
        assistant_msg(
            "Let me look at the ChatML formatter.",
            call("call_x1", "bash", command="cat /testbed/llama_cpp/chat_formats/chatml.py"),
            reasoning="If the formatter doesn't return a stop sequence, generation only ends at "
                      "EOS, which ChatML models emit as <|im_end|> rather than </s>.",
        ),
        tool_msg("call_x1", T_CHATML),
        assistant_msg(
            "Let me see the prompt it builds and the stop list it returns.",
            call("call_x2", "bash", command=CHATML_SNIPPET),
        ),
        tool_msg("call_x2", "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                            "<|im_start|>assistant\n\nstop = None"),
        assistant_msg(
            "The prompt is right, but `stop` is `None`, so nothing ends the turn at `<|im_end|>`. "
            "I'll return it as the stop sequence.",
            call("call_x3", "str_replace_editor", command="str_replace",
                 path="/testbed/llama_cpp/chat_formats/chatml.py",
                 old_str='    return ChatFormatterResponse(prompt="".join(parts))\n',
                 new_str='    return ChatFormatterResponse(prompt="".join(parts), stop=[IM_END])\n'),
        ),
        tool_msg("call_x3", edited("/testbed/llama_cpp/chat_formats/chatml.py", T_CHATML_FIXED, 1,
                                   line_of(T_CHATML_FIXED, "def format_chatml"),
                                   line_of(T_CHATML_FIXED, "return ChatFormatterResponse"))),
        assistant_msg("", call("call_x4", "bash", command=CHATML_SNIPPET + " && python -m pytest tests/test_llama_chat_format.py -q")),
        tool_msg("call_x4", "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                            "<|im_start|>assistant\n\nstop = ['<|im_end|>']\n"
                            "......                                                                   [100%]\n"
                            "6 passed in 0.44s"),
        assistant_msg(
            "`format_chatml` now returns `stop=[\"<|im_end|>\"]`, so completions end at the "
            "end-of-turn marker instead of running on into an invented user turn. The prompt "
            "itself is unchanged and the chat-format tests pass."
        ),
    ],
}

# --- Textualize__rich-3302: not resolved; content given as a list of parts -----------

T_RICH_ELAPSED = src(r'''
from datetime import timedelta


def format_elapsed(seconds: float) -> str:
    """Format elapsed seconds as H:MM:SS for progress columns."""
    return str(timedelta(seconds=int(seconds)))
''')
T_RICH_ELAPSED_FIXED = replace_once(
    T_RICH_ELAPSED,
    "    return str(timedelta(seconds=int(seconds)))\n",
    "    total = int(seconds)\n"
    "    hours, rest = divmod(total, 3600)\n"
    "    minutes, secs = divmod(rest, 60)\n"
    '    return f"{hours}:{minutes:02d}:{secs:02d}"\n',
)

TRAJ_RICH = {
    "instance_id": "Textualize__rich-3302",
    "repo": "Textualize/rich",
    "resolved": False,
    "messages": [
        system_msg(CHAT_SYSTEM),
        {"role": "user", "content": [
            {"type": "text", "text": "<issue>\nTimeElapsedColumn shows \"1 day, 2:03:04\" after a day\n\n"
                                     "Long-running progress bars switch to `1 day, 2:03:04` after 24 hours, "
                                     "which breaks the column width. I'd expect `26:03:04`.\n</issue>\n\n"},
            {"type": "text", "text": "The repository is checked out at /testbed. Resolve the issue above "
                                     "with a minimal change to the source files."},
        ]},
        assistant_msg(
            "",
            call("call_r1", "bash", command="grep -rn \"timedelta\" /testbed/rich/*.py | head"),
            reasoning="str(timedelta) prints days once the value reaches 24 hours. Find where "
                      "the elapsed column formats its time.",
        ),
        tool_msg("call_r1", "/testbed/rich/_elapsed.py:1:from datetime import timedelta\n"
                            "/testbed/rich/_elapsed.py:6:    return str(timedelta(seconds=int(seconds)))\n"
                            "/testbed/rich/progress.py:41:from datetime import timedelta"),
        assistant_msg(
            "`format_elapsed` uses `str(timedelta(...))`. I'll format hours, minutes and seconds "
            "myself so that hours keep counting past 24.",
            call("call_r2", "str_replace_editor", command="str_replace", path="/testbed/rich/_elapsed.py",
                 old_str="    return str(timedelta(seconds=int(seconds)))\n",
                 new_str="    total = int(seconds)\n    hours, rest = divmod(total, 3600)\n"
                         "    minutes, secs = divmod(rest, 60)\n"
                         '    return f"{hours}:{minutes:02d}:{secs:02d}"\n'),
        ),
        tool_msg("call_r2", edited("/testbed/rich/_elapsed.py", T_RICH_ELAPSED_FIXED, 1, 4, 9)),
        assistant_msg(
            "",
            call("call_r3", "bash", command="cd /testbed && python -c \"from rich._elapsed import format_elapsed; "
                                            "print(format_elapsed(94984), format_elapsed(5))\""),
        ),
        tool_msg("call_r3", [{"type": "text", "text": "26:23:04 0:00:05"}]),
        assistant_msg(
            "`format_elapsed` now writes `H:MM:SS` with hours counting past 24, so a bar running "
            "for 26 hours shows `26:23:04` instead of `1 day, 2:23:04`. (The `timedelta` import is "
            "now unused; I left it in place.)"
        ),
    ],
}

# --- python-attrs__attrs-1290: resolved; two tool calls in one turn --------------------

T_ATTRS_CONVERTERS = src(r'''
_TRUE = frozenset({"true", "t", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "off", "0"})


def to_bool(val):
    """Convert a boolean-like string or number to a bool. (Excerpt.)"""
    if isinstance(val, bool):
        return val
    if isinstance(val, int) and val in (0, 1):
        return bool(val)
    if isinstance(val, str):
        text = val.lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ValueError(f"Cannot convert value to bool: {val!r}")
''')
T_ATTRS_FIRST = 120
T_ATTRS_CONVERTERS_FIXED = replace_once(T_ATTRS_CONVERTERS, "        text = val.lower()\n",
                                        "        text = val.strip().lower()\n")

TRAJ_ATTRS = {
    "instance_id": "python-attrs__attrs-1290",
    "repo": "python-attrs/attrs",
    "resolved": True,
    "messages": [
        system_msg(CHAT_SYSTEM),
        user_msg(issue_prompt(
            "converters.to_bool rejects values with surrounding whitespace\n\n"
            "`to_bool(\" yes\")` raises `ValueError: Cannot convert value to bool: ' yes'`. Values "
            "read from `.env` files often carry a stray space, and `int()` and `float()` accept "
            "surrounding whitespace, so I expected `True`."
        )),
        assistant_msg(
            "I'll look at the converter and its tests at the same time.",
            call("call_t1", "bash", command="grep -n \"def to_bool\" -A 12 /testbed/src/attr/converters.py"),
            call("call_t2", "bash", command="grep -n \"to_bool\" /testbed/tests/test_converters.py | head -5"),
        ),
        tool_msg("call_t1", "\n".join(
            f"{T_ATTRS_FIRST + 4 + i}{':' if i == 0 else '-'}{line}"
            for i, line in enumerate(T_ATTRS_CONVERTERS.split("\n")[4:17])
        )),
        tool_msg("call_t2", "7:from attr.converters import default_if_none, optional, pipe, to_bool\n"
                            "212:class TestToBool:\n"
                            "213:    def test_unhashable(self):\n"
                            "220:    def test_truthy(self):\n"
                            "226:    def test_falsy(self):"),
        assistant_msg(
            "Strings are lowercased but not stripped. Stripping them first fixes the issue "
            "without accepting anything that isn't a boolean word.",
            call("call_t3", "str_replace_editor", command="str_replace", path="/testbed/src/attr/converters.py",
                 old_str="        text = val.lower()\n", new_str="        text = val.strip().lower()\n"),
        ),
        tool_msg("call_t3", edited("/testbed/src/attr/converters.py", T_ATTRS_CONVERTERS_FIXED, T_ATTRS_FIRST,
                                   line_of(T_ATTRS_CONVERTERS_FIXED, "if isinstance(val, str)", T_ATTRS_FIRST),
                                   line_of(T_ATTRS_CONVERTERS_FIXED, "return False", T_ATTRS_FIRST))),
        assistant_msg(
            "",
            call("call_t4", "bash", command="cd /testbed && python -c \"from attr.converters import to_bool; "
                                            "print(to_bool(' yes'), to_bool('OFF '))\" && "
                                            "python -m pytest tests/test_converters.py -q"),
        ),
        tool_msg("call_t4", "True False\n"
                            "...........................................                              [100%]\n"
                            "43 passed in 0.38s"),
        assistant_msg(
            "`to_bool` now strips surrounding whitespace before matching, so `\" yes\"` converts to "
            "`True` and `\"OFF \"` to `False`; other values are rejected as before. The converter "
            "tests pass."
        ),
    ],
}

# --- tqdm__tqdm-1580: not resolved; the agent cannot reproduce and stops --------------

TRAJ_TQDM = {
    "instance_id": "tqdm__tqdm-1580",
    "repo": "tqdm/tqdm",
    "resolved": False,
    "messages": [
        system_msg(CHAT_SYSTEM),
        user_msg(issue_prompt(
            "tqdm.write() output is lost when leave=False in a notebook\n\n"
            "In Jupyter, lines printed with `tqdm.write()` while a `leave=False` bar is running "
            "disappear when the bar closes."
        )),
        assistant_msg(
            "I'll try to reproduce it outside a notebook first.",
            call("call_q1", "bash", command=(
                "cd /testbed && python -c \"from tqdm import tqdm\nimport time\n"
                "for i in tqdm(range(3), leave=False):\n    tqdm.write(f'line {i}')\n\""
            )),
            reasoning="The notebook frontend is in tqdm/notebook.py; the terminal path may show "
                      "whether write() itself drops lines.",
        ),
        tool_msg("call_q1", "line 0\nline 1\nline 2"),
        assistant_msg(
            "The terminal keeps the lines. Let me check how the notebook bar clears itself.",
            call("call_q2", "bash", command="grep -n \"def close\\|clear_output\\|leave\" /testbed/tqdm/notebook.py"),
        ),
        tool_msg("call_q2", "118:    def display(self, msg=None, pos=None, close=False, bar_style=None, check_delay=True):\n"
                            "163:            if not self.leave:\n"
                            "164:                self.container.visible = False\n"
                            "262:    def close(self):"),
        assistant_msg(
            "On close, the notebook bar only hides its own widget (`container.visible = False`); "
            "it does not clear the cell output, so it should not remove lines written with "
            "`tqdm.write()`. I can't run a notebook frontend here to confirm what the reporter "
            "sees, and nothing in the code path I can test drops output. I'm not changing the code "
            "without a reproduction; the next step would be to check whether the reporter's "
            "frontend treats the hidden widget's output area as part of the widget."
        ),
    ],
}

# --- psf__black-4320: not resolved; the fix breaks other tests ------------------------

T_BLACK_LINES = src(r'''
def is_stub_body(node: LN) -> bool:
    """Return True if node is a simple statement containing only "..."."""
    if not isinstance(node, Node) or node.type != syms.simple_stmt:
        return False

    if len(node.children) != 2:
        return False

    child = node.children[0]
    return (
        child.type == syms.atom
        and len(child.children) == 3
        and all(leaf == Leaf(token.DOT, ".") for leaf in child.children)
    )
''')
T_BLACK_FIRST = 701

TRAJ_BLACK = {
    "instance_id": "psf__black-4320",
    "repo": "psf/black",
    "resolved": False,
    "messages": [
        system_msg(CHAT_SYSTEM),
        user_msg(issue_prompt(
            "Stub bodies written as `pass` are not collapsed with --pyi\n\n"
            "In a `.pyi` file, `def f(): pass` on two lines stays on two lines, while "
            "`def f(): ...` is collapsed onto one. Both should be treated as stub bodies."
        )),
        assistant_msg(
            "",
            call("call_b1", "bash", command="grep -n \"def is_stub_body\" -A 13 /testbed/src/black/nodes.py"),
            reasoning="The collapsing presumably depends on is_stub_body; it only recognizes '...'.",
        ),
        tool_msg("call_b1", "\n".join(
            f"{T_BLACK_FIRST + i}{':' if i == 0 else '-'}{line}"
            for i, line in enumerate(T_BLACK_LINES.split("\n")[:14])
        )),
        assistant_msg(
            "I'll accept a lone `pass` as a stub body as well.",
            call("call_b3", "str_replace_editor", command="str_replace", path="/testbed/src/black/nodes.py",
                 old_str="    child = node.children[0]\n    return (\n",
                 new_str="    child = node.children[0]\n"
                         "    if child.type == token.NAME and child.value == \"pass\":\n"
                         "        return True\n"
                         "    return (\n"),
        ),
        tool_msg("call_b3", "The file /testbed/src/black/nodes.py has been edited. Here's the result of running "
                            "`cat -n` on a snippet of /testbed/src/black/nodes.py:\n"
                            f"{T_BLACK_FIRST + 8:6d}\n"
                            f"{T_BLACK_FIRST + 9:6d}\t    child = node.children[0]\n"
                            f"{T_BLACK_FIRST + 10:6d}\t    if child.type == token.NAME and child.value == \"pass\":\n"
                            f"{T_BLACK_FIRST + 11:6d}\t        return True\n"
                            f"{T_BLACK_FIRST + 12:6d}\t    return (\n"
                            "Review the changes and make sure they are as expected. Edit the file again if necessary."),
        assistant_msg("", call("call_b4", "bash", command="cd /testbed && python -m pytest tests/test_format.py -q -x -k pyi 2>&1 | tail -15")),
        tool_msg("call_b4", "F\n=================================== FAILURES ===================================\n"
                            "_____________________ test_simple_format[stub_pass_class] ______________________\n"
                            "E   AssertionError: Black did not format the expected output:\n"
                            "E   -class A:\n"
                            "E   -    pass\n"
                            "E   +class A: pass\n"
                            "=========================== short test summary info ============================\n"
                            "FAILED tests/test_format.py::test_simple_format[stub_pass_class] - AssertionError\n"
                            "!!!!!!!!!!!!!!!!!!!!!!!!!! stopping after 1 failures !!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
                            "1 failed, 12 passed, 310 deselected in 2.87s"),
        assistant_msg(
            "That also collapses `class A: pass`, which the existing expectations keep on two "
            "lines. I'll restrict the check to function bodies by looking at the parent.",
            call("call_b5", "str_replace_editor", command="str_replace", path="/testbed/src/black/nodes.py",
                 old_str="    if child.type == token.NAME and child.value == \"pass\":\n",
                 new_str="    if (\n        child.type == token.NAME\n        and child.value == \"pass\"\n"
                         "        and node.parent is not None\n        and node.parent.type == syms.funcdef\n    ):\n"),
        ),
        tool_msg("call_b5", "The file /testbed/src/black/nodes.py has been edited."),
        assistant_msg("", call("call_b6", "bash", command="cd /testbed && python -m pytest tests/test_format.py -q -k pyi 2>&1 | tail -3")),
        tool_msg("call_b6", "FAILED tests/test_format.py::test_simple_format[stub_pass_def] - AssertionError\n"
                            "1 failed, 12 passed, 310 deselected in 3.02s"),
        assistant_msg(
            "I changed `is_stub_body` to treat a lone `pass` in a function body as a stub body. "
            "One existing expectation, `stub_pass_def`, still keeps `def f(): pass` on two lines "
            "and now fails; it may have to be updated together with this change, which I have not "
            "done since the tests are out of scope."
        ),
    ],
}

# --- pypa__packaging-812: not resolved; the fix misses the reported case --------------

T_PACKAGING_UTILS = src(r'''
def canonicalize_version(version: str, *, strip_trailing_zero: bool = True) -> str:
    """Return a canonical form of a version string. (Excerpt.)"""
    try:
        parsed = Version(version)
    except InvalidVersion:
        # Legacy versions cannot be normalized.
        return version

    parts = []
    if parsed.epoch != 0:
        parts.append(f"{parsed.epoch}!")
    release = ".".join(str(x) for x in parsed.release)
    if strip_trailing_zero:
        release = re.sub(r"(\.?0)+$", "", release)
    parts.append(release)
    if parsed.pre is not None:
        parts.append("".join(str(x) for x in parsed.pre))
    if parsed.post is not None:
        parts.append(f".post{parsed.post}")
    if parsed.dev is not None:
        parts.append(f".dev{parsed.dev}")
    if parsed.local is not None:
        parts.append(f"+{parsed.local}")
    return "".join(parts)
''')

TRAJ_PACKAGING = {
    "instance_id": "pypa__packaging-812",
    "repo": "pypa/packaging",
    "resolved": False,
    "messages": [
        system_msg(CHAT_SYSTEM),
        user_msg(issue_prompt(
            "canonicalize_version(\"0.0\") returns an empty string\n\n"
            "```python\n>>> from packaging.utils import canonicalize_version\n"
            ">>> canonicalize_version(\"0.0\")\n''\n```\n\nExpected `\"0\"`. The same happens for "
            "`\"0.0.0\"`, and `canonicalize_version(\"0.0rc1\")` gives `\"rc1\"`."
        )),
        assistant_msg(
            "",
            call("call_p1", "str_replace_editor", command="view", path="/testbed/src/packaging/utils.py",
                 view_range=[40, 64]),
            reasoning="An empty result means the trailing-zero stripping removed the whole "
                      "release. Read canonicalize_version first.",
        ),
        tool_msg("call_p1", viewed("/testbed/src/packaging/utils.py", T_PACKAGING_UTILS, 40)),
        assistant_msg(
            "The pattern `(\\.?0)+$` also matches the first component when it is `0`, so `0.0` "
            "loses its whole release. I'll fall back to `0` when nothing is left.",
            call("call_p2", "str_replace_editor", command="str_replace", path="/testbed/src/packaging/utils.py",
                 old_str="    parts.append(release)\n",
                 new_str="    parts.append(release or \"0\")\n"),
        ),
        tool_msg("call_p2", "The file /testbed/src/packaging/utils.py has been edited."),
        assistant_msg("", call("call_p3", "bash", command=(
            "cd /testbed && python -c \"from packaging.utils import canonicalize_version as c; "
            "print(repr(c('0.0')), repr(c('0.0.0')), repr(c('0.0rc1')))\""))),
        tool_msg("call_p3", "'0' '0' '0rc1'"),
        assistant_msg(
            "`canonicalize_version` now falls back to `\"0\"` when stripping trailing zeros leaves "
            "nothing, so `0.0`, `0.0.0` and `0.0rc1` give `0`, `0` and `0rc1`."
        ),
    ],
}

TRAJECTORIES_CHAT = [
    TRAJ_CLICK, TRAJ_HTTPX, TRAJ_CHATML, TRAJ_RICH, TRAJ_ATTRS, TRAJ_TQDM, TRAJ_BLACK, TRAJ_PACKAGING,
]

# --- SWE-agent .traj files -------------------------------------------------------------

SWE_AGENT_SYSTEM = (
    "SETTING: You are an autonomous programmer, and you're working directly in the command line "
    "with a special interface.\n\n"
    "The special interface consists of a file editor that shows you 100 lines of a file at a time.\n"
    "In addition to typical bash commands, you can also use the following commands to help you "
    "navigate and edit files.\n\n"
    "COMMANDS:\n"
    "open <path> [<line_number>] - opens the file at the given path in the editor\n"
    "goto <line_number> - moves the window to show <line_number>\n"
    "create <filename> - creates and opens a new file with the given name\n"
    "search_dir <search_term> [<dir>] - searches for search_term in all files in dir\n"
    "find_file <file_name> [<dir>] - finds all files with the given name in dir\n"
    "edit <start_line>:<end_line>\n<replacement_text>\nend_of_edit - replaces lines <start_line> "
    "through <end_line> (inclusive) of the open file with the given text\n"
    "submit - submits your current code and terminates the session\n\n"
    "RESPONSE FORMAT:\nYour shell prompt is formatted as follows:\n(Open file: <path>) <cwd> $\n\n"
    "You need to format your output using two fields; discussion and command.\n"
    "Your output should always include _one_ discussion and _one_ command field EXACTLY as in "
    "the following example:\nDISCUSSION\nFirst I'll start by using ls to see what files are in "
    "the current directory.\n```\nls -a\n```\n\nYou should only include a *SINGLE* command in the "
    "command section and then wait for a response from the shell before continuing."
)


def swe_window(path, text, first_shown=1):
    """SWE-agent's editor view of a (short) file."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    body = "\n".join(f"{n}:{lines[n - 1]}" for n in range(first_shown, len(lines) + 1))
    return f"[File: {path} ({len(lines)} lines total)]\n{body}"


def swe_agent_record(issue_text, repo_dir, steps, submission, resolved, instance_id=None, with_history=True):
    """steps: (thought, action, observation, open_file). The response is the DISCUSSION/
    command text the model wrote; the history repeats it with the shell prompt added."""
    trajectory = []
    history = [
        {"role": "system", "content": SWE_AGENT_SYSTEM, "agent": "primary"},
        {"role": "user", "agent": "primary", "content": (
            "We're currently solving the following issue within our repository. Here's the issue "
            f"text:\nISSUE:\n{issue_text}\n\nINSTRUCTIONS:\nNow, you're going to solve this issue "
            "on your own. Edit all the files you need to and run any checks or tests that you "
            "want. When you're satisfied with all of the changes you've made, you can submit "
            "your changes to the code base by simply running the submit command.\n\n"
            f"(Open file: n/a)\n(Current directory: {repo_dir})\nbash-$"
        )},
    ]
    for thought, action, observation, open_file in steps:
        response = f"DISCUSSION\n{thought}\n\n```\n{action}\n```"
        trajectory.append({
            "action": action,
            "observation": observation,
            "response": response,
            "thought": thought,
            "state": json.dumps({"open_file": open_file or "n/a", "working_dir": repo_dir}),
        })
        history.append({"role": "assistant", "content": response, "thought": thought,
                        "action": action, "agent": "primary"})
        history.append({"role": "user", "agent": "primary", "content": (
            f"{observation if observation else 'Your command ran successfully and did not produce any output.'}\n"
            f"(Open file: {open_file or 'n/a'})\n(Current directory: {repo_dir})\nbash-$"
        )})
    record = {"environment": "swe_main"}
    if instance_id:
        record["instance_id"] = instance_id
    record["trajectory"] = trajectory
    if with_history:
        record["history"] = history
    record["info"] = {
        "exit_status": "submitted",
        "submission": submission,
        "model_stats": {
            "total_cost": round(0.09 * len(steps), 2), "instance_cost": round(0.09 * len(steps), 2),
            "tokens_sent": 4200 * len(steps), "tokens_received": 180 * len(steps), "api_calls": len(steps),
        },
        "resolved": resolved,
    }
    return record


S_TENACITY_STOP = src(r'''
"""Stop strategies: when to give up retrying."""

import abc


class stop_base(abc.ABC):
    """Abstract base class for stop strategies."""

    @abc.abstractmethod
    def __call__(self, retry_state) -> bool:
        pass


class stop_after_attempt(stop_base):
    """Give up once max_attempt_number attempts have been made."""

    def __init__(self, max_attempt_number: int) -> None:
        self.max_attempt_number = max_attempt_number

    def __call__(self, retry_state) -> bool:
        return retry_state.attempt_number >= self.max_attempt_number


class stop_after_delay(stop_base):
    """Give up once max_delay seconds have passed since the first attempt."""

    def __init__(self, max_delay: float) -> None:
        self.max_delay = max_delay

    def __call__(self, retry_state) -> bool:
        return retry_state.seconds_since_start > self.max_delay
''')
S_TENACITY_STOP_FIXED = replace_once(S_TENACITY_STOP, "seconds_since_start > self.max_delay",
                                     "seconds_since_start >= self.max_delay")
S_TENACITY_REPRO = src(r'''
from tenacity.stop import stop_after_delay


class State:
    seconds_since_start = 5.0


print(stop_after_delay(5)(State()))
''')
_delay_line = line_of(S_TENACITY_STOP, "seconds_since_start > self.max_delay")

SWE_TENACITY = swe_agent_record(
    "stop_after_delay(5) allows another attempt at exactly 5 seconds\n\n`stop_after_attempt` "
    "stops when the count *reaches* the limit, but `stop_after_delay` only stops once the "
    "elapsed time *exceeds* it, so with a coarse clock one more attempt starts at exactly the "
    "limit. Both should use `>=`.",
    "/tenacity",
    [
        ("Let's first reproduce the behaviour with a small script that calls the stop strategy "
         "with an elapsed time equal to the limit.", "create reproduce.py",
         "[File: /tenacity/reproduce.py (1 lines total)]\n1:", "/tenacity/reproduce.py"),
        ("Now let's write the reproduction.", "edit 1:1\n" + S_TENACITY_REPRO + "end_of_edit",
         swe_window("/tenacity/reproduce.py", S_TENACITY_REPRO) + "\nFile updated. Please review the changes "
         "and make sure they are correct (correct indentation, no duplicate lines, etc). Edit the file again "
         "if necessary.", "/tenacity/reproduce.py"),
        ("Let's run it. At exactly 5 seconds the strategy should say stop (True).", "python reproduce.py",
         "False", "/tenacity/reproduce.py"),
        ("It returns False, which confirms the issue. Let's find the stop strategies.",
         "find_file \"stop.py\"", "Found 1 matches for \"stop.py\" in /tenacity:\n/tenacity/tenacity/stop.py",
         "/tenacity/reproduce.py"),
        ("Let's open the file.", "open tenacity/stop.py",
         swe_window("/tenacity/tenacity/stop.py", S_TENACITY_STOP), "/tenacity/tenacity/stop.py"),
        (f"Line {_delay_line} uses `>`; `stop_after_attempt` uses `>=`. Let's make them consistent.",
         f"edit {_delay_line}:{_delay_line}\n        return retry_state.seconds_since_start >= self.max_delay\nend_of_edit",
         swe_window("/tenacity/tenacity/stop.py", S_TENACITY_STOP_FIXED) + "\nFile updated. Please review the "
         "changes and make sure they are correct (correct indentation, no duplicate lines, etc). Edit the "
         "file again if necessary.", "/tenacity/tenacity/stop.py"),
        ("Let's run the reproduction again.", "python reproduce.py", "True", "/tenacity/tenacity/stop.py"),
        ("That's fixed. Let's remove the reproduction script and submit.", "rm reproduce.py", "",
         "/tenacity/tenacity/stop.py"),
        ("Submitting the change.", "submit", git_diff("tenacity/stop.py", S_TENACITY_STOP, S_TENACITY_STOP_FIXED),
         "/tenacity/tenacity/stop.py"),
    ],
    git_diff("tenacity/stop.py", S_TENACITY_STOP, S_TENACITY_STOP_FIXED),
    resolved=True, instance_id="jd__tenacity-431",
)

S_LOGURU_PARSE = src(r'''
import datetime
import re

UNITS = {
    "s": 1, "sec": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
}


def parse_duration(text):
    """Parse strings such as '10 s' or '1.5 hours' into a timedelta."""
    match = re.fullmatch(r"\s*([\d.]+)\s*([a-z]+)\s*", text.lower())
    if not match:
        raise ValueError(f"Invalid duration: {text!r}")
    value, unit = match.groups()
    if unit not in UNITS:
        raise ValueError(f"Invalid unit {unit!r} in duration {text!r}")
    return datetime.timedelta(seconds=float(value) * UNITS[unit])
''')
S_LOGURU_PARSE_FIXED = replace_once(
    S_LOGURU_PARSE, '    "d": 86400, "day": 86400, "days": 86400,\n',
    '    "d": 86400, "day": 86400, "days": 86400,\n    "w": 604800, "week": 604800,\n')
_days_line = line_of(S_LOGURU_PARSE, '"d": 86400')

SWE_LOGURU = swe_agent_record(
    "logger.add(rotation=\"2 weeks\") raises ValueError\n\n```python\nlogger.add(\"app.log\", "
    "rotation=\"2 weeks\")\n```\n\nraises `ValueError: Invalid unit 'weeks' in duration '2 weeks'`. "
    "Days work, weeks don't.",
    "/loguru",
    [
        ("Let's find where durations are parsed.", "search_dir \"Invalid unit\"",
         "Found 1 matches for \"Invalid unit\" in /loguru:\n/loguru/loguru/_duration_parse.py (1 matches)\n"
         "End of matches for \"Invalid unit\" in /loguru", None),
        ("Let's open that file.", "open loguru/_duration_parse.py",
         swe_window("/loguru/loguru/_duration_parse.py", S_LOGURU_PARSE), "/loguru/loguru/_duration_parse.py"),
        ("The UNITS table has no week entry. Let's add one after the days.",
         f"edit {_days_line}:{_days_line}\n"
         '    "d": 86400, "day": 86400, "days": 86400,\n    "w": 604800, "week": 604800,\nend_of_edit',
         swe_window("/loguru/loguru/_duration_parse.py", S_LOGURU_PARSE_FIXED) + "\nFile updated. Please review "
         "the changes and make sure they are correct (correct indentation, no duplicate lines, etc). Edit the "
         "file again if necessary.", "/loguru/loguru/_duration_parse.py"),
        ("Let's check a week-based duration.",
         "python -c \"from loguru._duration_parse import parse_duration; print(parse_duration('1 week'))\"",
         "7 days, 0:00:00", "/loguru/loguru/_duration_parse.py"),
        ("Weeks are parsed now. Submitting.", "submit",
         git_diff("loguru/_duration_parse.py", S_LOGURU_PARSE, S_LOGURU_PARSE_FIXED),
         "/loguru/loguru/_duration_parse.py"),
    ],
    git_diff("loguru/_duration_parse.py", S_LOGURU_PARSE, S_LOGURU_PARSE_FIXED),
    resolved=False, instance_id="Delgan__loguru-1107",
)

S_COOKIECUTTER_REPLAY = src(r'''
"""Where replay files are read and written."""

import os


def get_replay_file(replay_dir, template_name, replay_file=None):
    """Return the path of the replay file to read or write."""
    if replay_file:
        return os.path.join(replay_dir, replay_file)
    if template_name.endswith(".json"):
        file_name = template_name
    else:
        file_name = f"{template_name}.json"
    return os.path.join(replay_dir, file_name)
''')
S_COOKIECUTTER_REPLAY_FIXED = replace_once(
    S_COOKIECUTTER_REPLAY, "        return os.path.join(replay_dir, replay_file)\n",
    "        # A file given on the command line is relative to the working directory.\n"
    "        return os.path.abspath(replay_file)\n")
_replay_line = line_of(S_COOKIECUTTER_REPLAY, "return os.path.join(replay_dir, replay_file)")

SWE_COOKIECUTTER = swe_agent_record(
    "--replay-file with a relative path looks in the replay directory\n\n"
    "`cookiecutter gh:acme/template --replay-file answers.json` fails with "
    "`FileNotFoundError: ~/.cookiecutter_replay/answers.json` although `answers.json` is in "
    "the current directory.",
    "/cookiecutter",
    [
        ("Let's look for the function that builds the replay path.", "search_dir \"def get_replay_file\"",
         "Found 1 matches for \"def get_replay_file\" in /cookiecutter:\n/cookiecutter/cookiecutter/replay_paths.py "
         "(1 matches)\nEnd of matches for \"def get_replay_file\" in /cookiecutter", None),
        ("Let's open it.", "open cookiecutter/replay_paths.py",
         swe_window("/cookiecutter/cookiecutter/replay_paths.py", S_COOKIECUTTER_REPLAY),
         "/cookiecutter/cookiecutter/replay_paths.py"),
        ("An explicit replay file is joined onto the replay directory. It should be taken "
         "relative to the working directory instead.",
         f"edit {_replay_line}:{_replay_line}\n"
         "        # A file given on the command line is relative to the working directory.\n"
         "        return os.path.abspath(replay_file)\nend_of_edit",
         swe_window("/cookiecutter/cookiecutter/replay_paths.py", S_COOKIECUTTER_REPLAY_FIXED) + "\nFile updated. "
         "Please review the changes and make sure they are correct (correct indentation, no duplicate lines, "
         "etc). Edit the file again if necessary.", "/cookiecutter/cookiecutter/replay_paths.py"),
        ("Submitting.", "submit",
         git_diff("cookiecutter/replay_paths.py", S_COOKIECUTTER_REPLAY, S_COOKIECUTTER_REPLAY_FIXED),
         "/cookiecutter/cookiecutter/replay_paths.py"),
    ],
    git_diff("cookiecutter/replay_paths.py", S_COOKIECUTTER_REPLAY, S_COOKIECUTTER_REPLAY_FIXED),
    resolved=False, with_history=False,
)
# The second step of this file keeps only its action, as some SWE-agent versions write it:
# the converter then builds the assistant turn from thought and action.
SWE_COOKIECUTTER["trajectory"][1]["response"] = ""

SWE_AGENT_FILES = {
    "jd__tenacity-431.traj": SWE_TENACITY,
    "Delgan__loguru-1107.traj": SWE_LOGURU,
    "cookiecutter__cookiecutter-2050.traj": SWE_COOKIECUTTER,
}

# --- SWE-smith / SWE-Gym-style records ---------------------------------------------------

SWESMITH_SYSTEM = "You are a helpful assistant that can interact with a computer to solve tasks."


def swesmith_task(description):
    return (
        "<uploaded_files>\n/testbed\n</uploaded_files>\nI've uploaded a python code repository in "
        "the directory /testbed. Consider the following PR description:\n\n<pr_description>\n"
        f"{description}\n</pr_description>\n\nCan you help me implement the necessary changes to the "
        "repository so that the requirements specified in the <pr_description> are met? I've "
        "already taken care of all changes to any of the test files described in the "
        "<pr_description>, so you don't need to modify the testing logic or any of the tests."
    )


W_DATASET_UTIL = src(r'''
def chunked(iterable, size):
    """Yield lists of at most size items from iterable."""
    chunk = []
    for item in iterable:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
''')
W_DATASET_UTIL_FIXED = W_DATASET_UTIL + "    if chunk:\n        yield chunk\n"

SWESMITH_DATASET = {
    "instance_id": "pudo__dataset.5c2dc8d3.func_pm_remove_cond__k2x7d9qa",
    "traj_id": "pudo__dataset.5c2dc8d3.func_pm_remove_cond__k2x7d9qa.8qa84d2e",
    "model": "claude-3-7-sonnet-20250219",
    "messages": [
        system_msg(SWESMITH_SYSTEM),
        user_msg(swesmith_task(
            "insert_many drops the last rows\n\nWith `table.insert_many(rows, chunk_size=100)` and "
            "250 rows, only 200 rows end up in the table."
        )),
        assistant_msg(
            "Let me find the chunking helper that `insert_many` uses.",
            call("toolu_01", "bash", command="grep -rn \"def chunked\" /testbed/dataset"),
        ),
        tool_msg("toolu_01", "/testbed/dataset/util.py:88:def chunked(iterable, size):"),
        assistant_msg(
            "",
            call("toolu_02", "str_replace_editor", command="view", path="/testbed/dataset/util.py",
                 view_range=[88, 95]),
        ),
        tool_msg("toolu_02", viewed("/testbed/dataset/util.py", W_DATASET_UTIL, 88)),
        assistant_msg(
            "The generator never yields the last, partial chunk. I'll yield it after the loop.",
            call("toolu_03", "str_replace_editor", command="str_replace", path="/testbed/dataset/util.py",
                 old_str="            yield chunk\n            chunk = []\n",
                 new_str="            yield chunk\n            chunk = []\n    if chunk:\n        yield chunk\n"),
        ),
        tool_msg("toolu_03", edited("/testbed/dataset/util.py", W_DATASET_UTIL_FIXED, 88, 91, 97)),
        assistant_msg(
            "",
            call("toolu_04", "bash", command="cd /testbed && python -c \"from dataset.util import chunked; "
                                             "print([len(c) for c in chunked(range(250), 100)])\""),
        ),
        tool_msg("toolu_04", "[100, 100, 50]"),
        assistant_msg("", call("toolu_05", "submit")),
        tool_msg("toolu_05", git_diff("dataset/util.py", W_DATASET_UTIL, W_DATASET_UTIL_FIXED)),
    ],
    "resolved": True,
}

W_LANGDETECT = src(r'''
    def get_probabilities(self):
        """Return (language, probability) pairs, most likely first."""
        total = sum(self.scores.values())
        pairs = [(lang, score / total) for lang, score in self.scores.items()]
        return sorted(pairs, key=lambda pair: pair[1])
''')

SWESMITH_LANGDETECT = {
    "instance_id": "Mimino666__langdetect.a1f6f2a3.func_basic__3k9v2m1x",
    "traj_id": "Mimino666__langdetect.a1f6f2a3.func_basic__3k9v2m1x.b41c07fe",
    "model": "claude-3-7-sonnet-20250219",
    "messages": [
        {"role": "system", "content": [{"type": "text", "text": SWESMITH_SYSTEM}]},
        {"role": "user", "content": [{"type": "text", "text": swesmith_task(
            "detect() returns the least likely language\n\n`detect(\"Das ist ein Test\")` returns "
            "`\"nl\"` while `detect_langs` lists `de` with the highest probability."
        )}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Let me look at how probabilities are ordered."}],
         "tool_calls": [call("toolu_11", "bash", command="grep -n \"def get_probabilities\" -A 4 /testbed/langdetect/detector.py")]},
        {"role": "tool", "tool_call_id": "toolu_11", "content": [{"type": "text", "text": "\n".join(
            f"{141 + i}{':' if i == 0 else '-'}{line}" for i, line in enumerate(W_LANGDETECT.split("\n")[:5]))}]},
        {"role": "assistant", "content": [{"type": "text", "text": (
            "The pairs are sorted ascending, so the first one is the least likely. I'll sort by "
            "descending probability and also make `detect` pick the maximum explicitly.")}],
         "tool_calls": [call("toolu_12", "str_replace_editor", command="str_replace",
                             path="/testbed/langdetect/detector.py",
                             old_str="        return sorted(pairs, key=lambda pair: pair[1])\n",
                             new_str="        return sorted(pairs, key=lambda pair: pair[1], reverse=True)\n")]},
        {"role": "tool", "tool_call_id": "toolu_12", "content": "The file /testbed/langdetect/detector.py has been edited."},
        {"role": "assistant", "content": "", "tool_calls": [call("toolu_13", "bash", command=(
            "cd /testbed && python -c \"from langdetect import detect; print(detect('Das ist ein Test'))\""))]},
        {"role": "tool", "tool_call_id": "toolu_13", "content": "langdetect.lang_detect_exception.LangDetectException: "
                                                               "No features in text."},
        {"role": "assistant", "content": "", "tool_calls": [call("toolu_14", "submit")]},
        {"role": "tool", "tool_call_id": "toolu_14", "content": (
            "diff --git a/langdetect/detector.py b/langdetect/detector.py\n--- a/langdetect/detector.py\n"
            "+++ b/langdetect/detector.py\n@@ -142,4 +142,4 @@ class Detector(object):\n"
            "         \"\"\"Return (language, probability) pairs, most likely first.\"\"\"\n"
            "         total = sum(self.scores.values())\n"
            "         pairs = [(lang, score / total) for lang, score in self.scores.items()]\n"
            "-        return sorted(pairs, key=lambda pair: pair[1])\n"
            "+        return sorted(pairs, key=lambda pair: pair[1], reverse=True)\n")},
    ],
    "resolved": False,
}


def openhands_call(function, **parameters):
    body = "".join(f"<parameter={k}>{v}</parameter>\n" for k, v in parameters.items())
    return f"<function={function}>\n{body}</function>"


GYM_SYSTEM = (
    "You are OpenHands agent, a helpful AI assistant that can interact with a computer to solve "
    "tasks.\n<IMPORTANT>\n* If user provides a path, you should NOT assume it's relative to the "
    "current working directory. Instead, you should explore the file system to find the file "
    "before working on it.\n</IMPORTANT>\n\nYou have access to the following functions:\n\n"
    "---- BEGIN FUNCTION #1: execute_bash ----\nDescription: Execute a bash command in the terminal.\n"
    "---- END FUNCTION #1 ----\n\n---- BEGIN FUNCTION #2: str_replace_editor ----\nDescription: "
    "Custom editing tool for viewing, creating and editing files\n---- END FUNCTION #2 ----\n\n"
    "---- BEGIN FUNCTION #3: finish ----\nDescription: Finish the interaction when the task is "
    "complete.\n---- END FUNCTION #3 ----"
)

G_MOTO_RESPONSES = src(r'''
    def head_object(self, bucket_name, key_name):
        bucket = self.backend.get_bucket(bucket_name)
        key = bucket.keys.get(key_name)
        return 200, key.metadata, ""
''')

SWEGYM_MOTO = {
    "instance_id": "getmoto__moto-7121",
    "traj_id": "getmoto__moto-7121.gpt-4o.run2",
    "model": "gpt-4o-2024-08-06",
    "messages": [
        system_msg(GYM_SYSTEM),
        user_msg(
            "<uploaded_files>\n/workspace/getmoto__moto__4.2\n</uploaded_files>\n"
            "I've uploaded a python code repository in the directory getmoto__moto__4.2. Consider "
            "the following PR description:\n\n<pr_description>\nhead_object on a missing key returns "
            "500 instead of 404\n\n`s3.head_object(Bucket=\"b\", Key=\"missing\")` raises "
            "`ClientError: An error occurred (500)` with an AttributeError in the moto logs; AWS "
            "returns 404.\n</pr_description>"
        ),
        {"role": "assistant", "content": "Let me find `head_object` in the S3 responses.\n\n" + openhands_call(
            "execute_bash", command="grep -n \"def head_object\" -A 4 /workspace/getmoto__moto__4.2/moto/s3/responses.py")},
        user_msg("EXECUTION RESULT of [execute_bash]:\n" + "\n".join(
            f"{1290 + i}{':' if i == 0 else '-'}{line}" for i, line in enumerate(G_MOTO_RESPONSES.split("\n")[:4]))
            + "\n[Python Interpreter: /opt/miniconda3/envs/testbed/bin/python]\nroot@openhands-workspace:/workspace"
              "/getmoto__moto__4.2 # \n[Command finished with exit code 0]"),
        {"role": "assistant", "content": (
            "`key` is `None` for a missing key, and `key.metadata` raises. I'll return 404 in that "
            "case.\n\n" + openhands_call(
                "str_replace_editor", command="str_replace",
                path="/workspace/getmoto__moto__4.2/moto/s3/responses.py",
                old_str="        key = bucket.keys.get(key_name)\n        return 200, key.metadata, \"\"",
                new_str="        key = bucket.keys.get(key_name)\n        if key is None:\n"
                        "            return 404, {}, \"\"\n        return 200, key.metadata, \"\""))},
        user_msg("EXECUTION RESULT of [str_replace_editor]:\nThe file /workspace/getmoto__moto__4.2/moto/s3/responses.py "
                 "has been edited. Review the changes and make sure they are as expected."),
        {"role": "assistant", "content": openhands_call(
            "execute_bash", command="cd /workspace/getmoto__moto__4.2 && python -m pytest tests/test_s3/test_s3.py -q -k head_object")},
        user_msg("EXECUTION RESULT of [execute_bash]:\n.......                                                                  [100%]\n"
                 "7 passed, 412 deselected in 6.02s\n[Command finished with exit code 0]"),
        {"role": "assistant", "content": "A missing key now gets 404, as on AWS.\n\n" + openhands_call("finish")},
    ],
    "resolved": True,
}

G_HYDRA_UTILS = src(r'''
def _locate(path: str):
    """Import and return the object named by a dotted path."""
    module_path, _, name = path.rpartition(".")
    module = importlib.import_module(module_path)
    return getattr(module, name)
''')

SWEGYM_HYDRA = {
    "instance_id": "facebookresearch__hydra-2789",
    "traj_id": "facebookresearch__hydra-2789.gpt-4o.run1",
    "model": "gpt-4o-2024-08-06",
    "messages": [
        system_msg(GYM_SYSTEM),
        user_msg(
            "<uploaded_files>\n/workspace/facebookresearch__hydra__1.4\n</uploaded_files>\n"
            "I've uploaded a python code repository in the directory facebookresearch__hydra__1.4. "
            "Consider the following PR description:\n\n<pr_description>\ninstantiate() fails for a "
            "_target_ that names a nested class\n\n`_target_: my_app.models.Outer.Inner` raises "
            "`ModuleNotFoundError: No module named 'my_app.models.Outer'`.\n</pr_description>"
        ),
        {"role": "assistant", "content": openhands_call(
            "execute_bash", command="grep -rn \"def _locate\" -A 5 /workspace/facebookresearch__hydra__1.4/hydra/_internal/utils.py")},
        user_msg("EXECUTION RESULT of [execute_bash]:\n" + "\n".join(
            f"{610 + i}{':' if i == 0 else '-'}{line}" for i, line in enumerate(G_HYDRA_UTILS.split("\n")[:5]))
            + "\n[Command finished with exit code 0]"),
        {"role": "assistant", "content": (
            "`_locate` assumes everything before the last dot is a module. I'll fall back to "
            "importing the parent and walking attributes when that import fails.\n\n" + openhands_call(
                "str_replace_editor", command="str_replace",
                path="/workspace/facebookresearch__hydra__1.4/hydra/_internal/utils.py",
                old_str="    module = importlib.import_module(module_path)\n    return getattr(module, name)",
                new_str="    try:\n        module = importlib.import_module(module_path)\n"
                        "    except ModuleNotFoundError:\n        module = _locate(module_path)\n"
                        "    return getattr(module, name)"))},
        user_msg("EXECUTION RESULT of [str_replace_editor]:\nThe file has been edited."),
        {"role": "assistant", "content": openhands_call(
            "execute_bash", command="cd /workspace/facebookresearch__hydra__1.4 && python -m pytest tests/instantiate -q -x 2>&1 | tail -4")},
        user_msg("EXECUTION RESULT of [execute_bash]:\nE   ValueError: Empty module name\n"
                 "FAILED tests/instantiate/test_helpers.py::test_locate[nonexistent] - ValueError: Empty module name\n"
                 "1 failed, 37 passed in 4.41s\n[Command finished with exit code 1]"),
        {"role": "assistant", "content": (
            "For a path with no importable prefix the fallback recurses down to an empty module "
            "name and raises `ValueError` where the test expects `ImportError`. I ran out of steps "
            "before fixing that base case: the nested-class case works, but "
            "`test_locate[nonexistent]` now fails.\n\n" + openhands_call("finish"))},
    ],
    "resolved": False,
}

TRAJECTORIES_SWESMITH = [SWESMITH_DATASET, SWESMITH_LANGDETECT, SWEGYM_MOTO, SWEGYM_HYDRA]

# --- {role, text} trajectories ---------------------------------------------------------

ROLETEXT_SYSTEM = (
    "SETTING: You are an autonomous programmer, and you're working directly in the command line "
    "with a special interface. The interface shows 100 lines of a file at a time and provides "
    "open, goto, search_dir, search_file, find_file, edit and submit commands in addition to "
    "bash. Reply with one DISCUSSION and one command in a code block."
)


def roletext(instance_id, resolved, issue_text, turns):
    trajectory = [
        {"role": "system", "text": ROLETEXT_SYSTEM},
        {"role": "user", "text": f"We're currently solving the following issue within our repository. "
                                 f"Here's the issue text:\nISSUE:\n{issue_text}\n\n(Open file: n/a)\nbash-$"},
    ]
    for i, text in enumerate(turns):
        trajectory.append({"role": "ai" if i % 2 == 0 else "user", "text": text})
    return {"instance_id": instance_id, "resolved": resolved, "trajectory": trajectory}


R_ENVIRONS = src(r'''
def _parse_list(value, subcast=None, delimiter=","):
    if not value:
        return []
    items = value.split(delimiter)
    return [subcast(item) for item in items] if subcast else items
''')
R_ENVIRONS_FIXED = replace_once(R_ENVIRONS, "    items = value.split(delimiter)\n",
                                "    items = [item.strip() for item in value.split(delimiter)]\n")

TRAJECTORIES_ROLETEXT = [
    roletext("sloria__environs-341", True,
             "env.list() keeps spaces around items\n\nWith `TAGS=\"a, b\"`, `env.list(\"TAGS\")` returns "
             "`['a', ' b']`.",
             [
                 "DISCUSSION\nLet's find where lists are parsed.\n```\nsearch_dir \"def _parse_list\"\n```",
                 "Found 1 matches for \"def _parse_list\" in /environs:\n/environs/src/environs/_lists.py (1 matches)\n"
                 "(Open file: n/a)\nbash-$",
                 "DISCUSSION\nLet's open the file.\n```\nopen src/environs/_lists.py\n```",
                 swe_window("/environs/src/environs/_lists.py", R_ENVIRONS)
                 + "\n(Open file: /environs/src/environs/_lists.py)\nbash-$",
                 "DISCUSSION\nItems are not stripped after splitting. Let's strip them.\n```\nedit 4:4\n"
                 "    items = [item.strip() for item in value.split(delimiter)]\nend_of_edit\n```",
                 swe_window("/environs/src/environs/_lists.py", R_ENVIRONS_FIXED)
                 + "\nFile updated.\n(Open file: /environs/src/environs/_lists.py)\nbash-$",
                 "DISCUSSION\nThat should do it. Submitting.\n```\nsubmit\n```",
                 git_diff("src/environs/_lists.py", R_ENVIRONS, R_ENVIRONS_FIXED),
             ]),
    roletext("jsvine__pdfplumber-1100", False,
             "extract_text(layout=True) drops the last line of a page",
             [
                 "DISCUSSION\nLet's look for the layout text code.\n```\nsearch_dir \"def extract_text\" pdfplumber\n```",
                 "Found 2 matches for \"def extract_text\" in /pdfplumber/pdfplumber:\n"
                 "/pdfplumber/pdfplumber/page.py (1 matches)\n/pdfplumber/pdfplumber/utils/text.py (1 matches)\n"
                 "(Open file: n/a)\nbash-$",
                 "DISCUSSION\nThe layout logic is probably in utils/text.py. Let's search for the line loop.\n"
                 "```\nsearch_file \"for line in\" pdfplumber/utils/text.py\n```",
                 "Found 3 matches for \"for line in\" in /pdfplumber/pdfplumber/utils/text.py:\n"
                 "Line 402:        for line in lines[:-1]:\nLine 455:    for line in lines:\n"
                 "Line 501:        for line in self.lines:\n(Open file: n/a)\nbash-$",
                 "DISCUSSION\nLine 402 skips the last line. Let's include it.\n```\nopen pdfplumber/utils/text.py 402\n```",
                 "[File: /pdfplumber/pdfplumber/utils/text.py (620 lines total)]\n(398 more lines above)\n"
                 "399:        if layout:\n400:            # the final line is handled by the caller\n"
                 "401:            # to avoid a trailing blank line\n402:        for line in lines[:-1]:\n"
                 "403:            yield self.render_line(line)\n(217 more lines below)\n"
                 "(Open file: /pdfplumber/pdfplumber/utils/text.py)\nbash-$",
                 "DISCUSSION\nI'll iterate over every line.\n```\nedit 402:402\n        for line in lines:\nend_of_edit\n```",
                 "File updated.\n(Open file: /pdfplumber/pdfplumber/utils/text.py)\nbash-$",
                 "DISCUSSION\nSubmitting.\n```\nsubmit\n```",
                 "diff --git a/pdfplumber/utils/text.py b/pdfplumber/utils/text.py\n"
                 "--- a/pdfplumber/utils/text.py\n+++ b/pdfplumber/utils/text.py\n"
                 "@@ -399,7 +399,7 @@ class TextMap:\n         if layout:\n"
                 "             # the final line is handled by the caller\n"
                 "             # to avoid a trailing blank line\n"
                 "-        for line in lines[:-1]:\n+        for line in lines:\n"
                 "             yield self.render_line(line)\n",
             ]),
    roletext("Suor__funcy-130", True,
             "partition_by() loses the last group when the input ends with a change of key",
             [
                 "DISCUSSION\nLet's reproduce it first.\n```\npython -c \"from funcy import partition_by; "
                 "print(list(partition_by(lambda x: x > 2, [1, 2, 3])))\"\n```",
                 "[[1, 2]]\n(Open file: n/a)\nbash-$",
                 "DISCUSSION\nThe [3] group is missing. Let's find the function.\n```\nsearch_dir \"def partition_by\"\n```",
                 "Found 1 matches for \"def partition_by\" in /funcy:\n/funcy/funcy/seqs.py (1 matches)\n"
                 "(Open file: n/a)\nbash-$",
                 "DISCUSSION\nLet's open it.\n```\nopen funcy/seqs.py 388\n```",
                 "[File: /funcy/funcy/seqs.py (520 lines total)]\n(384 more lines above)\n"
                 "385:def partition_by(f, seq):\n386:    \"\"\"Lazily partition seq into continuous chunks with constant value of f.\"\"\"\n"
                 "387:    f = make_func(f)\n388:    for _, items in groupby(seq, f):\n"
                 "389:        yield list(items)\n390:        break\n(130 more lines below)\n"
                 "(Open file: /funcy/funcy/seqs.py)\nbash-$",
                 "DISCUSSION\nA stray `break` stops after the first group. Let's remove it.\n"
                 "```\nedit 389:390\n        yield list(items)\nend_of_edit\n```",
                 "File updated.\n(Open file: /funcy/funcy/seqs.py)\nbash-$",
                 "DISCUSSION\nLet's rerun the reproduction.\n```\npython -c \"from funcy import partition_by; "
                 "print(list(partition_by(lambda x: x > 2, [1, 2, 3])))\"\n```",
                 "[[1, 2], [3]]\n(Open file: /funcy/funcy/seqs.py)\nbash-$",
                 "DISCUSSION\nFixed. Submitting.\n```\nsubmit\n```",
             ]),
    roletext("rsalmei__alive-progress-260", False,
             "alive_bar(total=0) divides by zero",
             [
                 "DISCUSSION\nLet's find where the percentage is computed.\n```\nsearch_dir \"/ total\" alive_progress\n```",
                 "Found 1 matches for \"/ total\" in /alive-progress/alive_progress:\n"
                 "/alive-progress/alive_progress/core/progress.py (1 matches)\n(Open file: n/a)\nbash-$",
                 "DISCUSSION\nLet's guard the division.\n```\nsearch_file \"/ total\" alive_progress/core/progress.py\n```",
                 "Found 1 matches for \"/ total\" in /alive-progress/alive_progress/core/progress.py:\n"
                 "Line 231:        percent = count / total\n(Open file: n/a)\nbash-$",
                 "DISCUSSION\nI'll open the file there and treat a zero total as complete.\n"
                 "```\nopen alive_progress/core/progress.py 231\n```",
                 "[File: /alive-progress/alive_progress/core/progress.py (412 lines total)]\n(227 more lines above)\n"
                 "228:    def current_percent():\n229:        count, total = run.count, logic_total\n"
                 "230:\n231:        percent = count / total\n232:        return min(percent, 1.)\n"
                 "(180 more lines below)\n(Open file: /alive-progress/alive_progress/core/progress.py)\nbash-$",
                 "DISCUSSION\nThe indentation of line 231 looks wrong too; I'll rewrite both lines.\n"
                 "```\nedit 231:232\n    percent = count / total if total else 1.\n    return min(percent, 1.)\nend_of_edit\n```",
                 "Your proposed edit has introduced new syntax error(s). Please read this error message carefully "
                 "and then retry editing the file.\n\nERRORS:\n- E999 IndentationError: unindent does not match any "
                 "outer indentation level\n\nThis is how your edit would have looked if applied\n"
                 "(Open file: /alive-progress/alive_progress/core/progress.py)\nbash-$",
                 "DISCUSSION\nI'm out of budget for this issue; submitting what I have.\n```\nsubmit\n```",
             ]),
]

# --- plain text ------------------------------------------------------------------------

PLAIN_TEXT = [
    {"id": "rust-ring-buffer", "text": src(r'''
/// A fixed-capacity ring buffer that overwrites its oldest element when full.
///
/// ```
/// let mut ring = Ring::with_capacity(2);
/// ring.push(1);
/// ring.push(2);
/// ring.push(3);
/// assert_eq!(ring.iter().copied().collect::<Vec<_>>(), vec![2, 3]);
/// ```
pub struct Ring<T> {
    items: Vec<Option<T>>,
    head: usize,
    len: usize,
}

impl<T> Ring<T> {
    pub fn with_capacity(capacity: usize) -> Self {
        assert!(capacity > 0, "a ring needs room for one element");
        Self { items: (0..capacity).map(|_| None).collect(), head: 0, len: 0 }
    }

    pub fn push(&mut self, item: T) {
        let capacity = self.items.len();
        let slot = (self.head + self.len) % capacity;
        self.items[slot] = Some(item);
        if self.len == capacity {
            self.head = (self.head + 1) % capacity;
        } else {
            self.len += 1;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        (0..self.len).filter_map(move |i| self.items[(self.head + i) % self.items.len()].as_ref())
    }
}
''')},
    {"id": "python-context-managers-note", "text": src(r'''
# Writing a context manager with `contextlib`

A context manager pairs a setup step with a cleanup step that runs however the block
exits. `contextlib.contextmanager` turns a generator into one: the code before `yield`
is the setup, the value yielded is bound by `as`, and the code after it is the cleanup.

```python
import contextlib
import os


@contextlib.contextmanager
def working_directory(path):
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield path
    finally:
        os.chdir(previous)
```

Put the cleanup in `finally`: an exception raised inside the `with` block is re-raised
at the `yield`, and without `finally` the directory would not be restored.
''')},
    {"id": "readme-tally", "repo": "example-org/tally", "text": src(r'''
# tally

`tally` counts lines, words and bytes like `wc`, but groups the counts by file type.

## Install

```sh
cargo install tally
```

## Usage

```console
$ tally src/
type      files   lines   words   bytes
rust         12    1840    6122   61233
toml          1      24      61     498
total        13    1864    6183   61731
```

`--sort lines` orders the rows by a column, and `--json` prints one object per type.
''')},
    {"id": "go-retry-backoff", "text": tabs(src(r'''
package retry

import (
    "context"
    "time"
)

// Do calls fn until it succeeds, ctx is done, or attempts run out, doubling the
// wait between attempts from base up to max.
func Do(ctx context.Context, attempts int, base, max time.Duration, fn func() error) error {
    var err error
    wait := base
    for i := 0; i < attempts; i++ {
        if err = fn(); err == nil {
            return nil
        }
        select {
        case <-ctx.Done():
            return ctx.Err()
        case <-time.After(wait):
        }
        if wait *= 2; wait > max {
            wait = max
        }
    }
    return err
}
'''))},
    {"id": "sql-migration-invoices", "text": src(r'''
-- 0042_invoice_due_dates.sql
-- Adds a due date to invoices and backfills it as issue date + 30 days.

BEGIN;

ALTER TABLE invoices ADD COLUMN due_on date;

UPDATE invoices
SET due_on = issued_on + INTERVAL '30 days'
WHERE due_on IS NULL;

ALTER TABLE invoices ALTER COLUMN due_on SET NOT NULL;

CREATE INDEX invoices_due_on_unpaid_idx ON invoices (due_on) WHERE paid_at IS NULL;

COMMIT;
''')},
]


# ======================================================================================
# Checks of the whole set, and writing
# ======================================================================================

SWE_BENCH_VERIFIED_REPOS = {
    "astropy/astropy", "django/django", "matplotlib/matplotlib", "mwaskom/seaborn", "pallets/flask",
    "psf/requests", "pydata/xarray", "pylint-dev/pylint", "pytest-dev/pytest",
    "scikit-learn/scikit-learn", "sphinx-doc/sphinx", "sympy/sympy",
}


def check(condition, message):
    if not condition:
        fail(message)


def pr_id(record):
    return f"{record['repo']}#{record['number']}"


def file_edge_cases(changed):
    """What a changed file exercises, for the summary and the coverage checks."""
    tags = {changed["status"]}
    patch = changed["patch"]
    if patch is None:
        return tags
    before = changed["content_before"]
    after = file_after(changed)
    hunks = parse_hunks(patch, changed["filename"])
    if len(hunks) >= 2:
        tags.add("two-hunks")
    if before and not before.endswith("\n"):
        tags.add("no-final-newline-before")
    if after and not after.endswith("\n"):
        tags.add("no-final-newline-after")
    if changed["status"] != "modified":
        return tags
    strip = lambda text: re.sub(r"[ \t]+", "", text)  # noqa: E731
    if strip(before) == strip(after):
        tags.add("whitespace-only")
    entries = [entry for hunk in hunks for entry in hunk[4]]
    old_lines = split_lines(before)
    for tag, text in entries:
        if tag == "-" and len(text.strip()) > 10 and old_lines.count(text) >= 2:
            tags.add("edited-line-repeated-in-file")
    for old_start, old_count, _, _, hunk_entries in hunks:
        old_side = "".join(text for tag, text in hunk_entries if tag in " -")
        if old_side and before.count(old_side) >= 2:
            tags.add("whole-hunk-repeated-in-file")
    if hunks[0][0] == 1 and hunks[0][4][0][0] == "+":
        tags.add("insert-at-top")
    if all(tag in " -" for tag, _ in entries):
        tags.add("pure-deletion")
    if not before.endswith("\n"):
        for old_start, old_count, _, _, hunk_entries in hunks:
            line = old_start
            for tag, _ in hunk_entries:
                if tag == "-" and line == len(old_lines):
                    tags.add("last-line-changed-no-final-newline")
                if tag in " -":
                    line += 1
    return tags


def pr_edge_cases(record):
    tags = set()
    for changed in record["files"]:
        tags |= file_edge_cases(changed)
    seen = {}
    for n, c in enumerate(record["commits"], 1):
        for changed in c.get("files", []):
            tags |= {f"commit:{t}" for t in file_edge_cases(changed)}
            seen.setdefault(changed["filename"], []).append(n)
    if any(len(commits) >= 2 for commits in seen.values()):
        tags.add("same-file-in-successive-commits")
    if len(record["commits"]) >= 2:
        tags.add(f"{len(record['commits'])}-commits")
    if record["commits"] and "files" not in record["commits"][0]:
        tags.add("commits-without-files")
    if not record["merged"]:
        tags.add(f"unmerged({record['state']})")
    if record["user"]["login"].endswith("[bot]"):
        tags.add("bot-author")
    if record["repo"] in SWE_BENCH_VERIFIED_REPOS:
        tags.add("swe-bench-verified-repo")
    if record["summary"] or any(c["refined_message"] for c in record["commits"]):
        tags.add("llm-refined")
    for state in sorted({r["state"] for r in record["reviews"]}):
        tags.add(f"review:{state}")
    if record["review_comments"]:
        tags.add("inline-comments")
    py = sum(1 for f in record["files"] if f["filename"].endswith(".py"))
    tags.add(f"py-files={py}")
    return tags


def check_pr_sets(general, python):
    ids = [pr_id(r) for r in general + python]
    check(len(ids) == len(set(ids)), "duplicate PR ids")
    for record in general + python:
        check(record["files"], f"{pr_id(record)}: no files")
        for c in record["commits"]:
            check(len(c["sha"]) == 40, "sha length")
        has_files = ["files" in c for c in record["commits"]]
        check(all(has_files) or not any(has_files), f"{pr_id(record)}: commits must all or none carry files")

    tags = {pr_id(r): pr_edge_cases(r) for r in general}
    every = set().union(*tags.values())
    check(sum(not r["merged"] for r in general) >= 3, "prs-general: fewer than 3 unmerged PRs")
    bots = {r["user"]["login"] for r in general if r["user"]["login"].endswith("[bot]")}
    check({"dependabot[bot]", "renovate[bot]"} <= bots, "prs-general: dependabot and renovate PRs")
    check(sum(r["repo"] in SWE_BENCH_VERIFIED_REPOS for r in general) >= 2, "prs-general: SWE-bench repos")
    for needed in ["renamed", "added", "removed", "review:APPROVED", "review:CHANGES_REQUESTED",
                   "review:COMMENTED", "inline-comments", "same-file-in-successive-commits",
                   "llm-refined", "commits-without-files"]:
        check(needed in every, f"prs-general: nothing exercises {needed}")
    refined = [r for r in general if r["summary"]]
    check(len(refined) == 1 and all(c["refined_message"] for c in refined[0]["commits"]),
          "prs-general: exactly one PR with a summary and refined commit messages")
    check(all(c["refined_message"] is None for r in general if not r["summary"] for c in r["commits"]),
          "prs-general: refined messages only on the summary PR")
    check(any(r["linked_issues"] for r in general), "prs-general: linked issues")
    check(any(r["comments"] for r in general), "prs-general: discussion comments")
    extensions = {f["filename"].rsplit(".", 1)[-1] for r in general for f in r["files"]}
    check({"go", "rs", "js", "ts", "c", "java", "py"} <= extensions, f"prs-general languages: {extensions}")

    ptags = {pr_id(r): pr_edge_cases(r) for r in python}
    pevery = set().union(*ptags.values())
    for record in python:
        where = pr_id(record)
        check(record["merged"], f"{where}: prs-python records are merged")
        check(record["linked_issues"], f"{where}: prs-python records have a linked issue")
        check(1 <= len(record["commits"]) <= 3, f"{where}: 1-3 commits")
        check(record["repo"] not in SWE_BENCH_VERIFIED_REPOS, f"{where}: no SWE-bench repo in prs-python")
    py_counts = [sum(f["filename"].endswith(".py") for f in r["files"]) for r in python]
    check(sum(c > 5 for c in py_counts) == 1, "prs-python: exactly one PR with more than 5 Python files")
    check(sum(c == 0 for c in py_counts) == 1, "prs-python: exactly one PR without Python files")
    normal = [r for r, c in zip(python, py_counts) if 1 <= c <= 5]
    with_other = [r for r in normal if any(not f["filename"].endswith(".py") for f in r["files"])]
    check(1 <= len(with_other) <= 2, f"prs-python: {len(with_other)} PRs with a non-Python file")
    for needed in ["whitespace-only", "no-final-newline-before", "last-line-changed-no-final-newline",
                   "edited-line-repeated-in-file", "whole-hunk-repeated-in-file", "insert-at-top",
                   "pure-deletion", "two-hunks",
                   "same-file-in-successive-commits", "renamed", "added"]:
        check(needed in pevery, f"prs-python: nothing exercises {needed}")
    check(any({"no-final-newline-before", "no-final-newline-after"} <= t for t in ptags.values()),
          "prs-python: a file without a final newline on both sides")
    return tags, ptags


def strings_of(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings_of(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings_of(v)


def word_ngrams(text, n=13):
    """As davinci's decontamination counts them: lowercased runs of letters, digits, '_'."""
    words = [w.lower() for w in re.split(r"[^\w]+", text) if w]
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def check_decontamination(python, everything):
    carriers = []
    for record in python:
        for changed in record["files"]:
            after = file_after(changed)
            if after and EMBEDDED_PROMPT in after:
                carriers.append((pr_id(record), changed))
    check(len(carriers) == 1, f"the embedded prompt is in {len(carriers)} prs-python files, expected 1")
    where, changed = carriers[0]
    added = "\n".join(line[1:] for line in changed["patch"].split("\n") if line.startswith("+"))
    check(EMBEDDED_PROMPT.rstrip("\n") in added, f"{where}: the prompt is not in the added lines")
    reference = set()
    for prompt in HUMANEVAL_PROMPTS:
        reference |= word_ngrams(prompt)
    hits = []
    for name, record in everything:
        if word_ngrams("\n".join(strings_of(record))) & reference:
            hits.append(name)
    check(hits == [where], f"13-gram hits on the prompts: {hits}, expected only {where}")
    return where


def check_chat(record, where):
    messages = record["messages"]
    check(6 <= len(messages) <= 14, f"{where}: {len(messages)} messages, expected 6-14")
    pending = set()
    for i, m in enumerate(messages):
        check(m["role"] in ("system", "user", "assistant", "tool"), f"{where}: role {m['role']}")
        content = m["content"]
        check(content is None or isinstance(content, str)
              or all(part.get("type") == "text" and isinstance(part.get("text"), str) for part in content),
              f"{where} message {i}: content")
        for tc in m.get("tool_calls", []):
            check(m["role"] == "assistant", f"{where}: tool calls outside an assistant turn")
            arguments = json.loads(tc["function"]["arguments"])
            check(isinstance(arguments, dict), f"{where}: arguments must be a JSON object")
            pending.add(tc["id"])
        if m["role"] == "tool":
            check(m["tool_call_id"] in pending, f"{where}: tool result for an unknown call")
            pending.discard(m["tool_call_id"])
    check(not pending, f"{where}: tool calls without results: {pending}")


def repo_of_instance(instance_id):
    owner, _, rest = instance_id.partition("__")
    name = re.sub(r"[.-][^.-]*$", "", rest.split(".")[0]) if "." in rest else rest.rsplit("-", 1)[0]
    return f"{owner}/{name}"


def check_trajectories():
    chat = TRAJECTORIES_CHAT
    for t in chat:
        check_chat(t, t["instance_id"])
    check(sum(t["resolved"] for t in chat) == 3 and len(chat) == 8, "chat: 3 resolved of 8")
    tool_texts = ["\n".join(strings_of(m["content"]))
                  for t in chat for m in t["messages"] if m["role"] == "tool"]
    check(any("<|im_end|>" in text for text in tool_texts), "chat: no tool output holds <|im_end|>")
    check(any(isinstance(m["content"], list) for t in chat for m in t["messages"]), "chat: no list content")
    check(any(m.get("reasoning_content") for t in chat for m in t["messages"]), "chat: no reasoning")
    check(any(len(m.get("tool_calls", [])) >= 2 for t in chat for m in t["messages"]),
          "chat: no parallel calls")

    traj = list(SWE_AGENT_FILES.values())
    check([t["info"].get("resolved") for t in traj] == [True, False, False], "swe-agent: outcomes")
    check(["history" in t for t in traj] == [True, True, False], "swe-agent: history presence")
    for t in traj:
        check(t["info"]["exit_status"] == "submitted" and t["info"]["submission"].startswith("diff --git"),
              "swe-agent: info")
        for step in t["trajectory"]:
            check(set(step) >= {"thought", "action", "observation", "response"}, "swe-agent: step keys")

    for t in TRAJECTORIES_SWESMITH:
        check_chat(t, t["instance_id"])
        check(set(t) == {"instance_id", "traj_id", "model", "messages", "resolved"}, "swe-smith: keys")
    check([t["resolved"] for t in TRAJECTORIES_SWESMITH].count(True) == 2, "swe-smith: 2 resolved")

    for t in TRAJECTORIES_ROLETEXT:
        check(all(s["role"] in ("system", "user", "ai") and isinstance(s["text"], str)
                  for s in t["trajectory"]), "roletext: roles")
        check(6 <= len(t["trajectory"]) <= 14, "roletext: length")
    check([t["resolved"] for t in TRAJECTORIES_ROLETEXT].count(True) == 2, "roletext: 2 resolved")

    ids = [t["instance_id"] for t in chat + TRAJECTORIES_SWESMITH + TRAJECTORIES_ROLETEXT]
    ids += [t.get("instance_id") or name[:-len(".traj")] for name, t in SWE_AGENT_FILES.items()]
    for instance_id in ids:
        check(repo_of_instance(instance_id).lower() not in SWE_BENCH_VERIFIED_REPOS,
              f"{instance_id}: trajectories come from repositories outside SWE-bench Verified")


def jsonl(records):
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def main():
    general = [build_pr(spec) for spec in PRS_GENERAL]
    python = [build_pr(spec) for spec in PRS_PYTHON]
    tags, ptags = check_pr_sets(general, python)
    check_trajectories()
    everything = [(pr_id(r), r) for r in general + python]
    everything += [(t["instance_id"], t)
                   for t in TRAJECTORIES_CHAT + TRAJECTORIES_SWESMITH + TRAJECTORIES_ROLETEXT]
    everything += [(name, t) for name, t in SWE_AGENT_FILES.items()]
    everything += [(t["id"], t) for t in PLAIN_TEXT]
    carrier = check_decontamination(python, everything)

    outputs = {
        "prs-general.jsonl": jsonl(general),
        "prs-python.jsonl": jsonl(python),
        "trajectories-chat.jsonl": jsonl(TRAJECTORIES_CHAT),
        "trajectories-swesmith.jsonl": jsonl(TRAJECTORIES_SWESMITH),
        "trajectories-roletext.jsonl": jsonl(TRAJECTORIES_ROLETEXT),
        "plain-text.jsonl": jsonl(PLAIN_TEXT),
        "decontamination/humaneval-sample.txt": "---\n".join(HUMANEVAL_PROMPTS),
    }
    for name, record in SWE_AGENT_FILES.items():
        outputs[f"swe-agent/{name}"] = json.dumps(record, ensure_ascii=False, indent=2) + "\n"
    for name, text in outputs.items():
        if name.endswith(".jsonl"):
            for line in text.splitlines():
                json.loads(line)
    total = sum(len(text.encode()) for text in outputs.values())
    check(total < 400_000, f"the sample data is {total} bytes, over 400 KB")

    (DATA / "swe-agent").mkdir(parents=True, exist_ok=True)
    (DATA / "decontamination").mkdir(parents=True, exist_ok=True)
    for stale in (DATA / "swe-agent").glob("*.traj"):
        if f"swe-agent/{stale.name}" not in outputs:
            stale.unlink()
    for name, text in outputs.items():
        (DATA / name).write_text(text, encoding="utf-8", newline="\n")

    counts = {name: text.count("\n") if name.endswith(".jsonl") else 1 for name, text in outputs.items()}
    counts["decontamination/humaneval-sample.txt"] = len(HUMANEVAL_PROMPTS)
    print(f"wrote {len(outputs)} files, {total} bytes, under {DATA.relative_to(ROOT)}/")
    for name, text in outputs.items():
        print(f"  {name:42} {counts[name]:3} record(s)  {len(text.encode()):7} bytes")
    print("prs-general edge cases:")
    for key, value in tags.items():
        print(f"  {key:44} {', '.join(sorted(value))}")
    print("prs-python edge cases:")
    for key, value in ptags.items():
        print(f"  {key:44} {', '.join(sorted(value))}")
    print(f"benchmark prompt embedded in: {carrier}")


if __name__ == "__main__":
    try:
        main()
    except DataError as error:
        print(f"make_sample_data: {error}", file=sys.stderr)
        sys.exit(1)
