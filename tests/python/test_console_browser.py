"""The admin console in real headless Chromium (Debian's `chromium`, driven by `playwright-core`
from npm): see tests/browser/console_e2e.mjs for the steps. Screenshots land in
$AIAAS_ARTIFACTS/console (default: a temporary folder, printed)."""
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from conftest import aiaas, start_server

HERE = os.path.dirname(os.path.abspath(__file__))
BROWSER_DIR = os.path.join(os.path.dirname(HERE), "browser")


def _node_modules():
    # `make test` installs playwright-core here from package-lock.json (`npm ci`).
    return os.path.join(BROWSER_DIR, "node_modules")


def test_a_tenant_admin_manages_a_key_end_to_end_in_chromium():
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    modules = _node_modules()
    missing = [what for what, ok in [
        ("node", shutil.which("node")),
        (chromium, os.path.exists(chromium)),
        ("playwright-core", os.path.isdir(os.path.join(modules, "playwright-core"))),
    ] if not ok]
    if missing:
        if os.environ.get("AIAAS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser test needs {missing}")
        pytest.skip(f"browser test needs {missing}")
    server = start_server()
    try:
        tenant = "browser-co"
        aiaas("tenant", "create", tenant, database_url=server.database_url)
        email, password = "admin@browser-co.example", "a long test passphrase"
        subprocess.run(
            [os.environ["AIAAS_BIN"], "user", "create", "--email", email, "--role", "tenant_admin",
             "--tenant", tenant, "--password-env", "ADMIN_PASSWORD", "--database-url", server.database_url],
            check=True, capture_output=True, text=True, env={**os.environ, "ADMIN_PASSWORD": password})
        shots = os.path.join(os.environ.get("AIAAS_ARTIFACTS") or tempfile.mkdtemp(prefix="aiaas-shots-"), "console")
        env = {
            **os.environ,
            "AIAAS_URL": server.base, "ADMIN_EMAIL": email, "ADMIN_PASSWORD": password,
            "PYTHON": sys.executable, "MODEL": "tiny-qwen3", "SHOTS": shots, "CHROMIUM": chromium,
        }
        script = os.path.join(BROWSER_DIR, "console_e2e.mjs")
        run = subprocess.run(["node", script], env=env, capture_output=True, text=True, timeout=300,
                             cwd=BROWSER_DIR)
        print(run.stdout)
        print(f"screenshots: {shots}")
        assert run.returncode == 0, run.stdout + run.stderr
        assert len([f for f in os.listdir(shots) if f.endswith(".png")]) >= 15
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=30)
