"""Speed: decode limit, brandguard scan (local and Ray), ONNX embedding, imagededup encoders.

All on the same listing JPEGs, in one run, medians over repeats. Shared machines are noisy in
absolute terms, so the headline numbers are ratios against the decode-only limit (every core
doing nothing but the scanner's DCT-downscaled decode): no scanner can beat that on this box.

imagededup's CNN normally loads ImageNet MobileNetV3 weights from the internet, which this
project cannot reach. It is built here through imagededup's public ``model_config`` hook with
the *same* architecture (torchvision ``mobilenet_v3_small`` cut after global average pooling,
imagededup's own transform) and ``weights=None`` (random init, seed 0). While it is built and
run, ``torch.hub.load_state_dict_from_url`` is replaced by a tripwire that raises, so any
download attempt would fail the measurement instead of hanging or silently succeeding.
Random weights cost exactly as much compute as trained ones; the rate is meaningful, the
encodings are not (which is why the CNN has no quality row).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np

from bench_common import BenchConfig, Rate, timed


# ------------------------------------------------------------------ inputs
def make_listing_jpegs(dest: Path, n: int, photo_dir: Path | None, long_side: int = 800) -> list[Path]:
    """``n`` listing-like JPEGs with an 800 px long side, from real photos when given.

    Photos reserved for catalogue shots are left out: the indexed references include shots
    made from them, so a listing showing one would be a true match, not a clean listing, and
    the false-flag counts of the scan rows would mix the two."""
    import cv2
    from PIL import Image

    from brandguard.datasets.photos import dir_photos, is_catalogue_photo, procedural_background

    dest.mkdir(parents=True, exist_ok=True)
    sources: list[Path] = []
    if photo_dir is not None and photo_dir.is_dir():
        sources = [p.path for p in dir_photos(photo_dir) if not is_catalogue_photo(p.photo_id)][:n]
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        if i < len(sources):
            img = np.asarray(Image.open(sources[i]).convert("RGB"))
        else:
            img = procedural_background(rng, 600, 450)
        h, w = img.shape[:2]
        s = long_side / max(h, w)
        img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
        p = dest / f"listing_{i:05d}.jpg"
        Image.fromarray(img).save(p, "JPEG", quality=88)
        out.append(p)
    return out


# ------------------------------------------------------------------ decode
def _decode_full(path: str) -> int:
    from brandguard.vision.decode import decode_image

    return decode_image(path).rgb.shape[0]


def _decode_draft(args: tuple[str, int]) -> int:
    from brandguard.vision.decode import decode_image

    return decode_image(args[0], target_side=args[1]).rgb.shape[0]


def _init_decoder() -> None:
    import cv2

    cv2.setNumThreads(1)


def bench_decode(paths: list[str], side: int, cfg: BenchConfig) -> dict[str, Rate]:
    """``side``: the scanner's decode side (``decode_side``), so the limit decodes exactly as it does."""
    out = {
        "decode_full_1proc": timed(lambda: sum(1 for p in paths if _decode_full(p)), cfg.repeats),
        "decode_draft_1proc": timed(lambda: sum(1 for p in paths if _decode_draft((p, side))), cfg.repeats),
    }
    procs = cfg.threads
    with mp.get_context("spawn").Pool(procs, initializer=_init_decoder) as pool:
        pool.map(_decode_draft, [(paths[0], side)] * procs)  # warm the workers
        out["decode_limit_all_cores"] = timed(
            lambda: sum(1 for _ in pool.imap_unordered(_decode_draft, [(p, side) for p in paths], chunksize=4)),
            cfg.repeats, {"processes": procs, "path": f"brandguard.vision.decode.decode_image(target_side={side})"})
        out["decode_full_all_cores"] = timed(
            lambda: sum(1 for _ in pool.imap_unordered(_decode_full, paths, chunksize=4)),
            cfg.repeats, {"processes": procs, "path": "brandguard.vision.decode.decode_image() at full size"})
    return out


