"""Text marks: brand names written in listing photos, found by the text stage (issue #18).

A family of listings built here, reproducibly from a seed: clothing photos with a registered
brand's name written on them (Latin and Chinese, correctly or with a lookalike spelling) in
several fonts, sizes, rotations, colours, as an outline overlay or on a label; and negatives:
photos with other text (ordinary words, product phrases, words one letter from a brand name,
unregistered brands, in Latin and Chinese) and plain photos. The bundle registers the brands'
simple-icons marks as references and their vocabulary (``brandguard index --brands``).

Measured on the ``test`` photos (``val`` photos calibrate the text threshold,
``TEXT_MIN_SCORE``):

- the text signal alone: the photo's best usable match, right brand or not;
- the verdict (copy/knockoff of the right brand) in thorough and auto depth, with and without
  the text stage;
- cost: OCR ms per photo read and per listing, listings/s, the share of listings that reached
  OCR (auto: what the global score, the title or the brand hint route deep);
- on the standard corpus's test split (when present): fused µAP in thorough depth with and
  without the text stage (its brands are known by their ids only).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Registered brands: simple-icons slug -> vocabulary, and lookalike spellings used on listings.
BRANDS: dict[str, dict] = {
    "nike": {"names": ["Nike"], "zh": ["耐克"], "lookalike": ["NIKF", "N1KE", "NlKE", "Nkie"], "zh_lookalike": []},
    "adidas": {"names": ["adidas"], "zh": ["阿迪达斯"], "lookalike": ["Adidos", "adibas", "ADIDA5", "Addidas"],
               "zh_lookalike": ["阿迪达丝", "阿迪达期"]},
    "puma": {"names": ["PUMA"], "zh": ["彪马"], "lookalike": ["PUNA", "PVMA"],
             "zh_lookalike": []},
    "newbalance": {"names": ["New Balance"], "aliases": ["NB"], "zh": ["新百伦"],
                   "lookalike": ["New Balence", "NEW BALANSE", "New Ba1ance"], "zh_lookalike": ["新百仑", "新白伦"]},
    "reebok": {"names": ["Reebok"], "zh": ["锐步"], "lookalike": ["Reebock", "REEB0K", "Rebok"], "zh_lookalike": []},
    "underarmour": {"names": ["Under Armour"], "zh": ["安德玛"], "lookalike": ["Under Armor", "UNDER ARMOUB"],
                    "zh_lookalike": ["安德马"]},
    "fila": {"names": ["FILA"], "zh": ["斐乐"], "lookalike": ["F1LA", "FlLA"], "zh_lookalike": []},
    "uniqlo": {"names": ["UNIQLO"], "zh": ["优衣库"], "lookalike": ["UNIQL0", "UNIOLO", "Uniqio"],
               "zh_lookalike": ["优依库"]},
    "zara": {"names": ["ZARA"], "zh": ["飒拉"], "lookalike": ["ZAPA", "2ARA"], "zh_lookalike": []},
    "hermes": {"names": ["Hermès", "Hermes"], "zh": ["爱马仕"], "lookalike": ["Hermez", "H3RMES PARIS"],
               "zh_lookalike": ["爱马士"]},
    "dior": {"names": ["Dior"], "zh": ["迪奥"], "lookalike": ["Di0r", "DIOP"], "zh_lookalike": []},
    "anta": {"names": ["ANTA"], "zh": ["安踏"], "lookalike": ["AMTA", "4NTA"], "zh_lookalike": []},
    "lining": {"names": ["Li-Ning", "Li Ning", "LINING"], "zh": ["李宁"], "lookalike": ["Li-Nimg", "LI-NlNG"],
               "zh_lookalike": []},
    "starbucks": {"names": ["Starbucks"], "zh": ["星巴克"], "lookalike": ["Starbuck5", "Starbocks", "STARBUKS"],
                  "zh_lookalike": ["星巴客"]},
    "cocacola": {"names": ["Coca-Cola"], "zh": ["可口可乐"], "lookalike": ["Coca-Colla", "C0CA-COLA"],
                 "zh_lookalike": ["可口可东"]},
    "samsung": {"names": ["Samsung"], "zh": ["三星"], "lookalike": ["Samsumg", "SAMSUNQ"], "zh_lookalike": []},
    "sony": {"names": ["SONY"], "zh": ["索尼"], "lookalike": ["S0NY", "SQNY"], "zh_lookalike": []},
}
# Text on negatives: unregistered brands (Latin and Chinese), ordinary listing words, and words
# one letter from a registered name (the false hits the matcher must not make).
UNREGISTERED = ["Gucci", "PRADA", "Chanel", "Versace", "Lacoste", "Levi's", "Converse", "VANS", "Champion",
                "Calvin Klein", "Kappa", "ASICS", "Mizuno", "Columbia", "Diesel", "Skechers", "匡威", "特步",
                "鸿星尔克", "回力", "李维斯", "乔丹"]
ORDINARY = ["SALE", "New Arrival", "Summer Collection", "100% cotton", "Best Price", "Free shipping", "Size M",
            "Premium quality", "Limited edition", "Made in Italy", "ORIGINAL", "hello", "Vintage", "Streetwear",
            "Handmade", "SPORT", "Classic fit", "Super Soft", "Winter", "Exclusive", "新款", "包邮", "夏季新品",
            "纯棉", "特价", "正品保证", "时尚", "男装"]
NEAR_WORDS = ["Like", "bike", "Mike", "NICE", "PUMP", "puppy", "Dinner", "Zero", "Sunny", "Fire", "Antarctica",
              "Sonic", "Stars", "Reboot", "Hermit", "Done", "Pima", "Samson", "Union", "Filament", "Dinosaur"]
GENERIC_TITLES = ["Men's cotton t-shirt", "Women's summer dress", "Casual hoodie, size L", "Running shoes",
                  "Warm winter hat", "Long sleeve shirt, new", "Kids outfit", "Sport shorts", "Denim jacket",
                  "Classic polo shirt"]
FAMILIES = ("exact_latin", "lookalike_latin", "exact_zh", "lookalike_zh", "other_text", "no_text")
SHARES = {"quick": {"exact_latin": 4, "lookalike_latin": 4, "exact_zh": 2, "lookalike_zh": 2, "other_text": 5,
                    "no_text": 3},
          "full": {"exact_latin": 70, "lookalike_latin": 60, "exact_zh": 30, "lookalike_zh": 20, "other_text": 80,
                   "no_text": 40}}


@dataclass(frozen=True)
class TextListing:
    listing_id: str
    path: str
    family: str
    brand: str  # expected brand ("" for negatives)
    text: str
    box: list[int]
    font: str
    size: int
    angle: float
    style: str
    title: str

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def vocabulary_json() -> dict:
    return {b: {k: v[k] for k in ("names", "aliases", "zh") if k in v} for b, v in BRANDS.items()}


def _photos(photos_root: Path | None, split: str) -> list[Path]:
    if photos_root is not None:
        sub = {"val": "validation", "test": "test"}[split]
        found = sorted((photos_root / sub).rglob("*.jpg")) if (photos_root / sub).is_dir() else []
        if found:
            return found
        found = sorted(photos_root.rglob("*.jpg"))
        if found:
            return found
    from brandguard.datasets.photos import skimage_photos

    return [p.path for p in skimage_photos()]


def build_family(out: Path, split: str, photos_root: Path | None, mode: str = "full", seed: int = 0
                 ) -> list[TextListing]:
    """Listings of the text-mark family for ``split`` (val or test photos), written as JPEGs into ``out``."""
    from PIL import Image

    from brandguard.datasets.photos import load_photo
    from brandguard.datasets.text_marks import cjk_font, contrasting, latin_fonts, paste_word, render_word

    rng = np.random.default_rng([seed, 0 if split == "val" else 1, 18])
    photos = _photos(photos_root, split)
    fonts, zh_font = latin_fonts(), cjk_font()
    out.mkdir(parents=True, exist_ok=True)
    plan: list[tuple[str, str, str]] = []  # family, brand, text
    brands = sorted(BRANDS)
    for fam, n in SHARES[mode].items():
        for k in range(n):
            b = brands[int(rng.integers(len(brands)))]
            e = BRANDS[b]
            if fam == "exact_latin":
                text = str(rng.choice([*e["names"], *e.get("aliases", [])]))
            elif fam == "lookalike_latin":
                text = str(rng.choice(e["lookalike"]))
            elif fam == "exact_zh":
                text = str(rng.choice(e["zh"]))
            elif fam == "lookalike_zh":
                cands = [x for x in brands if BRANDS[x]["zh_lookalike"]]
                b = cands[int(rng.integers(len(cands)))]
                text = str(rng.choice(BRANDS[b]["zh_lookalike"]))
            elif fam == "other_text":
                pool = (UNREGISTERED, ORDINARY, NEAR_WORDS)[k % 3]
                text, b = str(pool[int(rng.integers(len(pool)))]), ""
            else:
                text, b = "", ""
            plan.append((fam, b, text))
    if zh_font is None:  # no CJK font installed: the Chinese rows are left out, and reported so
        plan = [p for p in plan if not any("\u3400" <= c <= "\u9fff" for c in p[2])]
    listings = []
    for n, (fam, brand, text) in enumerate(plan):
        photo = load_photo(photos[int(rng.integers(len(photos)))], max_side=800)
        h, w = photo.shape[:2]
        is_zh = any("\u3400" <= c <= "\u9fff" for c in text)
        font = zh_font if is_zh else fonts[int(rng.integers(len(fonts)))]
        size = int(rng.integers(14, 44)) if text else 0
        angle = float(rng.choice([0, 0, 0, rng.uniform(-15, 15), rng.uniform(-35, 35), 90, 180])) if text else 0.0
        style = str(rng.choice(["outline", "outline", "label", "plain", "overlay"])) if text else ""
        img, box = photo, [0, 0, 0, 0]
        if text:
            centre = (float(rng.uniform(0.3, 0.7) * w), float(rng.uniform(0.2, 0.8) * h))
            ink, edge = contrasting(photo, centre, rng)
            label = (245, 245, 240) if style == "label" else None
            if label is not None:
                ink = (20, 20, 20)
            rgb, alpha = render_word(text, font, size, ink, edge if style in ("outline", "overlay") else None, label)
            scale = min(1.0, 0.9 * w / max(rgb.shape[1], 1))  # a long phrase still fits the photo
            if scale < 1.0:
                import cv2

                rgb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
                alpha = cv2.resize(alpha, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            img, box = paste_word(photo, rgb, alpha, centre, angle, 0.75 if style == "overlay" else 1.0)
        # titles: half of the positives name the brand (or the lookalike in the photo), a tenth
        # of the negatives name a registered brand (the title alone must not flag)
        r = float(rng.random())
        if brand and r < 0.5:
            title = f"{text if fam.startswith('lookalike') else BRANDS[brand]['names'][0]} " \
                    f"{GENERIC_TITLES[int(rng.integers(len(GENERIC_TITLES)))].lower()}"
        elif not brand and r < 0.1:
            other = BRANDS[brands[int(rng.integers(len(brands)))]]["names"][0]
            title = f"{GENERIC_TITLES[int(rng.integers(len(GENERIC_TITLES)))]}, like {other}"
        else:
            title = GENERIC_TITLES[int(rng.integers(len(GENERIC_TITLES)))]
        lid = f"{split}{n:04d}"
        path = out / f"{lid}.jpg"
        Image.fromarray(img).save(path, quality=int(rng.integers(75, 93)))
        listings.append(TextListing(lid, str(path), fam, brand, text, box, font.name if text else "", size, angle,
                                    style, title))
    return listings


def build_bundle(root: Path, model_bundle: Path) -> Path:
    """The brands' simple-icons marks as references, with their vocabulary, indexed with the model."""
    from PIL import Image

    from brandguard.cli.main import main as cli_main
    from brandguard.datasets.logos import get_logo_source, render_logo

    refs = root / "references"
    for b in BRANDS:
        rgba = render_logo(get_logo_source(b), 256)
        ink = rgba[..., 3] > 128
        if ink.any() and rgba[..., :3][ink].mean() > 200:  # a white mark (Sony's) is drawn dark on white
            rgba = rgba.copy()
            rgba[..., :3] = 30
        a = rgba[..., 3:4].astype(np.float32) / 255.0
        rgb = (rgba[..., :3] * a + 255 * (1 - a)).astype(np.uint8)
        (refs / b).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(refs / b / "logo.png")
    (root / "brands.json").write_text(json.dumps(vocabulary_json(), ensure_ascii=False, indent=1), encoding="utf-8")
    out = root / "bundle"
    rc = cli_main(["index", str(refs), "--out", str(out), "--bundle", str(model_bundle), "--brands",
                   str(root / "brands.json")])
    if rc != 0:
        raise RuntimeError(f"brandguard index failed ({rc})")
    return out


