"""Quiet library logging: tau2 logs its registry on import and every tool call; agent-framework every function.

Every log line, ours (loguru) or a library's (stdlib logging), has secret values scrubbed before it is
written, exception text included: a server may echo the API key in an error that a library then logs.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from loguru import logger

from agentlab.redact import scrub

NOISY_STDLIB_LOGGERS = ("agent_framework", "httpx", "openai", "LiteLLM", "urllib3")


class ScrubSecrets(logging.Filter):
    """Replaces secret values in a stdlib record's message, exception text and stack (``logger.exception`` too)."""

    formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = scrub(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatter.formatException(record.exc_info)  # handlers reuse exc_text once set
        record.exc_text = scrub(record.exc_text) if record.exc_text else record.exc_text
        record.stack_info = scrub(record.stack_info) if record.stack_info else record.stack_info
        return True


def _scrub_record(record: Any) -> None:
    record["message"] = scrub(record["message"])


def configure_logging(default: str = "WARNING") -> None:
    """Send records at ``$AGENTLAB_LOG_LEVEL`` (else ``default``) to stderr; tau2 only from ERROR."""
    level = os.environ.get("AGENTLAB_LOG_LEVEL") or default
    logger.remove()
    logger.configure(patcher=_scrub_record)
    logger.add(sys.stderr, level=level, filter={"": level, "tau2": "ERROR"})
    for handler in [*logging.getLogger().handlers, logging.lastResort]:  # Hydra's console and file handlers, or Python's fallback
        if handler is not None and not any(isinstance(f, ScrubSecrets) for f in handler.filters):
            handler.addFilter(ScrubSecrets())
    for name in NOISY_STDLIB_LOGGERS:
        logging.getLogger(name).setLevel(level)
