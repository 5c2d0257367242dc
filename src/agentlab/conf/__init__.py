"""The packaged Hydra config groups: ``agentlab`` composes from here, and a user's config dir is layered on top."""

from pathlib import Path

CONFIG_DIR = Path(__file__).parent
