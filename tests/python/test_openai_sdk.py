"""Conformance with the official `openai` Python SDK: the shapes it parses, the exceptions it
raises. Models are random-weight, so assertions are about structure and token counts."""
import base64
import json
import math
import signal
import struct
import threading

import openai
import pytest

CHAT = "tiny-qwen3"
GGUF = "tiny-llama-gguf"
EMBED = "tiny-qwen3-embedding"
BERT = "tiny-bert"
MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say this is a test"}]


def test_models_list_and_retrieve(client):
    ids = {m.id for m in client.models.list()}
    assert {CHAT, GGUF, EMBED, BERT} <= ids
    m = client.models.retrieve(CHAT)
    assert m.id == CHAT and m.object == "model" and m.owned_by == "aiaas"


@pytest.mark.parametrize("model", [CHAT, GGUF])
def test_chat_completion(client, model):
    r = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=5, temperature=0)
    assert r.id.startswith("chatcmpl-")
    assert r.object == "chat.completion"
    assert r.model == model
    assert r.system_fingerprint
    assert len(r.choices) == 1
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert 1 <= r.usage.completion_tokens <= 5
    assert r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_stream_with_include_usage(client):
    stream = client.chat.completions.create(
        model=CHAT, messages=MESSAGES, max_tokens=6, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes and finishes[-1] in ("stop", "length")
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    full = client.chat.completions.create(model=CHAT, messages=MESSAGES, max_tokens=6, temperature=0)
    assert text == full.choices[0].message.content
    assert last.usage.completion_tokens == full.usage.completion_tokens
    assert last.usage.prompt_tokens == full.usage.prompt_tokens


def test_completions_single_and_list(client):
    r = client.completions.create(model=CHAT, prompt="Once upon a time", max_tokens=4, temperature=0)
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    assert len(r.choices) == 1 and 1 <= r.usage.completion_tokens <= 4
    r = client.completions.create(model=CHAT, prompt=["one", "two three"], max_tokens=3, temperature=0)
    assert sorted(c.index for c in r.choices) == [0, 1]
    stream = client.completions.create(model=CHAT, prompt="Hello", max_tokens=3, stream=True,
                                       stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[-1].usage.completion_tokens >= 1


@pytest.mark.parametrize("model", [EMBED, BERT])
def test_embeddings_float_and_base64_agree(client, model):
    floats = client.embeddings.create(model=model, input=["hello world", "the quick brown fox"])
    assert [d.index for d in floats.data] == [0, 1]
    vec = floats.data[0].embedding
    assert abs(math.sqrt(sum(x * x for x in vec)) - 1.0) < 1e-3
    assert floats.usage.prompt_tokens > 0
    # The SDK asks for base64 by default and decodes it; decode it ourselves too.
    raw = client.embeddings.with_raw_response.create(model=model, input="hello world", encoding_format="base64")
    b64 = raw.http_response.json()["data"][0]["embedding"]
    decoded = struct.unpack(f"<{len(vec)}f", base64.b64decode(b64))
    assert max(abs(a - b) for a, b in zip(decoded, vec)) < 1e-6


def test_embeddings_with_sdk_default_encoding(client):
    r = client.embeddings.create(model=BERT, input="hello")
    assert len(r.data[0].embedding) > 0


def test_bad_request_raises_bad_request_error(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=CHAT, messages=MESSAGES, temperature=5)
    assert e.value.status_code == 400
    assert e.value.body["param"] == "temperature"
    assert e.value.body["type"] == "invalid_request_error"


def test_unknown_model_raises_not_found_error(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_unsupported_parameter_is_named(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=CHAT, messages=MESSAGES, extra_body={"guided_grammar": "x"})
    assert e.value.body["param"] == "guided_grammar"


def test_tool_calls_parse_as_sdk_objects(client):
    schema = {"type": "object", "properties": {"name": {"const": "get_weather"},
              "arguments": {"type": "object", "properties": {"city": {"const": "Paris"}}, "required": ["city"],
                            "additionalProperties": False}},
              "required": ["name", "arguments"], "additionalProperties": False}
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    r = client.chat.completions.create(
        model="tiny-qwen3-tools", messages=MESSAGES, max_tokens=60, tools=tools,
        response_format={"type": "json_schema", "json_schema": {"name": "call", "schema": schema}},
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}


def test_sigterm_lets_the_inflight_stream_finish():
    from conftest import start_server
    from openai import OpenAI

    started = start_server()
    proc = started.proc
    client = OpenAI(base_url=started.base + "/v1", api_key=started.key, max_retries=0)
    stream = client.chat.completions.create(model=CHAT, messages=MESSAGES, max_tokens=40, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    first = next(iter(stream))
    assert first.choices[0].delta.role == "assistant"
    threading.Timer(0.05, proc.send_signal, args=(signal.SIGTERM,)).start()
    rest = list(stream)
    assert rest[-1].usage is not None and rest[-1].usage.completion_tokens >= 1
    assert proc.wait(timeout=30) == 0
    with pytest.raises(openai.APIConnectionError):
        client.models.list()


def test_a_bad_key_raises_authentication_error(server):
    from openai import OpenAI

    for bad in ["sk-aiaas-aaaaaaaaaaaa-" + "A" * 43, "sk-proj-something", server.key[:-1] + "x"]:
        client = OpenAI(base_url=server.base + "/v1", api_key=bad, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as err:
            client.chat.completions.create(model=CHAT, messages=MESSAGES, max_tokens=2)
        assert err.value.status_code == 401
        assert err.value.code == "invalid_api_key"


def test_a_minted_jwt_works_as_the_api_key(server):
    from conftest import aiaas
    from openai import OpenAI

    key_id = server.key.split("-")[2]
    token = aiaas("key", "token", key_id, "--ttl", "10m", "--sub", "pytest-user",
                  database_url=server.database_url)
    client = OpenAI(base_url=server.base + "/v1", api_key=token, max_retries=0)
    out = client.chat.completions.create(model=CHAT, messages=MESSAGES, max_tokens=2, temperature=0)
    assert out.usage.completion_tokens >= 1
    assert [m.id for m in client.models.list()]


def test_a_key_limited_to_other_models_raises_permission_denied(server):
    from conftest import aiaas
    from openai import OpenAI

    key = aiaas("key", "create", "--tenant", "default", "--models", BERT, database_url=server.database_url)
    client = OpenAI(base_url=server.base + "/v1", api_key=key, max_retries=0)
    assert [m.id for m in client.models.list()] == [BERT]
    with pytest.raises(openai.PermissionDeniedError) as err:
        client.chat.completions.create(model=CHAT, messages=MESSAGES, max_tokens=2)
    assert err.value.code == "model_not_allowed"
    assert len(client.embeddings.create(model=BERT, input="hello").data) == 1


def _refusals(server, reason):
    import urllib.request

    with urllib.request.urlopen(server.base + "/metrics") as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith(f'aiaas_admission_refusals_total{{reason="{reason}"}}'):
            return int(line.rsplit(" ", 1)[1])
    return 0


def test_rate_limit_error_carries_the_headers_and_the_sdk_retry_succeeds(server):
    from conftest import aiaas
    from openai import OpenAI

    # 60 a minute, one at a time: the second request in a row must wait a second.
    key = aiaas("key", "create", "--tenant", "default", "--rpm", "60", "--rpm-burst", "1",
                database_url=server.database_url)
    strict = OpenAI(base_url=server.base + "/v1", api_key=key, max_retries=0)
    first = strict.chat.completions.with_raw_response.create(model=CHAT, messages=MESSAGES, max_tokens=1)
    assert first.headers["x-ratelimit-limit-requests"] == "60"
    assert first.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError) as err:
        strict.chat.completions.create(model=CHAT, messages=MESSAGES, max_tokens=1)
    assert err.value.status_code == 429
    assert err.value.code == "rate_limit_exceeded"
    headers = err.value.response.headers
    assert headers["x-ratelimit-limit-requests"] == "60"
    assert 0 < int(headers["retry-after-ms"]) <= 1000
    assert headers["retry-after"] == "1"
    # The SDK's own retry waits as told and then gets through.
    refused_before = _refusals(server, "requests")
    patient = OpenAI(base_url=server.base + "/v1", api_key=key, max_retries=3)
    out = patient.chat.completions.create(model=CHAT, messages=MESSAGES, max_tokens=1)
    assert out.usage.completion_tokens == 1
    assert _refusals(server, "requests") - refused_before <= 1


def test_an_exhausted_budget_raises_insufficient_quota_and_the_sdk_does_not_retry(server):
    from conftest import aiaas
    from openai import OpenAI

    key = aiaas("key", "create", "--tenant", "default", database_url=server.database_url)
    key_id = key.split("-")[2]
    aiaas("budget", "set", "--tenant", "default", "--key", key_id, "--tokens", "5",
          database_url=server.database_url)
    client = OpenAI(base_url=server.base + "/v1", api_key=key, max_retries=2)
    # The budget reaches the server's cache within a second.
    import time
    deadline = time.monotonic() + 2
    while True:
        before = _refusals(server, "budget")
        try:
            client.chat.completions.create(model=CHAT, messages=MESSAGES, max_tokens=8)
        except openai.RateLimitError as err:
            assert err.code == "insufficient_quota"
            assert err.type == "insufficient_quota"
            break
        assert time.monotonic() < deadline, "budget not applied within 2 s"
    assert _refusals(server, "budget") - before == 1, "x-should-retry: false stops the SDK's retries"
    listed = aiaas("budget", "list", "--tenant", "default", database_url=server.database_url)
    assert listed.split("\t")[1] == key_id and listed.split("\t")[7] == "0"


def test_the_ledger_reconciles_with_the_usage_every_client_received(server):
    """A mixed workload through the SDK; the ledger holds, per request id, exactly the usage the
    SDK returned (streams with and without the usage chunk, completions, embeddings, an error)."""
    import sqlite3
    import time

    from openai import OpenAI

    client = OpenAI(base_url=server.base + "/v1", api_key=server.key, max_retries=0)
    told = {}
    r = client.chat.completions.with_raw_response.create(model=CHAT, messages=MESSAGES, max_tokens=4, temperature=0)
    told[r.headers["x-request-id"]] = (r.parse().usage.prompt_tokens, r.parse().usage.completion_tokens)
    with client.chat.completions.with_streaming_response.create(
            model=CHAT, messages=MESSAGES, max_tokens=5, temperature=0, stream=True,
            stream_options={"include_usage": True}) as r:
        usage = [c.usage for c in r.parse() if c.usage][0]
        told[r.headers["x-request-id"]] = (usage.prompt_tokens, usage.completion_tokens)
    # Without the usage chunk, the client counts what it can: the ledger still has the engine's.
    with client.chat.completions.with_streaming_response.create(
            model=CHAT, messages=MESSAGES, max_tokens=3, temperature=0, stream=True) as r:
        for _ in r.parse():
            pass
        silent = r.headers["x-request-id"]
    r = client.completions.with_raw_response.create(model=GGUF, prompt=["a", "b"], max_tokens=3, temperature=0)
    told[r.headers["x-request-id"]] = (r.parse().usage.prompt_tokens, r.parse().usage.completion_tokens)
    r = client.embeddings.with_raw_response.create(model=BERT, input=["one", "two", "three"])
    told[r.headers["x-request-id"]] = (r.parse().usage.prompt_tokens, 0)
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=CHAT, prompt="word " * 2000, max_tokens=2)
    failed = err.value.response.headers["x-request-id"]

    path = server.database_url.removeprefix("sqlite://")
    wanted = set(told) | {silent, failed}
    deadline = time.monotonic() + 20
    while True:
        with sqlite3.connect(path) as db:
            marks = ",".join("?" * len(wanted))
            rows = {row[0]: row[1:] for row in db.execute(
                f"SELECT request_id, prompt_tokens, completion_tokens, status, http_status FROM usage_events "
                f"WHERE request_id IN ({marks})", sorted(wanted))}
        if len(rows) == len(wanted):
            break
        assert time.monotonic() < deadline, f"recorded {len(rows)} of {len(wanted)}"
        time.sleep(0.05)
    for request_id, (prompt, completion) in told.items():
        assert rows[request_id][:3] == (prompt, completion, "ok"), request_id
    assert rows[silent][2] == "ok" and 1 <= rows[silent][1] <= 3
    assert rows[failed][2:] == ("error", 400) and rows[failed][:2] == (0, 0)


def test_the_usage_export_opens_in_libreoffice_with_the_same_values(server, client, tmp_path):
    """The finance CSV, read by LibreOffice Calc (headless) and written back: same rows, same
    text, same numbers (money to the micro-unit)."""
    import csv
    import datetime
    import os
    import shutil
    import subprocess
    import time
    from decimal import Decimal

    soffice = shutil.which("soffice")
    if soffice is None:
        assert not os.environ.get("AIAAS_REQUIRE_LIBREOFFICE"), "LibreOffice is required"
        pytest.skip("LibreOffice is not installed (.ci/run installs it when it can)")
    client.chat.completions.create(model=CHAT, messages=MESSAGES, max_tokens=2, user='ann, "quoted"')
    today = datetime.datetime.now(datetime.timezone.utc).date()
    args = ["usage", "export", "--from", str(today), "--to", str(today + datetime.timedelta(days=1)),
            "--group-by", "day,key,model,user"]
    deadline = time.monotonic() + 20
    while True:
        out = subprocess.run([os.environ["AIAAS_BIN"], *args, "--database-url", server.database_url],
                             check=True, capture_output=True)
        if b'"ann, ""quoted"""' in out.stdout:
            break
        assert time.monotonic() < deadline, out.stdout
        time.sleep(0.1)
    original = tmp_path / "usage.csv"
    original.write_bytes(out.stdout)
    filt = "csv:Text - txt - csv (StarCalc):44,34,76,1,,0,false,true,false,false"
    subprocess.run([soffice, "--headless", "--convert-to", filt, "--outdir", str(tmp_path / "lo"), str(original)],
                   check=True, capture_output=True, timeout=180, env={**os.environ, "HOME": str(tmp_path)})
    read = lambda p: list(csv.reader(p.read_text(encoding="utf-8").splitlines()))
    ours, theirs = read(original), read(tmp_path / "lo" / "usage.csv")
    assert len(ours) == len(theirs) > 1 and ours[0] == theirs[0]
    for a_row, b_row in zip(ours[1:], theirs[1:]):
        assert len(a_row) == len(b_row)
        for a, b in zip(a_row, b_row):
            try:
                assert Decimal(a) == Decimal(b), (a, b)
            except ArithmeticError:
                assert a == b, (a, b)
