"""Scoring models with lm-evaluation-harness (optional extra: ``pip install 'fastawq[lm-eval]'``).

The model is loaded by fastawq (so quantized checkpoints run on fastawq's kernels) and handed to
lm-eval's Hugging Face backend as an already-built model; tasks come from lm-eval's registry or from
a folder of task YAML files (``include_path``), which is how a task is run fully offline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastawq.errors import FastAWQError


def run_tasks(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[str],
    *,
    include_path: str | None = None,
    limit: int | float | None = None,
    num_fewshot: int | None = None,
    batch_size: int = 1,
) -> dict[str, dict[str, float]]:
    """{task: {metric: value}} for ``model`` on ``tasks``."""
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ModuleNotFoundError as exc:
        raise FastAWQError(
            f"--tasks needs lm-evaluation-harness ({exc.name} is missing)",
            hint="pip install 'fastawq[lm-eval]'",
        ) from None
    manager = TaskManager(include_path=include_path) if include_path else TaskManager()
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise FastAWQError(
            f"lm-eval knows no task {', '.join(unknown)}",
            hint="check the name (lm-eval --tasks list) or pass --tasks-path with your task YAML files",
        )
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    out = simple_evaluate(
        model=lm, tasks=list(tasks), task_manager=manager, limit=limit, num_fewshot=num_fewshot, log_samples=False
    )
    results: dict[str, dict[str, float]] = {}
    for task, metrics in (out or {}).get("results", {}).items():
        results[task] = {
            k.split(",")[0]: float(v)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and "stderr" not in k
        }
    return results
