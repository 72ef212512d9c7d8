//! Tokenization with the `tokenizers` crate, keeping special tokens out of reach of text:
//! a record containing the string `<|im_end|>` must not be able to forge a turn boundary.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use crate::error::{io_at, DataError, Result};
use crate::rendered::{Piece, Rendered, SPECIAL_TOKENS, TEMPLATE_TOKENS};

/// A tokenizer for rendered samples.
///
/// Text is encoded by a copy of the tokenizer without its added tokens, so the special
/// strings in text are split into ordinary pieces; special tokens enter only as
/// [`Piece::Special`], by id.
pub struct TextTokenizer {
    full: Tokenizer,
    plain: Tokenizer,
    specials: HashMap<&'static str, u32>,
    /// The [`TEMPLATE_TOKENS`] the tokenizer holds as added tokens.
    templates: HashMap<&'static str, u32>,
    /// Whether the tokenizer splits text as Qwen2.5's does, so that [`next_cut`]'s cuts
    /// leave the ids unchanged; others encode each text whole.
    cuts_are_exact: bool,
    hash: String,
    path: PathBuf,
}

impl TextTokenizer {
    /// A local `tokenizer.json`, or a Hub model name (`Qwen/Qwen2.5-0.5B`) whose
    /// `tokenizer.json` is taken from the local Hugging Face cache or downloaded.
    pub fn load(name_or_path: &str) -> Result<Self> {
        let path = Path::new(name_or_path);
        if path.is_file() || !is_hub_name(name_or_path) {
            return Self::from_file(path);
        }
        Self::from_file(&hub_tokenizer(name_or_path)?)
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(io_at(path))?;
        Self::from_bytes(&bytes, path)
    }

    /// Builds from the bytes of a `tokenizer.json`; `path` names it in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let fail = |message: String| DataError::Tokenizer { path: path.into(), message };
        let full = Tokenizer::from_bytes(bytes).map_err(|e| fail(e.to_string()))?;
        let mut json: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| fail(e.to_string()))?;
        let cuts_are_exact = splits_like_qwen(&json);
        json["added_tokens"] = serde_json::Value::Array(Vec::new());
        // A post-processor may add special tokens by name; samples are framed by templates.
        json["post_processor"] = serde_json::Value::Null;
        let plain = Tokenizer::from_bytes(json.to_string()).map_err(|e| fail(e.to_string()))?;
        let mut specials = HashMap::new();
        for token in SPECIAL_TOKENS {
            let id = full
                .token_to_id(token)
                .ok_or_else(|| fail(format!("special token {token} is not in the vocabulary")))?;
            specials.insert(token, id);
        }
        let added = full.get_added_tokens_decoder();
        let templates = TEMPLATE_TOKENS
            .into_iter()
            .filter_map(|token| {
                Some(token).zip(added.iter().find(|(_, t)| t.content == token).map(|(id, _)| *id))
            })
            .collect();
        let hash = hex::encode(Sha256::digest(bytes));
        Ok(Self { full, plain, specials, templates, cuts_are_exact, hash, path: path.into() })
    }

    /// SHA-256 of the `tokenizer.json` bytes: shards record it, and mixing is refused.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn vocab_size(&self) -> usize {
        self.full.get_vocab_size(true)
    }

    pub fn special_id(&self, token: &str) -> Option<u32> {
        self.specials.get(token).copied()
    }

    /// Ids of ordinary text; never a special token's id.
    pub fn encode_text(&self, text: &str) -> Result<Vec<u32>> {
        let piece_bytes = if self.cuts_are_exact { PIECE_BYTES } else { usize::MAX };
        self.encode_in_pieces(text, piece_bytes)
    }

    /// [`TextTokenizer::encode_text`] a piece of about `piece_bytes` at a time (see
    /// [`next_cut`]): the same ids, and memory bounded by the piece instead of the text.
    fn encode_in_pieces(&self, text: &str, piece_bytes: usize) -> Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(text.len() / 3);
        let mut start = 0;
        while start < text.len() {
            let end = next_cut(text, start + piece_bytes);
            let encoding = self
                .plain
                .encode_fast(&text[start..end], false)
                .map_err(|e| DataError::Tokenizer { path: self.path.clone(), message: e.to_string() })?;
            ids.extend_from_slice(encoding.get_ids());
            start = end;
        }
        let placed_only = |id: &u32| self.specials.values().chain(self.templates.values()).any(|s| s == id);
        if let Some(id) = ids.iter().find(|id| placed_only(id)) {
            return Err(DataError::Tokenizer {
                path: self.path.clone(),
                message: format!("text encoded to special token id {id}; the vocabulary holds a special token as ordinary text"),
            });
        }
        Ok(ids)
    }

    /// Token ids of a rendered sample and, per token, whether it carries loss. A template
    /// token the tokenizer lacks joins the text around it, as the chat template's output
    /// would be tokenized by such a tokenizer.
    pub fn encode(&self, sample: &Rendered) -> Result<(Vec<u32>, Vec<bool>)> {
        let mut ids = Vec::new();
        let mut loss = Vec::new();
        // Text not yet encoded, and its loss flag.
        let mut pending: Option<(String, bool)> = None;
        let flush = |pending: &mut Option<(String, bool)>, ids: &mut Vec<u32>, loss: &mut Vec<bool>| {
            if let Some((text, flag)) = pending.take() {
                ids.extend(self.encode_text(&text)?);
                loss.resize(ids.len(), flag);
            }
            Ok::<_, DataError>(())
        };
        for segment in &sample.segments {
            let (text, id): (&str, Option<u32>) = match &segment.piece {
                Piece::Text(text) => (text, None),
                Piece::Special(token) => (token, Some(self.specials[*token])),
                Piece::Template(token) => (token, self.templates.get(token).copied()),
            };
            match id {
                Some(id) => {
                    flush(&mut pending, &mut ids, &mut loss)?;
                    ids.push(id);
                    loss.push(segment.loss);
                }
                None => match &mut pending {
                    Some((buffer, flag)) if *flag == segment.loss => buffer.push_str(text),
                    _ => {
                        flush(&mut pending, &mut ids, &mut loss)?;
                        pending = Some((text.to_string(), segment.loss));
                    }
                },
            }
        }
        flush(&mut pending, &mut ids, &mut loss)?;
        Ok((ids, loss))
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.full
            .decode(ids, false)
            .map_err(|e| DataError::Tokenizer { path: self.path.clone(), message: e.to_string() })
    }
}

