"""LoRA trainers, one module per algorithm (the ``rl_algo`` config group): sft, dpo, grpo."""
