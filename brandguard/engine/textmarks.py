"""Brand names written in a listing: a registered brand's vocabulary matched against text.

Pure Python: the text comes from the photo (``vision/text.py``) or the listing's title; the
vocabulary (names, aliases, Chinese names per brand) is stored with the index.

Every string is compared in two forms:

- **folded** (:func:`fold`): NFKC (full-width to half-width, ligatures), case-folded, accents
  removed, punctuation and spaces dropped. Equal folded forms are an **exact** match: the
  brand's name is shown.
- **skeleton** (:func:`skeleton`): the folded form with lookalikes merged (digits and symbols
  that pass for letters: 0/o, 1/l/i, 3/e, 5/s, $/s, @/a; Cyrillic and Greek homoglyphs; rn/m,
  vv/w). Equal skeletons of different folded forms are a **lookalike** ("NIKE" written with a
  Cyrillic I, "GUCC1").

A **near** match is one edit (a letter changed, added, dropped, or two swapped) between
skeletons, for names of at least :data:`NEAR_MIN` letters: "NIKF" ~ "NIKE", "Adidos" ~ "adidas".
To keep ordinary words out ("like", "bike", "mike" are one letter from "nike"):

- names shorter than :data:`NEAR_MIN` letters match only exactly, as whole words, and in text
  read from a photo not at all below :data:`PHOTO_MIN_LETTERS`;
- a candidate that is a common word (:data:`COMMON_WORDS`) or exactly another registered
  name is never a near match;
- for names of exactly :data:`NEAR_MIN` letters, the one edit must swap two letters or change
  a letter into one that looks like it (:data:`SIMILAR`: E/F, O/Q, C/G, U/V, ...).

Latin text is split into words; a name matches a run of up to four consecutive words joined
("Louis Vuitton", "ADI DAS"). OCR often drops the space between words ("ADIDASORIGINALS"), so in
text read from a photo a name of five or more letters also matches the start of a longer word
that is not a common word.
Chinese names match as substrings of the text's CJK characters (traditional forms folded to
simplified for the characters of :data:`TRADITIONAL`); a Chinese name of three or more
characters with one character changed is a lookalike.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from brandguard.errors import InputError

NEAR_MIN = 4  # letters a name needs before a one-edit variant counts as its lookalike
# Letters a name needs to be matched in text read from a photo: OCR reads a lone letter into any
# glyph-like shape (a stripe is an "l", a chevron a "V"); one clean test listing was flagged as
# a one-letter brand that way. Titles are typed, so there a one-letter name still matches.
PHOTO_MIN_LETTERS = 2
MAX_RUN = 4  # words joined into one candidate
VOCAB_KEYS = ("names", "aliases", "zh")
MAX_TERMS = 64  # per brand and key
MAX_TERM_CHARS = 64

# Single characters that pass for another (after case folding and accent removal).
_CONFUSABLE = {
    "0": "o", "1": "l", "i": "l", "|": "l", "!": "l", "3": "e", "4": "a", "@": "a", "5": "s", "$": "s",
    "7": "t", "8": "b", "9": "g", "6": "b", "2": "z", "ø": "o", "ı": "l", "ł": "l", "ß": "b", "€": "e", "£": "l",
    # Cyrillic
    "а": "a", "в": "b", "с": "c", "е": "e", "ё": "e", "һ": "h", "н": "h", "і": "l", "ї": "l", "ј": "j",
    "к": "k", "м": "m", "о": "o", "р": "p", "ѕ": "s", "т": "t", "у": "y", "х": "x", "ԁ": "d", "ԛ": "q",
    "ԝ": "w", "ү": "y", "п": "n", "г": "r", "ь": "b", "з": "3", "л": "n",
    # Greek
    "α": "a", "β": "b", "γ": "y", "ε": "e", "η": "n", "ι": "l", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
    "τ": "t", "υ": "u", "χ": "x", "ω": "w", "μ": "u", "ϲ": "c", "ѵ": "v",
}
_MULTI = (("rn", "m"), ("vv", "w"))
# Capital Greek and Cyrillic letters that are Latin capitals to the eye (case folding would turn
# Greek N into a nu, which passes for a v): mapped before folding, for skeletons only.
_CAPITALS = str.maketrans("ΑΒΕΖΗΙΚΜΝΟΡΤΥΧАВЕКМНОРСТХУІЈЅ", "ABEZHIKMNOPTYXABEKMHOPCTXYIJS")
_KEEP_SYMBOLS = frozenset("|!@$€£")  # symbols kept by folding because they stand for letters

# Letter pairs that look alike in print: the one change a 4-letter name's lookalike may make.
SIMILAR = frozenset(frozenset(p) for p in (
    "ef", "ec", "eo", "oq", "od", "oc", "og", "cg", "uv", "vy", "nh", "nm", "mw", "ij", "it", "lt", "bh",
    "bd", "dp", "pq", "bp", "gq", "ao", "ae", "sz", "kx", "rn", "ft", "ce", "hk", "uo", "vw", "ad", "pr"))

# Ordinary words a near match must not fire on (frequent English words of 3 to 8 letters,
# and words of listings: materials, garments, colours).
COMMON_WORDS = frozenset("""
able about above after again also away back bag bags bake ball band bank base bear beat bed bike bird
black blue boat body bold bone book boot boots born both box boys bring buck bulk bunk bust busy cake
call calm came camp cane cape card care case cash cast cats chic city clip club coat code coin cold
come cook cool cope copy core cork cost cozy cute dark data date dave dear deck deep desk dial dice
dime dine disc dish dive dock does dome done dose dove down drop dude duke dust duty each east easy
edge else even ever face fact fair fake fall fame farm fast fate fear feel feet felt file fill film
find fine fire firm fish fits five flag flat flex flow foam fold folk fond font food foot form fort
four free from fuel full fund gala game gang gate gave gear gift girl give glad glow goal goes gold
golf gone good grab gray grey grip grow hair half hall hand hard have head heat heel held help here
hero high hike hill hint hole home hood hook hope horn host hour huge idea inch into iron item jack
jade jean jeans joke july june jump just keep kept kick kids kind king kite knee knit knot lace lady
laid lake lamp land lane large last late lava lead leaf lean left legs lens less life lift like lime
line link lint lion list live load loan lock logo long look loop lord lose loss lost loud love luck
made mail main make male mall many mark mask mate maze meal mean meet mega menu mesh mice mike mild
milk mind mine mini mint miss mode mold moon more most move much mule must name navy near neat neck
need neon nest news next nice nine none nose note nude nuke once only open oval over pack page paid
pair pale palm pant park part pass past path peak pear pick pile pine pink pipe plan play plus poke
pole polo pond pony pool pore pork port pose post pots pour pull pump pure push race rack rain
rare rate read real rear rest rice rich ride ring rise risk road rock role roll roof room root rope
rose ruby rule runs rush safe said sale salt same sand save seal seat seen self sell send ship shoe
shoes shop shot show sick side sign silk sing size skin slim slip slow snap snow soap sock socks soft
sold sole some song soon sort soul spot star stay step stop such suit sure swim tail take tale talk
tall tank tape team tech tell tent term test text than that them then they thin this tide tile time
tiny tone took tool tops tote tour town toys tree trim trip true tube tune turn twin type unit upon
used user vase vast very vest view vine wait wake walk wall want warm wash wave wear week well went
were west what when whom wide wife wild will wind wine wing wire wise wish with wolf wood wool word
work worn wrap yard yarn year yoga your zero zinc zone
about above adult after alive apple apron azure basic beach beige belts black blank blend blind block
bloom board boots bound boxer brand brass bread brick brown brush buckle cable camel canvas cargo
casual chain chair charm cheap check chess chest chino class clean clear clock cloth cloud coach coast
color colour cotton couch cover craft cream crew crop cross crown curve daily dance denim dress drift
early earth eagle elite empty equal extra fancy fiber fibre field final flame flash fleece floral
fresh front fruit funny ghost giant glass globe glove gloves grace grand grass green group guard guide
happy heart heavy hello honey horse hotel house human ideal image inner jacket jeans jersey joint
jolly juice knife label large laser layer leash lemon level light linen logos lotus lover lucky lunar
magic maker maple match metal micro model money month motor mount mouse music night noble north ocean
olive orbit order other outer owner paint panel paper party patch peace pearl photo piece pilot pixel
plain plant plate plaza point polar power press price pride prime print proof proud quick quiet radio
rainy rapid raven razor ready relax retro rider right river robin royal rugby rural sales satin scarf
scene scout serve shade shake shape share sharp sheep shelf shell shift shine shirt shoes short shorts
silky skirt sleek slide slim small smart smile snake sneak socks solar solid sound south space spark
speed spice spike sport sports spring squad stack staff stage stamp stand start steam steel stone store
storm story strap straw style sugar suite sunny super sweet swift table tango taste teddy thing tiger
title toast today token tonic topaz total touch tough towel tower track trail train trend tribe truck
trunk trust tulip twist ultra under unity urban usual valid value velvet vinyl vista vital vivid voice
wagon watch water wheel white whole width wings woman women world woven yacht young youth zebra
almost always animal autumn bamboo banana beauty better bottle bottom bridge bright bucket
button candle carbon castle change cherry circle classic clever closet collar colors comfort copper
corner cosmos county create custom dancer denim design double dragon drawer driver easter edition
effect eleven energy family father fabric figure finger flower flying follow forest formal frame
friend frozen garden gentle giftbox global golden gothic ground growth guitar hammer handle health
height helmet hidden hiking hoodie impact indigo infant island jersey jungle junior kitten ladder
leader leather legacy letter lights liquid little locker lounge luxury mascot master matter meadow
medium member memory mirror modern mother motion muscle nature needle number office orange origin
outlet oxford palace parade pastel people pepper petite pillow planet pocket poster pretty purple
puzzle rabbit racing rascal record reflex repair rhythm ribbon rocket runner saddle safari sailor
salmon school screen season secret select senior shadow silver simple single sister sketch slogan
smooth soccer spirit spring square stereo sticker street strong studio summer sunset supply system
tablet tailor target tennis thread ticket timber travel tribal trophy tshirt tunnel turtle unisex
update urban useful velvet violet vision walker wallet wander winter wonder yellow zipper
""".split())

# Traditional characters of common brand names, folded to simplified before comparing.
TRADITIONAL = str.maketrans({
    "達": "达", "愛": "爱", "馬": "马", "華": "华", "蘭": "兰", "龍": "龙", "樂": "乐", "賓": "宾", "爾": "尔",
    "輪": "轮", "時": "时", "寶": "宝", "萊": "莱", "詩": "诗", "範": "范", "絲": "丝", "與": "与", "銳": "锐",
    "鋒": "锋", "圖": "图", "衛": "卫", "蘋": "苹", "廣": "广", "東": "东", "車": "车", "標": "标", "倫": "伦",
    "義": "义", "維": "维", "軒": "轩", "納": "纳", "歐": "欧", "頓": "顿", "凱": "凯", "羅": "罗", "麗": "丽",
})


def _is_cjk(ch: str) -> bool:
    o = ord(ch)
    return 0x3400 <= o <= 0x9FFF or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x2FA1F


def fold(text: str) -> str:
    """NFKC, case-folded, accents removed, only letters, digits and letter-like symbols kept."""
    t = unicodedata.normalize("NFKC", text).casefold()
    t = "".join(c for c in unicodedata.normalize("NFKD", t) if not unicodedata.combining(c))
    return "".join(c for c in unicodedata.normalize("NFC", t) if c.isalnum() or c in _KEEP_SYMBOLS)


def skeleton(folded: str) -> str:
    """A folded string with lookalike characters merged (see the module docstring)."""
    s = "".join(_CONFUSABLE.get(c, c) for c in folded)
    for a, b in _MULTI:
        s = s.replace(a, b)
    return s


def lookalike_form(text: str) -> str:
    """The skeleton of a raw string: capital homoglyphs mapped, folded, lookalikes merged."""
    return skeleton(fold(text.translate(_CAPITALS)))


def words(text: str) -> list[str]:
    """Latin words of ``text`` (folded; letter-like symbols stay inside words, "GUCC1" "$hop")."""
    t = unicodedata.normalize("NFKC", text)
    out = []
    for w in re.split(r"[^\w|!@$€£'’]+", t):
        f = fold(w)
        f = "".join(c for c in f if not _is_cjk(c))
        if f:
            out.append(f)
    return out


def cjk(text: str) -> str:
    """The CJK characters of ``text``, traditional forms of brand characters folded to simplified."""
    t = unicodedata.normalize("NFKC", text)
    return "".join(c for c in t if _is_cjk(c)).translate(TRADITIONAL)


def one_edit(a: str, b: str) -> str | None:
    """How ``a`` is one edit from ``b`` ("sub:x>y", "ins", "del", "swap"), or None."""
    if a == b:
        return None
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return None
    if la == lb:
        diff = [i for i in range(la) if a[i] != b[i]]
        if len(diff) == 1:
            return f"sub:{b[diff[0]]}>{a[diff[0]]}"
        if len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]:
            return "swap"
        return None
    short, long_ = (a, b) if la < lb else (b, a)
    i = 0
    while i < len(short) and short[i] == long_[i]:
        i += 1
    if short[i:] == long_[i + 1:]:
        return "del" if la < lb else "ins"
    return None


# ---------------------------------------------------------------------- vocabulary
@dataclass(frozen=True)
class BrandTerms:
    """What a brand is called: names and aliases (Latin or any script) and Chinese names."""

    brand: str
    names: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    zh: tuple[str, ...] = ()

    def latin(self) -> list[str]:
        return [t for t in (*self.names, *self.aliases) if fold(t) and not cjk(t)]

    def chinese(self) -> list[str]:
        return [t for t in (*self.zh, *self.names, *self.aliases) if cjk(t)]


def parse_vocabulary(raw: Mapping[str, Any], where: str = "brands.json") -> dict[str, dict[str, list[str]]]:
    """The vocabulary part of a brands.json: ``{brand: {"names": [...], "aliases": [...], "zh": [...]}}``.

    Other keys of a brand's entry (``authorized_sellers``, prices) are ignored; a brand without
    any of the three keys is left out (its id stays its only name). Raises InputError on a
    wrong shape."""
    if not isinstance(raw, Mapping):
        raise InputError(f"{where}: expected an object keyed by brand")
    out: dict[str, dict[str, list[str]]] = {}
    for brand, entry in raw.items():
        if not isinstance(brand, str) or not brand:
            raise InputError(f"{where}: brand ids must be non-empty strings")
        if not isinstance(entry, Mapping):
            raise InputError(f"{where}: the entry of brand {brand!r} must be an object")
        terms: dict[str, list[str]] = {}
        for key in VOCAB_KEYS:
            vals = entry.get(key)
            if vals is None:
                continue
            if isinstance(vals, str):
                vals = [vals]
            if not isinstance(vals, list) or not all(isinstance(v, str) for v in vals):
                raise InputError(f"{where}: {brand}.{key} must be a list of strings")
            vals = [v.strip() for v in vals if v.strip()]
            if len(vals) > MAX_TERMS or any(len(v) > MAX_TERM_CHARS for v in vals):
                raise InputError(f"{where}: {brand}.{key}: at most {MAX_TERMS} terms of {MAX_TERM_CHARS} characters")
            if vals:
                terms[key] = list(dict.fromkeys(vals))
        if terms:
            out[brand] = terms
    return out


def read_vocabulary(path: str | Path) -> dict[str, dict[str, list[str]]]:
    """:func:`parse_vocabulary` of a JSON file."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read brand vocabulary {path}: {exc}") from exc
    return parse_vocabulary(raw, str(path))


