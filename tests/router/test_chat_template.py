"""Chat templates: read from where engines read them, rendered the way engines render them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentos.router import chat_template
from agentos.router.chat_template import ChatTemplate, ChatTemplateError

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

LLAMA_LIKE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Name a colour."},
]


def test_chatml_renders_the_conversation_and_opens_the_assistant_turn() -> None:
    template = ChatTemplate(CHATML, "test", eos_token="<|im_end|>", stop=("<|im_end|>",))
    assert template.render(CONVERSATION) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nName a colour.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_tokenizer_config_gives_template_tokens_and_stops_and_bos_is_left_to_the_engine() -> None:
    config = {
        "chat_template": LLAMA_LIKE,
        "bos_token": {"__type": "AddedToken", "content": "<s>"},
        "eos_token": "</s>",
    }
    template = chat_template.from_tokenizer_config(config, "tokenizer_config.json")
    assert (template.bos_token, template.eos_token, template.stop) == ("<s>", "</s>", ("</s>",))
    prompt = template.render([{"role": "user", "content": "hi"}])
    assert prompt == "[INST] hi [/INST]", "the engine's tokenizer adds BOS to a prompt itself"


def test_a_template_that_refuses_a_conversation_is_a_clear_error() -> None:
    template = chat_template.from_tokenizer_config(
        {"chat_template": LLAMA_LIKE, "eos_token": "</s>"}, "cfg"
    )
    with pytest.raises(ChatTemplateError, match="roles must alternate"):
        template.render([{"role": "assistant", "content": "x"}])


def test_a_template_that_does_not_parse_names_where_it_came_from() -> None:
    with pytest.raises(ChatTemplateError, match=r"from my\.jinja does not parse"):
        ChatTemplate("{% for %}", "my.jinja")


def test_templates_render_in_the_sandbox() -> None:
    template = ChatTemplate("{{ messages.__class__.__mro__ }}", "evil")
    with pytest.raises(ChatTemplateError):
        template.render(CONVERSATION)


def test_only_plain_text_conversations_without_tools_are_converted() -> None:
    template = ChatTemplate(CHATML, "test")
    assert template.takes(CONVERSATION, {"temperature": 0.7})
    assert not template.takes(CONVERSATION, {"tools": []})
    assert not template.takes([{"role": "tool", "content": "1", "tool_call_id": "a"}], {})
    assert not template.takes([{"role": "user", "content": [{"type": "image_url"}]}], {})
    assert not template.takes([], {})


def test_stop_strings_are_added_to_the_requests_own_and_stripped_from_answers() -> None:
    template = ChatTemplate(CHATML, "test", eos_token="<|endoftext|>", stop=("<|im_end|>",))
    assert template.completion_params({"stop": "END", "max_tokens": 3}) == {
        "stop": ["END", "<|im_end|>"],
        "max_tokens": 3,
    }
    assert template.strip_stop("blue<|im_end|>") == "blue"
    assert template.strip_stop("blue") == "blue"


def test_setting_takes_inline_text_a_json_file_a_model_folder_or_a_jinja_file(
    tmp_path: Path,
) -> None:
    assert chat_template.from_setting(CHATML).stop == ("<|im_end|>",)
    model = tmp_path / "model"
    model.mkdir()
    config = {"chat_template": CHATML, "eos_token": "<|im_end|>", "bos_token": None}
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    from_folder = chat_template.from_setting(str(model))
    assert from_folder.eos_token == "<|im_end|>" and from_folder.bos_token == ""
    jinja = tmp_path / "t.jinja"
    jinja.write_text(CHATML)
    assert chat_template.from_setting(str(jinja)).render(CONVERSATION).endswith("assistant\n")
    with pytest.raises(ChatTemplateError, match="no such file"):
        chat_template.from_setting(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ChatTemplateError, match="has no chat_template"):
        chat_template.from_setting(str(tmp_path / "bad.json"))


def test_named_templates_in_tokenizer_config_use_the_default_one() -> None:
    config = {
        "chat_template": [
            {"name": "tool_use", "template": "TOOLS"},
            {"name": "default", "template": CHATML},
        ]
    }
    assert chat_template.from_tokenizer_config(config, "cfg").template == CHATML


def test_props_without_a_template_give_none() -> None:
    assert chat_template.from_props({"total_slots": 4}, "props") is None
    found = chat_template.from_props(
        {"chat_template": CHATML, "eos_token": "<|im_end|>", "bos_token": "<s>"}, "props"
    )
    assert found is not None and found.stop == ("<|im_end|>",)


def test_the_bundled_models_gguf_metadata_holds_its_chat_template() -> None:
    pytest.importorskip("gguf", reason="the gguf package comes with the local extra")
    from agentos.router.local_server import bundled_model_path

    template = chat_template.from_gguf(bundled_model_path())
    assert template is not None
    assert template.eos_token == "<|im_end|>"
    assert "<|im_end|>" in template.stop
    prompt = template.render(CONVERSATION)
    assert prompt.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert prompt.endswith("<|im_start|>assistant\n")


def test_a_conversation_rendered_again_is_remembered_and_others_still_render() -> None:
    template = ChatTemplate(CHATML, "test")
    first = template.render(CONVERSATION)
    assert template.render([dict(m) for m in CONVERSATION]) == first
    assert len(template._rendered) == 1
    parts = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    with pytest.raises(ChatTemplateError):
        template.render(parts)  # unhashable content is rendered (and refused by ChatML)
    for i in range(chat_template.RENDERED_KEPT + 5):
        template.render([{"role": "user", "content": str(i)}])
    assert len(template._rendered) == chat_template.RENDERED_KEPT
