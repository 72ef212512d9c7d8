//! What a recipe must satisfy beyond its syntax: datasets that exist, stages that can
//! train, and the fingerprint that a resume compares part by part.

use std::collections::{BTreeMap, HashSet};

use davinci_data::render::{LossScope, Template};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{LossMode, ModelSpec, Recipe, StageSpec};
use crate::error::{Result, TrainError};

impl Recipe {
    fn invalid(&self, message: String) -> TrainError {
        TrainError::Invalid(format!("{}: {message}", self.path.display()))
    }

    /// Dataset names are unique and every stage's mixture names a defined dataset.
    pub(super) fn check_datasets(&self) -> Result<()> {
        let mut names = HashSet::new();
        for dataset in &self.datasets {
            if !names.insert(dataset.name.as_str()) {
                return Err(self.invalid(format!("dataset `{}` is defined twice", dataset.name)));
            }
        }
        for stage in &self.stages {
            for entry in &stage.mixture {
                if !names.contains(entry.dataset.as_str()) {
                    return Err(self.invalid(format!(
                        "stage `{}` names dataset `{}`, which the recipe does not define",
                        stage.name, entry.dataset
                    )));
                }
            }
        }
        Ok(())
    }

    /// Checks what training on `world` ranks needs beyond parsing: a model, stages with a
    /// length, batch sizes and context groups that divide, a schedule that makes sense.
    pub fn check_trainable(&self, world: usize) -> Result<&ModelSpec> {
        let model = self.check_settings()?;
        for stage in &self.stages {
            self.check_world(stage, world)?;
        }
        Ok(model)
    }

    /// [`Recipe::check_trainable`]'s checks that do not depend on the world size (what the
    /// rendezvous can check before it knows it).
    pub fn check_settings(&self) -> Result<&ModelSpec> {
        let model =
            self.model.as_ref().ok_or_else(|| self.invalid("the recipe has no [model] table".into()))?;
        let sources = [model.preset.is_some(), model.config.is_some(), model.init_from.is_some()];
        if sources.iter().filter(|&&s| s).count() != 1 {
            return Err(self.invalid("[model] needs exactly one of `preset`, `config` or `init_from`".into()));
        }
        if self.stages.is_empty() {
            return Err(self.invalid("the recipe has no [[stages]]".into()));
        }
        let mut names = HashSet::new();
        for stage in &self.stages {
            let bad = |m: String| self.invalid(format!("stage `{}`: {m}", stage.name));
            if !names.insert(&stage.name) {
                return Err(bad("the name is used twice".into()));
            }
            // Both are positive: the values were checked when the recipe was read.
            if !stage.tokens_per_step.is_multiple_of(stage.seq_len as u64) {
                return Err(bad(format!(
                    "tokens_per_step ({}) must be a positive multiple of seq_len ({})",
                    stage.tokens_per_step, stage.seq_len
                )));
            }
            // The values themselves were checked when the recipe was read.
            if stage.steps.is_some() == stage.epochs.is_some() {
                return Err(bad("give exactly one of `steps` or `epochs`".into()));
            }
            if stage.loss == LossMode::AssistantOnly {
                for entry in &stage.mixture {
                    let marked = self.dataset(&entry.dataset).is_some_and(|d| {
                        d.template == Template::Chatml && d.chatml.loss == LossScope::AssistantOnly
                    });
                    if !marked {
                        return Err(bad(format!(
                            "loss = \"assistant-only\" needs datasets rendered with template \"chatml\" and \
                             chatml.loss = \"assistant-only\"; `{}` is not",
                            entry.dataset
                        )));
                    }
                }
            }
        }
        Ok(model)
    }

    /// A stage's batch and context groups over `world` ranks.
    fn check_world(&self, stage: &StageSpec, world: usize) -> Result<()> {
        let bad = |m: String| self.invalid(format!("stage `{}`: {m}", stage.name));
        let context = stage.context_parallel;
        if !world.is_multiple_of(context) {
            return Err(bad(format!(
                "context_parallel = {context} must divide the world size ({world} ranks): the ranks form \
                 groups of {context} that share each row"
            )));
        }
        let (rows, data_ranks) = (stage.global_rows(), stage.data_ranks(world));
        if !rows.is_multiple_of(data_ranks)
            || stage.micro_batch == 0
            || !(rows / data_ranks).is_multiple_of(stage.micro_batch)
        {
            let groups =
                if context > 1 { format!(" ({world} ranks in groups of {context})") } else { String::new() };
            return Err(bad(format!(
                "{rows} rows per step must split evenly over {data_ranks} data-parallel rank(s){groups} in \
                 micro-batches of {}",
                stage.micro_batch
            )));
        }
        Ok(())
    }

    /// What must not change across a resume, part by part (short hashes), so a refusal can
    /// say what changed: the model, tokenizer, seed, the stages' names and data, and each
    /// dataset's settings and source files' contents (`sources`: each file's size and
    /// SHA-256, by dataset; empty for a fingerprint that must be cheap, the rendezvous's).
    /// Learning rates, lengths and checkpoint settings may change.
    pub fn fingerprint(
        &self,
        model_config_json: &str,
        tokenizer_sha256: &str,
        sources: &BTreeMap<String, Vec<(u64, String)>>,
    ) -> Result<BTreeMap<String, String>> {
        let mut parts = BTreeMap::new();
        let init_from = self.model.as_ref().and_then(|m| m.init_from.clone());
        parts.insert("model".into(), short_hash(&(model_config_json, init_from)));
        parts.insert("tokenizer".into(), tokenizer_sha256.chars().take(16).collect());
        parts.insert("seed".into(), self.seed.to_string());
        let order: Vec<&str> = self.stages.iter().map(|s| s.name.as_str()).collect();
        parts.insert("stage order".into(), order.join(","));
        for stage in &self.stages {
            let shape = (
                stage.seq_len,
                &stage.mixture,
                stage.long_documents,
                stage.pack_window,
                stage.tokens_per_step,
                stage.loss,
                &stage.init_from,
            );
            parts.insert(format!("stage `{}` data", stage.name), short_hash(&shape));
        }
        for dataset in &self.datasets {
            if self.uses_dataset(&dataset.name) {
                parts.insert(
                    format!("dataset `{}`", dataset.name),
                    short_hash(&(
                        dataset.settings_hash(&self.base)?,
                        &dataset.sources,
                        sources.get(&dataset.name),
                    )),
                );
            }
        }
        Ok(parts)
    }
}

fn short_hash<T: Serialize>(value: &T) -> String {
    let text = serde_json::to_string(value).unwrap_or_default();
    hex::encode(Sha256::digest(text.as_bytes()))[..16].to_string()
}

/// The parts that differ between two fingerprints, by name.
pub fn changed_parts(before: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> Vec<String> {
    let mut keys: Vec<&String> = before.keys().chain(now.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter().filter(|k| before.get(*k) != now.get(*k)).cloned().collect()
}