/// Whether a `tokenizer.json` normalizes with NFC (or not at all) and pre-tokenizes with
/// Qwen2's split pattern then byte-level pieces without a prefix space: the shape whose
/// splits [`next_cut`] knows.
fn splits_like_qwen(json: &serde_json::Value) -> bool {
    let normalizer = &json["normalizer"];
    let nfc = normalizer.is_null() || normalizer["type"] == "NFC";
    let steps = &json["pre_tokenizer"]["pretokenizers"];
    let split = &steps[0];
    let byte_level = &steps[1];
    nfc && json["pre_tokenizer"]["type"] == "Sequence"
        && steps.as_array().is_some_and(|s| s.len() == 2)
        && split["type"] == "Split"
        && split["pattern"]["Regex"] == crate::train_tokenizer::QWEN_SPLIT
        && split["behavior"] == "Isolated"
        && split["invert"] == false
        && byte_level["type"] == "ByteLevel"
        && byte_level["add_prefix_space"] == false
        && byte_level["use_regex"] == false
}

/// Text is encoded in pieces of about this many bytes: `tokenizers` keeps some hundred
/// bytes of bookkeeping per byte it encodes at once (alignments, offsets, token strings),
/// so a 50 MB record encoded whole peaked at 7 GB.
const PIECE_BYTES: usize = 1 << 18;

