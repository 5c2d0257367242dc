"""Importing agentlab, or any of its modules, leaves the process as it was.

A host program (a notebook using ``TaskRunner``, another framework) keeps its environment variables, its
logging handlers and every third-party class unchanged; ``agentlab.setup()`` and the entry points do the
set-up. Each check runs in a fresh interpreter: one lists what importing every agentlab module loads, the
next imports those third-party modules first, takes a snapshot, imports agentlab's modules and compares.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from agentlab.offline import offline_defaults

IMPORT_ALL = """
import importlib, importlib.util, pathlib
ROOT = pathlib.Path(next(iter(importlib.util.find_spec("agentlab").submodule_search_locations)))  # not imported
AGENTLAB_MODULES = sorted(
    ".".join(("agentlab", *path.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")
    for path in ROOT.rglob("*.py")
)
def import_agentlab():
    for name in AGENTLAB_MODULES:
        importlib.import_module(name)
"""

PROBE = (
    IMPORT_ALL
    + """
import json, sys
import_agentlab()
print(json.dumps(sorted(n for n in sys.modules if n.split(".")[0] not in ("agentlab", "__main__", "__mp_main__"))))
"""
)

CHECK = (
    IMPORT_ALL
    + """
import importlib, json, logging, os, sys
from loguru import logger

for name in json.loads(sys.stdin.read()):
    try:
        importlib.import_module(name)
    except Exception:
        pass  # a module that only imports as part of its package's own sequence; its package is snapshotted

def behaviour(value):
    # what a patch replaces: methods, properties, nested classes (not pydantic's lazily built schemas, counters)
    return callable(value) or isinstance(value, (property, classmethod, staticmethod))

def classes():
    found = {}
    for module_name, module in list(sys.modules.items()):
        if module_name.split(".")[0] == "agentlab" or module is None:
            continue
        for attr, value in list(vars(module).items()):
            if isinstance(value, type) and getattr(value, "__module__", None) == module_name:
                found[f"{module_name}.{attr}"] = {k: id(v) for k, v in list(vars(value).items()) if behaviour(v)}
    return found

def loggers():
    named = {n: l for n, l in logging.root.manager.loggerDict.items() if isinstance(l, logging.Logger)}
    state = {n: [repr(l.handlers), l.level, repr(l.filters), l.propagate] for n, l in named.items()}
    state[""] = [repr(logging.root.handlers), logging.root.level, repr(logging.root.filters)]
    state["lastResort"] = [repr(logging.lastResort.filters) if logging.lastResort else None]
    return state

before = dict(os.environ), {i: repr(h) for i, h in logger._core.handlers.items()}, loggers(), classes()
import_agentlab()
after = dict(os.environ), {i: repr(h) for i, h in logger._core.handlers.items()}, loggers(), classes()
env = sorted(k for k in set(before[0]) | set(after[0]) if before[0].get(k) != after[0].get(k))
changed_loggers = sorted(n for n in before[2] if before[2][n] != after[2].get(n))
patched = sorted(
    f"{cls}.{attr}" for cls, attrs in before[3].items() if cls in after[3]
    for attr in set(attrs) | set(after[3][cls]) if attrs.get(attr) != after[3][cls].get(attr)
)
print(json.dumps({"modules": len(AGENTLAB_MODULES), "classes": len(before[3]), "env": env,
                  "loguru": [before[1], after[1]], "loggers": changed_loggers, "patched": patched}))
"""
)


def _python(code: str, stdin: str = "") -> str:
    """The last line ``code`` prints in a fresh interpreter (the test process's own imports cannot leak in)."""
    unset = {*offline_defaults(), "AGENTLAB_LOG_LEVEL", "KMP_DUPLICATE_LIB_OK"} - {"LITELLM_LOCAL_MODEL_COST_MAP"}
    env = {k: v for k, v in os.environ.items() if k not in unset}  # a host that keeps litellm's cost map local
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_importing_every_agentlab_module_changes_nothing() -> None:
    third_party = _python(PROBE)
    report = json.loads(_python(CHECK, third_party))
    assert report["modules"] > 60 and report["classes"] > 1000  # the check saw the whole package and its dependencies
    assert report["env"] == [], f"importing agentlab set or changed environment variables: {report['env']}"
    assert report["loguru"][0] == report["loguru"][1], "importing agentlab changed loguru's handlers"
    assert report["loggers"] == [], f"importing agentlab changed stdlib loggers: {report['loggers']}"
    assert report["patched"] == [], f"importing agentlab patched third-party classes: {report['patched'][:20]}"


def test_setup_prepares_the_process_as_the_commands_do() -> None:
    """``agentlab.setup()`` is the documented call: the offline defaults (a user's own value wins) and one handler."""
    code = """
    import json, os
    os.environ["WANDB_MODE"] = "online"
    os.environ.pop("HF_HUB_OFFLINE", None)
    import agentlab
    from loguru import logger
    agentlab.setup()
    print(json.dumps([os.environ["WANDB_MODE"], os.environ["HF_HUB_OFFLINE"], len(logger._core.handlers)]))
    """
    assert json.loads(_python(code)) == ["online", "1", 1]