@dataclass(frozen=True)
class TextMatch:
    """A registered brand's term found in text: ``exact`` (the name is shown) or ``lookalike``."""

    brand: str
    term: str
    text: str  # the words that matched, as written
    kind: str  # exact | lookalike
    rule: str
    source: str  # image | title
    score: float = 1.0  # recognition confidence (1 for a title)
    line: str = ""  # the whole line the words came from
    box: tuple[int, int, int, int] | None = None  # in the listing's original pixels (image text)
    quad: tuple[tuple[float, float], ...] | None = None

    def to_dict(self) -> dict:
        d = {"brand": self.brand, "term": self.term, "text": self.text, "kind": self.kind, "rule": self.rule,
             "source": self.source, "score": round(self.score, 4)}
        if self.line and self.line != self.text:
            d["line"] = self.line
        if self.box is not None:
            d["box"] = list(self.box)
        if self.quad is not None:
            d["quad"] = [[round(x, 1), round(y, 1)] for x, y in self.quad]
        return d


@dataclass(frozen=True)
class _Term:
    brand: str
    term: str
    folded: str
    skel: str


@dataclass
class Vocabulary:
    """The terms of a set of brands, ready to match. Build with :meth:`build`."""

    brands: dict[str, BrandTerms]
    _latin: list[_Term] = field(default_factory=list, repr=False)
    _chinese: list[tuple[str, str, str]] = field(default_factory=list, repr=False)  # brand, term, cjk form
    _exact: dict[str, list[_Term]] = field(default_factory=dict, repr=False)
    _skel: dict[str, list[_Term]] = field(default_factory=dict, repr=False)
    _deletes: dict[str, list[_Term]] = field(default_factory=dict, repr=False)  # skeleton and its 1-deletes

    @classmethod
    def build(cls, stored: Mapping[str, Mapping[str, Iterable[str]]] | None, brands: Iterable[str]) -> "Vocabulary":
        """Terms of ``brands`` (the index's live brands): what ``stored`` registers for each, and
        always the brand id itself as a name."""
        stored = stored or {}
        out = {}
        for b in brands:
            e = stored.get(b, {})
            registered = list(dict.fromkeys(e.get("names", ())))
            # the id is a name too, unless a registered name already reads the same ("Nike" for nike)
            names = tuple(registered + ([b] if fold(b) not in {fold(n) for n in registered} else []))
            out[b] = BrandTerms(b, names, tuple(e.get("aliases", ())), tuple(e.get("zh", ())))
        v = cls(out)
        v._compile()
        return v

    def _compile(self) -> None:
        for bt in self.brands.values():
            for t in bt.latin():
                f = fold(t)
                term = _Term(bt.brand, t, f, skeleton(f))
                self._latin.append(term)
                self._exact.setdefault(f, []).append(term)
                self._skel.setdefault(term.skel, []).append(term)
                if len(f) >= NEAR_MIN:
                    for key in _deletes(term.skel):
                        self._deletes.setdefault(key, []).append(term)
            for t in bt.chinese():
                c = cjk(t)
                if len(c) >= 2:
                    self._chinese.append((bt.brand, t, c))

    def restricted(self, brands: Iterable[str]) -> "Vocabulary":
        keep = set(brands)
        v = Vocabulary({b: t for b, t in self.brands.items() if b in keep})
        v._compile()
        return v

    def __len__(self) -> int:
        return len(self.brands)

    # ------------------------------------------------------------------ matching
    def match(self, text: str, source: str = "title", score: float = 1.0, merged: bool = False,
              box: tuple[int, int, int, int] | None = None,
              quad: tuple[tuple[float, float], ...] | None = None) -> list[TextMatch]:
        """Every brand whose term ``text`` shows, one match per brand (exact before lookalike).

        ``merged``: the text was read from a photo, where words run together, so a name of more
        than :data:`NEAR_MIN` letters may also start a longer word."""
        found: dict[str, TextMatch] = {}

        def add(term: str, brand: str, written: str, kind: str, rule: str) -> None:
            cur = found.get(brand)
            if cur is None or (cur.kind == "lookalike" and kind == "exact"):
                found[brand] = TextMatch(brand, term, written, kind, rule, source, score, text.strip(), box, quad)

        raw_words = [w for w in re.split(r"\s+", unicodedata.normalize("NFKC", text)) if w]
        ws = words(text)
        wp = words(text.translate(_CAPITALS))  # the same words, capital homoglyphs made Latin
        if len(wp) != len(ws):
            wp = ws
        cands: list[tuple[str, str]] = []  # (folded candidate, as written)
        skels: dict[str, str] = {}  # folded candidate -> its skeleton
        for i in range(len(ws)):
            for j in range(i + 1, min(len(ws), i + MAX_RUN) + 1):
                c = "".join(ws[i:j])
                cands.append((c, " ".join(ws[i:j])))
                skels.setdefault(c, skeleton("".join(wp[i:j])))
        for c, written in cands:
            if merged and len(c) < PHOTO_MIN_LETTERS:
                continue
            for t in self._exact.get(c, ()):
                add(t.term, t.brand, _as_written(written, raw_words), "exact", "the brand's name, as written")
        for c, written in cands:
            if len(c) < NEAR_MIN or c in self._exact or c in COMMON_WORDS:
                continue
            s = skels[c]
            for t in self._skel.get(s, ()):
                if t.brand not in found and len(t.folded) >= NEAR_MIN:
                    add(t.term, t.brand, _as_written(written, raw_words), "lookalike",
                        f"lookalike characters: {_as_written(written, raw_words)!r} reads as {t.term!r}")
        for c, written in cands:
            if c in self._exact or c in COMMON_WORDS or len(c) < NEAR_MIN - 1:
                continue
            s = skels[c]
            for t in self._near(s):
                if t.brand in found:
                    continue
                how = one_edit(s, t.skel)
                if how is None or not _near_ok(how, t.skel):
                    continue
                shown = _as_written(written, raw_words)
                add(t.term, t.brand, shown, "lookalike",
                    f"lookalike wordmark {shown!r} ~ {t.term!r} ({_describe_edit(how)})")
        if merged:
            for w, w_pre in zip(ws, wp):
                if len(w) <= NEAR_MIN:
                    continue
                if w in COMMON_WORDS:
                    continue
                for t in self._exact_prefixes(w):
                    if t.brand not in found:
                        add(t.term, t.brand, w, "exact", f"the brand's name starts the word {w!r}")
                sw = skeleton(w_pre)
                for n in self._near_lengths:
                    if n >= len(sw) - 1:
                        continue
                    head = sw[:n]
                    for t in self._near(head):
                        how = one_edit(head, t.skel) if len(t.skel) == n else None
                        if t.brand in found or how is None or not how.startswith("sub") or n <= NEAR_MIN:
                            continue
                        add(t.term, t.brand, w, "lookalike",
                            f"lookalike wordmark {w!r} starts like {t.term!r} ({_describe_edit(how)})")
        chars = cjk(text)
        if chars and self._chinese:
            for brand, term, c in self._chinese:
                if c in chars:
                    add(term, brand, c, "exact", "the brand's Chinese name, as written")
            for brand, term, c in self._chinese:
                if brand in found or len(c) < 3:
                    continue
                n = len(c)
                for k in range(0, len(chars) - n + 1):
                    window = chars[k:k + n]
                    if sum(a != b for a, b in zip(window, c)) == 1:
                        add(term, brand, window, "lookalike",
                            f"lookalike Chinese name {window!r} ~ {term!r} (one character changed)")
                        break
        return sorted(found.values(), key=lambda m: (m.kind != "exact", m.brand))

    @property
    def _near_lengths(self) -> list[int]:
        return sorted({len(t.skel) for t in self._latin if len(t.folded) > NEAR_MIN})

    def _near(self, s: str) -> list[_Term]:
        """Terms that may be one edit from skeleton ``s`` (they share ``s`` or a one-letter deletion)."""
        seen: dict[int, _Term] = {}
        for key in _deletes(s):
            for t in self._deletes.get(key, ()):
                seen[id(t)] = t
        return list(seen.values())

    def _exact_prefixes(self, w: str) -> list[_Term]:
        # names longer than NEAR_MIN letters, followed by 2+ letters ("adidasoriginals", not "filament")
        return [t for n in range(NEAR_MIN + 1, len(w) - 1) for t in self._exact.get(w[:n], ())]

    def names_brand(self, title: str) -> bool:
        """True when a title shows a registered brand's name or a lookalike of it."""
        return bool(self.match(title))