def judge_all(bundle: Path, listings: list[TextListing], depth: str, text: bool, threads: int,
              batch: int = 32) -> dict:
    """Verdicts of every listing through ``Pipeline.check`` (titles as hints), with timings."""
    from brandguard.engine.pipeline import Pipeline
    from brandguard.engine.routing import DepthOptions, ListingHints

    pipe = Pipeline.from_bundle(bundle, threads=threads, require_index=True, depth=DepthOptions(depth, text=text))
    if text and pipe.text_config is not None:
        pipe.text_reader()  # loaded before the clock starts, like a scanner's start-up
    t0 = time.perf_counter()
    verdicts = []
    for s in range(0, len(listings), batch):
        chunk = listings[s:s + batch]
        verdicts += pipe.check([x.path for x in chunk], [ListingHints(title=x.title) for x in chunk])
    seconds = time.perf_counter() - t0
    timing = pipe._text_reader.timing if pipe._text_reader is not None else None  # noqa: SLF001 - bench
    return {"verdicts": verdicts, "seconds": seconds, "timing": timing, "routes": dict(pipe.depth_counts),
            "text_counts": dict(pipe.text_counts)}


def score(listings: list[TextListing], verdicts: list) -> dict:
    """Precision/recall of the verdict (flagged with the right brand), overall and per family."""
    flagged = [v.verdict in ("copy", "knockoff") for v in verdicts]
    right = [f and v.brand == x.brand and bool(x.brand) for f, v, x in zip(flagged, verdicts, listings)]
    pos = [bool(x.brand) for x in listings]
    out = _pr(sum(right), sum(flagged), sum(pos))
    out["per_family"] = {}
    for fam in FAMILIES:
        idx = [i for i, x in enumerate(listings) if x.family == fam]
        if not idx:
            continue
        if fam in ("other_text", "no_text"):
            out["per_family"][fam] = {"n": len(idx), "false_flags": sum(flagged[i] for i in idx)}
        else:
            out["per_family"][fam] = {"n": len(idx), "recall": round(sum(right[i] for i in idx) / len(idx), 4),
                                      "wrong_brand": sum(flagged[i] and not right[i] for i in idx)}
    return out