/// The first place at or after `from` where the text can be cut without changing its
/// tokens: where Qwen2.5's pre-tokenizer (its split pattern, then byte-level BPE within
/// each split) would cut anyway, so each side encodes to exactly its own tokens. Two kinds:
/// after a line break followed by a non-space (no split runs across a line break into the
/// next character that is not whitespace), and before a single space between two
/// non-spaces (no split runs from a non-space into a following space, and the space
/// begins the next split). The end of the text when no such place follows: a run with
/// neither (base64, a minified line without spaces, text of a script without spaces) is one
/// split of the pattern anyway, encoded whole. NFC never joins across either kind: a line
/// break and a space compose with nothing.
fn next_cut(text: &str, from: usize) -> usize {
    let bytes = text.as_bytes();
    let mut from = from.min(bytes.len());
    while !text.is_char_boundary(from) {
        from += 1;
    }
    let mut previous = text[..from].chars().next_back();
    let mut chars = text[from..].char_indices().map(|(i, c)| (i + from, c)).peekable();
    while let Some((at, here)) = chars.next() {
        let next = chars.peek().map(|&(_, c)| c);
        match previous {
            Some('\n' | '\r') if !here.is_whitespace() => return at,
            Some(before)
                if here == ' ' && !before.is_whitespace() && next.is_some_and(|c| !c.is_whitespace()) =>
            {
                return at
            }
            _ => {}
        }
        previous = Some(here);
    }
    bytes.len()
}

fn is_hub_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    parts.len() == 2 && parts.iter().all(|p| !p.is_empty() && !p.starts_with('.')) && !name.ends_with(".json")
}

#[cfg(feature = "hub")]
fn hub_tokenizer(name: &str) -> Result<PathBuf> {
    const FILE: &str = "tokenizer.json";
    if let Some(path) = hf_hub::Cache::from_env().model(name.to_string()).get(FILE) {
        return Ok(path);
    }
    let fail = |message: String| DataError::Tokenizer { path: PathBuf::from(name), message };
    let api = hf_hub::api::sync::ApiBuilder::from_env().build().map_err(|e| fail(e.to_string()))?;
    api.model(name.to_string())
        .get(FILE)
        .map_err(|e| fail(format!("not in the local cache, and the download failed: {e}")))
}

#[cfg(not(feature = "hub"))]
fn hub_tokenizer(name: &str) -> Result<PathBuf> {
    Err(DataError::Tokenizer {
        path: PathBuf::from(name),
        message: "not a file, and Hub names need the `hub` feature".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer() -> TextTokenizer {
        TextTokenizer::from_file(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes/tokenizer/tokenizer.json"),
        )
        .unwrap()
    }

    #[test]
    fn text_encoded_in_pieces_gives_the_ids_of_the_text_encoded_whole() {
        let tokenizer = tokenizer();
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes/data");
        let mut text = String::new();
        for name in ["plain-text.jsonl", "prs-python.jsonl", "trajectories-chat.jsonl"] {
            text.push_str(&std::fs::read_to_string(data.join(name)).unwrap());
        }
        // What the bundled data lacks: CRLF, spaces and tabs around line breaks, letters of
        // other scripts, combining marks after a break, digits, contractions, long runs.
        text.push_str("a\r\n\r\nb  \n\tc\n \nd it's\n\u{301}e x\u{301}y 123\n456 Дом дом\n日本語 ");
        text.push_str(&"word ".repeat(300));
        text.push_str(&"=".repeat(700));
        let whole = tokenizer.plain.encode_fast(text.as_str(), false).unwrap().get_ids().to_vec();
        for piece in [1, 7, 64, 1000] {
            assert_eq!(tokenizer.encode_in_pieces(&text, piece).unwrap(), whole, "pieces of {piece} bytes");
        }
        assert!(tokenizer.cuts_are_exact);
    }

    #[test]
    fn a_tokenizer_that_splits_otherwise_encodes_text_whole() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes/tokenizer/tokenizer.json");
        let mut json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        json["pre_tokenizer"]["pretokenizers"][1]["add_prefix_space"] = true.into();
        let other = TextTokenizer::from_bytes(json.to_string().as_bytes(), &path).unwrap();
        assert!(!other.cuts_are_exact);
    }

    #[test]
    fn cuts_fall_after_line_breaks_or_before_spaces_between_words() {
        assert_eq!(next_cut("ab\ncd", 1), 3);
        assert_eq!(next_cut("ab\n  cd\nx", 1), 8, "not before whitespace");
        assert_eq!(next_cut("abc def", 1), 3);
        assert_eq!(next_cut("a=1; b", 1), 4, "between any two non-spaces");
        assert_eq!(next_cut("дом дом", 1), "дом".len(), "in any script");
        assert_eq!(next_cut("abc", 5), 3);
        assert_eq!(next_cut("=====", 1), 5, "no place to cut: the end");
        assert_eq!(next_cut("日本語", 1), "日本語".len(), "inside a character: never");
    }
}
