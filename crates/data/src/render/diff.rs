//! Unified-diff hunks as GitHub's API returns them: parsing, applying to a file's old
//! content, and turning them into search/replace edits that apply in order.

/// What a line of a hunk does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    Context,
    Removed,
    Added,
}

/// A line of a hunk with its terminator (none where `\ No newline at end of file` says so).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HunkLine {
    pub kind: LineKind,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hunk {
    /// 1-based first old line (for an insertion into nothing, the line before it).
    pub old_start: usize,
    pub old_len: usize,
    pub new_start: usize,
    pub new_len: usize,
    pub lines: Vec<HunkLine>,
}

impl Hunk {
    fn old_lines(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().filter(|l| l.kind != LineKind::Added).map(|l| l.text.as_str())
    }
    fn new_lines(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().filter(|l| l.kind != LineKind::Removed).map(|l| l.text.as_str())
    }
}

/// Parses the hunks of one file's patch, checking each header's line counts.
pub fn parse_patch(patch: &str) -> Result<Vec<Hunk>, String> {
    let mut hunks: Vec<Hunk> = Vec::new();
    for (n, raw) in patch.split_inclusive('\n').enumerate() {
        let line = raw.strip_suffix('\n').unwrap_or(raw);
        if let Some(header) = line.strip_prefix("@@ ") {
            hunks.push(parse_header(header).map_err(|e| format!("patch line {}: {e}", n + 1))?);
            continue;
        }
        let hunk = hunks
            .last_mut()
            .ok_or_else(|| format!("patch line {}: text before the first @@ header", n + 1))?;
        if line.starts_with('\\') {
            // `\ No newline at end of file`: the previous line has no terminator.
            if let Some(previous) = hunk.lines.last_mut() {
                if previous.text.ends_with('\n') {
                    previous.text.pop();
                }
            }
            continue;
        }
        let (kind, body) = match line.chars().next() {
            Some(' ') => (LineKind::Context, &line[1..]),
            Some('-') => (LineKind::Removed, &line[1..]),
            Some('+') => (LineKind::Added, &line[1..]),
            // Some exporters drop the space of an empty context line.
            None => (LineKind::Context, ""),
            Some(_) => return Err(format!("patch line {}: not a diff line: {line:?}", n + 1)),
        };
        hunk.lines.push(HunkLine { kind, text: format!("{body}\n") });
    }
    for hunk in &hunks {
        let old = hunk.old_lines().count();
        let new = hunk.new_lines().count();
        if old != hunk.old_len || new != hunk.new_len {
            return Err(format!(
                "hunk @@ -{},{} +{},{} @@ has {old} old and {new} new lines",
                hunk.old_start, hunk.old_len, hunk.new_start, hunk.new_len
            ));
        }
    }
    Ok(hunks)
}

fn parse_header(header: &str) -> Result<Hunk, String> {
    let ranges = header.split(" @@").next().unwrap_or("");
    let mut parts = ranges.split(' ');
    let old = parts.next().and_then(|p| p.strip_prefix('-')).ok_or("no old range")?;
    let new = parts.next().and_then(|p| p.strip_prefix('+')).ok_or("no new range")?;
    let range = |r: &str| -> Result<(usize, usize), String> {
        let mut it = r.split(',');
        let start = it.next().unwrap_or("").parse().map_err(|_| format!("bad range {r:?}"))?;
        let len = match it.next() {
            Some(l) => l.parse().map_err(|_| format!("bad range {r:?}"))?,
            None => 1,
        };
        Ok((start, len))
    };
    let ((old_start, old_len), (new_start, new_len)) = (range(old)?, range(new)?);
    Ok(Hunk { old_start, old_len, new_start, new_len, lines: Vec::new() })
}

