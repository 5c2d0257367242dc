"""agentlab as a user installs it: a wheel, not the checkout, running the README's own-config example.

The wheel is built from a copy of the project, installed without its dependencies into a fresh environment
that sees this one's packages (nothing downloads), and run from a folder outside the checkout with the
experiment file and command the README shows, read from the README itself.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

SECTION = "## Installing agentlab, and configs of your own"


def readme_example() -> tuple[str, str, str]:
    """The example's file path, its YAML and its command, as the README's section shows them."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    path = re.search(r"For example, `([^`]+\.yaml)`", section).group(1)
    yaml = re.search(r"```yaml\n(.*?)```", section, re.DOTALL).group(1)
    command = re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1).strip()
    return path, yaml, command


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


def build_and_install(tmp_path: Path, env: dict[str, str]) -> Path:
    """A fresh environment holding agentlab's wheel; returns its ``bin`` folder."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dist = tmp_path / "dist"
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), str(source)],
        tmp_path,
        env,
    )
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], tmp_path, env)
    python = venv / "bin" / "python"
    (wheel,) = dist.glob("agentlab-*.whl")
    _run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed", str(wheel)],
        tmp_path,
        env,
    )
    return venv / "bin"


def test_wheel_runs_the_readme_user_config_example_outside_the_checkout(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HYDRA_FULL_ERROR")}
    env["PATH"] = f"{tmp_path / 'venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    bin_dir = build_and_install(tmp_path, env)
    work = tmp_path / "work"
    path, yaml, command = readme_example()
    (work / path).parent.mkdir(parents=True)
    (work / path).write_text(yaml, encoding="utf-8")

    where = _run(
        [str(bin_dir / "python"), "-c", "import agentlab.conf as c; print(c.CONFIG_DIR)"], work, env
    ).stdout.strip()
    assert Path(where).is_relative_to(tmp_path / "venv"), f"agentlab was imported from {where}, not the installed wheel"
    assert sorted(p.name for p in Path(where).glob("experiment/*.yaml")) == sorted(
        p.name for p in (ROOT / "src" / "agentlab" / "conf" / "experiment").glob("*.yaml")
    )

    assert command.split()[0] == "agentlab"
    _run([str(bin_dir / "agentlab"), *command.split()[1:]], work, env)
    (run_dir,) = (work / "outputs" / "runs" / "my_oracle").iterdir()
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [row["task_id"] for row in rows] == ["0", "1", "2", "3", "4"]
    assert all(row["reward"] == 1.0 for row in rows)
    assert json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))["avg_reward"] == 1.0

    _run([str(bin_dir / "agentlab-compare"), str(run_dir)], work, env)  # the report's console script, installed too
    assert list((run_dir / "compare").glob("*.html"))


def test_a_user_config_dir_adds_options_to_every_group(tmp_path: Path) -> None:
    """Options of one's own in any group (a model, a domain, an experiment using both) compose beside the packaged ones."""
    mine = tmp_path / "my_configs"
    for group, text in {
        "model/my_agent.yaml": "_target_: agentlab.models.oracle.OracleModel\n",
        "domain/my_retail.yaml": "_target_: agentlab.eval.domains.Tau2Domain\nname: retail\n",
        "experiment/mine.yaml": (
            "# @package _global_\ndefaults:\n  - override /model@agent: my_agent\n  - override /domain: my_retail\n"
            "experiment_name: mine\n"
        ),
    }.items():
        (mine / group).parent.mkdir(parents=True, exist_ok=True)
        (mine / group).write_text(text, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    for args in (["--config-dir", str(mine)], [f"hydra.searchpath=[file://{mine}]"]):
        done = _run([sys.executable, "-m", "agentlab.run", *args, "+experiment=mine", "--cfg", "job"], tmp_path, env)
        assert "name: retail" in done.stdout and "agentlab.models.oracle.OracleModel" in done.stdout
        assert "experiment_name: mine" in done.stdout