def bench_stages(paths: list[str], bundle: Path, cfg: BenchConfig) -> dict:
    """CPU milliseconds per listing of every scan stage, one process, one thread, in sequence.

    Wall-clock rates on a shared box swing by 30%; per-stage CPU cost does not, and it answers
    what a rate cannot: where the time goes, and the best any schedule of these stages could
    do on ``cfg.threads`` cores (``ceiling``: cores / total CPU per listing).
    """
    import hashlib

    import cv2

    from brandguard.vision.decode import decode_image
    from brandguard.engine.pipeline import Pipeline
    from brandguard.vision.prepare import PreparedImage, decode_side
    from brandguard.vision.preprocess import normalise_batch, resize_for_model
    from brandguard.vision.regions import region_boxes

    cv2.setNumThreads(1)
    # fast depth: the stages of `scan --depth fast` (the scan_local row); auto's and thorough's
    # deep work is measured by bench_deep_stages
    pipe = Pipeline.from_bundle(bundle, threads=1, require_index=True, depth="fast")
    side = decode_side(pipe.card.input_size, "full")
    n = len(paths)

    def cpu_ms(fn) -> float:  # noqa: ANN001
        best = float("inf")
        for _ in range(max(1, cfg.repeats)):
            t0 = time.process_time()
            fn()
            best = min(best, (time.process_time() - t0) * 1e3 / n)
        return round(best, 4)

    datas: list[bytes] = []
    decoded: list = []
    crops: list = []

    def read() -> None:
        datas[:] = [Path(p).read_bytes() for p in paths]

    st: dict[str, float] = {"read": cpu_ms(read)}
    st["sha256"] = cpu_ms(lambda: [hashlib.sha256(d).digest() for d in datas])

    def decode() -> None:
        decoded[:] = [decode_image(d, target_side=side).rgb for d in datas]

    def resize() -> None:
        crops[:] = [resize_for_model(r, pipe.card) for r in decoded]

    st["decode"] = cpu_ms(decode)
    st["resize"] = cpu_ms(resize)
    batch = np.stack(crops)
    st["normalise"] = cpu_ms(lambda: [normalise_batch(batch[i:i + 64], pipe.card) for i in range(0, n, 64)])
    x = [normalise_batch(batch[i:i + 64], pipe.card) for i in range(0, n, 64)]
    st["embed"] = cpu_ms(lambda: [pipe.embedder.embed(b) for b in x])
    items = [PreparedImage(crops=c[None], boxes=tuple(region_boxes(*r.shape[1::-1])), size=r.shape[1::-1], notes=())
             for c, r in zip(crops, decoded)]
    vecs = np.concatenate([pipe.embedder.embed(b) for b in x])
    st["search"] = cpu_ms(lambda: pipe.search_merged(items, vecs))
    st["judge_total_main_process"] = cpu_ms(lambda: [pipe.judge(items[i:i + 64], paths[i:i + 64])
                                                     for i in range(0, n, 64)])
    total = st["read"] + st["sha256"] + st["decode"] + st["resize"] + st["judge_total_main_process"]
    decode_only = st["read"] + st["decode"]  # what the decode-limit workers do per listing
    return {"stages_cpu_ms_per_listing": st, "decode_side": side,
            "total_cpu_ms_per_listing": round(total, 4),
            "ceiling_per_s": round(cfg.threads * 1e3 / total, 1),
            "ceiling_vs_decode_only": round(decode_only / total, 3),
            "note": "judge_total_main_process = normalise + embed + search + decide + keypoint verification "
                    "of candidates, as the scanner's main process runs it; ceiling = cores / total CPU per "
                    "listing (perfect overlap, no start-up); ceiling_vs_decode_only = decode / total, the best "
                    "scan-vs-decode-limit ratio any schedule could reach on CPU"}