/// The file after applying `hunks` to `old`; every context and removed line must match.
pub fn apply_hunks(old: &str, hunks: &[Hunk]) -> Result<String, String> {
    let lines: Vec<&str> = old.split_inclusive('\n').collect();
    let mut out = String::with_capacity(old.len());
    let mut next = 0;
    for hunk in hunks {
        let at = if hunk.old_len == 0 { hunk.old_start } else { hunk.old_start.saturating_sub(1) };
        if at < next || at > lines.len() {
            return Err(format!("hunk at old line {} is out of order or past the end", hunk.old_start));
        }
        lines[next..at].iter().for_each(|l| out.push_str(l));
        for (offset, expected) in hunk.old_lines().enumerate() {
            if lines.get(at + offset) != Some(&expected) {
                return Err(format!(
                    "hunk at old line {} does not match line {}",
                    hunk.old_start,
                    at + offset + 1
                ));
            }
        }
        hunk.new_lines().for_each(|l| out.push_str(l));
        next = at + hunk.old_len;
    }
    lines[next..].iter().for_each(|l| out.push_str(l));
    Ok(out)
}

/// Replace the single occurrence of `search` in the file with `replace`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub search: String,
    pub replace: String,
}

/// Occurrences of `needle` in `haystack`, overlapping ones included.
fn occurrences(haystack: &str, needle: &str) -> usize {
    let mut count = 0;
    let mut from = 0;
    while let Some(pos) = haystack[from..].find(needle) {
        count += 1;
        from += pos + needle.chars().next().map_or(1, char::len_utf8);
    }
    count
}

/// Applies edits in order; each search text must occur exactly once when its turn comes.
pub fn apply_edits(old: &str, edits: &[Edit]) -> Result<String, String> {
    let mut text = old.to_string();
    for (i, edit) in edits.iter().enumerate() {
        if edit.search.is_empty() {
            if !text.is_empty() {
                return Err(format!("edit {}: empty search text on a non-empty file", i + 1));
            }
            text = edit.replace.clone();
            continue;
        }
        match occurrences(&text, &edit.search) {
            1 => text = text.replacen(&edit.search, &edit.replace, 1),
            n => return Err(format!("edit {}: search text occurs {n} times", i + 1)),
        }
    }
    Ok(text)
}

/// Search/replace edits equivalent to `hunks` on `old`: one per hunk, its search text
/// the hunk's old lines, widened by surrounding lines until it occurs once in the file
/// as it stands when the edit applies. Checked: applying them gives what the hunks give.
pub fn hunks_to_edits(old: &str, hunks: &[Hunk]) -> Result<Vec<Edit>, String> {
    let expected = apply_hunks(old, hunks)?;
    let mut current: Vec<String> = old.split_inclusive('\n').map(String::from).collect();
    let mut shift: isize = 0;
    let mut edits = Vec::with_capacity(hunks.len());
    for hunk in hunks {
        let old_at = if hunk.old_len == 0 { hunk.old_start } else { hunk.old_start.saturating_sub(1) };
        let start = (old_at as isize + shift) as usize;
        let new_lines: Vec<String> = hunk.new_lines().map(String::from).collect();
        let (mut lo, mut hi) = (start, start + hunk.old_len);
        let text = current.concat();
        loop {
            let search = current[lo..hi].concat();
            let unique = !search.is_empty() && occurrences(&text, &search) == 1;
            if unique || (lo == 0 && hi == current.len()) {
                let replace = [&current[lo..start], new_lines.as_slice(), &current[start + hunk.old_len..hi]]
                    .concat()
                    .concat();
                edits.push(Edit { search, replace });
                break;
            }
            // Widen by a line on each side that still has one.
            lo = lo.saturating_sub(1);
            hi = (hi + 1).min(current.len());
        }
        current.splice(start..start + hunk.old_len, new_lines.iter().cloned());
        shift += hunk.new_len as isize - hunk.old_len as isize;
    }
    let got = apply_edits(old, &edits)?;
    if got != expected {
        return Err("search/replace edits do not reproduce the patched file".into());
    }
    Ok(edits)
}
