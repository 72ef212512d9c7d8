//! The loader: determinism, disjoint and complete coverage across ranks, exact resume,
//! the same global batches at any world size, upsampling, packing that never crosses a
//! document, and the padding fraction.

use std::collections::BTreeMap;
use std::path::Path;

use davinci_data::dataset::{Dataset, Manifest};
use davinci_data::loader::{Batch, Loader, LoaderConfig, LoaderState, LongDocuments, MixtureEntry, IGNORE};
use davinci_data::shard::ShardWriter;

/// Writes a dataset whose document `d` holds tokens `tag * 1_000_000 + d * 1000 + i`, so
/// that every token names its document; every third token carries no loss.
fn dataset(dir: &Path, tag: u32, lengths: &[u32]) -> Dataset {
    let mut writer = ShardWriter::new(dir, 5_000).unwrap();
    for (d, &len) in lengths.iter().enumerate() {
        let ids: Vec<u32> = (0..len).map(|i| tag * 1_000_000 + d as u32 * 1000 + i % 1000).collect();
        let loss: Vec<bool> = (0..len).map(|i| i % 3 != 1).collect();
        writer.push(&ids, &loss).unwrap();
    }
    let shards = writer.finish().unwrap();
    Manifest::for_shards(&format!("d{tag}"), "text", "same", shards).write(dir).unwrap();
    Dataset::open(dir).unwrap()
}

fn lengths(count: usize, seed: u32, max: u32) -> Vec<u32> {
    (0..count as u32).map(|i| 1 + (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 7) % max).collect()
}

struct Fixture {
    _dirs: Vec<tempfile::TempDir>,
}

fn mixture(upsample: (f64, f64)) -> (Fixture, Vec<MixtureEntry>) {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let entries = vec![
        MixtureEntry { dataset: dataset(a.path(), 1, &lengths(60, 1, 90)), upsample: upsample.0 },
        MixtureEntry { dataset: dataset(b.path(), 2, &lengths(25, 2, 150)), upsample: upsample.1 },
    ];
    (Fixture { _dirs: vec![a, b] }, entries)
}

fn config() -> LoaderConfig {
    LoaderConfig {
        seq_len: 64,
        global_rows: 4,
        window: 16,
        long_documents: LongDocuments::Split,
        seed: 11,
        pad_id: 0,
        loss_mask: true,
    }
}

fn loader(upsample: (f64, f64), config: LoaderConfig, state: LoaderState) -> (Fixture, Loader) {
    let (fixture, entries) = mixture(upsample);
    (fixture, Loader::new(entries, config, state).unwrap())
}

/// Each segment of a batch: (tokens, labels, positions).
fn segments(batch: &Batch) -> Vec<(Vec<u32>, Vec<i64>, Vec<u32>)> {
    batch
        .cu_seqlens
        .windows(2)
        .map(|w| {
            let r = w[0] as usize..w[1] as usize;
            (
                batch.input_ids[r.clone()].to_vec(),
                batch.labels[r.clone()].to_vec(),
                batch.position_ids[r].to_vec(),
            )
        })
        .collect()
}

#[test]
fn rows_never_cross_a_document() {
    let (_f, mut loader) = loader((1.0, 3.0), config(), LoaderState::default());
    for _ in 0..30 {
        let batch = loader.next_batch(0, 1).unwrap();
        assert_eq!(batch.input_ids.len(), batch.rows * batch.seq_len);
        // No segment straddles two rows.
        assert!(batch.cu_seqlens.windows(2).all(|w| (w[0] as usize / 64) == ((w[1] as usize - 1) / 64)));
        for (tokens, labels, positions) in segments(&batch) {
            assert_eq!(
                positions,
                (0..tokens.len() as u32).collect::<Vec<_>>(),
                "positions restart per piece"
            );
            let doc = tokens[0] / 1000;
            let padding = tokens.iter().all(|&t| t == 0);
            assert!(padding || tokens.iter().all(|&t| t / 1000 == doc), "one document per segment");
            assert_eq!(*labels.last().unwrap(), IGNORE, "no label past the end of a piece");
            for t in 0..tokens.len() - 1 {
                let label = labels[t];
                assert!(
                    label == IGNORE || label == tokens[t + 1] as i64,
                    "label is the next token of the same piece"
                );
                if !padding && label == IGNORE {
                    // Only where the next token carries no loss (token index i % 3 == 1).
                    assert_eq!((tokens[t + 1] % 1000) % 3, 1);
                }
            }
        }
    }
}

fn epoch_batches(loader: &mut Loader, rank: usize, world: usize) -> Vec<Batch> {
    let mut out = Vec::new();
    while loader.state().epoch == 0 {
        out.push(loader.next_batch(rank, world).unwrap());
    }
    out
}

/// Real tokens of batches, counted per value.
fn token_counts(batches: &[Batch]) -> BTreeMap<u32, usize> {
    let mut counts = BTreeMap::new();
    for batch in batches {
        for (tokens, _, _) in segments(batch) {
            if tokens.iter().any(|&t| t != 0) {
                for t in tokens {
                    *counts.entry(t).or_default() += 1;
                }
            }
        }
    }
    counts
}