def text_signal(listings: list[TextListing], verdicts: list, min_score: float) -> dict:
    """The text stage alone: the photo's best usable match (lookalike first, then score)."""
    from brandguard.engine.textfusion import TextFindings
    from brandguard.engine.textmarks import TextMatch

    decided, right = 0, 0
    for x, v in zip(listings, verdicts):
        t = v.evidence.get("text") or {}
        image = [TextMatch(**{k: m[k] for k in ("brand", "term", "text", "kind", "rule", "source", "score")})
                 for m in t.get("matches", []) if m.get("source") == "image"]
        best = TextFindings(image=image).usable(min_score)
        if best:
            decided += 1
            right += int(best[0].brand == x.brand)
    return _pr(right, decided, sum(bool(x.brand) for x in listings))


def calibrate_min_score(listings: list[TextListing], verdicts: list, target: float = 0.95) -> dict:
    """The lowest recognition score from which the text signal's precision reaches ``target``."""
    rows = []
    for t in [round(0.5 + 0.05 * k, 2) for k in range(10)]:
        s = text_signal(listings, verdicts, t)
        rows.append({"min_score": t, **s})
    ok = [r for r in rows if r["precision"] is not None and r["precision"] >= target]
    return {"target_precision": target, "table": rows, "chosen": ok[0]["min_score"] if ok else None}


