"""After an event batch: ask a worker to fold in items the active model cannot score yet."""

from __future__ import annotations

from collections.abc import Iterable

from flask import current_app

from app.errors import ApiError
from app.jobs import celery_client
from app.serving import active_model

FOLD_IN_TASK = "workers.tasks.fold_in_items"


def request_fold_in(item_ids: Iterable[str]) -> list[str]:
    """Enqueue the fold-in of unknown items; returns them. Never fails the request that asked.

    If the broker cannot take the task, beat's periodic sweep folds the items in later.
    """
    try:
        model = active_model()
    except ApiError:
        return []  # no model yet: the first training will include these items
    unknown = sorted({i for i in item_ids if i not in model.item_index})
    if unknown:
        try:
            celery_client().send_task(FOLD_IN_TASK, args=[unknown], retry=False)
        except Exception as exc:  # the broker is down: the sweep will catch up
            current_app.logger.warning("could not enqueue the fold-in of %d items: %s", len(unknown), exc)
    return unknown