#[test]
fn ranks_share_an_epoch_disjointly_and_completely_with_upsampling() {
    let (_f, mut single) = loader((1.0, 3.0), config(), LoaderState::default());
    let all = epoch_batches(&mut single, 0, 1);
    let counts = token_counts(&all);
    // Dataset 2 is visited three times, dataset 1 once.
    let a_doc0 = lengths(60, 1, 90)[0];
    assert_eq!(counts[&1_000_000], 1);
    assert_eq!(counts[&2_000_000], 3);
    assert_eq!(
        counts.iter().filter(|(&t, _)| t / 1000 == 1000).map(|(_, c)| c).sum::<usize>(),
        a_doc0 as usize
    );

    for world in [2, 4] {
        let mut per_rank = Vec::new();
        for rank in 0..world {
            let (_f, mut l) = loader((1.0, 3.0), config(), LoaderState::default());
            per_rank.push(epoch_batches(&mut l, rank, world));
        }
        let mut union = BTreeMap::new();
        for batches in &per_rank {
            for (t, c) in token_counts(batches) {
                *union.entry(t).or_insert(0) += c;
            }
        }
        assert_eq!(union, counts, "world {world}: the ranks together see the epoch exactly once");
    }
}

/// Rows of a global batch, as sorted token vectors (world-size independent view).
fn global_rows(batches: &[Batch]) -> Vec<Vec<u32>> {
    let mut rows: Vec<Vec<u32>> =
        batches.iter().flat_map(|b| b.input_ids.chunks(b.seq_len).map(<[u32]>::to_vec)).collect();
    rows.sort();
    rows
}

#[test]
fn global_batches_do_not_depend_on_world_size_and_ranks_are_balanced() {
    let steps = 12;
    let (_f, mut reference) = loader((1.0, 3.0), config(), LoaderState::default());
    let expected: Vec<Vec<Vec<u32>>> =
        (0..steps).map(|_| global_rows(&[reference.next_batch(0, 1).unwrap()])).collect();
    for world in [2, 4] {
        let mut loaders: Vec<_> =
            (0..world).map(|_| loader((1.0, 3.0), config(), LoaderState::default())).collect();
        for (step, want) in expected.iter().enumerate() {
            let parts: Vec<Batch> =
                loaders.iter_mut().enumerate().map(|(r, (_, l))| l.next_batch(r, world).unwrap()).collect();
            assert!(parts.iter().all(|b| b.rows == 4 / world));
            assert_eq!(&global_rows(&parts), want, "world {world}, step {step}");
        }
    }
}

#[test]
fn the_same_seed_gives_the_same_rows_and_another_seed_does_not() {
    let (_f, mut a) = loader((1.0, 3.0), config(), LoaderState::default());
    let (_g, mut b) = loader((1.0, 3.0), config(), LoaderState::default());
    let (_h, mut c) = loader((1.0, 3.0), LoaderConfig { seed: 12, ..config() }, LoaderState::default());
    let (mut same, mut differ) = (true, false);
    for _ in 0..10 {
        let (x, y, z) =
            (a.next_batch(0, 1).unwrap(), b.next_batch(0, 1).unwrap(), c.next_batch(0, 1).unwrap());
        same &= x == y;
        differ |= x != z;
    }
    assert!(same && differ);
}

#[test]
fn resume_from_state_continues_exactly_across_epochs() {
    let (_f, mut original) = loader((0.5, 3.0), config(), LoaderState::default());
    let mut states = Vec::new();
    let mut batches = Vec::new();
    for _ in 0..80 {
        states.push(original.state());
        batches.push(original.next_batch(1, 2).unwrap());
    }
    assert!(original.state().epoch >= 1, "the run crosses an epoch boundary");
    for at in [0, 1, 17, 45, 79] {
        let state: LoaderState = serde_json::from_str(&serde_json::to_string(&states[at]).unwrap()).unwrap();
        let (_g, mut resumed) = loader((0.5, 3.0), config(), state);
        for (i, want) in batches[at..(at + 5).min(80)].iter().enumerate() {
            assert_eq!(&resumed.next_batch(1, 2).unwrap(), want, "resumed at {at}, batch {i}");
        }
    }
}

#[test]
fn epoch_stats_count_splits_drops_shares_and_padding() {
    let (_f, l) = loader((1.0, 3.0), config(), LoaderState::default());
    let stats = l.epoch_stats(0);
    let long = |n, seed, max| lengths(n, seed, max).iter().filter(|&&x| x > 64).count() as u64;
    let (long_a, long_b) = (long(60, 1, 90), long(25, 2, 150));
    assert!(long_a > 0 && long_b > 0);
    assert_eq!(stats.split_documents, long_a + 3 * long_b);
    assert_eq!(stats.documents, 60 + 3 * 25);
    let tokens_a: u64 = lengths(60, 1, 90).iter().map(|&x| x as u64).sum();
    assert_eq!(stats.tokens_per_source[0], tokens_a);
    assert!((stats.share_per_source.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    assert!(stats.padding_fraction > 0.0 && stats.padding_fraction < 0.2, "{}", stats.padding_fraction);

    let (_g, dropping) = loader(
        (1.0, 3.0),
        LoaderConfig { long_documents: LongDocuments::Drop, ..config() },
        LoaderState::default(),
    );
    assert_eq!(dropping.epoch_stats(0).dropped_documents, long_a + 3 * long_b);
}

#[test]
fn a_world_size_that_does_not_divide_the_global_batch_is_refused() {
    let (_f, mut l) = loader((1.0, 1.0), config(), LoaderState::default());
    let err = l.next_batch(0, 3).unwrap_err().to_string();
    assert!(err.contains("must divide"), "{err}");
}

#[test]
fn the_prefetcher_hands_out_the_loaders_batches_with_their_states() {
    use davinci_data::loader::Prefetcher;
    let (_f, mut direct) = loader((1.0, 3.0), config(), LoaderState::default());
    let (_g, ahead) = loader((1.0, 3.0), config(), LoaderState::default());
    let prefetcher = Prefetcher::spawn(ahead, 1, 2, 3);
    for _ in 0..20 {
        let want = direct.next_batch(1, 2).unwrap();
        let (got, state) = prefetcher.next().unwrap();
        assert_eq!(got, want);
        assert_eq!(state, direct.state(), "each batch comes with the state after it");
    }
}
