#!/usr/bin/env python3
"""Writes davinci's bundled sample data under recipes/data/ from scripts/sample_data/.

Rerun it from the repository root whenever a record changes (Python 3 standard library
and the `git` command; the output is the same on every run):

    python3 scripts/make_sample_data.py

It writes, replacing what is there (shapes as in docs/records.md):

- recipes/data/prs-general.jsonl           pull requests in Go, Rust, JS/TS, C, Java, Python
- recipes/data/prs-python.jsonl            merged Python pull requests (with the two that the
                                           1-5 Python-file filter drops)
- recipes/data/trajectories-chat.jsonl     OpenAI-style chat trajectories with tool calls
- recipes/data/swe-agent/*.traj            SWE-agent trajectory files (one JSON object each)
- recipes/data/trajectories-swesmith.jsonl SWE-smith / SWE-Gym-style trajectories
- recipes/data/trajectories-roletext.jsonl {role, text} trajectories ("ai" = assistant)
- recipes/data/plain-text.jsonl            already-rendered text
- recipes/data/decontamination/humaneval-sample.txt
                                           benchmark-style prompts separated by `---` lines;
                                           one is pasted into a prs-python record so that
                                           the n-gram decontamination has a hit

The records live in scripts/sample_data/: the trajectories, plain text and swe-agent files
as indented JSON (`<output name>.json`, `swe-agent.json` maps file names to records), the
prompts as `humaneval-prompts/<n>.txt`, and each pull request as a folder
`prs-<set>/<NN>-<owner>__<repo>-<number>/` (NN is its place in the output) holding:

- pr.json     the record as written (same keys, same order) without its `files` lists;
              each commit may add `renamed` ({old path: new path}) and `removed`
              ([path]), and `commit_files` says whether the commits carry `files`
- base/       the files the PR touches, as they are at the base
- commit-N/   the files commit N adds or changes, as they are after it

The diffs inside trajectories (an agent's submission, a `git diff` it ran) are part of the
transcripts and stay as they are stored.

Every stored file name has `.txt` appended, so that tools that go by extension do not take
the samples for the project's code. Each `files[].patch` (PR-level: base to last commit;
per commit: previous commit to this one) is made by git itself: the script writes the
contents as trees in a temporary repository and takes `git diff -M40% -U3` between them,
keeping only the hunks, as GitHub's REST API gives them: no `diff --git`/`index`/`---`/`+++`
lines, git's hunk headers with their function context, `\\ No newline at end of file`
where a side lacks its final newline, and no newline after the last line. Git's diff (its
indent heuristic, hunk placement, function context) is what the pipeline meets in real
data, so asking git is both shorter and truer than imitating it. Renames are those git
detects and must be the ones pr.json declares (40% similarity, as the tox record's renamed
module keeps 49% of its content; git's default is 50%).

Before writing, it checks that review comments sit on lines the diff shows, that the edge
cases the tests rely on are present, that only the one intended record shares a 13-word
n-gram with the benchmark prompts, and the trajectories' outcomes.

Everything in the records (code, prose, issue and PR numbers, accounts) is invented for
this sample; repository names are real so that the data looks like what the pipeline
meets, and two records come from SWE-bench Verified repositories (django/django,
psf/requests) so that the repository decontamination has something to drop.
"""

import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCE = ROOT / "scripts" / "sample_data"
DATA = ROOT / "recipes" / "data"
SWE_BENCH_VERIFIED_REPOS = {
    "astropy/astropy", "django/django", "matplotlib/matplotlib", "mwaskom/seaborn", "pallets/flask",
    "psf/requests", "pydata/xarray", "pylint-dev/pylint", "pytest-dev/pytest",
    "scikit-learn/scikit-learn", "sphinx-doc/sphinx", "sympy/sympy",
}


class DataError(Exception):
    """A record that is not what it claims to be."""


def check(condition, message):
    if not condition:
        raise DataError(message)


def read_json(path):
    return json.loads(path.read_bytes().decode("utf-8"))


def read_tree(folder):
    """{path: content} of the `.txt` files below folder, read byte for byte."""
    return {
        path.relative_to(folder).as_posix()[: -len(".txt")]: path.read_bytes().decode("utf-8")
        for path in sorted(folder.rglob("*.txt"))
    }


