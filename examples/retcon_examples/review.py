"""Steps of the review examples: the same need met by dynamic injection and by a Decision."""

from __future__ import annotations

from typing import Any

from retcon_runner import StepContext


def process_order(state: Any, context: StepContext) -> dict[str, Any]:
    return {"orderId": state.orderId, "amount": state.amount, "processed": True}


def review(state: Any, context: StepContext) -> dict[str, Any]:
    context.logger.info("Reviewing order %s for %s", state.orderId, state.amount)
    return {"reviewed": True, "approved": state.amount < 1_000_000}


def standard_processing(state: Any, context: StepContext) -> dict[str, Any]:
    return {"checks": "standard"}


def ship_order(state: Any, context: StepContext) -> dict[str, Any]:
    reviewed = bool(context.outputs.get("high-value-review") or context.outputs.get("tenant-review"))
    return {"shipped": True, "orderId": state.orderId, "reviewed": reviewed}
