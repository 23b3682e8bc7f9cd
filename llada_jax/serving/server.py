"""The OpenAI-compatible HTTP server on FastAPI (Starlette) + uvicorn, over the engine.

Routes: POST /v1/completions, POST /v1/chat/completions (the tokenizer's chat template),
`stream: true` as server-sent events ending with `data: [DONE]`; GET /v1/models,
GET /health, GET /metrics (Prometheus). Request fields: `llada_jax.serving.protocol`.

Errors are OpenAI-style `{"error": {"message", "type", "param", "code"}}`: 400 for a bad
body (malformed JSON, unknown or ill-typed fields, prompt too long, max_tokens out of
range), 429 with Retry-After when the queue is full, 504 when a request's timeout passes,
503 while draining. A client that disconnects has its request cancelled (its slot is
free at the next block boundary). Each request's answer depends only on itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import prometheus_client as prom
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from llada_jax.serving import protocol
from llada_jax.serving.engine import Engine, QueueFull
from llada_jax.serving.protocol import ApiError


class Metrics:
    """Prometheus metrics of one server (its own registry)."""

    def __init__(self, engine: Engine):
        self.registry = r = prom.CollectorRegistry()
        prom.Gauge("llada_queue_depth", "requests waiting for a slot", registry=r).set_function(engine.queue_depth)
        prom.Gauge("llada_slots_occupied", "slots running a request", registry=r).set_function(engine.occupied)
        prom.Gauge("llada_slots_total", "slots of the engine", registry=r).set_function(
            lambda: engine.slots * len(engine.buckets))
        prom.Gauge("llada_tokens_per_second", "output tokens per second of the last engine step",
                   registry=r).set_function(lambda: engine.last_step_tokens_per_s)
        prom.Gauge("llada_compilations", "programs compiled for the engine's block step",
                   registry=r).set_function(engine.compilations)
        prom.Gauge("llada_output_tokens", "output tokens generated", registry=r).set_function(
            lambda: engine.output_tokens)
        self.requests = prom.Counter("llada_requests", "finished requests by HTTP status", ["status"], registry=r)
        self.latency = prom.Histogram("llada_request_latency_seconds", "time from arrival to the last token",
                                      registry=r, buckets=(.01, .03, .1, .3, 1, 3, 10, 30, 100))
        self.first_block = prom.Histogram("llada_time_to_first_block_seconds", "time to the first answer block",
                                          registry=r, buckets=(.01, .03, .1, .3, 1, 3, 10, 30, 100))


def error_response(e: ApiError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


def create_app(engine: Engine, tokenizer, *, model_name: str = "llada", max_tokens: int = 256,
               default_max_tokens: int = 16, request_timeout: float = 600.0) -> FastAPI:
    """The app over a started or unstarted engine (started and stopped with the app's
    lifespan). tokenizer: None accepts token-id prompts only and answers with ids."""
    metrics = Metrics(engine)
    state = {"draining": False}

    async def lifespan(app):
        engine.start()
        yield
        state["draining"] = True
        engine.stop()

    app = FastAPI(title="llada-jax", lifespan=lifespan)
    app.state.engine, app.state.metrics = engine, metrics

    def encode(prompt):
        if isinstance(prompt, list):
            return prompt
        if tokenizer is None:
            raise ApiError(400, "prompt: this model has no tokenizer; send token ids", param="prompt")
        return tokenizer.encode(prompt)

    def decode(ids):  # ids the tokenizer lacks (a model vocabulary padded past it) are dropped
        if tokenizer is None:
            return " ".join(map(str, ids))
        return tokenizer.decode([i for i in ids if i < tokenizer.vocab_size])

    async def body_of(request: Request):
        raw = await request.body()
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, f"malformed JSON body: {e}", code="invalid_json") from None

    async def handle(request: Request, chat: bool):
        t0 = time.monotonic()
        if state["draining"]:
            raise ApiError(503, "the server is shutting down", type_="unavailable", headers={"Retry-After": "1"})
        schema, field = (protocol.CHAT, "messages") if chat else (protocol.COMPLETIONS, "prompt")
        body = await body_of(request)
        p = protocol.parse(body, schema, field, max_tokens_limit=max_tokens, default_max_tokens=default_max_tokens,
                           width=engine.width, timeout_limit=request_timeout, cfg_allowed=engine.guidance,
                           block_causal=engine.block_causal)
        if chat:
            if tokenizer is None:
                raise ApiError(400, "messages: this model has no tokenizer (chat template)", param="messages")
            ids = tokenizer.render_chat(body["messages"])
        else:
            ids = encode(body["prompt"])
        params = p.params
        if body.get("seed") is None and params.temperature > 0:
            params = params.replace(seed=int.from_bytes(os.urandom(4), "little") >> 1)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def on_event(req, kind, data):  # on the engine's thread
            loop.call_soon_threadsafe(events.put_nowait, (kind, data))

        try:
            req = engine.submit(ids, params, max_tokens=p.max_tokens, timeout=p.timeout, on_event=on_event)
        except QueueFull as e:
            raise ApiError(429, f"server overloaded: {e}", type_="rate_limit_error", code="queue_full",
                           headers={"Retry-After": "1"}) from None
        except ValueError as e:
            msg = str(e)
            param = field if msg.startswith("prompt") else msg.split("=", 1)[0].split(":", 1)[0]
            raise ApiError(400, msg, param=param, code="invalid_value") from None
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{req.id}"
        created = int(time.time())
        usage_in = len(ids)

        async def blocks():
            """(text delta, reveals, finish_reason or None) per answer block, stop strings applied."""
            sent, first, mine = "", True, []
            while True:
                kind, data = await events.get()
                if kind == "done":
                    reason = req.finish_reason
                    yield "", [], {"stop": "stop", "length": "length"}.get(reason, reason)
                    return
                if first:
                    metrics.first_block.observe(time.monotonic() - t0)
                    first = False
                mine += data[0]  # this block's ids (req.tokens may already hold later blocks)
                text = decode(mine)
                cut = min((text.find(s) for s in p.stop if s and s in text), default=-1)
                if cut >= 0:
                    req.cancel()
                    yield text[len(sent):cut] if cut > len(sent) else "", data[1], "stop"
                    return
                yield text[len(sent):], data[1], None
                sent = text

        def chunk(delta, reveals, reason):
            if chat:
                choice = {"index": 0, "delta": {"content": delta} if delta else {}, "finish_reason": reason}
            else:
                choice = {"index": 0, "text": delta, "finish_reason": reason, "logprobs": None}
            out = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion", "created": created,
                   "model": model_name, "choices": [choice]}
            if p.stream_reverse:
                out["reveals"] = reveals
            return f"data: {json.dumps(out)}\n\n"

        def finish_status(reason):
            status = 504 if reason == "timeout" else 200
            metrics.requests.labels(str(status)).inc()
            metrics.latency.observe(time.monotonic() - t0)

        if p.stream:
            async def sse():
                try:
                    if chat:
                        yield chunk("", [], None).replace('"delta": {}', '"delta": {"role": "assistant"}')
                    async for delta, reveals, reason in blocks():
                        if delta or reveals or reason:
                            yield chunk(delta, reveals, reason)
                        if reason:
                            finish_status(reason)
                    yield "data: [DONE]\n\n"
                finally:
                    req.cancel()  # a no-op once done; frees the slot of a client that left

            return StreamingResponse(sse(), media_type="text/event-stream")

        text, reason = "", None

        async def collect():
            nonlocal text, reason
            async for delta, _, r in blocks():
                text += delta
                reason = r or reason

        task = asyncio.ensure_future(collect())
        try:
            while not task.done():
                await asyncio.wait([task], timeout=0.25)
                if not task.done() and await request.is_disconnected():
                    req.cancel()
            await task
        finally:
            req.cancel()
            if not task.done():
                task.cancel()
        finish_status(reason)
        if reason == "timeout":
            raise ApiError(504, f"request timed out after {p.timeout} s", type_="timeout", code="timeout")
        usage = {"prompt_tokens": usage_in, "completion_tokens": len(req.tokens),
                 "total_tokens": usage_in + len(req.tokens)}
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason}
        else:
            choice = {"index": 0, "text": text, "finish_reason": reason, "logprobs": None}
        return {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": created,
                "model": model_name, "choices": [choice], "usage": usage}

    async def guarded(request, chat):
        try:
            return await handle(request, chat)
        except ApiError as e:
            if e.status != 200:
                metrics.requests.labels(str(e.status)).inc()
            return error_response(e)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await guarded(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await guarded(request, chat=True)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0,
                                            "owned_by": "llada-jax"}]}

    @app.get("/health")
    async def health():
        if state["draining"]:
            return JSONResponse({"status": "draining"}, status_code=503)
        return {"status": "ok", "slots": engine.slots * len(engine.buckets), "queue": engine.queue_depth()}

    @app.get("/metrics")
    async def prometheus():
        return Response(prom.generate_latest(metrics.registry), media_type=prom.CONTENT_TYPE_LATEST)

    @app.exception_handler(Exception)
    async def internal(request, exc):  # a bug: the client gets an OpenAI-style 500, the server lives on
        return error_response(ApiError(500, f"internal error: {type(exc).__name__}", type_="server_error"))

    @app.exception_handler(404)
    async def not_found(request, exc):
        return error_response(ApiError(404, f"no route {request.url.path}", type_="not_found"))

    @app.exception_handler(405)
    async def bad_method(request, exc):
        return error_response(ApiError(405, f"{request.method} is not allowed on {request.url.path}",
                                       type_="invalid_request_error"))

    return app
