//! Loader throughput and padding on a mixture shaped like the paper's, in one run.
//!
//! Writes two synthetic datasets (PR-like documents of a few thousand tokens, capped at
//! 32K; trajectory-like documents of 8K-120K tokens, upsampled 3x), then for seq_len 32768
//! and 131072 at world size 8 times rank 0's batches and, as the baseline, a plain
//! sequential copy of the same number of tokens out of the memory-mapped shards. Prints
//! rows/s, tokens/s, the fraction of the plain copy reached, and the padding fraction.
//!
//! `cargo bench -p davinci-benches --bench loader`

use std::path::Path;
use std::time::Instant;

use davinci_benches::Lcg;
use davinci_data::dataset::{Dataset, Manifest};
use davinci_data::loader::{Loader, LoaderConfig, LoaderState, LongDocuments, MixtureEntry};
use davinci_data::shard::ShardWriter;

fn write(dir: &Path, lengths: &[u32]) -> Dataset {
    let mut writer = ShardWriter::new(dir, 16 << 20).expect("writer");
    let mut rng = Lcg(3);
    for &len in lengths {
        let ids: Vec<u32> = (0..len).map(|_| (rng.next_u64() % 150_000) as u32).collect();
        writer.push(&ids, &vec![true; len as usize]).expect("push");
    }
    let shards = writer.finish().expect("finish");
    Manifest::for_shards(&dir.display().to_string(), "text", "bench", shards).write(dir).expect("manifest");
    Dataset::open(dir).expect("open")
}

fn main() {
    let mut rng = Lcg(17);
    // PR-like: mostly 1K-8K tokens with a tail to 32K.
    let prs: Vec<u32> = (0..2500)
        .map(|_| {
            let base = 1000 + rng.next_u64() % 7000;
            let tail = if rng.next_u64().is_multiple_of(10) { rng.next_u64() % 24_000 } else { 0 };
            (base + tail) as u32
        })
        .collect();
    let trajectories: Vec<u32> = (0..200).map(|_| (8_000 + rng.next_u64() % 112_000) as u32).collect();
    let (a, b) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
    let (pr_data, traj_data) = (write(a.path(), &prs), write(b.path(), &trajectories));
    let world = 8;
    for seq_len in [32_768u32, 131_072] {
        let entries = vec![
            MixtureEntry { dataset: Dataset::open(a.path()).expect("open"), upsample: 1.0 },
            MixtureEntry { dataset: Dataset::open(b.path()).expect("open"), upsample: 3.0 },
        ];
        let config = LoaderConfig {
            seq_len,
            global_rows: world,
            window: 8192,
            long_documents: LongDocuments::Split,
            seed: 1,
            pad_id: 0,
            loss_mask: true,
        };
        let mut loader = Loader::new(entries, config, LoaderState::default()).expect("loader");
        let stats = loader.epoch_stats(0);
        let steps = (stats.rows as usize / world).min(200);
        let start = Instant::now();
        let mut tokens = 0usize;
        for _ in 0..steps {
            let batch = loader.next_batch(0, world).expect("batch");
            tokens += batch.input_ids.len();
        }
        let elapsed = start.elapsed().as_secs_f64();

        // Baseline: copy the same number of tokens straight out of the mapped shards.
        let start = Instant::now();
        let mut copied = 0usize;
        let mut sink: Vec<u32> = Vec::with_capacity(seq_len as usize);
        'copy: loop {
            for shard in pr_data.shards.iter().chain(&traj_data.shards) {
                for chunk in shard.tokens().chunks(seq_len as usize) {
                    sink.clear();
                    sink.extend_from_slice(chunk);
                    copied += chunk.len();
                    if copied >= tokens {
                        break 'copy;
                    }
                }
            }
        }
        std::hint::black_box(&sink);
        let baseline = start.elapsed().as_secs_f64();
        println!(
            "seq_len {seq_len}, world {world}, rank 0: {:.0} rows/s, {:.2}M tokens/s; plain copy {:.2}M tokens/s; loader reaches {:.0}% of it",
            steps as f64 / elapsed,
            tokens as f64 / elapsed / 1e6,
            copied as f64 / baseline / 1e6,
            100.0 * (tokens as f64 / elapsed) / (copied as f64 / baseline)
        );
        println!(
            "  epoch: {} documents, {} rows, padding {:.2}%, {} split; trajectories' share {:.1}%",
            stats.documents,
            stats.rows,
            100.0 * stats.padding_fraction,
            stats.split_documents,
            100.0 * stats.share_per_source[1]
        );
    }
}
