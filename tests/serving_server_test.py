"""`python -m llada_jax.serve` on 127.0.0.1 with a tiny random model and its tokenizer,
driven by the real `openai` client: completions, chat, streaming, the reverse-process
stream, 400s naming the field, 429 with Retry-After, 504, cancellation, a bounded load
test (each answer equals its prompt's lone answer), no compile after warm-up, and a
SIGTERM drain (last: it stops the server)."""

import concurrent.futures
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import httpx
import jax
import numpy as np
import openai
import pytest

from llada_jax.model import LLaDAConfig, init_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ["--slots=8", "--buckets=96", "--block_width=8", "--max_queue=16", "--max_tokens=64",
         "--default_max_tokens=8"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from llada_jax.data.tokenizer import train_sentencepiece
    from llada_jax.interop.export import save_pretrained

    d = tmp_path_factory.mktemp("serve")
    (d / "corpus.txt").write_text("".join(f"{n} is {n % 10}. the cat sat on the mat\n" for n in range(100)))
    tok = train_sentencepiece([str(d / "corpus.txt")], str(d / "tok"), 300)
    cfg = LLaDAConfig.tiny(vocab_size=320, embedding_size=320, max_sequence_length=128, mask_token_id=tok.mask_id,
                           eos_token_id=tok.eos_id, pad_token_id=tok.eos_id)
    save_pretrained(cfg, init_params(cfg, jax.random.key(0)), str(d / "hf"), dtype="float32", tokenizer=tok)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=ROOT, XLA_FLAGS=os.environ["XLA_FLAGS"].replace(
        "--xla_force_host_platform_device_count=8", ""))
    proc = subprocess.Popen([sys.executable, "-m", "llada_jax.serve", f"--hf={d / 'hf'}", f"--port={port}",
                             "--model_name=tiny", *FLAGS], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while True:
        assert proc.poll() is None, proc.stdout.read().decode()
        try:
            if httpx.get(url + "/health").status_code == 200:
                break
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.3)
    yield url, proc, tok
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="none", max_retries=0, timeout=60)


def metric(server, name):
    text = httpx.get(server[0] + "/metrics").text
    return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))


def test_models_health_and_metrics(server):
    assert [m.id for m in client(server).models.list()] == ["tiny"]
    assert httpx.get(server[0] + "/health").json()["status"] == "ok"
    assert metric(server, "llada_slots_total") == 8 and metric(server, "llada_compilations") == 1


def test_completion_and_chat(server):
    c = client(server)
    r = c.completions.create(model="tiny", prompt="the cat", max_tokens=6)
    assert r.choices[0].finish_reason in ("stop", "length") and r.usage.prompt_tokens == len(server[2].encode("the cat"))
    assert r.usage.completion_tokens <= 6 and isinstance(r.choices[0].text, str)
    again = c.completions.create(model="tiny", prompt="the cat", max_tokens=6)
    assert again.choices[0].text == r.choices[0].text
    chat = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "7 is"}], max_tokens=8,
                                     extra_body={"steps": 4, "threshold": 0.5})
    assert chat.choices[0].message.role == "assistant" and chat.object == "chat.completion"
    assert chat.usage.prompt_tokens == len(server[2].render_chat([{"role": "user", "content": "7 is"}]))


def test_streaming_ends_with_done_and_equals_the_answer(server):
    body = {"model": "tiny", "prompt": "3 is", "max_tokens": 16, "stream": True, "stream_reverse": True}
    with httpx.stream("POST", server[0] + "/v1/completions", json=body, timeout=60) as r:
        lines = [ln for ln in r.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]" and all(ln.startswith("data: ") for ln in lines)
    chunks = [json.loads(ln[6:]) for ln in lines[:-1]]
    text = "".join(ch["choices"][0]["text"] for ch in chunks)
    reveals = [p for ch in chunks for p in ch["reveals"]]
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert len(reveals) == 16 or chunks[-1]["choices"][0]["finish_reason"] == "stop"  # one token per call
    whole = client(server).completions.create(model="tiny", prompt="3 is", max_tokens=16)
    assert whole.choices[0].text == text
    deltas = [ch.choices[0].delta for ch in client(server).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=8, stream=True)]
    assert deltas[0].role == "assistant"


