"""What ``edgellama status`` reports, as one dict: the same whether the CLI builds it in-process or
the daemon sends it. Reads the store and describes the models; never loads a model.
"""

from __future__ import annotations

from .config import Settings
from .generate import describe_model
from .resources import ResourcePlan, current_plan
from .store import Store

__all__ = ["status_report"]


def status_report(*, settings: Settings, store: Store, plan: ResourcePlan | None = None) -> dict:
    """``plan``: the one the models were loaded with (the daemon's); None plans for this machine now."""
    stats = store.stats()
    plan = plan or current_plan(settings)
    model = describe_model(model=settings.model, models_dir=settings.models_dir,
                           requantize_bundled=plan.requantize.value)
    return {
        **stats.__dict__,
        "db": str(settings.db),
        "model": model,
        "embed_model": str(settings.embed_model) if settings.embed_model else "bundled all-MiniLM-L6-v2",
        "embed_precision": plan.embed_precision.value,
        "resources": plan.as_dict(),
        "skipped_files": [{"path": p, "reason": r} for p, r in store.skipped()],
        "daemon": None,  # the daemon fills in its own state
    }
