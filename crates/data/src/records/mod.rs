//! The records `davinci prepare` reads, one JSON object a line (schemas: `docs/records.md`).

pub mod pr;
pub mod trajectory;

pub use pr::PullRequest;
pub use trajectory::{parse_trajectory, Message, Role, ToolCall, Trajectory};

/// Already-rendered text.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct PlainText {
    pub text: String,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub repo: Option<String>,
}