def _pr(tp: int, flagged: int, positives: int) -> dict:
    p = tp / flagged if flagged else None
    r = tp / positives if positives else None
    return {"precision": round(p, 4) if p is not None else None, "recall": round(r, 4) if r is not None else None,
            "true_flags": tp, "flags": flagged, "positives": positives}


def _cost(run: dict, n: int) -> dict:
    t = run["timing"]
    read = run["text_counts"].get("total", 0)
    d = {"listings": n, "seconds": round(run["seconds"], 2), "listings_per_s": round(n / run["seconds"], 2),
         "ms_per_listing": round(1000 * run["seconds"] / n, 1), "reached_ocr": read,
         "ocr_share": round(read / n, 4), "routes": run["routes"]}
    if t is not None and t.photos:
        d.update(ocr_ms_per_photo_read=round(1000 * t.total_s / t.photos, 1),
                 ocr_ms_per_listing=round(1000 * t.total_s / n, 1),
                 ocr_ms_split={"detect": round(1000 * t.det_s / t.photos, 1),
                               "direction": round(1000 * t.cls_s / t.photos, 1),
                               "recognise": round(1000 * t.rec_s / t.photos, 1),
                               "boxes": round(1000 * t.post_s / t.photos, 1)},
                 lines_per_photo=round(t.lines / t.photos, 2))
    return d