def bench_deep_stages(paths: list[str], bundle: Path, cfg: BenchConfig, n: int = 60) -> dict:
    """CPU milliseconds per listing of each stage thorough depth adds, one process, one thread.

    Where a thorough listing's time goes, so the next speed work can aim: the keypoints (SIFT
    at the query side, the mirror, the colour parts), the text read, the descriptor search with
    and without the contrast-inverted twins (``search_no_twins``: what the twins cost), the
    geometric verification, the shape fits and the fusion with its dense checks.
    """
    import dataclasses

    import cv2

    from brandguard.engine.pipeline import NEIGHBOURS, Pipeline
    from brandguard.engine.routing import DepthOptions
    from brandguard.vision.local import describe_source

    cv2.setNumThreads(1)
    pipe = Pipeline.from_bundle(bundle, threads=1, require_index=True, depth="thorough")
    if not pipe.has_local_stage():
        return {"error": "the bundle has no local stage"}
    paths = paths[:n]
    k = len(paths)

    def cpu_ms(fn, repeats: int = max(1, cfg.repeats)) -> float:  # noqa: ANN001
        """Best of ``repeats``: the differences below subtract one stage from another."""
        best = float("inf")
        for _ in range(repeats):
            t0 = time.process_time()
            fn()
            best = min(best, (time.process_time() - t0) * 1e3 / k)
        return round(best, 2)

    st: dict[str, float] = {}
    feats: dict[int, object] = {}

    def describe() -> None:
        feats.update({i: describe_source(pipe.extractor, p, pipe.local_config.query_side, pipe.limits,
                                         mirror=True, shapes=True) for i, p in enumerate(paths)})

    st["keypoints_mirror_parts"] = cpu_ms(describe, 1)
    if pipe.text_config is not None:
        reader = pipe.text_reader()
        st["text_read"] = cpu_ms(lambda: [reader.read_source(p, pipe.limits) for p in paths], 1)
    local = pipe.index.local
    rows = {i: pipe._with_inverted(f.query_rows()) for i, f in feats.items()}
    with_twins = np.concatenate([r[0] for r in rows.values()])
    plain = np.concatenate([r[0][~r[3]] for r in rows.values()])
    st["search"] = cpu_ms(lambda: local.search(with_twins, NEIGHBOURS))
    st["search_no_twins"] = cpu_ms(lambda: local.search(plain, NEIGHBOURS))
    hits = local.search(with_twins, NEIGHBOURS)
    st["geometry"] = cpu_ms(lambda: pipe.fit_local(feats, rows, hits))
    st["shape_fits"] = cpu_ms(lambda: pipe.match_shapes(feats))
    # auto depth's keypoint glance, paid on every listing auto does not send deep by its global score
    from brandguard.vision.local import GLANCE_SIDE

    glances: dict[int, object] = {}

    def glance_keypoints() -> None:
        glances.update({i: describe_source(pipe.extractor, p, GLANCE_SIDE, pipe.limits, mirror=True)
                        for i, p in enumerate(paths)})

    st["glance_keypoints"] = cpu_ms(glance_keypoints, 1)
    glance_items = {i: dataclasses.replace(pipe.prepare(p, depth=DepthOptions("fast")), glance=glances[i])
                    for i, p in enumerate(paths)}
    routed: set[int] = set()
    st["glance_search_fits"] = cpu_ms(lambda: routed.update(pipe.glance(glance_items)))
    items = [dataclasses.replace(pipe.prepare(p), local=feats[i]) for i, p in enumerate(paths)]
    no_text = DepthOptions("thorough", text=False)
    st["judge_without_text"] = cpu_ms(lambda: pipe.judge(items, paths, depth=no_text))
    total = st["keypoints_mirror_parts"] + st.get("text_read", 0.0) + st["judge_without_text"]
    return {"listings": k, "stages_cpu_ms_per_listing": st, "query_rows_per_listing": round(len(with_twins) / k),
            "descriptors_indexed": len(local), "descriptor_factory": local.factory,
            "total_cpu_ms_per_listing": round(total, 2), "ceiling_per_s": round(cfg.threads * 1e3 / total, 1),
            "glance_rows_per_listing": round(sum(len(g.query_rows()[0]) for g in glances.values()) / k),
            "glance_routed": len(routed),
            "note": "keypoints_mirror_parts includes the decode at the query side; ceiling = cores / total CPU"}


# ------------------------------------------------------------------ embedding
def bench_embedding(bundle: Path, cfg: BenchConfig) -> dict[str, Rate]:
    from brandguard.vision.bundle import Bundle
    from brandguard.vision.embedder import Embedder

    b = Bundle.load(bundle)
    side = b.card.input_size
    batch = np.random.default_rng(0).standard_normal((32, 3, side, side)).astype(np.float32)
    reps = 3 if cfg.quick else 20
    out = {}
    for threads in sorted({1, cfg.threads}):
        emb = Embedder(b, threads=threads)
        emb.embed(batch)  # warm-up: graph optimisation and allocations
        out[f"embed_batch32_{threads}thr"] = timed(lambda: sum(emb.embed(batch).shape[0] for _ in range(reps)),
                                                   cfg.repeats, {"threads": threads, "batch": 32, "input": side})
    return out