class Git:
    """A scratch repository, run with no user or system configuration."""

    def __init__(self, where):
        self.where = where
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        self.env.update(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1", LC_ALL="C")
        self.run("init", "-q")

    def run(self, *args, text=""):
        done = subprocess.run(
            ["git", "-c", "core.attributesFile=" + os.devnull, "-c", "core.quotePath=false", *args],
            cwd=self.where, env=self.env, input=text.encode("utf-8"), capture_output=True,
        )
        if done.returncode != 0:
            raise DataError(f"git {' '.join(args)}: {done.stderr.decode(errors='replace')}")
        return done.stdout.decode("utf-8")

    def tree(self, files):
        entries = "".join(
            f"100644 {self.run('hash-object', '-w', '--stdin', text=content).strip()}\t{path}\n"
            for path, content in sorted(files.items())
        )
        self.run("read-tree", "--empty")
        self.run("update-index", "--index-info", text=entries)
        return self.run("write-tree").strip()

    def changed_files(self, before, after):
        """The `files` of GitHub's REST API from one {path: content} state to the next."""
        out = self.run("diff", "--no-color", "--no-ext-diff", "--no-textconv", "-M40%", "-U3",
                       "--indent-heuristic", "--src-prefix=a/", "--dst-prefix=b/",
                       self.tree(before), self.tree(after))
        files = []
        for section in re.split(r"(?m)^(?=diff --git )", out)[1:]:
            head, _, hunks = section.partition("\n@@")
            status, old, new = "modified", None, None
            for line in head.split("\n")[1:]:
                if line.startswith("new file mode"):
                    status = "added"
                elif line.startswith("deleted file mode"):
                    status = "removed"
                elif line.startswith("rename from "):
                    status, old = "renamed", line[len("rename from "):]
                elif line.startswith("rename to "):
                    new = line[len("rename to "):]
                elif line.startswith("--- a/"):
                    old = line[len("--- a/"):]
                elif line.startswith("+++ b/"):
                    new = line[len("+++ b/"):]
            check(hunks or status == "renamed", f"git diff: no hunks in {head!r}")
            files.append({
                "filename": new or old,
                "status": status,
                "previous_filename": old if status == "renamed" else None,
                "content_before": before[old] if old else None,
                "patch": ("@@" + hunks)[:-1] if hunks else None,
            })
        return sorted(files, key=lambda f: f["filename"])


def build_pr(git, folder):
    meta = read_json(folder / "pr.json")
    where = f"{meta['repo']}#{meta['number']}"
    commit_files = meta.pop("commit_files")
    base = read_tree(folder / "base")
    state = dict(base)
    for n, c in enumerate(meta["commits"], 1):
        before = dict(state)
        renamed = c.pop("renamed", {})
        for old, new in renamed.items():
            state[new] = state.pop(old)
        for path in c.pop("removed", []):
            del state[path]
        state.update(read_tree(folder / f"commit-{n}"))
        files = git.changed_files(before, state)
        found = {f["previous_filename"]: f["filename"] for f in files if f["status"] == "renamed"}
        check(found == renamed, f"{where} commit {n}: git finds renames {found}, pr.json says {renamed}")
        if commit_files:
            c["files"] = files
    files = git.changed_files(base, state)
    check({f["filename"] for f in files} | {f["previous_filename"] for f in files} >= set(base),
          f"{where}: a base file the PR leaves unchanged")
    patches = {f["filename"]: f["patch"] for f in files}
    for rc in meta["review_comments"]:
        check(rc["line"] in shown_lines(patches.get(rc["path"]) or ""),
              f"{where}: review comment on {rc['path']}:{rc['line']}, a line the diff does not show")
    record = {}
    for key, value in meta.items():
        record[key] = value
        if key == "linked_issues":
            record["files"] = files
    return record, edge_cases(record, state)


def shown_lines(patch):
    """Line numbers of the new side that a patch shows (context and added lines)."""
    shown, line = set(), 0
    for text in patch.split("\n"):
        if text.startswith("@@"):
            line = int(re.match(r"@@ -\S+ \+(\d+)", text).group(1))
        elif text[:1] in (" ", "+"):
            shown.add(line)
            line += 1
    return shown


def file_edge_cases(f, after):
    """What a changed file exercises in the patch appliers."""
    tags, before, patch = {f["status"]}, f["content_before"], f["patch"] or ""
    tags |= {"no-final-newline-before"} if before and not before.endswith("\n") else set()
    tags |= {"no-final-newline-after"} if after and not after.endswith("\n") else set()
    tags |= {"two-hunks"} if patch.count("\n@@ ") else set()
    if f["status"] != "modified":
        return tags
    old_lines = before.split("\n")
    hunks = [h.split("\n") for h in re.split(r"(?m)^@@ .*\n?", patch)[1:]]
    conditions = {
        "whitespace-only": re.sub(r"[ \t]+", "", before) == re.sub(r"[ \t]+", "", after),
        "pure-deletion": not re.search(r"(?m)^\+", patch),
        "insert-at-top": re.match(r"@@ -1[ ,].*\n\+", patch),
        "last-line-changed-no-final-newline": re.search(r"(?m)^-.*\n\\ No newline", patch),
        "edited-line-repeated-in-file": any(
            l[:1] == "-" and len(l.strip()) > 11 and old_lines.count(l[1:]) >= 2 for h in hunks for l in h),
        "whole-hunk-repeated-in-file": any(
            before.count("".join(l[1:] + "\n" for l in h if l[:1] in " -")) >= 2 for h in hunks),
    }
    return tags | {tag for tag, holds in conditions.items() if holds}


def edge_cases(record, state):
    tags = {"py-files=%d" % sum(f["filename"].endswith(".py") for f in record["files"])}
    for f in record["files"]:
        tags |= file_edge_cases(f, state.get(f["filename"]))
    touched = [f["filename"] for c in record["commits"] for f in c.get("files", [])]
    tags |= {"same-file-in-successive-commits"} if len(touched) > len(set(touched)) else set()
    tags |= {"commits-without-files"} if "files" not in record["commits"][0] else set()
    tags |= {"unmerged"} if not record["merged"] else set()
    tags |= {"swe-bench-verified-repo"} if record["repo"] in SWE_BENCH_VERIFIED_REPOS else set()
    tags |= {"review:" + r["state"] for r in record["reviews"]}
    tags |= {"inline-comments"} if record["review_comments"] else set()
    return tags


def check_prs(general, python):
    def everyone(records):
        return set().union(*(tags for _, tags in records))

    for needed in ["renamed", "added", "removed", "review:APPROVED", "review:CHANGES_REQUESTED",
                   "review:COMMENTED", "inline-comments", "same-file-in-successive-commits",
                   "commits-without-files", "swe-bench-verified-repo"]:
        check(needed in everyone(general), f"prs-general: nothing exercises {needed}")
    for needed in ["whitespace-only", "no-final-newline-before", "last-line-changed-no-final-newline",
                   "edited-line-repeated-in-file", "whole-hunk-repeated-in-file", "insert-at-top",
                   "pure-deletion", "two-hunks", "same-file-in-successive-commits", "renamed", "added"]:
        check(needed in everyone(python), f"prs-python: nothing exercises {needed}")
    records = [r for r, _ in general]
    check(sum(not r["merged"] for r in records) >= 3, "prs-general: fewer than 3 unmerged PRs")
    check({"dependabot[bot]", "renovate[bot]"} <= {r["user"]["login"] for r in records}, "prs-general: bots")
    check(len([r for r in records if r["summary"]]) == 1, "prs-general: one PR with an LLM summary")
    for r, tags in python:
        check(r["merged"] and r["linked_issues"] and 1 <= len(r["commits"]) <= 3
              and "swe-bench-verified-repo" not in tags, f"{r['repo']}#{r['number']}: prs-python shape")
    py_files = [sum(f["filename"].endswith(".py") for f in r["files"]) for r, _ in python]
    check(py_files.count(0) == 1 and sum(n > 5 for n in py_files) == 1,
          "prs-python: exactly one PR without and one with more than 5 Python files")
    check(any({"no-final-newline-before", "no-final-newline-after"} <= tags for _, tags in python),
          "prs-python: a file without a final newline on both sides")


def strings_of(value):
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return "\n".join(strings_of(v) for v in value)
    return value if isinstance(value, str) else ""


def word_ngrams(text, n=13):
    """As davinci's decontamination counts them: lowercased runs of letters, digits, '_'."""
    words = [w.lower() for w in re.split(r"[^\w]+", text) if w]
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def jsonl(records):
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def main():
    with tempfile.TemporaryDirectory() as scratch:
        git = Git(scratch)
        prs = {name: [build_pr(git, folder) for folder in sorted((SOURCE / name).iterdir()) if folder.is_dir()]
               for name in ("prs-general", "prs-python")}
    check_prs(prs["prs-general"], prs["prs-python"])
    chat, swesmith, roletext, swe_agent, plain = (
        read_json(SOURCE / f"{name}.json") for name in
        ("trajectories-chat", "trajectories-swesmith", "trajectories-roletext", "swe-agent", "plain-text"))
    prompts = [path.read_bytes().decode("utf-8")
               for path in sorted((SOURCE / "humaneval-prompts").glob("*.txt"), key=lambda p: int(p.stem))]

    check(any("<|im_end|>" in strings_of(m["content"]) for t in chat for m in t["messages"]
              if m["role"] == "tool"), "chat: no tool output holds <|im_end|>")
    check([sum(t["resolved"] for t in ts) for ts in (chat, swesmith, roletext)] == [3, 2, 2]
          and [t["info"].get("resolved") for t in swe_agent.values()] == [True, False, False],
          "trajectories: outcomes")
    everything = [(f"{r['repo']}#{r['number']}", r) for built in prs.values() for r, _ in built]
    everything += [(t["instance_id"], t) for t in chat + swesmith + roletext]
    everything += list(swe_agent.items()) + [(t["id"], t) for t in plain]
    reference = set().union(*(word_ngrams(p) for p in prompts))
    hits = [name for name, record in everything if word_ngrams(strings_of(record)) & reference]
    python_ids = {f"{r['repo']}#{r['number']}" for r, _ in prs["prs-python"]}
    check(len(hits) == 1 and hits[0] in python_ids, f"13-gram hits on the prompts: {hits}, expected one prs-python PR")

    outputs = {name: jsonl(r for r, _ in built) for name, built in
               (("prs-general.jsonl", prs["prs-general"]), ("prs-python.jsonl", prs["prs-python"]))}
    outputs.update({"trajectories-chat.jsonl": jsonl(chat), "trajectories-swesmith.jsonl": jsonl(swesmith),
                    "trajectories-roletext.jsonl": jsonl(roletext), "plain-text.jsonl": jsonl(plain),
                    "decontamination/humaneval-sample.txt": "---\n".join(prompts)})
    for name, record in swe_agent.items():
        outputs[f"swe-agent/{name}"] = json.dumps(record, ensure_ascii=False, indent=2) + "\n"
    total = sum(len(text.encode()) for text in outputs.values())
    check(total < 400_000, f"the sample data is {total} bytes, over 400 KB")

    (DATA / "swe-agent").mkdir(parents=True, exist_ok=True)
    (DATA / "decontamination").mkdir(parents=True, exist_ok=True)
    for stale in (DATA / "swe-agent").glob("*.traj"):
        if f"swe-agent/{stale.name}" not in outputs:
            stale.unlink()
    for name, text in outputs.items():
        (DATA / name).write_bytes(text.encode("utf-8"))
    print(f"wrote {len(outputs)} files, {total} bytes, under {DATA.relative_to(ROOT)}/")
    for name, text in outputs.items():
        print(f"  {name:42} {len(text.encode()):7} bytes")
    for name, built in prs.items():
        print(f"{name} edge cases:")
        for r, tags in built:
            print(f"  {r['repo'] + '#' + str(r['number']):44} {', '.join(sorted(tags))}")
    print(f"benchmark prompt embedded in: {hits[0]}")


if __name__ == "__main__":
    try:
        main()
    except DataError as error:
        print(f"make_sample_data: {error}", file=sys.stderr)
        sys.exit(1)
