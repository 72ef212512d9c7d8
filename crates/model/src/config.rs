//! The model's shape, read from and written to a Hugging Face `config.json` with its own
//! field names, and presets with the values of Qwen2.5's public config files.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// Qwen2.5 hyper-parameters, named as in transformers' `Qwen2Config`.
///
/// Keys of `config.json` that do not change the computation (`bos_token_id`,
/// `use_cache`, `transformers_version`, ...) are kept in `extra` so that a checkpoint
/// saved here carries them on unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// `float32`, `bfloat16` or `float16`: the dtype the checkpoint's weights are stored in.
    #[serde(default = "default_dtype")]
    pub torch_dtype: String,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn default_max_positions() -> usize {
    32768
}
fn default_rms_norm_eps() -> f64 {
    1e-6
}
fn default_rope_theta() -> f64 {
    1_000_000.0
}
fn default_dtype() -> String {
    "bfloat16".into()
}
fn default_hidden_act() -> String {
    "silu".into()
}

/// The names `Config::preset` accepts.
pub const PRESETS: &[&str] = &[
    "tiny",
    "qwen2.5-0.5b",
    "qwen2.5-1.5b",
    "qwen2.5-3b",
    "qwen2.5-7b",
    "qwen2.5-14b",
    "qwen2.5-32b",
    "qwen2.5-72b",
];

impl Config {
    #[allow(clippy::too_many_arguments)]
    fn qwen(
        vocab: usize,
        hidden: usize,
        inter: usize,
        layers: usize,
        heads: usize,
        kv_heads: usize,
        max_pos: usize,
        tied: bool,
        rms_norm_eps: f64,
    ) -> Self {
        let mut extra = serde_json::Map::new();
        extra.insert("architectures".into(), serde_json::json!(["Qwen2ForCausalLM"]));
        extra.insert("model_type".into(), "qwen2".into());
        extra.insert("bos_token_id".into(), 151643.into());
        extra.insert("eos_token_id".into(), 151643.into());
        extra.insert("attention_dropout".into(), 0.0.into());
        extra.insert("initializer_range".into(), 0.02.into());
        extra.insert("use_sliding_window".into(), false.into());
        extra.insert("sliding_window".into(), max_pos.into());
        extra.insert("max_window_layers".into(), layers.into());
        extra.insert("use_cache".into(), true.into());
        Self {
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: inter,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            max_position_embeddings: max_pos,
            rms_norm_eps,
            rope_theta: 1_000_000.0,
            tie_word_embeddings: tied,
            torch_dtype: "bfloat16".into(),
            hidden_act: "silu".into(),
            extra,
        }
    }

    /// A preset by name (see [`PRESETS`]). The Qwen2.5 values are those of the base models'
    /// public `config.json` files; `tiny` is a small model that trains on a CPU in seconds.
    pub fn preset(name: &str) -> Result<Self> {
        const V: usize = 151936;
        const V_LARGE: usize = 152064;
        let config = match name.to_ascii_lowercase().as_str() {
            "tiny" => {
                let mut c = Self::qwen(2048, 64, 176, 2, 4, 2, 4096, false, 1e-6);
                c.torch_dtype = "float32".into();
                c.extra.insert("bos_token_id".into(), 0.into());
                c.extra.insert("eos_token_id".into(), 0.into());
                c
            }
            "qwen2.5-0.5b" => Self::qwen(V, 896, 4864, 24, 14, 2, 32768, true, 1e-6),
            "qwen2.5-1.5b" => Self::qwen(V, 1536, 8960, 28, 12, 2, 131072, true, 1e-6),
            "qwen2.5-3b" => Self::qwen(V, 2048, 11008, 36, 16, 2, 32768, true, 1e-6),
            "qwen2.5-7b" => Self::qwen(V_LARGE, 3584, 18944, 28, 28, 4, 131072, false, 1e-6),
            "qwen2.5-14b" => Self::qwen(V_LARGE, 5120, 13824, 48, 40, 8, 131072, false, 1e-5),
            "qwen2.5-32b" => Self::qwen(V_LARGE, 5120, 27648, 64, 40, 8, 131072, false, 1e-5),
            "qwen2.5-72b" => Self::qwen(V_LARGE, 8192, 29568, 80, 64, 8, 131072, false, 1e-5),
            _ => return Err(ModelError::UnknownPreset { name: name.into(), known: PRESETS.join(", ") }),
        };
        config.validate()?;
        Ok(config)
    }