# ------------------------------------------------------------------ scan
def index_references(model_bundle: Path, references: Path, dest: Path, threads: int) -> Path:
    """An indexed bundle over ``references`` (``brandguard index``, i.e. the user's command)."""
    from brandguard.cli.main import main as cli_main

    if dest.exists():
        shutil.rmtree(dest)
    rc = cli_main(["index", str(references), "--bundle", str(model_bundle), "--out", str(dest),
                   "--threads", str(threads), "--no-progress"])
    if rc != 0:
        raise RuntimeError(f"brandguard index exited {rc}")
    return dest


DEEP_LISTINGS = 400  # listings scanned in thorough and auto depth (a minute per repeat at 40/s)


def _scan_rate(catalogue: Path, bundle: Path, work: Path, n: int, engine: str, workers: int,
               cfg: BenchConfig, label: str, depth: str = "fast") -> Rate:
    from brandguard.scan.scanner import ScanOptions, scan
    from brandguard.engine.pipeline import Pipeline

    pipe = Pipeline.from_bundle(bundle, threads=1, require_index=True, depth=depth)
    runs, verdicts, cpu_ms, share = [], {}, [], 0.0
    for r in range(cfg.repeats):
        d = work / f"{label}_{r}"
        shutil.rmtree(d, ignore_errors=True)
        c0 = os.times()
        t0 = time.perf_counter()
        s = scan(catalogue, pipe, d, ScanOptions(engine=engine, workers=workers, threads=1, progress=False))
        runs.append(n / (time.perf_counter() - t0))
        c1 = os.times()
        # this process and its finished decode workers (the pool is closed when scan returns)
        cpu = (c1.user - c0.user) + (c1.system - c0.system) + (c1.children_user - c0.children_user) \
            + (c1.children_system - c0.children_system)
        cpu_ms.append(1000.0 * cpu / n)
        verdicts, share = s.verdicts, s.local_share
        if s.scanned != n:
            raise RuntimeError(f"{label}: scanned {s.scanned} of {n}")
        shutil.rmtree(d, ignore_errors=True)
    import statistics

    return Rate(round(statistics.median(runs), 2), [round(x, 2) for x in runs], n,
                {"engine": engine, "workers": workers, "ort_threads": 1, "verdicts": verdicts, "depth": depth,
                 "cpu_ms_per_listing": round(statistics.median(cpu_ms), 2) if engine == "local" else None,
                 "local_share": share,
                 "note": "wall clock of scan() incl. worker/actor start-up and writing results"})


def bench_scan(paths: list[Path], bundle: Path, cfg: BenchConfig, work: Path, log=print) -> dict:  # noqa: ANN001
    cat = work / "catalogue.jsonl"
    cat.write_text("".join(json.dumps({"listing_id": p.stem, "image": str(p)}) + "\n" for p in paths))
    n = len(paths)
    local_workers = cfg.threads  # the CLI default: one decode process per core + the embedder
    out: dict = {"scan_local": timed_scan(lambda: _scan_rate(cat, bundle, work, n, "local", local_workers, cfg,
                                                              "local"))}
    log(f"[speed] scan local (fast): {out['scan_local']['median_per_s']} img/s")
    # The deep depths on a share of the listings (thorough runs at tens of listings/s).
    n_deep = min(n, DEEP_LISTINGS)
    deep_cat = work / "catalogue_deep.jsonl"
    deep_cat.write_text("".join(json.dumps({"listing_id": p.stem, "image": str(p)}) + "\n" for p in paths[:n_deep]))
    for depth in ("thorough", "auto"):
        out[f"scan_{depth}"] = timed_scan(lambda depth=depth: _scan_rate(deep_cat, bundle, work, n_deep, "local",
                                                                         local_workers, cfg, depth, depth))
        log(f"[speed] scan local ({depth}): {out[f'scan_{depth}']['median_per_s']} img/s")
    if cfg.ray_workers:
        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=max(max(cfg.ray_workers), cfg.threads), include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        out["ray_init_s"] = round(time.perf_counter() - t0, 2)
        try:
            for w in cfg.ray_workers:
                out[f"scan_ray_{w}w"] = timed_scan(lambda w=w: _scan_rate(cat, bundle, work, n, "ray", w, cfg,
                                                                          f"ray{w}"))
                log(f"[speed] scan ray {w} workers: {out[f'scan_ray_{w}w']['median_per_s']} img/s")
        finally:
            ray.shutdown()
    return out


