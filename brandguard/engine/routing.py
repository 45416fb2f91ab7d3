"""How deep a listing goes: the depth options a scan or check asks for, what a catalogue row says
besides its image (brand hint, title), and the plain name matching that routes ``auto`` depth
when the text stage is off."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from brandguard.errors import InputError

DEPTHS = ("fast", "thorough", "auto")
DEFAULT_DEPTH = "auto"


@dataclass(frozen=True)
class DepthOptions:
    """Which listings go through the local stage.

    ``fast``: none (global embedding and the keypoint check of its best candidate).
    ``thorough``: every listing. ``auto``: listings that a cheap signal points at: the best
    global score reaches the calibrated gate, a brand hint or a title names a registered
    brand, the keypoint glance fits a registered image (``Pipeline.glance``), or a random
    audit draw (``audit_share``) picks it.

    ``text``: in ``thorough`` and ``auto`` depth, brand names written in the photo are read
    (OCR) on the listings that go through the local stage, and matched with the title against
    the brands' vocabulary (README, "Text marks"); False turns the text stage off.
    """

    depth: str = DEFAULT_DEPTH
    audit_share: float = 0.0
    seed: int = 0
    text: bool = True

    def __post_init__(self) -> None:
        if self.depth not in DEPTHS:
            raise InputError(f"depth must be one of {', '.join(DEPTHS)}, got {self.depth!r}")
        if not 0.0 <= self.audit_share <= 1.0:
            raise InputError(f"audit share must be in [0, 1], got {self.audit_share}")


@dataclass(frozen=True)
class ListingHints:
    """What a catalogue row says besides the image (routes ``auto`` depth)."""

    brand_hint: str = ""
    title: str = ""


def fold_name(text: str) -> str:
    """Brand names compare folded: case, width, accents and punctuation removed."""
    t = unicodedata.normalize("NFKD", text).casefold()
    return re.sub(r"[\W_]+", "", "".join(c for c in t if not unicodedata.combining(c)))


def title_names_brand(title: str, brands: dict[str, str]) -> bool:
    """True when a registered brand's folded name appears as a whole word run in the title."""
    words = [fold_name(w) for w in re.split(r"\s+", title) if fold_name(w)]
    joined = {"".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, min(len(words), i + 3) + 1)}
    return any(b in joined for b in brands if len(b) >= 3)
