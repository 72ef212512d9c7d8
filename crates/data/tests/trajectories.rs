//! Each trajectory format converts to the same messages, and ChatML renders them with the
//! right turns, tool styles and loss masks.

use davinci_data::records::{parse_trajectory, Role};
use davinci_data::render::{render_chatml, ChatMlOptions, LossScope, ToolStyle};
use davinci_data::rendered::Piece;
use serde_json::json;

#[test]
fn openai_messages_with_tools_reasoning_and_parts() {
    let record = json!({
        "instance_id": "acme__widgets-7", "resolved": true,
        "messages": [
            {"role": "system", "content": "You are an agent."},
            {"role": "user", "content": [{"type": "text", "text": "Fix "}, {"type": "text", "text": "the bug."}]},
            {"role": "assistant", "content": "Looking.", "reasoning_content": "grep first",
             "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "bash", "arguments": "{\"command\": \"grep -n x a.py\"}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "3: x = 1"},
            {"role": "tool", "tool_call_id": "c2", "content": "second result"},
            {"role": "assistant", "content": "Done."}
        ]
    });
    let t = parse_trajectory(&record).unwrap();
    assert_eq!((t.resolved, t.instance_id.as_deref()), (Some(true), Some("acme__widgets-7")));
    assert_eq!(t.messages[1].content, "Fix the bug.");
    assert_eq!(t.messages[2].tool_calls[0].arguments["command"], "grep -n x a.py");

    let qwen = render_chatml(&t, ChatMlOptions { tool_style: ToolStyle::Qwen, loss: LossScope::All })
        .to_display_string();
    assert!(qwen.starts_with(
        "<|im_start|>system\nYou are an agent.<|im_end|>\n<|im_start|>user\nFix the bug.<|im_end|>\n"
    ));
    assert!(qwen.contains("<|im_start|>assistant\n<think>\ngrep first\n</think>\n\nLooking.\n<tool_call>\n{\"name\": \"bash\", \"arguments\": {\"command\": \"grep -n x a.py\"}}\n</tool_call><|im_end|>"), "{qwen}");
    assert!(qwen.contains("<|im_start|>user\n<tool_response>\n3: x = 1\n</tool_response>\n<tool_response>\nsecond result\n</tool_response><|im_end|>"), "consecutive tool results share one turn: {qwen}");

    let xml = render_chatml(&t, ChatMlOptions { tool_style: ToolStyle::XmlFunction, loss: LossScope::All })
        .to_display_string();
    assert!(
        xml.contains(
            "Looking.\n<function=bash>\n<parameter=command>grep -n x a.py</parameter>\n</function><|im_end|>"
        ),
        "{xml}"
    );
    assert!(xml.contains("OBSERVATION:\n3: x = 1"), "{xml}");
}

#[test]
fn assistant_only_loss_covers_exactly_the_assistant_turns() {
    let record = json!({"messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
        {"role": "tool", "content": "out"}, {"role": "assistant", "content": "bye"}]});
    let t = parse_trajectory(&record).unwrap();
    let rendered =
        render_chatml(&t, ChatMlOptions { tool_style: ToolStyle::Qwen, loss: LossScope::AssistantOnly });
    let with_loss: String = rendered
        .segments
        .iter()
        .filter(|s| s.loss)
        .map(|s| match &s.piece {
            Piece::Text(t) => t.clone(),
            Piece::Special(s) | Piece::Template(s) => s.to_string(),
        })
        .collect();
    assert_eq!(with_loss, "hello<|im_end|>bye<|im_end|>");
    let all = render_chatml(&t, ChatMlOptions::default());
    assert!(all.segments.iter().all(|s| s.loss));
}

#[test]
fn swe_agent_traj_with_history_and_with_steps_only() {
    let with_history = json!({
        "trajectory": [{"thought": "t", "action": "ls", "observation": "a.py", "response": "t\n```\nls\n```"}],
        "history": [{"role": "system", "content": "sys"}, {"role": "user", "content": [{"type": "text", "text": "task"}]},
                    {"role": "assistant", "content": "t\n```\nls\n```"}, {"role": "user", "content": "a.py"}],
        "info": {"exit_status": "submitted", "submission": "diff", "resolved": true}
    });
    let t = parse_trajectory(&with_history).unwrap();
    assert_eq!(t.resolved, Some(true));
    let roles: Vec<Role> = t.messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::System, Role::User, Role::Assistant, Role::User]);
    assert_eq!(t.messages[1].content, "task");

    let steps_only = json!({"trajectory": [
        {"thought": "Look around.", "action": "ls -la\n", "observation": "total 0"},
        {"thought": "Edit.", "action": "edit 1:1", "observation": "done"}],
        "info": {"exit_status": "submitted"}});
    let t = parse_trajectory(&steps_only).unwrap();
    assert_eq!(t.resolved, None, "no outcome given");
    assert_eq!(t.messages.len(), 4);
    assert_eq!(t.messages[0].content, "Look around.\n\n```\nls -la\n```");
    assert_eq!((t.messages[1].role, t.messages[1].content.as_str()), (Role::User, "total 0"));
}

