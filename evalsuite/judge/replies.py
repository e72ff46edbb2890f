"""From an HTTP 200 body to rubric grades: parsing and checking a judge reply, apart from the transport.

The transport (client.py) hands over the raw body text; everything that can be wrong with a
reply the server did send is a `ReplyInvalid` here, so the client records it as an invalid reply
and re-asks, exactly as for a reply whose JSON breaks the rubric:

- the body is not JSON (an HTML error page, a truncated body)
- the body is JSON but not an object (a string, a list, a number)
- the body is an object of the wrong shape (no `choices`, a choice without `message` ...)
- the reply has no content, was cut off, or its content breaks the rubric's schema or ranges
"""

from __future__ import annotations

import json
from typing import Any

import pydantic
from openai.types.chat import ChatCompletion

from evalsuite.judge.rubric import ReplyInvalid, Rubric
from evalsuite.judge.scoring import logprob_expected_scores

_SHOWN = 120  # characters of a bad body quoted in the reason


def _excerpt(text: str) -> str:
    text = text.strip()
    return repr(text[:_SHOWN] + ("..." if len(text) > _SHOWN else ""))


def parse_completion_body(body: str) -> ChatCompletion:
    """A Chat Completions response from its body text, or `ReplyInvalid` saying what is wrong."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, ValueError):
        raise ReplyInvalid(f"response body is not JSON: {_excerpt(body)}") from None
    if not isinstance(data, dict):
        raise ReplyInvalid(f"response body is JSON {type(data).__name__}, not an object: {_excerpt(body)}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not all(isinstance(c, dict) and isinstance(c.get("message"), dict)
                                                for c in choices):
        raise ReplyInvalid(f"response body has the wrong shape (no list of choices with a message): {_excerpt(body)}")
    # Lax servers leave out bookkeeping fields the reply does not depend on; fill them, check the rest.
    filled = {"id": "", "object": "chat.completion", "created": 0, "model": "", **data}
    # (a missing finish_reason only matters for "length", which such a server cannot report anyway)
    filled["choices"] = [{**c, "index": c.get("index", i), "finish_reason": c.get("finish_reason") or "stop"}
                         for i, c in enumerate(choices)]
    try:
        completion = ChatCompletion.model_validate(filled)
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise ReplyInvalid(f"response body has the wrong shape ({where}: {first.get('msg')}): {_excerpt(body)}") from None
    return completion


def reply_content(completion: ChatCompletion | None) -> str | None:
    """The first choice's text, when there is one."""
    try:
        return completion.choices[0].message.content if completion is not None else None
    except (IndexError, AttributeError):
        return None


def check_reply(
    completion: ChatCompletion, rubric: Rubric, *, logprobs: bool
) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
    """(reply text, grades, logprob-weighted grades or None); `ReplyInvalid` for an unusable reply."""
    if not completion.choices:
        raise ReplyInvalid("reply has no choices")
    choice = completion.choices[0]
    text = choice.message.content
    if text is None:
        refusal = getattr(choice.message, "refusal", None)
        raise ReplyInvalid(f"reply has no content{f' (refusal: {refusal})' if refusal else ''}")
    if choice.finish_reason == "length":
        raise ReplyInvalid("reply cut off at max_tokens (finish_reason=length)")
    parsed = rubric.validate_reply(text)
    scores = {d.name: parsed[d.name] for d in rubric.dimensions}
    scores.update({c.name: parsed[c.name] for c in rubric.categorical})
    scores.update({f: parsed.get(f) for f in rubric.text_fields})
    lp = None
    if logprobs:
        content = choice.logprobs.content if choice.logprobs and choice.logprobs.content else None
        if content is None:
            lp = {"_note": "server returned no logprobs"}
        else:
            tokens = [t.model_dump(mode="json") for t in content]
            lp = logprob_expected_scores(text, tokens, rubric)
    return text, scores, lp
