"""Per-task adaptation (test-time training): LoRA adapters fitted on each test task's
demonstrations, answers voted over augmented views, run as resumable Slurm shards.

Modules: ``lora`` (LoRA layers, several adapters per batch), ``ttt`` (leave-one-out data,
fitting, voting), ``run`` (shards and gathering into evaluations).
"""
