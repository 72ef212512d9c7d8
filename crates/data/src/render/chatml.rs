//! The `chatml` template: trajectories in Qwen's ChatML, with the loss on every token
//! (mid-training) or on assistant turns only (SFT).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::records::{Message, Role, ToolCall, Trajectory};
use crate::rendered::{Rendered, IM_END, IM_START};

/// How tool calls and their results are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ToolStyle {
    /// Qwen2.5's own chat template: `<tool_call>` JSON in the assistant turn, results as
    /// `<tool_response>` blocks in a user turn.
    #[default]
    Qwen,
    /// The XML function style of SWE-agent-like scaffolds: `<function=bash>` with
    /// `<parameter=command>` children; results as an `OBSERVATION:` user turn.
    XmlFunction,
}

/// Which tokens carry loss.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossScope {
    /// Every token (mid-training).
    #[default]
    All,
    /// Only what the assistant writes, its closing `<|im_end|>` included (SFT).
    AssistantOnly,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMlOptions {
    #[serde(default)]
    pub tool_style: ToolStyle,
    #[serde(default)]
    pub loss: LossScope,
}

/// Renders a trajectory: `<|im_start|>role\n...<|im_end|>\n` per turn, the assistant's
/// reasoning inside `<think>...</think>` before its text, consecutive tool results merged
/// into one user turn.
pub fn render_chatml(trajectory: &Trajectory, options: ChatMlOptions) -> Rendered {
    let mut out = Rendered::default();
    let all = options.loss == LossScope::All;
    let messages = &trajectory.messages;
    let mut i = 0;
    while i < messages.len() {
        let message = &messages[i];
        match message.role {
            Role::Tool => {
                let end =
                    messages[i..].iter().position(|m| m.role != Role::Tool).map_or(messages.len(), |p| i + p);
                out.special(IM_START, all).text("user\n", all);
                let results: Vec<String> =
                    messages[i..end].iter().map(|m| tool_result(&m.content, options.tool_style)).collect();
                out.text(results.join("\n"), all).special(IM_END, all).text("\n", all);
                i = end;
                continue;
            }
            Role::Assistant => {
                out.special(IM_START, all).text("assistant\n", all);
                out.text(assistant_body(message, options.tool_style), true).special(IM_END, true);
                out.text("\n", all);
            }
            Role::System | Role::User => {
                out.special(IM_START, all).text(format!("{}\n", message.role.as_str()), all);
                out.text(message.content.clone(), all).special(IM_END, all).text("\n", all);
            }
        }
        i += 1;
    }
    out
}

fn assistant_body(message: &Message, style: ToolStyle) -> String {
    let mut body = String::new();
    if let Some(reasoning) = &message.reasoning {
        body.push_str(&format!("<think>\n{}\n</think>\n\n", reasoning.trim()));
    }
    body.push_str(&message.content);
    for call in &message.tool_calls {
        if !body.is_empty() {
            body.push('\n');
        }
        body.push_str(&tool_call_text(call, style));
    }
    body
}

fn tool_call_text(call: &ToolCall, style: ToolStyle) -> String {
    match style {
        ToolStyle::Qwen => {
            let name = Value::String(call.name.clone());
            format!(
                "<tool_call>\n{{\"name\": {name}, \"arguments\": {}}}\n</tool_call>",
                python_json(&call.arguments)
            )
        }
        ToolStyle::XmlFunction => {
            let mut text = format!("<function={}>\n", call.name);
            if let Value::Object(arguments) = &call.arguments {
                for (name, value) in arguments {
                    let value = match value {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    text.push_str(&format!("<parameter={name}>{value}</parameter>\n"));
                }
            }
            text.push_str("</function>");
            text
        }
    }
}

/// JSON as Python's `json.dumps` writes it by default (`", "` and `": "` separators), the
/// way Qwen's chat template renders tool-call arguments.
fn python_json(value: &Value) -> String {
    match value {
        Value::Array(items) => format!("[{}]", items.iter().map(python_json).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => {
            let fields: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), python_json(v)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
        scalar => scalar.to_string(),
    }
}

fn tool_result(content: &str, style: ToolStyle) -> String {
    match style {
        ToolStyle::Qwen => format!("<tool_response>\n{content}\n</tool_response>"),
        ToolStyle::XmlFunction => format!("OBSERVATION:\n{content}"),
    }
}