@pytest.mark.parametrize("body,param", [
    ('{"model": "tiny", "prompt": ', None),
    ('{"model": "tiny", "prompt": "a", "colour": 1}', "colour"),
    ('{"model": "tiny", "prompt": "a", "temperature": "hot"}', "temperature"),
    ('{"model": "tiny", "prompt": "a", "max_tokens": 0}', "max_tokens"),
    ('{"model": "tiny", "prompt": "a", "max_tokens": 65}', "max_tokens"),
    ('{"model": "tiny", "prompt": "' + "the mat " * 60 + '"}', "prompt"),
    ('{"model": "tiny", "prompt": "a", "steps": 3, "max_tokens": 16}', "steps"),
    ('{"model": "tiny", "prompt": "a", "block_length": 16}', "block_length"),
    ('{"model": "tiny", "prompt": "a", "cfg": 1.0}', "cfg"),
    ('{"model": "tiny", "prompt": [1, 2, 99999]}', "prompt"),
    ('{"model": "tiny", "messages": [{"role": "robot", "content": "x"}]}', "messages"),
    ('[1, 2]', None),
])
def test_bad_requests_get_an_openai_400_naming_the_field(server, body, param):
    route = "/v1/chat/completions" if "messages" in body else "/v1/completions"
    r = httpx.post(server[0] + route, content=body, headers={"content-type": "application/json"})
    err = r.json()["error"]
    assert r.status_code == 400 and err["type"] == "invalid_request_error" and err["param"] == param, err
    assert set(err) == {"message", "type", "param", "code"}
    with pytest.raises(openai.BadRequestError, match="colour"):
        client(server).completions.create(model="tiny", prompt="a", extra_body={"colour": 1})


def test_timeout_gets_504(server):
    r = httpx.post(server[0] + "/v1/completions", json={"model": "tiny", "prompt": "a", "timeout": 1e-6})
    assert r.status_code == 504 and r.json()["error"]["type"] == "timeout"


def test_a_client_that_leaves_frees_its_slot(server):
    before = metric(server, "llada_output_tokens")
    body = {"model": "tiny", "prompt": "5 is", "max_tokens": 64, "stream": True}
    with httpx.stream("POST", server[0] + "/v1/completions", json=body, timeout=60) as r:
        next(ln for ln in r.iter_lines() if ln)  # the first block, then hang up
    deadline = time.monotonic() + 10
    while metric(server, "llada_slots_occupied") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(server, "llada_slots_occupied") == 0
    assert metric(server, "llada_output_tokens") - before < 64


OPTIONS = [{}, {"temperature": 0.8, "seed": 5, "top_p": 0.9}, {"threshold": 0.4, "steps": 4, "remasking": "random"}]
PROMPTS = ["the cat", "1 is", "sat on", "the mat 4", "9", "mat mat"]


def test_load_each_answer_is_its_lone_answer_or_a_429(server):
    c = client(server)
    jobs = [(p, i) for p in PROMPTS for i in range(len(OPTIONS))]

    def ask(job):
        p, i = job
        return c.completions.create(model="tiny", prompt=p, max_tokens=8, extra_body=OPTIONS[i]).choices[0].text

    alone = {job: ask(job) for job in jobs}  # one at a time
    compiled = metric(server, "llada_compilations")

    def attempt(k):  # a refused client tries again soon (at most 30 times)
        job, refusals = jobs[k % len(jobs)], []
        for _ in range(30):
            try:
                return job, ask(job), refusals
            except openai.RateLimitError as e:
                refusals.append(e.response.headers.get("retry-after"))
                time.sleep(0.1)
        return job, None, refusals

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        results = list(pool.map(attempt, range(320)))
    answered = [(job, text) for job, text, _ in results if text is not None]
    refused = [ra for _, _, r in results for ra in r]
    assert all(text == alone[job] for job, text in answered)
    assert len(answered) >= 250
    assert refused and set(refused) == {"1"}  # 8 slots + 16 queued < 32 clients: some get 429
    assert metric(server, "llada_compilations") == compiled  # nothing compiled under load
    assert metric(server, "llada_queue_depth") == 0


def test_sigterm_drains_running_requests_and_exits_0(server):
    url, proc, _ = server
    body = {"model": "tiny", "prompt": "2 is", "max_tokens": 64, "stream": True}

    def stream():
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as r:
            lines = [ln for ln in r.iter_lines() if ln]
        return lines[-1], json.loads(lines[-2][6:])["choices"][0]["finish_reason"]

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(stream) for _ in range(3)]
        deadline = time.monotonic() + 30
        while metric(server, "llada_slots_occupied") < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        done = [f.result() for f in futures]
    assert all(last == "data: [DONE]" and reason in ("stop", "length") for last, reason in done)
    assert proc.wait(timeout=60) == 0
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/health")