def run_std_split(split: Path, bundle: Path, threads: int, log) -> dict:  # noqa: ANN001
    """Fused µAP (thorough) on a DISC21-style split with and without the text stage."""
    from brandguard.engine.pipeline import Pipeline
    from brandguard.engine.routing import DepthOptions
    from brandguard.evaluation.metrics import evaluate, read_ground_truth, read_query_families
    from brandguard.evaluation.predictions import predict

    gt, fams = read_ground_truth(split / "ground_truth.csv"), read_query_families(split / "queries.csv")
    out = {"split": str(split)}
    for text in (False, True):
        pipe = Pipeline.from_bundle(bundle, threads=threads, depth=DepthOptions("thorough", text=text))
        t0 = time.perf_counter()
        run = predict(pipe, split / "references", split / "queries", k=10)
        dt = time.perf_counter() - t0
        m = evaluate(run.predictions, gt, run.query_ids, fams)
        key = "with_text" if text else "without_text"
        out[key] = {"micro_ap": m["micro_ap"], "recall_at_1": m["recall_at_1"], "recall_at_p90": m["recall_at_p90"],
                    "per_family": {f: {"micro_ap": v.get("micro_ap")} for f, v in (m.get("per_family") or {}).items()
                                   if isinstance(v, dict) and v.get("micro_ap") is not None},
                    "seconds": round(dt, 1), "queries": len(run.query_ids),
                    "reached_ocr": pipe.text_counts.get("total", 0)}
        log(f"[text] standard split thorough, text {'on' if text else 'off'}: µAP {m['micro_ap']:.4f} ({dt:.0f}s)")
    return out


def run_text(cfg, model_bundle: Path, log=print, std_split: Path | None = None) -> dict:  # noqa: ANN001
    """The ``text`` section of results.json."""
    from brandguard.engine.textfusion import TEXT_MIN_SCORE
    from brandguard.datasets.text_marks import cjk_font, latin_fonts

    mode = "quick" if cfg.quick else "full"
    root = cfg.out / "text"
    bundle = build_bundle(root, model_bundle)
    res: dict = {"brands": len(BRANDS), "fonts": [f.name for f in latin_fonts()],
                 "cjk_font": cjk_font().name if cjk_font() else None, "min_score": TEXT_MIN_SCORE, "splits": {}}
    if cjk_font() is None:
        res["note"] = "no CJK font installed: the Chinese listings were left out"
    for split in ("val", "test"):
        listings = build_family(root / split, split, cfg.photos, mode)
        (root / f"{split}.json").write_text(json.dumps([x.to_dict() for x in listings], ensure_ascii=False, indent=0),
                                            encoding="utf-8")
        sec: dict = {"listings": len(listings), "families": {f: sum(x.family == f for x in listings) for f in FAMILIES}}
        runs = {}
        for depth in ("thorough", "auto"):
            for text in (True, False):
                if split == "val" and (depth, text) != ("thorough", True):
                    continue  # val only calibrates the text threshold
                run = judge_all(bundle, listings, depth, text, cfg.threads)
                key = f"{depth}_{'text' if text else 'no_text'}"
                runs[key] = run
                sec[key] = {"verdict": score(listings, run["verdicts"]), "cost": _cost(run, len(listings))}
                log(f"[text] {split} {key}: P/R {sec[key]['verdict']['precision']}/{sec[key]['verdict']['recall']}, "
                    f"{sec[key]['cost']['ms_per_listing']} ms/listing, OCR share {sec[key]['cost']['ocr_share']}")
        thorough = runs["thorough_text"]["verdicts"]
        sec["text_signal"] = text_signal(listings, thorough, TEXT_MIN_SCORE)
        if split == "val":
            sec["calibration"] = calibrate_min_score(listings, thorough)
        res["splits"][split] = sec
    if std_split is not None and (std_split / "ground_truth.csv").is_file() and not cfg.quick:
        try:  # the family's numbers stand even if this comparison fails
            res["standard_split"] = run_std_split(std_split, model_bundle, cfg.threads, log)
        except Exception as exc:  # noqa: BLE001 - reported in results.json
            res["standard_split"] = {"error": f"{type(exc).__name__}: {exc}"}
    return res
