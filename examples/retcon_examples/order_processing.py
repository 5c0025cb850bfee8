"""Steps of the order-processing example: fetch an order, check its payment, review
high-value orders, process the rest, and notify the customer.

Each step receives the run's merged `state` (the input plus every earlier
step's output) and a context; what it returns becomes its output.
"""

from __future__ import annotations

from typing import Any

from retcon_runner import NonRetryableError, StepContext

#: A stand-in for the order database.
ORDERS: dict[str, dict[str, Any]] = {
    "A-100": {"customer": "ada@example.com", "amount": 99, "currency": "EUR", "card": "visa-4242"},
    "B-200": {"customer": "bob@example.com", "amount": 25000, "currency": "EUR", "card": "amex-0005"},
    "C-300": {"customer": "cyd@example.com", "amount": 40, "currency": "EUR", "card": "expired-0000"},
}


def fetch_order(state: Any, context: StepContext) -> dict[str, Any]:
    order_id = state.orderId
    order = ORDERS.get(order_id)
    if order is None:
        raise NonRetryableError(f"order {order_id} does not exist")
    context.logger.info("Fetched order %s for %s", order_id, order["customer"])
    return {"orderId": order_id, **order}


def validate_payment(state: Any, context: StepContext) -> dict[str, Any]:
    if state.card.startswith("expired"):
        raise RuntimeError(f"card {state.card} was declined by the payment provider")
    if state.amount <= 0:
        raise NonRetryableError(f"amount {state.amount} is not payable")
    return {"valid": True, "amount": state.amount, "authorization": f"auth-{state.orderId}"}


def high_value_review(state: Any, context: StepContext) -> dict[str, Any]:
    return {"reviewed": True, "reviewer": "risk-team", "approved": state.amount < 1_000_000}


def standard_processing(state: Any, context: StepContext) -> dict[str, Any]:
    return {"processed": True, "warehouse": "eu-1"}


def send_notification(state: Any, context: StepContext) -> dict[str, Any]:
    path = "reviewed" if context.outputs.get("high-value-review") else "standard"
    message = f"Order {state.orderId} for {state.amount} {state.currency} confirmed ({path})"
    return {"notified": state.customer, "message": message, "amount": state.amount}
