//! `davinci logits`: how a user checks a checkpoint from outside the test suite.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use davinci_model::ops::{linear_cross_entropy, IGNORE_INDEX};
use davinci_model::{load_checkpoint, resolve_model_dir, PackedLayout};
use serde::Deserialize;

use crate::args::{parse_device, parse_dtype};

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory (config.json + safetensors) or Hub name.
    #[arg(long)]
    model: String,
    /// JSONL, one `{"input_ids": [...], "labels": [...]}` a line; labels are optional,
    /// already shifted (labels[t] is the target of position t), -100 = no loss.
    #[arg(long)]
    tokens: PathBuf,
    /// Output safetensors file: `logits.N` ([len, vocab] f32) and `loss.N` per line.
    #[arg(long)]
    out: PathBuf,
    /// Compute dtype: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenLine {
    input_ids: Vec<u32>,
    #[serde(default)]
    labels: Option<Vec<i64>>,
}

pub fn run(args: Args) -> Result<()> {
    let device = parse_device(&args.device)?;
    let dtype = parse_dtype(&args.dtype)?;
    let dir = resolve_model_dir(&args.model)?;
    let model = load_checkpoint(&dir, &device, Some(dtype))
        .with_context(|| format!("loading the model from {}", dir.display()))?;
    let lines = read_token_lines(&args.tokens)?;
    let mut outputs: HashMap<String, Tensor> = HashMap::new();
    for (n, line) in lines.iter().enumerate() {
        let at = || format!("{}: line {}", args.tokens.display(), n + 1);
        let layout = PackedLayout::single(line.input_ids.len()).with_context(at)?;
        let hidden = model.hidden_states(&line.input_ids, &layout).with_context(at)?;
        let logits = hidden.matmul(&model.head_weight().t()?)?.to_dtype(candle_core::DType::F32)?;
        outputs.insert(format!("logits.{n}"), logits);
        if let Some(labels) = &line.labels {
            let loss =
                linear_cross_entropy(&hidden, model.head_weight(), labels, None, false).with_context(at)?;
            let counted = labels.iter().filter(|&&l| l != IGNORE_INDEX).count();
            println!(
                "line {}: {} tokens, loss {:.6} over {counted} labels",
                n + 1,
                line.input_ids.len(),
                loss.mean()
            );
            outputs.insert(format!("loss.{n}"), Tensor::new(loss.mean() as f32, &device)?);
        } else {
            println!("line {}: {} tokens", n + 1, line.input_ids.len());
        }
    }
    write_atomically(&args.out, &outputs)?;
    println!("wrote {} tensors to {}", outputs.len(), args.out.display());
    Ok(())
}

fn read_token_lines(path: &Path) -> Result<Vec<TokenLine>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut lines = Vec::new();
    for (i, text) in std::io::BufReader::new(file).lines().enumerate() {
        let text = text.with_context(|| format!("{}: line {}", path.display(), i + 1))?;
        if text.trim().is_empty() {
            continue;
        }
        let line: TokenLine = serde_json::from_str(&text)
            .with_context(|| format!("{}: line {}: not a token record", path.display(), i + 1))?;
        if line.input_ids.is_empty() {
            bail!("{}: line {}: input_ids is empty", path.display(), i + 1);
        }
        if let Some(labels) = &line.labels {
            if labels.len() != line.input_ids.len() {
                bail!(
                    "{}: line {}: {} labels for {} input_ids",
                    path.display(),
                    i + 1,
                    labels.len(),
                    line.input_ids.len()
                );
            }
        }
        lines.push(line);
    }
    if lines.is_empty() {
        bail!("{}: no token records", path.display());
    }
    Ok(lines)
}

/// Writes to a temporary name next to `path`, then renames.
fn write_atomically(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    candle_core::safetensors::save(tensors, &tmp).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}
