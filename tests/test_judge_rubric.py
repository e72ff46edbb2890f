"""Rubric files: strict loading, prompt rendering, reply validation; the loopback server's protocol."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest
import yaml
from judge_scripted import ScriptedBackend

from corpora.errors import UserError
from evalsuite.judge.rubric import ReplyInvalid, load_rubric
from evalsuite.judge.server import ChatServer, LlamaCppBackend, default_backend

RUBRIC = load_rubric("tinystories_gpt_eval")
GOOD = {"assessment": "fine", "grammar": 8, "creativity": 6, "consistency": 7, "plot": 5, "age_group": "C"}


def test_default_rubric_follows_the_paper_protocol():
    assert RUBRIC.id == "tinystories-gpt-eval" and RUBRIC.version == "1"
    assert RUBRIC.dimension_names == ["grammar", "creativity", "consistency", "plot"]
    assert all((d.min, d.max) == (1, 10) for d in RUBRIC.dimensions)
    age = RUBRIC.categorical[0]
    assert age.name == "age_group" and age.ordinal
    assert age.options == {"A": "3 or under", "B": "4-5", "C": "6-7", "D": "8-9", "E": "10-12", "F": "13-16"}
    assert age.index("A") == 1 and age.index("F") == 6
    messages = RUBRIC.render("Tom had a small", " blue truck.")
    user = messages[1]["content"]
    assert "Tom had a small*** blue truck." in user  # the completion marked with ***
    assert "split" in user and "age group" in user and "assessment" in user


def test_render_does_not_substitute_inside_the_story():
    user = RUBRIC.render("A {completion} B", " C {beginning} D")[1]["content"]
    assert "A {completion} B*** C {beginning} D" in user


def test_validate_reply_accepts_good_and_fenced():
    assert RUBRIC.validate_reply(json.dumps(GOOD))["grammar"] == 8
    assert RUBRIC.validate_reply("```json\n" + json.dumps(GOOD) + "\n```")["plot"] == 5
    assert RUBRIC.validate_reply(json.dumps({**GOOD, "grammar": 8.0}))["grammar"] == 8


@pytest.mark.parametrize("reply,reason", [
    ("not json", "malformed JSON"),
    (json.dumps({**GOOD, "grammar": 11}), "grammar"),
    (json.dumps({**GOOD, "grammar": 0}), "grammar"),
    (json.dumps({**GOOD, "grammar": 7.5}), "grammar"),
    (json.dumps({**GOOD, "grammar": "8"}), "grammar"),
    (json.dumps({**GOOD, "grammar": True}), "grammar"),
    (json.dumps({**GOOD, "age_group": "G"}), "age_group"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "plot"}), "plot"),
    (json.dumps({**GOOD, "extra": 1}), "extra"),
    (json.dumps([GOOD]), "schema"),
])
def test_validate_reply_rejects(reply, reason):
    with pytest.raises(ReplyInvalid, match=reason):
        RUBRIC.validate_reply(reply)


def write_variant(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load(Path(RUBRIC.path).read_text())
    schema = json.loads(Path(RUBRIC.path).with_suffix(".schema.json").read_text())
    edit(data, schema)
    (tmp_path / "r.schema.json").write_text(json.dumps(schema))
    data["reply_schema_file"] = "r.schema.json"
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_user_rubric_without_code(tmp_path):
    def edit(data, schema):
        data["id"], data["version"] = "my-rubric", 3
        data["dimensions"] = [{"name": "fluency", "min": 0, "max": 5}]
        data["categorical"] = []
        data["text_fields"] = []
        data["user"] = "Story: {beginning} / {completion}. Grade fluency 0-5 as JSON."
        schema["properties"] = {"fluency": {"type": "integer", "minimum": 0, "maximum": 5}}
        schema["required"] = ["fluency"]

    rub = load_rubric(write_variant(tmp_path, edit))
    assert rub.identity() == "my-rubric@3" and rub.dimension_names == ["fluency"]
    assert rub.validate_reply('{"fluency": 0}') == {"fluency": 0}
    with pytest.raises(ReplyInvalid):
        rub.validate_reply('{"fluency": 6}')


@pytest.mark.parametrize("edit,message", [
    (lambda d, s: d.update(temprature=0), "unknown key"),
    (lambda d, s: d.pop("user"), "missing key"),
    (lambda d, s: d.update(user="no placeholders"), "{beginning}"),
    (lambda d, s: s["properties"]["grammar"].update(maximum=5), "differs from the rubric"),
    (lambda d, s: s["required"].remove("plot"), "required"),
    (lambda d, s: s["properties"]["age_group"].update(enum=["A", "B"]), "enum"),
    (lambda d, s: d["dimensions"][0].update(scale=3), "unknown key"),
    (lambda d, s: d["dimensions"][0].update(min=10, max=1), "min < max"),
    (lambda d, s: s.update(type="array"), "type 'object'"),
    (lambda d, s: s["properties"]["grammar"].update(type="int"), "invalid JSON schema"),
])
def test_bad_rubrics_are_user_errors(tmp_path, edit, message):
    with pytest.raises(UserError, match=message):
        load_rubric(write_variant(tmp_path, edit))


def test_unknown_rubric_names_the_known_ones():
    with pytest.raises(UserError, match="tinystories_gpt_eval"):
        load_rubric("nope")


def test_server_speaks_chat_completions_and_rejects_bad_requests():
    with ChatServer(ScriptedBackend()) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        assert [m.id for m in client.models.list()] == ["scripted-judge"]
        reply = client.chat.completions.create(
            model="scripted-judge", messages=RUBRIC.render("Once", " upon a time."), temperature=0)
        assert reply.choices[0].finish_reason == "stop" and reply.usage.total_tokens == 140
        assert json.loads(reply.choices[0].message.content)["age_group"] in "ABCDEF"
        request = urllib.request.Request(server.base_url + "/chat/completions", data=b"{not json",
                                         headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=5)
        assert err.value.code == 400
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(server.base_url + "/nothing", timeout=5)
        assert err.value.code == 404
    with pytest.raises(UserError, match="loopback"):
        ChatServer(ScriptedBackend(), host="0.0.0.0")


def test_embedded_judge_needs_a_real_model(monkeypatch, tmp_path):
    monkeypatch.delenv("EVALSUITE_JUDGE_GGUF", raising=False)
    with pytest.raises(UserError, match="--base-url"):
        default_backend()
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="llama-cpp-python"):
            LlamaCppBackend(tmp_path / "model.gguf")
    else:
        with pytest.raises(UserError, match="not found"):
            LlamaCppBackend(tmp_path / "model.gguf")
