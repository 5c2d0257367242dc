"""Headless Chromium for the tests that render agentlab's HTML pages (compare report, conversation viewer)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

# no update checks, sync or background fetches: a page that loads anything from the network has to do so itself
QUIET = ("--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run")


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    """Headless Chromium with its console on stderr; fails (not skips) when it is missing."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed: run scripts/install.sh (it installs Debian's chromium for these tests)")
    command = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        *QUIET,
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={profile}",
        *args,
    ]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def console_lines(stderr: str) -> list[str]:
    """Console messages; this Chromium logs every level as INFO:CONSOLE: a page that logs nothing has none."""
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
