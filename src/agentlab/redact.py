"""Secret redaction for anything agentlab writes: W&B configs, config dumps, results."""

from __future__ import annotations

import os
import re
from typing import Any

SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password|passwd|authorization)", re.IGNORECASE)
REDACTED = "***"


def secret_values() -> set[str]:
    """Values of environment variables whose names look secret (long enough to be worth hiding)."""
    return {v for k, v in os.environ.items() if SECRET_KEY.search(k) and len(v) >= 8}


def scrub(text: str, secrets: set[str] | None = None) -> str:
    """``text`` with every known secret value replaced by ``***`` (error messages, tracebacks, log lines)."""
    for secret in secret_values() if secrets is None else secrets:
        text = text.replace(secret, REDACTED)
    return text


def redact(obj: Any, secrets: set[str] | None = None) -> Any:
    """A copy of ``obj`` with secret-named keys and any known secret value replaced by ``***``."""
    secrets = secret_values() if secrets is None else secrets
    if isinstance(obj, dict):
        return {k: REDACTED if SECRET_KEY.search(str(k)) and v not in (None, "") else redact(v, secrets) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact(v, secrets) for v in obj]
    return scrub(obj, secrets) if isinstance(obj, str) else obj
