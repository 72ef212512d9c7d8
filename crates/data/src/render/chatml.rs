//! The `chatml` template: trajectories in Qwen's ChatML, with the loss on every token
//! (mid-training) or on assistant turns only (SFT).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::records::{Message, Role, ToolCall, Trajectory};
use crate::rendered::{Rendered, IM_END, IM_START, TOOL_CALL_CLOSE, TOOL_CALL_OPEN};

/// The system turn Qwen2.5's chat template writes when a conversation has none.
pub const QWEN_DEFAULT_SYSTEM: &str = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

/// How tool calls and their results are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ToolStyle {
    /// Qwen2.5's own chat template, as transformers renders it: a system turn always (the
    /// record's, else Qwen's default) listing the record's `tools`, `<tool_call>` JSON in the
    /// assistant turn (the tags as Qwen's added tokens), results as `<tool_response>`
    /// blocks in a user turn.
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
    if options.tool_style == ToolStyle::Qwen {
        let own = messages.first().filter(|m| m.role == Role::System);
        out.special(IM_START, all).text("system\n", all);
        out.text(own.map_or(QWEN_DEFAULT_SYSTEM, |m| m.content.as_str()), all);
        if !trajectory.tools.is_empty() {
            qwen_tools(&mut out, &trajectory.tools, all);
        }
        out.special(IM_END, all).text("\n", all);
        i = own.map_or(0, |_| 1);
    }
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
                assistant_body(&mut out, message, options.tool_style);
                out.special(IM_END, true).text("\n", all);
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

/// The tools section Qwen2.5's template appends to the system turn.
fn qwen_tools(out: &mut Rendered, tools: &[Value], loss: bool) {
    let mut listing = String::from(
        "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
         You are provided with function signatures within <tools></tools> XML tags:\n<tools>",
    );
    for tool in tools {
        listing.push('\n');
        listing.push_str(&python_json(tool));
    }
    listing.push_str(
        "\n</tools>\n\nFor each function call, return a json object with function name and arguments within ",
    );
    out.text(listing, loss).template(TOOL_CALL_OPEN, loss).template(TOOL_CALL_CLOSE, loss);
    out.text(" XML tags:\n", loss).template(TOOL_CALL_OPEN, loss);
    out.text("\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n", loss);
    out.template(TOOL_CALL_CLOSE, loss);
}

/// What the assistant writes, all of it with loss: reasoning, text, then its tool calls.
fn assistant_body(out: &mut Rendered, message: &Message, style: ToolStyle) {
    if let Some(reasoning) = &message.reasoning {
        // Ends with its own blank line: what follows needs no separator.
        out.text(format!("<think>\n{}\n</think>\n\n", reasoning.trim()), true);
    }
    out.text(message.content.clone(), true);
    let mut written = !message.content.is_empty();
    for call in &message.tool_calls {
        if written {
            out.text("\n", true);
        }
        written = true;
        match style {
            ToolStyle::Qwen => {
                // As the template writes it: the name as it is, the arguments as `tojson`.
                out.template(TOOL_CALL_OPEN, true);
                let arguments = python_json(&call.arguments);
                out.text(format!("\n{{\"name\": \"{}\", \"arguments\": {arguments}}}\n", call.name), true);
                out.template(TOOL_CALL_CLOSE, true);
            }
            ToolStyle::XmlFunction => {
                out.text(xml_function_call(call), true);
            }
        }
    }
}

fn xml_function_call(call: &ToolCall) -> String {
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
