"""Prices of model calls, from ``pricing:`` in config.yaml.

Money is :class:`~decimal.Decimal` from the config's text to the sum: prices written as
``0.15`` stay 0.15, and a million small costs add up exactly. Costs are rounded to
:data:`MICRO` (a millionth of the currency unit) only when shown.

How a call is priced (:meth:`Pricing.rule`):

1. its engine has ``per_hour``: by busy time, the engine's busy seconds shared among the
   calls in flight (see :mod:`agentos.usage.report`); its tokens are not priced;
2. its model has a price: prompt tokens × ``input`` + completion tokens × ``output``, per
   million;
3. its engine is a local engine (agentos starts it): free;
4. otherwise it has *no price*: counted apart, never as 0.

Answers from the response cache cost nothing (no engine was asked).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, Literal

MILLION: Final = Decimal(1_000_000)
HOUR_S: Final = Decimal(3600)
MICRO: Final = Decimal("0.000001")

Rule = Literal["hourly", "tokens", "free", "none"]


@dataclass(frozen=True)
class Pricing:
    """The prices a runtime or ``agentos usage`` applies."""

    currency: str = "USD"
    models: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)
    """Per model: (input, output) per million tokens."""
    hourly: dict[str, Decimal] = field(default_factory=dict)
    """Per engine: price per hour of busy time."""
    free_engines: frozenset[str] = frozenset()
    """Local engines: free unless priced by the hour."""

    @classmethod
    def from_config(cls, config: Any) -> Pricing:
        """The pricing of a :class:`~agentos.spec.config.Config` (None: nothing priced)."""
        if config is None:
            return cls()
        pricing = config.pricing
        return cls(
            currency=pricing.currency,
            models={name: (p.input, p.output) for name, p in pricing.models.items()},
            hourly={name: p.per_hour for name, p in pricing.engines.items()},
            free_engines=frozenset(
                e.name for e in config.resolved_engines() if getattr(e, "type", "") == "local"
            ),
        )

    def to_json(self) -> dict[str, Any]:
        """What a snapshot carries, so that ``top`` prices with the runtime's prices."""
        return {
            "currency": self.currency,
            "models": {m: [str(i), str(o)] for m, (i, o) in self.models.items()},
            "hourly": {e: str(p) for e, p in self.hourly.items()},
            "free_engines": sorted(self.free_engines),
        }

    @classmethod
    def from_json(cls, data: Any) -> Pricing:
        if not isinstance(data, dict):
            return cls()
        return cls(
            currency=str(data.get("currency") or "USD"),
            models={m: (Decimal(p[0]), Decimal(p[1])) for m, p in data.get("models", {}).items()},
            hourly={e: Decimal(p) for e, p in data.get("hourly", {}).items()},
            free_engines=frozenset(data.get("free_engines", [])),
        )

    def rule(self, engine: str | None, model: str | None) -> Rule:
        if engine is not None and engine in self.hourly:
            return "hourly"
        if model is not None and model in self.models:
            return "tokens"
        if engine is not None and engine in self.free_engines:
            return "free"
        return "none"

    def token_cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> Decimal:
        price_in, price_out = self.models[model]
        return (prompt_tokens * price_in + completion_tokens * price_out) / MILLION

    def busy_cost(self, engine: str, seconds: float) -> Decimal:
        return Decimal(repr(round(seconds, 6))) * self.hourly[engine] / HOUR_S


def money(amount: Decimal | None) -> str:
    """A cost as shown: to the micro-unit, or "no price"."""
    if amount is None:
        return "no price"
    return f"{amount.quantize(MICRO):f}"
