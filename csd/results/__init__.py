"""Results of finished runs: paper-shaped tables (collect), figures (plots), W&B publishing (publish).

    from csd.results import collect
    collected = collect("outputs", tables=["table1"])    # scripts/collect_results.py
    csd.results.plots.table_figures(collected, "table1", out)   # scripts/plot_results.py (matplotlib)
    csd.results.publish.publish(collected, root="outputs")      # scripts/wandb_results.py (wandb)

collect <- plots <- publish: each module imports only the ones before it.
"""
from csd.results.collect import Collected, collect

__all__ = ["Collected", "collect"]
