//! A rendered sample: text and special tokens in order, each with its loss flag, so that
//! special tokens are placed by the template and never produced from a record's text.

/// Qwen2.5's special tokens, single ids in its vocabulary.
pub const END_OF_TEXT: &str = "<|endoftext|>";
pub const IM_START: &str = "<|im_start|>";
pub const IM_END: &str = "<|im_end|>";
pub const SPECIAL_TOKENS: [&str; 3] = [END_OF_TEXT, IM_START, IM_END];

/// What Qwen2.5's chat template writes around a tool call. Its tokenizer holds each as one
/// added (not special) token, 151657 and 151658.
pub const TOOL_CALL_OPEN: &str = "<tool_call>";
pub const TOOL_CALL_CLOSE: &str = "</tool_call>";
pub const TEMPLATE_TOKENS: [&str; 2] = [TOOL_CALL_OPEN, TOOL_CALL_CLOSE];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Ordinary text, tokenized as text whatever it contains.
    Text(String),
    /// One of [`SPECIAL_TOKENS`], inserted as its id.
    Special(&'static str),
    /// One of [`TEMPLATE_TOKENS`]: its id where the tokenizer holds it as an added token
    /// (as the chat template's tokenization gives it), else its string as text.
    Template(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub piece: Piece,
    /// Whether the tokens of this segment carry loss.
    pub loss: bool,
}

/// The output of a template.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    pub segments: Vec<Segment>,
}

impl Rendered {
    pub fn text(&mut self, text: impl Into<String>, loss: bool) -> &mut Self {
        let text = text.into();
        if text.is_empty() {
            return self;
        }
        // Merge with the previous text segment of the same loss flag: fewer, longer
        // encodes tokenize better and faster.
        if let Some(Segment { piece: Piece::Text(previous), loss: l }) = self.segments.last_mut() {
            if *l == loss {
                previous.push_str(&text);
                return self;
            }
        }
        self.segments.push(Segment { piece: Piece::Text(text), loss });
        self
    }

    pub fn special(&mut self, token: &'static str, loss: bool) -> &mut Self {
        self.segments.push(Segment { piece: Piece::Special(token), loss });
        self
    }

    pub fn template(&mut self, token: &'static str, loss: bool) -> &mut Self {
        self.segments.push(Segment { piece: Piece::Template(token), loss });
        self
    }

    /// The sample as one string, special tokens spelled out: for docs, tests and hashing.
    pub fn to_display_string(&self) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            match &segment.piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Special(s) | Piece::Template(s) => out.push_str(s),
            }
        }
        out
    }
}
