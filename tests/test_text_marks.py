"""Brand names written in photos (#18): the matcher, the vocabulary stored with the index, and
the text stage through the real pipeline and scanner (PP-OCRv4 on ONNX Runtime, no mocks)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from brandguard.cli.main import EXIT_ARTIFACT, EXIT_OK, main
from brandguard.datasets.text_marks import Font, cjk_font, latin_fonts, paste_word, render_word
from brandguard.engine.decide import ReferenceHit, Verdict
from brandguard.engine.pipeline import Pipeline
from brandguard.engine.routing import DepthOptions, ListingHints
from brandguard.engine.textfusion import TextFindings, fuse_text
from brandguard.engine.textmarks import (TextMatch, Vocabulary, fold, lookalike_form, one_edit, parse_vocabulary,
                                         skeleton)
from brandguard.errors import BundleError, InputError
from tests_helpers import blob_image, save

VOCAB = {"nike": {"names": ["Nike"], "zh": ["耐克"]},
         "adidas": {"names": ["adidas"], "aliases": ["Three Stripes"], "zh": ["阿迪达斯"]},
         "louisvuitton": {"names": ["Louis Vuitton"], "aliases": ["LV"]}, "puma": {"names": ["PUMA"]}, "gap": {}}


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return Vocabulary.build(VOCAB, ["nike", "adidas", "louisvuitton", "puma", "gap"])


# ---------------------------------------------------------------------- normaliser, confusables
def test_fold_handles_width_case_accents_and_punctuation():
    assert fold("ＮＩＫＥ") == "nike"  # full width
    assert fold("Hermès") == "hermes"
    assert fold("Coca-Cola®") == "cocacola"
    assert fold("ﬁla") == "fila"  # ligature (NFKC)
    assert fold("Li Ning") == "lining"


def test_skeleton_merges_lookalike_characters():
    assert skeleton(fold("N1KE")) == skeleton(fold("NIKE")) == skeleton(fold("NlKE"))
    assert skeleton(fold("GUCC1")) == skeleton("gucci")
    assert skeleton(fold("Nіke")) == skeleton("nike")  # Cyrillic і
    assert lookalike_form("ΝΙΚΕ") == lookalike_form("NIKE")  # Greek capitals
    assert lookalike_form("ЅОNУ") == lookalike_form("SONY")  # Cyrillic capitals
    assert skeleton("rnaserati") == skeleton("maserati")
    assert skeleton("vvolf") == skeleton("wolf")
    assert skeleton(fold("ADIDA5")) == skeleton("adidas")
    assert skeleton(fold("C0CA")) == skeleton("coca")


def test_one_edit_kinds():
    assert one_edit("nikf", "nike") == "sub:e>f"
    assert one_edit("nkie", "nike") == "swap"
    assert one_edit("adidass", "adidas") == "ins"
    assert one_edit("adias", "adidas") == "del"
    assert one_edit("nike", "nike") is None and one_edit("nokia", "nike") is None


# ---------------------------------------------------------------------- matcher (titles and photo text)
@pytest.mark.parametrize("text,brand,kind", [
    ("NIKF", "nike", "lookalike"), ("Nike Air Max 90", "nike", "exact"), ("Adidos running", "adidas", "lookalike"),
    ("N1KE", "nike", "lookalike"), ("Nіke", "nike", "lookalike"), ("LOUIS VUITON bag", "louisvuitton", "lookalike"),
    ("lv bag", "louisvuitton", "exact"), ("three stripes tee", "adidas", "exact"), ("PUNA", "puma", "lookalike"),
    ("耐克运动鞋", "nike", "exact"), ("阿迪達斯", "adidas", "exact"), ("阿迪达丝", "adidas", "lookalike"),
    ("the GAP hoodie", "gap", "exact"), ("ＮＩＫＥ", "nike", "exact"), ("NKIE", "nike", "lookalike"),
    ("ΝΙΚΕ", "nike", "lookalike"),
])
def test_matcher_finds_names_and_lookalikes(vocab, text, brand, kind):
    found = vocab.match(text)
    assert [(m.brand, m.kind) for m in found] == [(brand, kind)], found
    assert found[0].rule


@pytest.mark.parametrize("text", [
    "I like my bike", "Mike", "NICE", "PUMP", "pumas", "gaps", "singapore", "hello world", "logo", "Pima",
    "Gucci", "Prada", "匡威", "新款包邮", "Filament", "Antarctica", "Reboot", "",
])
def test_matcher_ignores_ordinary_words_and_unregistered_brands(vocab, text):
    assert vocab.match(text, merged=True) == []


def test_short_names_match_only_whole_words(vocab):
    assert vocab.match("gap") and not vocab.match("gapp") and not vocab.match("9ap")
    assert vocab.match("LV") and not vocab.match("LVV")


def test_a_one_letter_name_matches_a_title_but_not_a_letter_read_in_a_photo():
    v = Vocabulary.build({"v": {"names": ["V"]}, "lv": {"names": ["LV"]}}, ["v", "lv"])
    assert [m.brand for m in v.match("V tee, size M")] == ["v"]
    assert v.match("V", source="image", merged=True) == []
    assert [m.brand for m in v.match("LV", source="image", merged=True)] == ["lv"]


def test_merged_words_read_from_a_photo(vocab):
    (m,) = vocab.match("ADIDASORIGINALS", source="image", merged=True)
    assert (m.brand, m.kind) == ("adidas", "exact")
    assert vocab.match("ADIDASORIGINALS") == []  # a title keeps its spaces: whole words only


def test_default_vocabulary_is_the_brand_id_and_scope_restricts(vocab):
    v = Vocabulary.build({}, ["cocacola", "starbucks"])
    assert [m.brand for m in v.match("Coca-Cola light")] == ["cocacola"]
    only = vocab.restricted(["adidas"])
    assert only.match("Nike") == [] and only.match("adidas")[0].brand == "adidas"


def test_title_matcher_routes_auto_depth(vocab):
    assert vocab.names_brand("Adidos running shoes, size 42")
    assert vocab.names_brand("Original Nike hoodie")
    assert not vocab.names_brand("Warm winter hat, like new")


def test_parse_vocabulary_reads_brands_json_shape():
    raw = {"nike": {"names": ["Nike"], "zh": "耐克", "authorized_sellers": ["s1"]}, "acme": {"authorized_sellers": []}}
    assert parse_vocabulary(raw) == {"nike": {"names": ["Nike"], "zh": ["耐克"]}}
    for bad in ([], {"nike": []}, {"nike": {"names": [1]}}, {"nike": {"names": ["x" * 65]}}):
        with pytest.raises(InputError):
            parse_vocabulary(bad)


# ---------------------------------------------------------------------- fusion rules (pure)
def _hit(rid: str, brand: str, score: float) -> ReferenceHit:
    return ReferenceHit(rid, brand, "", "logo", score)


def _m(brand: str, kind: str, score: float = 0.95, source: str = "image") -> TextMatch:
    return TextMatch(brand, brand, brand.upper(), kind, "rule", source, score, box=(1, 2, 3, 4))


def test_fusion_rules():
    clear = Verdict("clear", confidence=0.9, score=0.1, top=(_hit("puma/1", "puma", 0.1),), evidence={})
    rep = {"nike": _hit("nike/logo", "nike", 0.0)}.get
    v = fuse_text(clear, TextFindings(read=True, image=[_m("nike", "lookalike")]), rep)
    assert (v.verdict, v.brand) == ("knockoff", "nike") and v.top[0].reference_id == "nike/logo"
    assert v.evidence["text"]["decided"]["box"] == [1, 2, 3, 4] and v.evidence["stage"] == "text"
    exact = fuse_text(clear, TextFindings(read=True, image=[_m("nike", "exact")]), rep)
    assert exact.verdict == "knockoff" and exact.confidence < v.confidence  # a lookalike is the stronger sign
    # below the recognition score, or in the title only: evidence, no verdict
    assert fuse_text(clear, TextFindings(read=True, image=[_m("nike", "exact", 0.2)]), rep).verdict == "clear"
    assert fuse_text(clear, TextFindings(title=[_m("nike", "exact", source="title")]), rep).verdict == "clear"
    # the visual stages flag the same brand: it stands, more confident
    ko = Verdict("knockoff", brand="nike", confidence=0.6, score=0.6, top=(_hit("nike/logo", "nike", 0.6),))
    both = fuse_text(ko, TextFindings(read=True, image=[_m("nike", "exact")]), rep)
    assert both.verdict == "knockoff" and both.confidence > 0.6 and both.top[0].score > 0.6
    # a visual copy of another brand always stands; a weaker visual knockoff yields to the text
    cp = Verdict("copy", brand="puma", confidence=0.99, score=0.99, top=(_hit("puma/1", "puma", 0.99),))
    assert fuse_text(cp, TextFindings(read=True, image=[_m("nike", "lookalike")]), rep).brand == "puma"
    weak = Verdict("knockoff", brand="puma", confidence=0.3, score=0.3, top=(_hit("puma/1", "puma", 0.3),))
    assert fuse_text(weak, TextFindings(read=True, image=[_m("nike", "lookalike")]), rep).brand == "nike"
    assert fuse_text(Verdict.inconclusive("blank"), TextFindings(read=True, image=[_m("nike", "exact")])).verdict \
        == "inconclusive"


# ---------------------------------------------------------------------- vocabulary stored with the index
def test_vocabulary_is_committed_with_the_index_generation(tiny_bundle, tmp_path):
    for i, b in enumerate(["nike", "adidas"]):
        save(blob_image(300 + i), tmp_path / "refs" / b / "r.png")
    save(blob_image(310), tmp_path / "more" / "puma" / "r.png")
    (tmp_path / "brands.json").write_text(json.dumps({"nike": {"names": ["Nike"], "zh": ["耐克"],
                                                               "authorized_sellers": ["s1"]}}), encoding="utf-8")
    (tmp_path / "more.json").write_text(json.dumps({"puma": {"names": ["PUMA"]}}), encoding="utf-8")
    out = tmp_path / "b"
    assert main(["index", str(tmp_path / "refs"), "--bundle", str(tiny_bundle), "--out", str(out),
                 "--brands", str(tmp_path / "brands.json")]) == EXIT_OK
    manifest = json.loads((out / "index.json").read_text())
    assert manifest["vocabulary"]["brands"] == 1
    pipe = Pipeline.from_bundle(out, require_index=True)
    assert pipe.index.vocabulary() == {"nike": {"names": ["Nike"], "zh": ["耐克"]}}
    assert set(pipe.vocabulary().brands) == {"nike", "adidas"}  # adidas: known by its id
    assert main(["index", str(tmp_path / "more"), "--out", str(out), "--add", "--brands",
                 str(tmp_path / "more.json")]) == EXIT_OK
    pipe = Pipeline.from_bundle(out, require_index=True)
    assert set(pipe.index.vocabulary()) == {"nike", "puma"} and pipe.index.generation == 2
    assert [m.brand for m in pipe.vocabulary().match("puma tee")] == ["puma"]
    # a removal keeps it; a changed file is refused like any index file
    pipe.index.remove(["puma/r"])
    path = out / json.loads((out / "index.json").read_text())["vocabulary"]["file"]
    assert "PUMA" in path.read_text(encoding="utf-8")
    path.write_text(path.read_text(encoding="utf-8").replace("Nike", "Nikon"), encoding="utf-8")
    assert main(["scan", str(tmp_path / "refs"), "--bundle", str(out), "--out", str(tmp_path / "s"),
                 "--workers", "0", "--no-progress", "--quiet", "--no-report"]) == EXIT_ARTIFACT


# ---------------------------------------------------------------------- the text stage, real OCR
def _logo_on_white(slug: str) -> np.ndarray:
    from brandguard.datasets.logos import get_logo_source, render_logo

    rgba = render_logo(get_logo_source(slug), 200)
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    return (rgba[..., :3] * a + 255 * (1 - a)).astype(np.uint8)


def _photo() -> np.ndarray:
    """A plain fabric-like background (no registered mark in it)."""
    rng = np.random.default_rng(7)
    base = np.zeros((420, 560, 3), np.float32) + np.array([70, 95, 140], np.float32)
    noise = rng.normal(0, 6, (420, 560, 1)).astype(np.float32)
    yy = np.linspace(0, 1, 420, dtype=np.float32)[:, None, None]
    return np.clip(base + noise + 30 * yy, 0, 255).astype(np.uint8)


def _listing(tmp: Path, name: str, word: str, font: Font | None = None, angle: float = 8.0) -> tuple[Path, list[int]]:
    font = font or latin_fonts()[0]
    rgb, alpha = render_word(word, font, 44, (250, 250, 250), (0, 0, 0))
    img, box = paste_word(_photo(), rgb, alpha, (300, 200), angle)
    return save(img, tmp / f"{name}.jpg", quality=90), box


@pytest.fixture(scope="module")
def text_bundle(tmp_path_factory) -> Path:
    """The shipped model (SIFT local stage, OCR card) over nike and adidas marks, with their vocabulary."""
    root = tmp_path_factory.mktemp("text")
    for b in ("nike", "adidas"):
        save(_logo_on_white(b), root / "refs" / b / "logo.png")
    (root / "brands.json").write_text(json.dumps(VOCAB, ensure_ascii=False), encoding="utf-8")
    assert main(["index", str(root / "refs"), "--out", str(root / "bundle"), "--brands",
                 str(root / "brands.json")]) == EXIT_OK
    return root / "bundle"


def iou(a, b) -> float:  # noqa: ANN001
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union if union > 0 else 0.0


def test_card_records_the_ocr_graphs(text_bundle):
    pipe = Pipeline.from_bundle(text_bundle, require_index=True)
    card = pipe.card.text_marks
    assert card["licence"] == "Apache-2.0" and card["source"] == "rapidocr-onnxruntime==1.4.4"
    assert sorted(m["role"] for m in card["models"]) == ["cls", "det", "rec"]
    assert all(len(m["sha256"]) == 64 and m["file"].endswith(".onnx") for m in card["models"])


def test_lookalike_wordmark_in_photo_is_a_knockoff_with_its_box(text_bundle, tmp_path):
    path, truth = _listing(tmp_path, "nikf", "NIKF")
    pipe = Pipeline.from_bundle(text_bundle, require_index=True, depth="thorough")
    (v,) = pipe.check([str(path)])
    assert (v.verdict, v.brand) == ("knockoff", "nike"), v.evidence
    t = v.evidence["text"]
    assert t["read"] and t["decided"]["kind"] == "lookalike" and t["decided"]["term"] == "Nike"
    assert t["decided"]["text"].upper() == "NIKF" and "NIKF" in t["rule"]
    assert iou(t["decided"]["box"], truth) >= 0.5, (t["decided"]["box"], truth)
    assert v.top[0].brand == "nike"  # the brand's reference is what the lead shows beside the photo
    assert pipe.text_counts["total"] == 1
    # the same listing with the text stage off: nothing visual to find
    (off,) = pipe.check([str(path)], depth=DepthOptions("thorough", text=False))
    assert off.verdict == "clear" and "text" not in off.evidence


def test_box_is_in_original_pixels_of_a_large_listing(text_bundle, tmp_path):
    import cv2

    rgb, alpha = render_word("Adidos", latin_fonts()[0], 130, (250, 250, 250), (0, 0, 0))
    big = cv2.resize(_photo(), (1800, 1350), interpolation=cv2.INTER_CUBIC)
    img, truth = paste_word(big, rgb, alpha, (900, 600), 0)
    path = save(img, tmp_path / "big.jpg", quality=90)
    pipe = Pipeline.from_bundle(text_bundle, require_index=True, depth="thorough")
    (v,) = pipe.check([str(path)])
    assert (v.verdict, v.brand) == ("knockoff", "adidas"), v.evidence
    assert iou(v.evidence["text"]["decided"]["box"], truth) >= 0.5


def test_unregistered_brand_text_stays_clear(text_bundle, tmp_path):
    path, _ = _listing(tmp_path, "gucci", "GUCCI")
    pipe = Pipeline.from_bundle(text_bundle, require_index=True, depth="thorough")
    (v,) = pipe.check([str(path)])
    assert v.verdict == "clear", v.evidence
    assert v.evidence["text"]["read"] and "GUCC" in json.dumps(v.evidence["text"]["lines"]).upper()
    assert v.evidence["text"]["matches"] == []


def test_chinese_brand_name_in_photo(text_bundle, tmp_path):
    font = cjk_font()
    if font is None:
        pytest.skip("no CJK font installed (system fonts or the cvttf-notosanscjk-regular package)")
    path, _ = _listing(tmp_path, "zh", "耐克", font=font, angle=0)
    pipe = Pipeline.from_bundle(text_bundle, require_index=True, depth="thorough")
    (v,) = pipe.check([str(path)])
    assert (v.verdict, v.brand) == ("knockoff", "nike"), v.evidence
    assert v.evidence["text"]["decided"]["term"] == "耐克"


def test_auto_depth_reads_photos_the_title_points_at(text_bundle, tmp_path):
    path, _ = _listing(tmp_path, "ad", "Adidos")
    pipe = Pipeline.from_bundle(text_bundle, require_index=True, depth="auto")
    named, plain = pipe.check([str(path), str(path)], [ListingHints(title="Adidos running shoes"),
                                                      ListingHints(title="Running shoes")])
    assert named.evidence["depth"]["why"] == "title has a lookalike brand name" and named.evidence["text"]["read"]
    assert (named.verdict, named.brand) == ("knockoff", "adidas")
    assert named.evidence["text"]["matches"][-1]["source"] == "title"
    assert not plain.evidence["text"]["read"] and plain.verdict == "clear"
    assert dict(pipe.text_counts) == {"total": 1, "title has a lookalike brand name": 1}
    (fast,) = pipe.check([str(path)], [ListingHints(title="Adidos")], depth=DepthOptions("fast"))
    assert "text" not in fast.evidence


def test_authorised_seller_showing_the_brand_name_makes_no_lead(text_bundle, tmp_path):
    from brandguard.cases.leads import LeadStore

    rows = []
    for lid, seller in (("l1", "nike-store"), ("l2", "someone")):
        _listing(tmp_path / "l", lid, "NIKE")
        rows.append({"listing_id": lid, "image": f"l/{lid}.jpg", "seller_id": seller, "title": "hoodie"})
    (tmp_path / "cat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "brands.json").write_text(json.dumps({"nike": {"names": ["Nike"], "authorized_sellers": ["nike-store"]}}))
    db = tmp_path / "leads.sqlite"
    assert main(["scan", str(tmp_path / "cat.jsonl"), "--bundle", str(text_bundle), "--out", str(tmp_path / "out"),
                 "--leads-db", str(db), "--brand-info", str(tmp_path / "brands.json"), "--depth", "thorough",
                 "--workers", "0", "--no-progress", "--quiet", "--no-report"]) == EXIT_OK
    from brandguard.scan.scanner import read_results

    res = {r["listing_id"]: r for r in read_results(tmp_path / "out")}
    assert res["l1"]["verdict"] == res["l2"]["verdict"] == "knockoff" and res["l1"]["brand"] == "nike"
    assert res["l1"]["lead"] == "authorized" and res["l2"]["lead"] == "lead"
    assert json.loads(res["l2"]["evidence"])["text"]["decided"]["kind"] == "exact"
    store = LeadStore(db)
    try:
        assert [lead.listing_id for lead in store.list_leads(brand="nike")] == ["l2"]
    finally:
        store.close()


def test_a_replaced_ocr_graph_is_refused(text_bundle, tmp_path):
    import shutil

    from brandguard.vision.text import TextConfig

    cfg = TextConfig.from_card(Pipeline.from_bundle(text_bundle).card.text_marks)
    folder = tmp_path / "models"
    folder.mkdir()
    from brandguard.vision.text import package_model_dir

    for m in cfg.models:
        shutil.copyfile(package_model_dir() / m["file"], folder / m["file"])
    cfg.make(folder=folder)  # intact copies load
    with open(folder / cfg.model("cls")["file"], "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="does not match"):
        cfg.make(folder=folder)
    with pytest.raises(BundleError):
        TextConfig.from_card({"models": [{"role": "det", "sha256": "x"}]})


def test_thorough_scan_reads_text_in_its_decode_workers_as_check_does(text_bundle, tmp_path):
    """A thorough scan's decode workers read the photos' text (OCR spread over the cores); the
    verdicts and text evidence are what an in-process check of the same photos gives."""
    from brandguard.scan.scanner import ScanOptions, scan
    from brandguard.vision.prepare import prepare_image

    listings = tmp_path / "listings"
    listings.mkdir()
    paths = [_listing(listings, "nikf", "NIKF")[0], _listing(listings, "adidos", "Adidos", angle=-5.0)[0],
             save(_photo(), listings / "plain.jpg", quality=90)]
    catalogue = listings / "catalogue.jsonl"
    catalogue.write_text("".join(json.dumps({"listing_id": p.stem, "image": str(p)}) + "\n" for p in paths))
    pipe = Pipeline.from_bundle(text_bundle, require_index=True, depth="thorough")
    item = pipe.prepare(str(paths[0]), local=True)
    assert item.text is not None and any("NIKF" in ln.text.upper() for ln in item.text.lines)
    assert pipe.prepare(str(paths[0]), local=True, depth=DepthOptions("thorough", text=False)).text is None
    assert prepare_image(str(paths[0]), pipe.card).text is None  # fast: nothing read
    expected = {p.stem: v for p, v in zip(paths, pipe.check([str(p) for p in paths]))}
    out = tmp_path / "scan"
    summary = scan(catalogue, pipe, out, ScanOptions(workers=2, progress=False))
    assert summary.scanned == 3
    import pyarrow.parquet as pq

    rows = {r["listing_id"]: r for part in sorted((out / "parts").glob("*.parquet"))
            for r in pq.read_table(part).to_pylist()}
    if not rows:
        rows = {r["listing_id"]: r for r in pq.read_table(out / "results.parquet").to_pylist()}
    for stem, v in expected.items():
        got = rows[stem]
        ev = json.loads(got["evidence"]) if isinstance(got["evidence"], str) else got["evidence"]
        assert (got["verdict"], got["brand"] or None) == (v.verdict, v.brand), (stem, ev.get("decided_by"))
        assert [ln["text"] for ln in ev["text"]["lines"]] == [ln["text"] for ln in v.evidence["text"]["lines"]]
        assert ev["text"]["read"] is True
    assert {k for k, v in expected.items() if v.verdict != "clear"} == {"nikf", "adidos"}


def test_a_photo_its_decode_worker_could_not_read_says_why_and_is_not_counted_as_read(text_bundle, tmp_path):
    from dataclasses import replace

    from brandguard.vision.text import TextRead

    path, _ = _listing(tmp_path, "nikf", "NIKF")
    pipe = Pipeline.from_bundle(text_bundle, require_index=True, depth="thorough")
    item = replace(pipe.prepare(str(path), local=True), text=TextRead(error="truncated"))
    (v,) = pipe.judge([item], [str(path)])
    assert v.evidence["text"]["error"] == "truncated" and not v.evidence["text"]["read"]
    assert pipe.text_counts["total"] == 0
