//! Templates that turn records into training samples; a recipe picks one per dataset.

pub mod chatml;
pub mod diff;
pub mod pr_general;
pub mod pr_python;

use serde::{Deserialize, Serialize};

pub use chatml::{render_chatml, ChatMlOptions, LossScope, ToolStyle};
pub use pr_general::render_pr_general;
pub use pr_python::render_pr_python;

/// The named templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Template {
    /// General PRs in XML-like tags (The Stack v2 layout).
    PrGeneral,
    /// Python PRs as Markdown sections with search/replace edits.
    PrPython,
    /// Trajectories in Qwen's ChatML.
    Chatml,
    /// Records whose `text` is already rendered.
    Text,
}
