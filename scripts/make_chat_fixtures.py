#!/usr/bin/env python3
"""Writes crates/data/tests/fixtures/qwen-chat.json: conversations with tools rendered by
Qwen2.5's chat template through transformers' `apply_chat_template` and tokenized by the
bundled tokenizer (which, like Qwen2.5's, holds `<tool_call>` and `</tool_call>` as added
tokens). The data crate's test renders the same records with the `chatml` template in the
`qwen` tool style and must give the same text and the same ids.

Run from the repository root after changing the template or the tokenizer:
    python3 -m venv .venv-fixtures && .venv-fixtures/bin/pip install transformers jinja2
    .venv-fixtures/bin/python scripts/make_chat_fixtures.py
(made with transformers 5.24.0, tokenizers 0.23.3, jinja2 3.1.6; no torch needed).
"""

import json
import os

import tokenizers
import transformers
from transformers import PreTrainedTokenizerFast

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "crates/data/tests/fixtures/qwen-chat.json")

# Qwen2.5's chat template (the instruct models' tokenizer_config.json), verbatim.
QWEN25_TEMPLATE = (
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n"
    "    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n"
    "    {%- endif %}\n"
    "    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n"
    "        {{- \"\\n\" }}\n"
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, "
    "\\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n"
    "{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or "
    "(message.role == \"assistant\" and not message.tool_calls) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n"
    "        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n"
    "            {{- '\\n' + message.content }}\n"
    "        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n"
    "            {%- endif %}\n"
    "            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n"
    "            {{- tool_call.name }}\n"
    "            {{- '\", \"arguments\": ' }}\n"
    "            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n"
    "        {%- endfor %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n"
    "        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n"
    "        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)

BASH = {
    "type": "function",
    "function": {
        "name": "bash",
        "description": "Run a shell command in the repository and return its output.",
        "parameters": {
            "type": "object",
            "properties": {"command": {"type": "string", "description": "The command, e.g. `grep -n x a.py`."}},
            "required": ["command"],
        },
    },
}
EDIT = {
    "type": "function",
    "function": {
        "name": "str_replace",
        "description": "Replace one exact, unique string in a file — the edit fails otherwise.",
        "parameters": {
            "type": "object",
            "properties": {
                "path": {"type": "string"},
                "old": {"type": "string"},
                "new": {"type": "string"},
            },
            "required": ["path", "old", "new"],
        },
    },
}


def call(id, name, arguments):
    return {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}


CASES = [
    {
        "name": "system, two tools, parallel calls and their results",
        "tools": [BASH, EDIT],
        "messages": [
            {"role": "system", "content": "You are a careful software engineer."},
            {"role": "user", "content": "The parser drops the last line of a file without a newline. Fix it."},
            {
                "role": "assistant",
                "content": "Let me find the parser and its tests.",
                "tool_calls": [
                    call("c1", "bash", {"command": "grep -rn 'def parse' src/"}),
                    call("c2", "bash", {"command": "ls tests/"}),
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "src/parse.py:12:def parse(text):"},
            {"role": "tool", "tool_call_id": "c2", "content": "test_parse.py"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    call("c3", "str_replace", {"path": "src/parse.py", "old": "text.split('\\n')[:-1]",
                                               "new": "text.splitlines()"}),
                ],
            },
            {"role": "tool", "tool_call_id": "c3", "content": "Edited src/parse.py (1 line)."},
            {"role": "assistant", "content": "The last line is kept now: `splitlines` needs no trailing newline."},
        ],
    },
    {
        "name": "tools without a system turn, a call with no text",
        "tools": [BASH],
        "messages": [
            {"role": "user", "content": "How many Python files are there? Ünïcode and 中文 welcome."},
            {"role": "assistant", "content": "", "tool_calls": [call("c1", "bash", {"command": "find . -name '*.py' | wc -l"})]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
            {"role": "assistant", "content": "There are 42 Python files."},
        ],
    },
    {
        "name": "no tools and no system turn: the default one",
        "tools": [],
        "messages": [
            {"role": "user", "content": "Say hi."},
            {"role": "assistant", "content": "Hi!"},
        ],
    },
]


def main():
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=os.path.join(ROOT, "recipes/tokenizer/tokenizer.json"))
    fixtures = []
    for case in CASES:
        tools = case["tools"] or None
        text = tokenizer.apply_chat_template(
            case["messages"], tools=tools, chat_template=QWEN25_TEMPLATE, tokenize=False
        )
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        record = {"instance_id": case["name"], "messages": case["messages"]}
        if tools:
            record["tools"] = tools
        fixtures.append({"name": case["name"], "record": record, "text": text, "ids": ids})
    tool_call_ids = [tokenizer.convert_tokens_to_ids(t) for t in ["<tool_call>", "</tool_call>"]]
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(
            {
                "made_with": {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__},
                "tool_call_ids": tool_call_ids,
                "cases": fixtures,
            },
            f,
            ensure_ascii=False,
            indent=1,
        )
        f.write("\n")
    print(f"wrote {len(fixtures)} cases to {OUT}; <tool_call> and </tool_call> are {tool_call_ids}")


if __name__ == "__main__":
    main()