def _deletes(s: str) -> set[str]:
    return {s, *(s[:i] + s[i + 1:] for i in range(len(s)))}


def _near_ok(how: str, term_skel: str) -> bool:
    """Whether a one-edit variant counts for a name of this length (see the module docstring)."""
    if len(term_skel) > NEAR_MIN:
        return True
    if how == "swap":
        return True
    if how.startswith("sub:"):
        a, b = how[4], how[6]
        return frozenset((a, b)) in SIMILAR
    return False


def _describe_edit(how: str) -> str:
    if how.startswith("sub:"):
        return f"one letter changed, {how[4]!r} -> {how[6]!r}"
    return {"ins": "one letter added", "del": "one letter dropped", "swap": "two letters swapped"}[how]


def _as_written(folded_run: str, raw_words: list[str]) -> str:
    """The original words behind a run of folded words (for evidence), else the folded run."""
    want = folded_run.replace(" ", "")
    for i in range(len(raw_words)):
        acc = ""
        for j in range(i, min(len(raw_words), i + MAX_RUN)):
            acc += "".join(c for c in fold(raw_words[j]) if not _is_cjk(c))
            if acc == want:
                return " ".join(raw_words[i:j + 1]).strip(".,;:!?()[]{}\"'")
            if len(acc) >= len(want):
                break
    return folded_run
