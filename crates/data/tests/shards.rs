//! Shards round-trip exactly, and truncation, corruption and mixed tokenizers are caught.

use std::path::Path;

use davinci_data::dataset::{ensure_same_tokenizer, Dataset, Manifest};
use davinci_data::shard::{ShardWriter, MANIFEST};

fn documents() -> Vec<(Vec<u32>, Vec<bool>)> {
    (0..23usize)
        .map(|d| {
            let len = 1 + (d * 37) % 29;
            let ids = (0..len).map(|i| ((d * 1000 + i) % 70_000) as u32).collect();
            let loss = (0..len).map(|i| (i + d) % 3 != 0).collect();
            (ids, loss)
        })
        .collect()
}

fn write_dataset(dir: &Path, tokenizer: &str) -> Vec<(Vec<u32>, Vec<bool>)> {
    let docs = documents();
    let mut writer = ShardWriter::new(dir, 64).unwrap();
    for (ids, loss) in &docs {
        writer.push(ids, loss).unwrap();
    }
    let shards = writer.finish().unwrap();
    let mut manifest = Manifest::for_shards("test", "text", tokenizer, shards);
    manifest.loss_tokens = docs.iter().map(|(_, l)| l.iter().filter(|&&b| b).count() as u64).sum();
    manifest.write(dir).unwrap();
    docs
}

#[test]
fn shards_round_trip_documents_and_loss_bits() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = write_dataset(tmp.path(), "abc");
    let dataset = Dataset::open(tmp.path()).unwrap();
    assert!(dataset.shards.len() > 3, "small shards: {}", dataset.shards.len());
    dataset.verify().unwrap();
    let mut read = Vec::new();
    for shard in &dataset.shards {
        for d in 0..shard.num_docs() {
            let range = shard.doc_range(d);
            let ids = shard.tokens()[range.clone()].to_vec();
            let loss = range.map(|i| shard.loss(i)).collect::<Vec<_>>();
            read.push((ids, loss));
        }
    }
    assert_eq!(read, docs);
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn truncated_or_corrupt_shards_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    write_dataset(tmp.path(), "abc");
    let shard = tmp.path().join("shard-00001.bin");
    let bytes = std::fs::read(&shard).unwrap();

    std::fs::write(&shard, &bytes[..bytes.len() - 3]).unwrap();
    let err = Dataset::open(tmp.path()).err().unwrap().to_string();
    assert!(err.contains("shard-00001.bin") && err.contains("truncated"), "{err}");

    let mut flipped = bytes.clone();
    let last = flipped.len() - 9;
    flipped[last] ^= 0x40;
    std::fs::write(&shard, &flipped).unwrap();
    let dataset = Dataset::open(tmp.path()).unwrap();
    let err = dataset.verify().unwrap_err().to_string();
    assert!(err.contains("shard-00001.bin") && err.contains("checksum"), "{err}");

    // A header claiming absurd counts is refused, not overflowed.
    let mut absurd = bytes.clone();
    absurd[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&shard, &absurd).unwrap();
    let err = Dataset::open(tmp.path()).err().unwrap().to_string();
    assert!(err.contains("shard-00001.bin") && err.contains("truncated or corrupt"), "{err}");

    std::fs::remove_file(tmp.path().join(MANIFEST)).unwrap();
    let err = Dataset::open(tmp.path()).err().unwrap().to_string();
    assert!(err.contains(MANIFEST), "an incomplete dataset has no manifest: {err}");
}

#[test]
fn datasets_from_different_tokenizers_are_not_mixed() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_dataset(a.path(), "tokenizer-one");
    write_dataset(b.path(), "tokenizer-two");
    let (a, b) = (Dataset::open(a.path()).unwrap(), Dataset::open(b.path()).unwrap());
    ensure_same_tokenizer(&[&a, &a]).unwrap();
    let err = ensure_same_tokenizer(&[&a, &b]).unwrap_err().to_string();
    assert!(err.contains("different tokenizers"), "{err}");
}

#[test]
fn a_killed_preparation_leaves_no_temporary_file_behind_the_next() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ds");
    std::fs::create_dir_all(&dir).unwrap();
    let leftover = dir.join(".shard-00000.bin.tmp-4242");
    std::fs::write(&leftover, b"half a shard").unwrap();
    let kept = dir.join("notes.txt");
    std::fs::write(&kept, b"the user's").unwrap();
    ShardWriter::new(&dir, 1000).unwrap();
    assert!(!leftover.exists() && kept.exists());
}
