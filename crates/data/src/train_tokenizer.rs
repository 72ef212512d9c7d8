//! Training a small byte-level BPE tokenizer laid out like Qwen2.5's (NFC, Qwen's
//! pre-tokenizer split, byte-level pieces, the three special tokens, and the tool-call
//! tags as added tokens), so that the tiny recipe and the tests have a real tokenizer
//! without downloading one.

use std::path::{Path, PathBuf};

use tokenizers::models::bpe::BpeTrainer;
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{io_at, DataError, Result};
use crate::rendered::{SPECIAL_TOKENS, TEMPLATE_TOKENS};

/// The pre-tokenizer split of Qwen2's `tokenizer.json`.
pub const QWEN_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn skeleton() -> serde_json::Value {
    let byte_level = serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false});
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN_SPLIT}, "behavior": "Isolated", "invert": false},
            byte_level,
        ]},
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "vocab": {}, "merges": []}
    })
}

/// Trains on the given text files and writes `tokenizer.json` to `out` (through a
/// temporary name). The special tokens take ids 0, 1, 2; the template tokens (`<tool_call>`,
/// `</tool_call>`) the last ids, as added tokens that are not special, like Qwen2.5's.
pub fn train_bpe_tokenizer(texts: &[PathBuf], vocab_size: usize, out: &Path) -> Result<Tokenizer> {
    let fail = |message: String| DataError::Tokenizer { path: out.into(), message };
    let mut tokenizer = Tokenizer::from_bytes(skeleton().to_string()).map_err(|e| fail(e.to_string()))?;
    let specials = SPECIAL_TOKENS.iter().map(|t| AddedToken::from(*t, true)).collect();
    let mut trainer = TrainerWrapper::BpeTrainer(
        BpeTrainer::builder()
            .vocab_size(vocab_size.saturating_sub(TEMPLATE_TOKENS.len()))
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(specials)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build(),
    );
    let files = texts.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    tokenizer.train_from_files(&mut trainer, files).map_err(|e| fail(e.to_string()))?;
    let template = TEMPLATE_TOKENS.iter().map(|t| AddedToken::from(*t, false).normalized(false));
    tokenizer.add_tokens(template).map_err(|e| fail(e.to_string()))?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io_at(parent))?;
    }
    let tmp = out.with_extension(format!("tmp-{}", std::process::id()));
    tokenizer.save(&tmp, true).map_err(|e| fail(e.to_string()))?;
    std::fs::rename(&tmp, out).map_err(io_at(out))?;
    Ok(tokenizer)
}
