"""Starts the real `aiaas` binary on a free loopback port with the tiny test models, on a fresh
SQLite database; the first start prints the default tenant's first API key, which the tests use."""
import os
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def aiaas(*args, database_url):
    """Run an operator subcommand of the binary; returns the last line of its stdout."""
    out = subprocess.run([os.environ["AIAAS_BIN"], *args, "--database-url", database_url],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


class Server:
    def __init__(self, proc, base, key, database_url):
        self.proc, self.base, self.key, self.database_url = proc, base, key, database_url


def start_server(extra_args=(), env=None):
    """Start `aiaas serve` with the tiny models on a fresh database; returns a `Server` once ready."""
    binary = os.environ["AIAAS_BIN"]
    models = os.environ["AIAAS_TEST_MODELS"]
    database_url = "sqlite://" + os.path.join(tempfile.mkdtemp(prefix="aiaas-pytest-"), "aiaas.db")
    port = _free_port()
    config = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"aiaas-pytest-{port}.toml")
    with open(config, "w") as f:
        f.write(
            "[[models]]\nid = \"tiny-qwen3-tools\"\n"
            f"source = \"{models}/tiny-qwen3\"\nchat_template = \"{models}/chatml-tools.jinja\"\n"
        )
    cmd = [
        binary, "serve", "--bind", f"127.0.0.1:{port}", "--config", config, "--database-url", database_url,
        "--model", f"tiny-qwen3={models}/tiny-qwen3",
        "--model", f"tiny-llama-gguf={models}/tiny-llama.gguf",
        "--model", f"tiny-qwen3-embedding={models}/tiny-qwen3-embedding",
        "--model", f"tiny-bert={models}/tiny-bert",
        *extra_args,
    ]
    stderr = tempfile.TemporaryFile(mode="w+")
    journal = tempfile.mkdtemp(prefix="aiaas-pytest-journal-")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True,
                            env={**os.environ, "AIAAS__LEDGER__JOURNAL_DIR": journal, **(env or {})})
    base = f"http://127.0.0.1:{port}"
    # The first start on an empty database prints the first API key as a line of its own.
    key = None
    for line in proc.stdout:
        if line.startswith("sk-aiaas-"):
            key = line.strip()
            break
    if key is None:
        stderr.seek(0)
        raise RuntimeError(f"aiaas printed no first key: {stderr.read()}")
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            stderr.seek(0)
            raise RuntimeError(f"aiaas exited: {stderr.read()}")
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
    return Server(proc, base, key, database_url)


@pytest.fixture(scope="session")
def server():
    started = start_server()
    yield started
    started.proc.terminate()
    try:
        started.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        started.proc.kill()


@pytest.fixture()
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.base + "/v1", api_key=server.key, max_retries=0)
