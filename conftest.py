"""Test-session isolation, set up before anything imports huggingface_hub.

huggingface_hub reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE once, at import. This file is
loaded by pytest before any test module, so it points them at a private cache and at a hub the
tests serve themselves on 127.0.0.1: no test can reach the network or the user's own cache.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tests.hubserver import session_hub

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="histo-encoders-tests-"))
os.environ["HF_ENDPOINT"] = session_hub().url
os.environ["HF_HOME"] = str(_SESSION_DIR / "hf-home")
os.environ["HISTO_ENCODERS_HOME"] = str(_SESSION_DIR / "histo-encoders-home")
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ.pop("HF_HUB_OFFLINE", None)
os.environ.pop("HF_TOKEN", None)
