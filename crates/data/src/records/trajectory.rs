//! Agent trajectories as chat messages, and the converters from the formats users have:
//! OpenAI-style `messages` (also SWE-smith and SWE-Gym), SWE-agent `.traj` files, and
//! `{role, text}` lists. Schemas: `docs/records.md`.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "system" => Some(Self::System),
            "user" | "human" => Some(Self::User),
            "assistant" | "ai" | "gpt" => Some(Self::Assistant),
            "tool" | "function" | "ipython" => Some(Self::Tool),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
            Self::Tool => "tool",
        }
    }
}

/// A call of a tool by the assistant; `arguments` is a JSON object.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: Option<String>,
    pub name: String,
    pub arguments: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: String,
    /// Hidden reasoning of an assistant turn, rendered inside `<think>`.
    pub reasoning: Option<String>,
    pub tool_calls: Vec<ToolCall>,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: content.into(), reasoning: None, tool_calls: Vec::new() }
    }
}

/// A trajectory with its outcome: `resolved` is `None` where the record does not say.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Trajectory {
    pub instance_id: Option<String>,
    pub repo: Option<String>,
    pub resolved: Option<bool>,
    pub messages: Vec<Message>,
    /// The tools offered to the model (OpenAI's `tools` list, each as the record gives it),
    /// which Qwen's template lists in the system turn.
    pub tools: Vec<Value>,
}

/// Reads a trajectory in any of the supported formats, told apart by their fields.
pub fn parse_trajectory(record: &Value) -> Result<Trajectory, String> {
    let object = record.as_object().ok_or("a trajectory must be a JSON object")?;
    let messages = if let Some(messages) = object.get("messages") {
        chat_messages(messages)?
    } else if let Some(history) =
        object.get("history").filter(|h| h.as_array().is_some_and(|a| !a.is_empty()))
    {
        history_messages(history)?
    } else if let Some(steps) = object.get("trajectory").and_then(Value::as_array) {
        if steps.iter().any(|s| s.get("text").is_some()) {
            role_text_messages(steps)?
        } else {
            swe_agent_steps(steps)?
        }
    } else {
        return Err("no `messages`, `history` or `trajectory` field".into());
    };
    if messages.is_empty() {
        return Err("the trajectory has no messages".into());
    }
    let text = |key: &str| object.get(key).and_then(Value::as_str).map(String::from);
    let tools = match object.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(tools)) => tools.clone(),
        Some(other) => return Err(format!("`tools` must be a list, got {other}")),
    };
    Ok(Trajectory {
        instance_id: text("instance_id").or_else(|| text("id")),
        repo: text("repo"),
        resolved: outcome(record),
        messages,
        tools,
    })
}

/// Pass or fail, from the field names the common formats use.
fn outcome(record: &Value) -> Option<bool> {
    for key in ["resolved", "pass", "passed", "success"] {
        if let Some(b) = record.get(key).and_then(Value::as_bool) {
            return Some(b);
        }
    }
    record.get("info").and_then(|i| i.get("resolved")).and_then(Value::as_bool)
}

/// Message content: a string, or a list of `{"type": "text", "text": ...}` parts.
fn content_text(content: Option<&Value>) -> Result<String, String> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                match part.get("text").and_then(Value::as_str).or_else(|| part.as_str()) {
                    Some(t) => text.push_str(t),
                    None => return Err(format!("a content part without text: {part}")),
                }
            }
            Ok(text)
        }
        Some(other) => Err(format!("content must be a string or a list of parts, got {other}")),
    }
}

fn role_of(message: &Value, key: &str, index: usize) -> Result<Role, String> {
    let name = message.get(key).and_then(Value::as_str).unwrap_or("");
    Role::parse(name).ok_or_else(|| format!("message {index}: unknown role `{name}`"))
}

fn chat_messages(messages: &Value) -> Result<Vec<Message>, String> {
    let list = messages.as_array().ok_or("`messages` must be a list")?;
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let mut message = Message::new(
            role_of(m, "role", i)?,
            content_text(m.get("content")).map_err(|e| format!("message {i}: {e}"))?,
        );
        message.reasoning = m
            .get("reasoning_content")
            .or_else(|| m.get("reasoning"))
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty())
            .map(String::from);
        if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
            for call in calls {
                message.tool_calls.push(tool_call(call).map_err(|e| format!("message {i}: {e}"))?);
            }
        }
        out.push(message);
    }
    Ok(out)
}

fn tool_call(call: &Value) -> Result<ToolCall, String> {
    let function = call.get("function").unwrap_or(call);
    let name = function.get("name").and_then(Value::as_str).ok_or("a tool call without a function name")?;
    let arguments = match function.get("arguments") {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(Value::String(s)) if s.trim().is_empty() => Value::Object(Default::default()),
        Some(Value::String(s)) => {
            serde_json::from_str(s).map_err(|e| format!("tool call `{name}`: arguments are not JSON: {e}"))?
        }
        Some(v) => v.clone(),
    };
    Ok(ToolCall {
        id: call.get("id").and_then(Value::as_str).map(String::from),
        name: name.into(),
        arguments,
    })
}

/// SWE-agent's `history`: role/content messages (content may be a list of parts).
fn history_messages(history: &Value) -> Result<Vec<Message>, String> {
    let list = history.as_array().ok_or("`history` must be a list")?;
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            Ok(Message::new(
                role_of(m, "role", i)?,
                content_text(m.get("content")).map_err(|e| format!("history {i}: {e}"))?,
            ))
        })
        .collect()
}

/// SWE-agent's `trajectory` steps: the thought and action as the assistant's turn, the
/// observation as the environment's reply.
fn swe_agent_steps(steps: &[Value]) -> Result<Vec<Message>, String> {
    let mut out = Vec::with_capacity(2 * steps.len());
    for (i, step) in steps.iter().enumerate() {
        let field = |k: &str| step.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let (thought, action, response) = (field("thought"), field("action"), field("response"));
        let turn = if !response.is_empty() {
            response
        } else if thought.is_empty() && action.is_empty() {
            return Err(format!("trajectory step {i} has no thought, action or response"));
        } else {
            format!("{thought}\n\n```\n{}\n```", action.trim_end())
        };
        out.push(Message::new(Role::Assistant, turn));
        out.push(Message::new(Role::User, field("observation")));
    }
    Ok(out)
}

/// `[{role: system|user|ai, text}]` lists.
fn role_text_messages(steps: &[Value]) -> Result<Vec<Message>, String> {
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Ok(Message::new(role_of(s, "role", i)?, s.get("text").and_then(Value::as_str).unwrap_or("")))
        })
        .collect()
}
