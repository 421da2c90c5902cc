"""W&B credentials are found the way wandb.init finds them, without deprecated calls or output."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEY = "0123456789" * 4  # a well-formed, unknown API key


def wandb_env(base_url: str, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return {**env, "WANDB_MODE": "online", "WANDB_API_KEY": KEY, "WANDB_BASE_URL": base_url,
            "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **extra}


def test_netrc_credentials_are_found_without_a_deprecation_warning(tmp_path):
    (tmp_path / "netrc").write_text(f"machine 127.0.0.1:9\n  login user\n  password {KEY}\n")
    code = "from deepforcing.loggers import _has_credentials as h; print(h())"
    for base_url, found in (("http://127.0.0.1:9", "True"), ("http://127.0.0.1:8", "False")):
        env = wandb_env(base_url, HOME=str(tmp_path), NETRC=str(tmp_path / "netrc"))
        del env["WANDB_API_KEY"], env["WANDB_SILENT"]
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env,
                           cwd=ROOT)
        assert (r.returncode, r.stdout.strip(), r.stderr) == (0, found, "")