    /// What a command line means by a model: a preset name, else a checkpoint directory
    /// or a Hub name whose `config.json` is read.
    pub fn resolve(name: &str) -> Result<Self> {
        if PRESETS.contains(&name.to_ascii_lowercase().as_str()) {
            return Self::preset(name);
        }
        Self::from_file(&crate::checkpoint::resolve_model_dir(name)?.join(crate::checkpoint::CONFIG_FILE))
    }

    /// Reads a `config.json`, checking that its shape is one this model can run.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ModelError::Io { path: path.into(), source })?;
        Self::from_json(&text).map_err(|message| ModelError::Config { path: path.into(), message })
    }

    /// Parses the text of a `config.json`, accepting both transformers 4's spelling
    /// (`torch_dtype`, top-level `rope_theta`) and transformers 5's (`dtype`,
    /// `rope_parameters.rope_theta`).
    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let located = |e: serde_json::Error| format!("line {}, column {}: {e}", e.line(), e.column());
        let mut map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).map_err(located)?;
        if let Some(dtype) = map.remove("dtype") {
            map.entry("torch_dtype").or_insert(dtype);
        }
        if !map.contains_key("rope_theta") {
            if let Some(theta) = map.get("rope_parameters").and_then(|p| p.get("rope_theta")).cloned() {
                map.insert("rope_theta".into(), theta);
            }
        }
        let config: Config =
            serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    /// Checks the relations between sizes that the layers rely on.
    pub fn validate(&self) -> Result<()> {
        let fail = |message: String| Err(ModelError::InvalidConfig(message));
        // Far beyond any Qwen2.5 (72B: 80 layers, hidden 8192, intermediate 29568, vocab
        // 152064), and small enough that nothing sized from them overflows: a typo of a
        // few digits is refused here, before anything is allocated.
        let limits = [
            ("num_hidden_layers", self.num_hidden_layers, 1 << 10),
            ("hidden_size", self.hidden_size, 1 << 17),
            ("intermediate_size", self.intermediate_size, 1 << 19),
            ("vocab_size", self.vocab_size, 1 << 23),
            ("num_attention_heads", self.num_attention_heads, 1 << 10),
        ];
        for (key, value, limit) in limits {
            if value == 0 || value > limit {
                return fail(format!("{key} = {value} is outside 1..={limit}"));
            }
        }
        if self.num_attention_heads == 0 || self.num_key_value_heads == 0 {
            return fail("num_attention_heads and num_key_value_heads must be positive".into());
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return fail(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return fail(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return fail(format!("head dimension {} must be even for rotary embeddings", self.head_dim()));
        }
        if self.hidden_act != "silu" {
            return fail(format!("hidden_act `{}` is not supported (Qwen2.5 uses silu)", self.hidden_act));
        }
        if self.extra.get("use_sliding_window") == Some(&serde_json::Value::Bool(true)) {
            return fail("use_sliding_window = true is not supported (Qwen2.5 leaves it off)".into());
        }
        for key in ["rope_scaling", "rope_parameters"] {
            let rope_type = self.extra.get(key).and_then(|v| v.get("rope_type").or_else(|| v.get("type")));
            if let Some(kind) = rope_type.and_then(|t| t.as_str()).filter(|t| *t != "default") {
                return fail(format!("{key} of type `{kind}` is not supported yet (only default RoPE)"));
            }
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Query heads that share one key/value head.
    pub fn group_size(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// Number of weights, counting a tied head once.
    pub fn num_parameters(&self) -> usize {
        let (h, i, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let kv = self.num_key_value_heads * self.head_dim();
        let attention = h * h + h + 2 * (h * kv + kv) + h * h;
        let layer = attention + 3 * h * i + 2 * h;
        let head = if self.tie_word_embeddings { 0 } else { v * h };
        v * h + self.num_hidden_layers * layer + h + head
    }

    pub fn to_json(&self) -> String {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}
