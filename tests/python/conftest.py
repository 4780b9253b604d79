"""Starts the real `aiaas` binary on a free loopback port with the tiny test models."""
import os
import socket
import subprocess
import time
import urllib.request

import pytest


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(extra_args=(), env=None):
    """Start `aiaas serve` with the tiny models; returns (process, base URL) once ready."""
    binary = os.environ["AIAAS_BIN"]
    models = os.environ["AIAAS_TEST_MODELS"]
    port = _free_port()
    config = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"aiaas-pytest-{port}.toml")
    with open(config, "w") as f:
        f.write(
            "[[models]]\nid = \"tiny-qwen3-tools\"\n"
            f"source = \"{models}/tiny-qwen3\"\nchat_template = \"{models}/chatml-tools.jinja\"\n"
        )
    cmd = [
        binary, "serve", "--bind", f"127.0.0.1:{port}", "--config", config,
        "--model", f"tiny-qwen3={models}/tiny-qwen3",
        "--model", f"tiny-llama-gguf={models}/tiny-llama.gguf",
        "--model", f"tiny-qwen3-embedding={models}/tiny-qwen3-embedding",
        "--model", f"tiny-bert={models}/tiny-bert",
        *extra_args,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"aiaas exited: {proc.stderr.read()}")
        try:
            with urllib.request.urlopen(base + "/ready", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("aiaas did not become ready")
        time.sleep(0.1)
    return proc, base


@pytest.fixture(scope="session")
def server():
    proc, base = start_server()
    yield base
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture()
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server + "/v1", api_key="not-checked-yet", max_retries=0)
