"""From flagged scan rows to ranked leads: authorised sellers, price and seller history.

A brand acts on few leads a day, so order matters more than the flag itself. Risk combines
three independent signals as a noisy-OR, so any strong one ranks a lead high:

- visual: the verdict's confidence (a copy counts fully, a knockoff at 0.8);
- price: how far the listing's price is below the brand's reference price for the sku
  (half price or less is the usual counterfeit tell);
- seller: how many of the seller's earlier leads a test buy confirmed as counterfeit.

A flagged listing whose seller is on the brand's authorised-seller list is ``authorized``,
not a lead.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from brandguard.errors import InputError


@dataclass(frozen=True)
class BrandInfo:
    """What a brand told us about itself: who may sell it, and at what price."""

    authorized_sellers: frozenset[str] = frozenset()
    reference_prices: dict[str, float] = field(default_factory=dict)  # sku -> price
    default_price: float | None = None


# Keys a brand's entry in brands.json may have. Both spellings of "authorised" are accepted (the
# CLI prints the British one, the file format began with the American one); the text-mark
# vocabulary (names, aliases, Chinese names) is read by the index, not here.
SELLER_KEYS = ("authorized_sellers", "authorised_sellers")
BRAND_INFO_KEYS = frozenset({*SELLER_KEYS, "reference_prices", "default_price", "names", "aliases", "zh"})


def load_brand_info(path: str | os.PathLike[str] | None) -> dict[str, BrandInfo]:
    """``{"brand": {"authorized_sellers": [...], "reference_prices": {sku: price}, "default_price": p}}``.

    Validated: an unknown key is an error naming the accepted ones (a misspelt key silently
    ignored would let an authorised seller's listings become leads)."""
    if path is None:
        return {}
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise InputError(f"cannot read brand info {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected an object keyed by brand")
    out = {}
    for brand, d in raw.items():
        if not isinstance(d, dict):
            raise InputError(f"{path}: the entry for brand {brand!r} must be an object")
        unknown = sorted(set(d) - BRAND_INFO_KEYS)
        if unknown:
            raise InputError(f"{path}: brand {brand!r} has unknown keys {unknown}; accepted keys: "
                             f"{', '.join(sorted(BRAND_INFO_KEYS))}")
        if all(k in d for k in SELLER_KEYS):
            raise InputError(f"{path}: brand {brand!r} gives both {' and '.join(SELLER_KEYS)}; use one")
        sellers = next((d[k] for k in SELLER_KEYS if k in d), None) or ()
        try:
            if isinstance(sellers, str) or not all(isinstance(x, (str, int)) for x in sellers):
                raise TypeError("authorised sellers must be a list of seller ids")
            prices = {str(k): float(v) for k, v in (d.get("reference_prices") or {}).items()}
            default = d.get("default_price")
            default = float(default) if default is not None else None
            if any(not math.isfinite(v) or v < 0 for v in [*prices.values(), *([default] if default is not None else [])]):
                raise ValueError("prices must be finite and not negative")
            out[brand] = BrandInfo(frozenset(map(str, sellers)), prices, default)
        except (AttributeError, TypeError, ValueError, OverflowError) as exc:
            raise InputError(f"{path}: bad entry for brand {brand!r}: {exc}") from exc
    return out


def reference_price(info: BrandInfo | None, sku: str | None) -> float | None:
    if info is None:
        return None
    if sku and sku in info.reference_prices:
        return info.reference_prices[sku]
    return info.default_price


def risk_score(verdict: str, confidence: float, price: float | None, ref_price: float | None,
               confirmed_by_seller: int) -> tuple[float, dict]:
    """Noisy-OR of visual, price and seller signals, each in [0, 1]; returns (risk, parts)."""
    visual = confidence * (1.0 if verdict == "copy" else 0.8)
    price_sig = 0.0
    if price is not None and ref_price and ref_price > 0:
        ratio = price / ref_price
        # 0 at or above 70% of the reference price, rising to 0.9 at 10% of it.
        price_sig = max(0.0, min(0.9, (0.7 - ratio) / 0.6 * 0.9))
    seller_sig = 1.0 - 0.6 ** max(0, confirmed_by_seller) if confirmed_by_seller > 0 else 0.0
    risk = 1.0 - (1.0 - visual) * (1.0 - price_sig) * (1.0 - seller_sig)
    return round(risk, 4), {"visual": round(visual, 4), "price": round(price_sig, 4),
                            "seller": round(seller_sig, 4), "reference_price": ref_price,
                            "seller_confirmed_counterfeits": confirmed_by_seller}