def timed_scan(fn) -> dict:  # noqa: ANN001
    try:
        return asdict(fn())
    except Exception as exc:  # noqa: BLE001 - reported in the results, other sections still run
        return {"error": f"{type(exc).__name__}: {exc}", "median_per_s": None}


# ------------------------------------------------------------------ imagededup
@contextmanager
def no_weight_downloads():
    """Make any torch.hub weight download raise (a tripwire, see the module docstring)."""
    import torch.hub

    def refuse(url: str, *a, **k):  # noqa: ANN002, ANN003
        raise RuntimeError(f"benchmark refused a weight download: {url}")

    saved = torch.hub.load_state_dict_from_url
    torch.hub.load_state_dict_from_url = refuse
    try:
        import torchvision.models._api as tv_api

        saved_tv = tv_api.load_state_dict_from_url
        tv_api.load_state_dict_from_url = refuse
    except (ImportError, AttributeError):
        tv_api = saved_tv = None
    try:
        yield
    finally:
        torch.hub.load_state_dict_from_url = saved
        if tv_api is not None:
            tv_api.load_state_dict_from_url = saved_tv


def random_init_imagededup_cnn(threads: int):  # noqa: ANN201 - imagededup.methods.CNN
    """imagededup's CNN with its default architecture and transform but random weights."""
    import torch
    import torchvision
    from imagededup.methods import CNN
    from imagededup.utils.models import CustomModel, MobilenetV3

    torch.set_num_threads(threads)
    torch.manual_seed(0)

    class RandomMobilenetV3(torch.nn.Module):
        """MobileNetV3-small up to global average pooling, as imagededup's MobilenetV3."""

        def __init__(self) -> None:
            super().__init__()
            net = torchvision.models.mobilenet_v3_small(weights=None).eval()
            self.body = torch.nn.Sequential(net.features, net.avgpool)

        def forward(self, x):  # noqa: ANN001, ANN201
            return self.body(x).flatten(1)

    model = RandomMobilenetV3().eval()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CNN(verbose=False, model_config=CustomModel(name="mobilenet_v3_small_random_init", model=model,
                                                           transform=MobilenetV3.transform))


def bench_imagededup(listing_dir: Path, n: int, cfg: BenchConfig) -> dict:
    import torch
    from imagededup.methods import PHash

    out: dict = {}
    with no_weight_downloads(), torch.inference_mode():
        cnn = random_init_imagededup_cnn(cfg.threads)
        from PIL import Image

        first = sorted(listing_dir.glob("*.jpg"))[0]
        dim = int(cnn.encode_image(image_array=np.asarray(Image.open(first).convert("RGB"))).shape[-1])  # warm-up
        out["imagededup_cnn"] = asdict(timed(lambda: len(cnn.encode_images(image_dir=listing_dir, num_enc_workers=0)),
                                             cfg.repeats, {"torch_threads": cfg.threads, "weights": "random (seed 0)",
                                                           "model": "mobilenet_v3_small (imagededup default arch)",
                                                           "encoding_dim": dim, "batch": cnn.batch_size}))
    ph = PHash(verbose=False)
    out["imagededup_phash"] = asdict(timed(lambda: len(ph.encode_images(image_dir=listing_dir,
                                                                          num_enc_workers=cfg.threads)),
                                           cfg.repeats, {"processes": cfg.threads}))
    ph1 = asdict(timed(lambda: len(ph.encode_images(image_dir=listing_dir, num_enc_workers=0)), cfg.repeats,
                       {"processes": 1}))
    out["imagededup_phash_1proc"] = ph1
    if out["imagededup_cnn"]["items"] != n:
        raise RuntimeError(f"imagededup CNN encoded {out['imagededup_cnn']['items']} of {n} images")
    return out


