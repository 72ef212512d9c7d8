//! Shared pieces of the workspace benchmarks: generated inputs and timing.

use std::time::{Duration, Instant};

/// Best wall time of `runs` calls of `f` (after one warm-up call).
pub fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut out = f();
    let mut best = Duration::MAX;
    for _ in 0..runs {
        let start = Instant::now();
        out = f();
        best = best.min(start.elapsed());
    }
    (best, out)
}

/// A deterministic stream of pseudo-random numbers (no dependency, same on every machine).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next_u64() as usize) % items.len()]
    }
}

/// Python-looking source of `lines` lines.
pub fn python_source(rng: &mut Lcg, lines: usize) -> String {
    const NAMES: [&str; 10] =
        ["value", "result", "items", "config", "parser", "token", "index", "buffer", "record", "path"];
    const OPS: [&str; 6] = ["+", "-", "*", "//", "%", "|"];
    let mut text = String::new();
    for i in 0..lines {
        match i % 6 {
            0 => text.push_str(&format!("def {}_{}({}):\n", rng.pick(&NAMES), i, rng.pick(&NAMES))),
            5 => text.push('\n'),
            _ => text.push_str(&format!(
                "    {} = {} {} {}  # {} the {}\n",
                rng.pick(&NAMES),
                rng.pick(&NAMES),
                rng.pick(&OPS),
                rng.next_u64() % 1000,
                rng.pick(&["update", "check", "parse", "merge"]),
                rng.pick(&NAMES)
            )),
        }
    }
    text
}