#[test]
fn swe_smith_and_role_text_formats() {
    let smith = json!({"instance_id": "x__y-1", "traj_id": "t1", "model": "m", "resolved": false,
        "messages": [{"role": "user", "content": "go"}, {"role": "assistant", "content": "ok"}]});
    let t = parse_trajectory(&smith).unwrap();
    assert_eq!((t.resolved, t.messages.len()), (Some(false), 2));

    let role_text = json!({"instance_id": "r", "resolved": true, "trajectory": [
        {"role": "system", "text": "s"}, {"role": "user", "text": "u"}, {"role": "ai", "text": "a"}]});
    let t = parse_trajectory(&role_text).unwrap();
    assert_eq!(
        t.messages.iter().map(|m| m.role).collect::<Vec<_>>(),
        [Role::System, Role::User, Role::Assistant]
    );

    let bad = json!({"messages": [{"role": "wizard", "content": "x"}]});
    assert!(parse_trajectory(&bad).unwrap_err().contains("unknown role `wizard`"));
    assert!(parse_trajectory(&json!({"foo": 1})).is_err());
}

#[test]
fn trajectory_filters_by_outcome_and_instance() {
    use davinci_data::filter::{FilterConfig, Filters, Outcome};
    let t = |id: &str, resolved: Option<bool>| {
        let mut value = json!({"instance_id": id, "messages": [{"role": "user", "content": "x"}]});
        if let Some(r) = resolved {
            value["resolved"] = json!(r);
        }
        parse_trajectory(&value).unwrap()
    };
    let base = std::path::Path::new(".");
    let fail_only =
        Filters::new(FilterConfig { outcome: Outcome::Fail, ..FilterConfig::default() }, base).unwrap();
    assert_eq!(fail_only.reject_trajectory(&t("a__b-1", Some(true))), Some("passed trajectory"));
    assert_eq!(fail_only.reject_trajectory(&t("a__b-1", Some(false))), None);
    assert_eq!(fail_only.reject_trajectory(&t("a__b-1", None)), Some("outcome unknown"));
    let by_id = Filters::new(
        FilterConfig { exclude_instance_ids: vec!["a__b-7".into()], ..FilterConfig::default() },
        base,
    )
    .unwrap();
    assert_eq!(
        by_id.reject_trajectory(&t("a__b-7", Some(true))),
        Some("decontamination: excluded instance id")
    );
    assert_eq!(by_id.reject_trajectory(&t("a__b-8", Some(true))), None);
    // SWE-bench instance ids name their repository, which the default decontamination drops.
    assert_eq!(
        by_id.reject_trajectory(&t("django__django-11099", Some(true))),
        Some("decontamination: excluded repository")
    );
    let kept =
        Filters::new(FilterConfig { exclude_swe_bench_verified: false, ..FilterConfig::default() }, base)
            .unwrap();
    assert_eq!(kept.reject_trajectory(&t("django__django-11099", Some(true))), None);
}

#[test]
fn reasoning_before_a_bare_tool_call_is_followed_by_one_blank_line() {
    let record = json!({"messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "", "reasoning_content": "list first",
         "tool_calls": [{"function": {"name": "bash", "arguments": {"command": "ls"}}}]}]});
    let t = parse_trajectory(&record).unwrap();
    let qwen = render_chatml(&t, ChatMlOptions::default()).to_display_string();
    assert!(qwen.contains("</think>\n\n<tool_call>\n{\"name\": \"bash\""), "{qwen}");
}
