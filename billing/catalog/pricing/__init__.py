"""Pure pricing: rate-card prices and quantities in, priced lines out.

No ORM, no clock, no floats: frozen dataclasses of ``Decimal`` in, frozen results out,
each keeping its exact amount beside the amount rounded once by ``core.money.quantize``.
Sums and products run in an exact context, so an unrounded amount always equals the sum
of its lines; the only divisions (proration, tax inside an inclusive price) run at 50
significant digits, far below any minor unit, before the one rounding.

- ``definitions``: the prices (``UsagePrice``, ``Tier``, ``FlatPrice``) and their
  validation;
- ``usage``: a usage price applied to a period's quantity;
- ``flat``: flat fees, proration and the minimum commitment's true-up;
- ``tax``: tax rates on sums of amounts;
- ``exact``: the decimal contexts and coercions they share.
"""
