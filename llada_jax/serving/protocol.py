"""The OpenAI request bodies the server accepts, checked field by field.

A bad body is an `ApiError` (400) naming the field, as the OpenAI API does:
`{"error": {"message", "type": "invalid_request_error", "param", "code"}}`.

Standard fields: model, prompt (a string or a list of token ids) / messages, max_tokens,
temperature, top_p, n (1), stream, stop, seed, user, stream_options. Diffusion extensions
(send them as extra JSON fields, e.g. the openai client's `extra_body`):
  steps         model calls in all (default: the answer length, one token per call)
  block_length  semi-autoregressive block (default: the server's block width, or
                max_tokens when shorter); the answer length is max_tokens rounded up
                to a multiple of it, and the text is cut at max_tokens tokens
  threshold     Fast-dLLM's confidence threshold in (0, 1] (default off)
  remasking     "low_confidence" (default) or "random"
  cfg           classifier-free guidance scale >= 0 (servers started with --cfg)
  top_k         keep the k most likely tokens (0: off)
  timeout       seconds before the request is dropped (504); at most the server's
  stream_reverse  with stream: each chunk also carries `reveals`, per model call the
                answer positions that call revealed (the reverse process)
"""

from __future__ import annotations

import dataclasses
import math

from llada_jax.sampling.params import REMASKING, SamplingParams


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, type_: str = "invalid_request_error",
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.type, self.code = status, message, param, type_, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _stop(v):
    return v is None or isinstance(v, str) or (isinstance(v, list) and len(v) <= 4 and all(isinstance(s, str) for s in v))


COMMON = {
    "model": (lambda v: isinstance(v, str), "a string"),
    "max_tokens": (lambda v: v is None or _int(v), "an integer"),
    "max_completion_tokens": (lambda v: v is None or _int(v), "an integer"),
    "temperature": (lambda v: v is None or (_num(v) and 0 <= v <= 2), "a number in [0, 2]"),
    "top_p": (lambda v: v is None or (_num(v) and 0 < v <= 1), "a number in (0, 1]"),
    "n": (lambda v: v is None or v == 1, "1 (one choice per request)"),
    "stream": (lambda v: v is None or isinstance(v, bool), "a boolean"),
    "stream_options": (lambda v: v is None or isinstance(v, dict), "an object"),
    "stop": (_stop, "a string or a list of at most 4 strings"),
    "seed": (lambda v: v is None or (_int(v) and 0 <= v < 2**31), "an integer in [0, 2^31)"),
    "user": (lambda v: v is None or isinstance(v, str), "a string"),
    "steps": (lambda v: v is None or (_int(v) and v >= 1), "a positive integer"),
    "block_length": (lambda v: v is None or (_int(v) and v >= 1), "a positive integer"),
    "threshold": (lambda v: v is None or (_num(v) and 0 < v <= 1), "a number in (0, 1]"),
    "remasking": (lambda v: v is None or v in REMASKING, f"one of {list(REMASKING)}"),
    "cfg": (lambda v: v is None or (_num(v) and v >= 0), "a number >= 0"),
    "top_k": (lambda v: v is None or (_int(v) and v >= 0), "an integer >= 0"),
    "timeout": (lambda v: v is None or (_num(v) and v > 0), "a positive number of seconds"),
    "stream_reverse": (lambda v: v is None or isinstance(v, bool), "a boolean"),
}


def _messages(v):
    return isinstance(v, list) and v and all(
        isinstance(m, dict) and m.get("role") in ("system", "user", "assistant") and isinstance(m.get("content"), str)
        and set(m) <= {"role", "content", "name"} for m in v)


def _prompt(v):
    return (isinstance(v, str) and v) or (isinstance(v, list) and v and all(_int(t) for t in v))


COMPLETIONS = {**COMMON, "prompt": (_prompt, "a non-empty string or list of token ids")}
CHAT = {**COMMON, "messages": (_messages, "a non-empty list of {role: system|user|assistant, content: string}")}


@dataclasses.dataclass
class Parsed:
    body: dict
    params: SamplingParams
    max_tokens: int
    stop: list
    stream: bool
    stream_reverse: bool
    timeout: float


def parse(body, schema: dict, required: str, *, max_tokens_limit: int, default_max_tokens: int, width: int,
          timeout_limit: float, cfg_allowed: bool, block_causal: bool = False) -> Parsed:
    """Check the body against `schema`; the SamplingParams it asks for (block_length: by
    default the width, or max_tokens when shorter, but always the width for a block-causal
    model, whose grid the answer need not fill)."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    for k in body:
        if k not in schema:
            raise ApiError(400, f"unknown field {k!r}", param=k, code="unknown_field")
    if required not in body:
        raise ApiError(400, f"missing required field {required!r}", param=required, code="missing_field")
    for k, v in body.items():
        ok, expected = schema[k]
        if not ok(v):
            raise ApiError(400, f"{k}={v!r}: expected {expected}", param=k, code="invalid_value")
    key = "max_tokens" if body.get("max_tokens") is not None else "max_completion_tokens"
    max_tokens = body.get(key)
    max_tokens = default_max_tokens if max_tokens is None else max_tokens
    if not 1 <= max_tokens <= max_tokens_limit:
        raise ApiError(400, f"{key}={max_tokens}: expected in [1, {max_tokens_limit}]", param="max_tokens",
                       code="invalid_value")
    block = body.get("block_length") or (width if block_causal else min(width, max_tokens))
    if block > width:
        raise ApiError(400, f"block_length={block}: expected <= the server's block width {width}",
                       param="block_length", code="invalid_value")
    gen = -(-max_tokens // block) * block
    if body.get("cfg") and not cfg_allowed:
        raise ApiError(400, "cfg: this server runs without guidance (start it with --cfg)", param="cfg",
                       code="invalid_value")
    try:
        params = SamplingParams(gen_length=gen, block_length=block, steps=body.get("steps") or gen,
                                temperature=float(body.get("temperature") or 0.0), cfg_scale=float(body.get("cfg") or 0),
                                remasking=body.get("remasking") or "low_confidence", threshold=body.get("threshold"),
                                top_k=body.get("top_k") or 0, top_p=float(body.get("top_p") or 1.0),
                                seed=body.get("seed") or 0)
    except ValueError as e:
        name = str(e).split(": ", 1)[-1].split("=", 1)[0]
        raise ApiError(400, str(e), param={"cfg_scale": "cfg"}.get(name, name), code="invalid_value") from None
    if params.steps > gen:
        raise ApiError(400, f"steps={params.steps}: expected <= the answer length {gen}", param="steps",
                       code="invalid_value")
    stop = body.get("stop")
    timeout = float(body.get("timeout") or timeout_limit)
    if timeout > timeout_limit:
        raise ApiError(400, f"timeout={timeout}: expected <= {timeout_limit}", param="timeout", code="invalid_value")
    return Parsed(body, params, max_tokens, [stop] if isinstance(stop, str) else list(stop or []),
                  bool(body.get("stream")), bool(body.get("stream_reverse")), timeout)
