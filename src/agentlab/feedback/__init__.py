"""Production traces (AgentScope Studio databases) -> training tasks: readers, filters, the task store."""
