"""Training the agent: SFT data and formatting, coreset selection, continual replay, rewards, metrics."""