# ------------------------------------------------------------------ driver
def run_speed(cfg: BenchConfig, model_bundle: Path, references: Path, log=print) -> dict:  # noqa: ANN001
    """The ``speed`` section of results.json."""
    from brandguard.vision.bundle import Bundle

    work = cfg.out / "speed"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    paths = make_listing_jpegs(work / "listings", cfg.listings, cfg.photos)
    from brandguard.vision.prepare import decode_side

    side = decode_side(Bundle.load(model_bundle).card.input_size, "full")
    res: dict = {"listings": len(paths), "listing_long_side": 800,
                 "listing_source": (f"{cfg.photos}, photos not reserved for catalogue shots"
                                    if cfg.photos and cfg.photos.is_dir() else "procedural"),
                 "repeats": cfg.repeats, "cores_used": cfg.threads}
    log("[speed] decode …")
    res.update({k: asdict(v) for k, v in bench_decode([str(p) for p in paths], side, cfg).items()})
    log(f"[speed] decode limit: {res['decode_limit_all_cores']['median_per_s']} img/s")
    log("[speed] embedding …")
    res.update({k: asdict(v) for k, v in bench_embedding(model_bundle, cfg).items()})
    log("[speed] index + scan …")
    t0 = time.perf_counter()
    bundle = index_references(model_bundle, references, work / "indexed_bundle", cfg.threads)
    res["index_build_s"] = round(time.perf_counter() - t0, 2)
    log("[speed] stage costs …")
    res["stages"] = bench_stages([str(p) for p in paths], bundle, cfg)
    log(f"[speed] CPU per listing {res['stages']['total_cpu_ms_per_listing']} ms, "
        f"ceiling {res['stages']['ceiling_per_s']} img/s")
    res["deep_stages"] = bench_deep_stages([str(p) for p in paths], bundle, cfg)
    ds = res["deep_stages"]
    if "error" not in ds:
        log(f"[speed] thorough CPU per listing {ds['total_cpu_ms_per_listing']} ms: "
            + ", ".join(f"{k} {v}" for k, v in ds["stages_cpu_ms_per_listing"].items()))
    res.update(bench_scan(paths, bundle, cfg, work, log))
    log("[speed] imagededup …")
    try:
        res.update(bench_imagededup(work / "listings", len(paths), cfg))
    except Exception as exc:  # noqa: BLE001
        res["imagededup_cnn"] = {"error": f"{type(exc).__name__}: {exc}", "median_per_s": None}
    res["ratios"] = ratios(res)
    shutil.rmtree(work / "listings", ignore_errors=True)
    return res


def ratios(r: dict) -> dict:
    """Everything against the decode-only limit, plus the scaling ratios that matter."""
    def rate(key: str) -> float | None:
        v = r.get(key) or {}
        return v.get("median_per_s") if isinstance(v, dict) else None

    def div(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a and b else None

    lim = rate("decode_limit_all_cores")
    out = {
        "draft_vs_full_decode_1proc": div(rate("decode_draft_1proc"), rate("decode_full_1proc")),
        "scan_local_vs_decode_limit": div(rate("scan_local"), lim),
        "scan_thorough_vs_fast": div(rate("scan_thorough"), rate("scan_local")),
        "scan_auto_vs_fast": div(rate("scan_auto"), rate("scan_local")),
        "scan_local_vs_full_decode_all_cores": div(rate("scan_local"), rate("decode_full_all_cores")),
        "scan_local_vs_cpu_ceiling": div(rate("scan_local"), (r.get("stages") or {}).get("ceiling_per_s")),
        "cpu_ceiling_vs_decode_limit": div((r.get("stages") or {}).get("ceiling_per_s"), lim),
        "cpu_ceiling_vs_imagededup_cnn": div((r.get("stages") or {}).get("ceiling_per_s"), rate("imagededup_cnn")),
        "imagededup_cnn_vs_decode_limit": div(rate("imagededup_cnn"), lim),
        "imagededup_phash_vs_decode_limit": div(rate("imagededup_phash"), lim),
        "scan_local_vs_imagededup_cnn": div(rate("scan_local"), rate("imagededup_cnn")),
    }
    ray_keys = sorted((k for k in r if k.startswith("scan_ray_")), key=lambda k: int(k[9:-1]))
    for k in ray_keys:
        out[f"{k}_vs_decode_limit"] = div(rate(k), lim)
    if len(ray_keys) >= 2:
        out[f"{ray_keys[-1]}_vs_{ray_keys[0]}"] = div(rate(ray_keys[-1]), rate(ray_keys[0]))
    emb = sorted((k for k in r if k.startswith("embed_batch32_")), key=lambda k: int(k.split("_")[-1][:-3]))
    if len(emb) >= 2:
        out["embed_all_threads_vs_1"] = div(rate(emb[-1]), rate(emb[0]))
    return out
