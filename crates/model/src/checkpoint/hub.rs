//! Finding a model by local path or by Hugging Face Hub name.

use std::path::{Path, PathBuf};

use super::{CONFIG_FILE, INDEX_FILE, SINGLE_FILE};
use crate::error::{ModelError, Result};

/// A local directory holding `config.json` is used as it is. Otherwise the argument is
/// taken as a Hub name (`Qwen/Qwen2.5-0.5B`): the local Hugging Face cache is looked up
/// first, then the network (when built with the `hub` feature), and the snapshot
/// directory is returned.
pub fn resolve_model_dir(name_or_path: &str) -> Result<PathBuf> {
    let path = Path::new(name_or_path);
    if path.join(CONFIG_FILE).is_file() {
        return Ok(path.to_path_buf());
    }
    if path.exists() || !looks_like_hub_name(name_or_path) {
        return Err(ModelError::ModelNotFound(name_or_path.into()));
    }
    from_hub(name_or_path)
}

fn looks_like_hub_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    parts.len() == 2 && parts.iter().all(|p| !p.is_empty() && !p.starts_with('.'))
}

#[cfg(feature = "hub")]
fn from_hub(name: &str) -> Result<PathBuf> {
    let cache = hf_hub::Cache::from_env().model(name.to_string());
    if let Some(config) = cache.get(CONFIG_FILE) {
        let complete = cache.get(SINGLE_FILE).is_some() || cache.get(INDEX_FILE).is_some();
        if complete {
            if let Some(dir) = config.parent() {
                return Ok(dir.to_path_buf());
            }
        }
    }
    let hub_err =
        |e: hf_hub::api::sync::ApiError| ModelError::Hub { name: name.into(), message: e.to_string() };
    let api = hf_hub::api::sync::ApiBuilder::from_env().build().map_err(hub_err)?;
    let repo = api.model(name.to_string());
    let config = repo.get(CONFIG_FILE).map_err(hub_err)?;
    match repo.get(INDEX_FILE) {
        Ok(index) => {
            let text = std::fs::read_to_string(&index).map_err(crate::error::io_at(&index))?;
            let parsed: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| ModelError::Index { path: index.clone(), message: e.to_string() })?;
            let mut files: Vec<String> = parsed["weight_map"]
                .as_object()
                .map(|m| m.values().filter_map(|v| v.as_str().map(String::from)).collect())
                .unwrap_or_default();
            files.sort();
            files.dedup();
            for file in files {
                repo.get(&file).map_err(hub_err)?;
            }
        }
        Err(_) => {
            repo.get(SINGLE_FILE).map_err(hub_err)?;
        }
    }
    config.parent().map(Path::to_path_buf).ok_or_else(|| ModelError::ModelNotFound(name.into()))
}

#[cfg(not(feature = "hub"))]
fn from_hub(name: &str) -> Result<PathBuf> {
    Err(ModelError::ModelNotFound(name.into()))
}
