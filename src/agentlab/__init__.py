"""agentlab: evaluate and train LLM tool-calling agents on tau2-bench, composed with Hydra.

Importing agentlab (or any of its modules) leaves the process as it was. The ``agentlab`` commands call
``setup()`` first; a notebook or script that uses agentlab's classes directly calls it before anything
imports tau2, litellm or wandb.
"""

__version__ = "0.1.0"


def setup(log_level: str = "WARNING") -> None:
    """Prepare this process the way the ``agentlab`` commands do.

    Sets the offline environment (``agentlab.offline``: each variable only where the user has not set it) and
    routes logging through agentlab's secret-scrubbing setup (``agentlab.logging_setup``): this replaces the
    process's loguru handlers with one stderr handler at ``$AGENTLAB_LOG_LEVEL`` (else ``log_level``).
    """
    from agentlab.logging_setup import configure_logging
    from agentlab.offline import apply_offline_environment

    apply_offline_environment()
    configure_logging(log_level)
