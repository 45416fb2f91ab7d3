"""docs/BENCHMARKS.md from results.json: generated, never edited by hand.

Tables only restate results.json; anything not measured in this run says so.
"""

from __future__ import annotations

import os
from pathlib import Path

from brandguard.evaluation.families import MARK_FAMILIES

TITLES = {"quality": "Quality", "speed": "Speed", "faiss": "FAISS search", "local_index": "Descriptor index",
          "text": "Text marks", "http": "HTTP service", "flood": "Flood"}


def _f(x, nd: int = 3) -> str:  # noqa: ANN001
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def _rel(path: str, doc: Path) -> str:
    try:
        return os.path.relpath(Path(path).resolve(), doc.parent.resolve())
    except ValueError:
        return path


def _quality(q: dict, doc: Path) -> list[str]:
    ds = q["dataset"]
    lines = [f"## Quality: `{ds['name']}`", "",
             f"{ds['n_references']} references, {ds['n_queries']} queries, top-{q['k']} predictions per query, "
             "scored by `brandguard.evaluation.metrics.evaluate` (µAP as in the Image Similarity Challenge 2021: all "
             "predictions pooled and sorted by score; recall at 90% precision; recall@1).", "",
             "| method | µAP | recall@P90 | recall@1 | queries | seconds | notes |", "|---|---:|---:|---:|---:|---:|---|"]
    methods = q["methods"]
    for name, m in methods.items():
        o = m.get("overall") or {}
        notes = []
        if m.get("error"):
            notes.append(f"**failed**: {m['error']}")
        n = m.get("notes") or {}
        if name == "orb":
            if n.get("shortlist") == "all":
                notes.append("exhaustive: every query-reference pair matched")
            else:
                notes.append(f"verifies a shortlist of {n.get('shortlist')} by {n.get('shortlist_by')} cosine "
                             f"(true reference in shortlist: {_f(n.get('shortlist_recall'))})")
        if n.get("query_subset"):
            notes.append(f"subset: {n['query_subset']}")
        if n.get("undecodable_queries"):
            notes.append(f"{n['undecodable_queries']} undecodable queries")
        lines.append(f"| {m['label']} | {_f(o.get('micro_ap'))} | {_f(o.get('recall_at_p90'))} | "
                     f"{_f(o.get('recall_at_1'))} | {m.get('n_queries', '–')} | {_f(m.get('seconds'), 1)} | "
                     f"{'; '.join(notes)} |")
    fams: list[str] = []
    for m in methods.values():
        for f, v in (m.get("per_family") or {}).items():
            if "micro_ap" in v and f not in fams:
                fams.append(f)
    fams.sort(key=lambda f: (MARK_FAMILIES.index(f) if f in MARK_FAMILIES else 99, f))
    if fams:
        for metric, title in (("micro_ap", "µAP"), ("recall_at_1", "recall@1"), ("recall_at_p90", "recall@P90")):
            lines += ["", f"**{title} per family** (each family's queries plus every distractor query)", "",
                      "| method | " + " | ".join(fams) + " |", "|---|" + "---:|" * len(fams)]
            for m in methods.values():
                pf = m.get("per_family") or {}
                lines.append(f"| {m['label']} | " + " | ".join(_f((pf.get(f) or {}).get(metric)) for f in fams) + " |")
        dfams = sorted({f for m in methods.values() for f, v in (m.get("per_family") or {}).items()
                        if "micro_ap" not in v})
        if dfams:
            lines += ["", "**Distractor families**: mean top score (each method on its own scale; lower is better "
                      "only relative to that method's scores on true matches)", "",
                      "| method | " + " | ".join(dfams) + " |", "|---|" + "---:|" * len(dfams)]
            for m in methods.values():
                pf = m.get("per_family") or {}
                lines.append(f"| {m['label']} | " + " | ".join(_f((pf.get(f) or {}).get("mean_top_score"))
                                                                for f in dfams) + " |")
    figs = q.get("figures") or {}
    if figs:
        lines += ["", "Precision-recall curves (pooled, as µAP integrates them; † = query subset):", ""]
        for key, path in figs.items():
            lines.append(f"![PR curves, {key}]({_rel(path, doc)})")
    return lines


SPEED_ROWS = [
    ("decode_full_1proc", "decode only, full size, 1 process"),
    ("decode_full_all_cores", "decode only, full size, all cores"),
    ("decode_draft_1proc", "decode only, DCT-downscaled (scanner path), 1 process"),
    ("decode_limit_all_cores", "**decode-only limit**: DCT-downscaled, all cores"),
    ("scan_local", "`brandguard scan --depth fast`, local engine"),
    ("scan_thorough", "`brandguard scan --depth thorough` (global + local features on every listing)"),
    ("scan_auto", "`brandguard scan --depth auto` (local features where cheap signals point)"),
    ("scan_ray_1w", "`brandguard scan --engine ray`, 1 worker"),
    ("scan_ray_2w", "`brandguard scan --engine ray`, 2 workers"),
    ("imagededup_cnn", "imagededup CNN encode (MobileNetV3-small, random weights)"),
    ("imagededup_phash", "imagededup PHash encode, all cores"),
    ("imagededup_phash_1proc", "imagededup PHash encode, 1 process"),
]


def _speed(s: dict) -> list[str]:
    lim = (s.get("decode_limit_all_cores") or {}).get("median_per_s")
    lines = ["## Speed", "",
             f"{s['listings']} listing JPEGs ({s['listing_long_side']} px long side, from {s['listing_source']}), "
             f"median of {s['repeats']} run(s), {s['cores_used']} cores. Scan rates are wall clock of a whole "
             "scan (worker or actor start-up included); the Ray rows exclude `ray.init` "
             f"({_f(s.get('ray_init_s'), 1)} s, once).", "",
             "| measurement | images/s (median) | runs | vs decode limit | settings |", "|---|---:|---|---:|---|"]
    rows = list(SPEED_ROWS)
    rows += [(k, f"ONNX Runtime embedding, batch 32, {k.split('_')[-1][:-3]} thread(s)")
             for k in sorted(s) if k.startswith("embed_batch32_")]
    rows += [(k, f"`brandguard scan --engine ray`, {k[9:-1]} workers") for k in sorted(s)
             if k.startswith("scan_ray_") and k not in dict(SPEED_ROWS)]
    for key, label in rows:
        v = s.get(key)
        if not isinstance(v, dict):
            continue
        if v.get("error"):
            lines.append(f"| {label} | – | failed: {v['error']} | – | |")
            continue
        extra = v.get("extra") or {}
        settings = ", ".join(f"{k}={extra[k]}" for k in ("processes", "workers", "threads", "torch_threads",
                                                          "ort_threads", "batch", "cpu_ms_per_listing",
                                                          "local_share") if extra.get(k) is not None)
        r = v.get("median_per_s")
        lines.append(f"| {label} | {_f(r, 1)} | {', '.join(f'{x:.0f}' for x in v.get('runs_per_s', []))} | "
                     f"{_f(r / lim if r and lim else None, 3)} | {settings} |")
    stages = s.get("stages") or {}
    if stages.get("stages_cpu_ms_per_listing"):
        lines += ["", "**Where the CPU goes** (`scan --depth fast`; one process, one thread, CPU ms per listing, best of the repeats; "
                  "`judge` is the scanner's main-process work: normalise, embed, search, decide, keypoint "
                  "verification of candidates):", "", "| stage | CPU ms / listing |", "|---|---:|"]
        for k, v in stages["stages_cpu_ms_per_listing"].items():
            lines.append(f"| {k.replace('_', ' ')} | {_f(v, 3)} |")
        lines += [f"| **total (read + sha256 + decode + resize + judge)** | **{_f(stages.get('total_cpu_ms_per_listing'), 3)}** |",
                  "", f"CPU-bound ceiling on {s['cores_used']} cores: **{_f(stages.get('ceiling_per_s'), 1)} img/s**; "
                  f"the best scan-vs-decode-limit ratio any schedule of these stages could reach on CPU is "
                  f"decode / total = **{_f(stages.get('ceiling_vs_decode_only'), 3)}**."]
    deep = s.get("deep_stages") or {}
    if deep.get("stages_cpu_ms_per_listing"):
        lines += ["", f"**Where a thorough listing's CPU goes** ({deep['listings']} listings, one process, one "
                  f"thread; {deep['query_rows_per_listing']} query descriptor rows per listing (straight, mirror "
                  f"and their contrast-inverted twins) against {deep['descriptors_indexed']:,} indexed descriptors, "
                  f"`{deep['descriptor_factory']}`):", "", "| stage | CPU ms / listing |", "|---|---:|"]
        for k, v in deep["stages_cpu_ms_per_listing"].items():
            lines.append(f"| {k.replace('_', ' ')} | {_f(v, 2)} |")
        lines += [f"| **total (keypoints + text + judge)** | **{_f(deep.get('total_cpu_ms_per_listing'), 2)}** |", "",
                  "`glance keypoints` and `glance search fits` are auto depth's keypoint glance (SIFT at the glance "
                  f"side, straight and mirror: {deep.get('glance_rows_per_listing', '–')} query rows per listing, a "
                  "quarter of the IVF probes), paid on every listing the global score does not send deep and not part "
                  f"of the thorough total; it sent {deep.get('glance_routed', '–')} of these {deep['listings']} "
                  "listings deep.", "",
                  f"CPU-bound ceiling of thorough on {s['cores_used']} cores: **{_f(deep.get('ceiling_per_s'), 1)} "
                  "listings/s**. `search no twins` is the same search without the contrast-inverted twins (what they "
                  "cost); `geometry` is the votes and the RANSAC and homography fits on the search's neighbours; "
                  "`judge without text` is the whole judge step (global stage, search, fits, shape "
                  "fits, candidates with their dense checks, fusion). The search, geometry and judge rows are the best "
                  "of the repeats. " + deep.get("note", "")]
    lines += ["", "| ratio | value |", "|---|---:|"]
    for k, v in (s.get("ratios") or {}).items():
        lines.append(f"| {k.replace('_', ' ')} | {_f(v)} |")
    lines += ["", "imagededup's CNN ran with its default architecture and transform through its public "
              "`model_config` hook, with `weights=None` (random init) and a tripwire on "
              "`torch.hub.load_state_dict_from_url`: its pretrained weights cannot be downloaded here. "
              "Compute cost is the same as with trained weights."]
    return lines


def _faiss(f: dict) -> list[str]:
    lines = ["## FAISS search", "",
             f"Synthetic unit vectors, dimension {f['dim']} (the model's); {f['data']}. Factory = "
             "`choose_factory(n)` (what `brandguard index` builds); nprobe in **bold** is what the product sets "
             "(`tune_search`: 32, or 1/32 of the lists for big indexes); 1 is FAISS's own default. recall@k = share of queries whose exact nearest neighbour (brute-force inner "
             "product) is in the index's top k. With uncompressed (Flat) lists the scores are exact, so recall@10 equals "
             "recall@1: a miss means the neighbour's list was not probed.", "",
             "| n | factory | build s (train + add) | bytes/vector | nprobe | recall@1 | recall@10 | queries/s | "
             "queries/s 1 thread | exact queries/s |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in f["runs"]:
        fac = r["factory"] + (f" (chosen for n={r['factory_chosen_for']:,})" if r["factory_chosen_for"] != r["n"] else "")
        for i, s in enumerate(r["search"]):
            head = (f"| {r['n']:,} | `{fac}` | {r['build_s']} ({r['train_s']} + {r['add_s']}) | {r['bytes_per_vector']} "
                    if i == 0 else "| | | | ")
            probe = "–" if s["nprobe"] is None else (f"**{s['nprobe']}**" if s.get("product_default") else s["nprobe"])
            lines.append(head + f"| {probe} | {s['recall_at_1']} | "
                         f"{s['recall_at_10']} | {s['qps']:,.0f} | {s['qps_1thread']:,.0f} | "
                         + (f"{r['exact_search_qps']:,.0f} |" if i == 0 else " |"))
    e = f.get("estimate_10M")
    if e:
        lines += ["", f"**10M references (extrapolated, not measured)**: `{e['factory']}`, about "
                  f"{e['bytes_per_vector']} bytes/vector, {e['memory_gb']} GB in memory (raw float32 would be "
                  f"{e['raw_float32_gb']} GB), build roughly {e['build_s_rough']:,} s on this machine "
                  f"(scaled from {e['based_on']}). {e['note']}."]
    return lines


def _local_index(li: dict) -> list[str]:
    k = li["k"]
    lines = ["## Descriptor index", "",
             f"Local descriptors (`index/local_store.py`, size rules in `index/factories.py`), dimension {li['dim']}, factory = `choose_descriptor_factory(n)`, "
             f"built through `LocalIndex.add` in chunks; {li['data']}. {li['n_queries']} query descriptors searched "
             f"through `LocalIndex.search` in batches of {li['query_batch']}, k={k}, {li['threads']} threads, median of "
             f"{li['repeats']} run(s), at the nprobe `tune_descriptor_search` sets. recall = the index's top 1 is the "
             f"exact top 1 (recall@1), the exact nearest neighbour is in the index's top {k} (recall@{k}).", "",
             f"| descriptors | factory | build s | bytes/descriptor | nprobe | recall@1 vs exact | recall@{k} | "
             "queries/s at default nprobe | peak RSS MB |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in li["runs"]:
        d = next((s for s in r["search"] if s.get("default")), r["search"][0])
        lines.append(f"| {r['n']:,} | `{r['factory']}` | {r['build_s']} | {r['bytes_per_descriptor']} | "
                     f"{_f(d['nprobe'])} | {d['recall_at_1']} | {d['recall_at_k']} | {d['qps']:,.0f} | "
                     f"{r['peak_rss_mb']:,.0f} |")
    return lines


def _text(t: dict) -> list[str]:
    """Brand names written in photos (benchmarks/bench_text.py)."""
    test = t["splits"].get("test", {})
    val = t["splits"].get("val", {})
    fams = test.get("families", {})
    lines = ["## Text marks", "",
             f"Clothing photos with text written on them (`benchmarks/bench_text.py`): {t['brands']} registered brands "
             "(their simple-icons marks as references, names, aliases and Chinese names as vocabulary); positives show "
             "a brand's name or a lookalike spelling, Latin or Chinese; negatives show other text (ordinary words, "
             "words one letter from a brand name, unregistered brands) or none. Fonts: "
             f"{', '.join(t['fonts'])}; Chinese: {t.get('cjk_font') or 'none installed (Chinese rows left out)'}. "
             "Sizes 14-44 px, rotations 0 to ±35°, 90° and 180°, outlined, on a label, plain or as a 75% overlay. "
             f"Test photos: {test.get('listings')} listings ("
             + ", ".join(f"{k} {v}" for k, v in fams.items()) + "); val photos calibrate the recognition score from "
             f"which a match decides: {t['min_score']} (val table below). A verdict counts as right when it flags "
             "the listing's brand.", "",
             "| test split | precision | recall | flags | exact Latin | lookalike Latin | exact Chinese | lookalike "
             "Chinese | false flags on other text | on no text |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def row(label: str, d: dict) -> str:
        pf = d.get("per_family", {})
        rec = [_f((pf.get(f) or {}).get("recall")) for f in ("exact_latin", "lookalike_latin", "exact_zh",
                                                               "lookalike_zh")]
        ff = [f"{(pf.get(f) or {}).get('false_flags', '–')}/{(pf.get(f) or {}).get('n', '–')}"
              for f in ("other_text", "no_text")]
        return f"| {label} | {_f(d.get('precision'))} | {_f(d.get('recall'))} | {d.get('flags', '–')} | " + \
            " | ".join(rec + ff) + " |"

    if test.get("text_signal"):
        s = test["text_signal"]
        lines.append(f"| text signal alone (thorough) | {_f(s.get('precision'))} | {_f(s.get('recall'))} | "
                     f"{s.get('flags')} | | | | | | |")
    for key, label in (("thorough_text", "verdict, thorough, with text"), ("thorough_no_text", "verdict, thorough, without text"),
                       ("auto_text", "verdict, auto, with text"), ("auto_no_text", "verdict, auto, without text")):
        if key in test:
            lines.append(row(label, test[key]["verdict"]))
    lines += ["", "Cost on the same listings (2 cores, one process, `Pipeline.check` in batches of 32, titles as hints):",
              "", "| run | listings/s | ms per listing | reached OCR | OCR ms per photo read | OCR ms per listing | "
              "detect / direction / recognise / boxes (ms per photo) | lines per photo |",
              "|---|---:|---:|---:|---:|---:|---|---:|"]
    for key in ("thorough_text", "thorough_no_text", "auto_text", "auto_no_text"):
        c = (test.get(key) or {}).get("cost")
        if not c:
            continue
        sp = c.get("ocr_ms_split") or {}
        split = " / ".join(_f(sp.get(k), 1) for k in ("detect", "direction", "recognise", "boxes")) if sp else "–"
        lines.append(f"| {key.replace('_', ' ')} | {_f(c['listings_per_s'], 1)} | {_f(c['ms_per_listing'], 1)} | "
                     f"{c['reached_ocr']} ({_f(100 * c['ocr_share'], 0)}%) | {_f(c.get('ocr_ms_per_photo_read'), 1)} | "
                     f"{_f(c.get('ocr_ms_per_listing'), 1)} | {split} | {_f(c.get('lines_per_photo'), 2)} |")
    cal = val.get("calibration")
    if cal:
        lines += ["", f"Val calibration of the recognition score (target precision {cal['target_precision']}; chosen "
                  f"{cal['chosen']}):", "", "| min score | precision | recall | flags |", "|---:|---:|---:|---:|"]
        lines += [f"| {r['min_score']} | {_f(r['precision'])} | {_f(r['recall'])} | {r['flags']} |" for r in cal["table"]]
    std = t.get("standard_split")
    if std and std.get("error"):
        lines += ["", f"Standard corpus test split comparison failed: {std['error']}"]
    elif std:
        w, wo = std.get("with_text", {}), std.get("without_text", {})
        lines += ["", f"Standard corpus test split (`{Path(std['split']).name}`, its brands known by their ids only), "
                  "thorough depth, fused µAP / recall@1:", "",
                  "| text stage | µAP | recall@1 | recall@P90 | reached OCR | seconds |", "|---|---:|---:|---:|---:|---:|",
                  f"| off | {_f(wo.get('micro_ap'))} | {_f(wo.get('recall_at_1'))} | {_f(wo.get('recall_at_p90'))} | "
                  f"{wo.get('reached_ocr')} | {_f(wo.get('seconds'), 0)} |",
                  f"| on | {_f(w.get('micro_ap'))} | {_f(w.get('recall_at_1'))} | {_f(w.get('recall_at_p90'))} | "
                  f"{w.get('reached_ocr')} | {_f(w.get('seconds'), 0)} |"]
        fams = sorted(set(w.get("per_family", {})) | set(wo.get("per_family", {})))
        if fams:
            lines += ["", "| family | µAP without text | µAP with text |", "|---|---:|---:|"]
            lines += [f"| {f} | {_f((wo.get('per_family', {}).get(f) or {}).get('micro_ap'))} | "
                      f"{_f((w.get('per_family', {}).get(f) or {}).get('micro_ap'))} |" for f in fams]
    if t.get("note"):
        lines += ["", f"Note: {t['note']}."]
    return lines


def _http(h: dict) -> list[str]:
    """The service engineer's JSON (benchmarks/http_load.py): lists of phases as tables, other numbers flat."""
    lines = ["## HTTP service", ""]
    if not h.get("provided"):
        why = f" ({h['error']})" if h.get("error") else ""
        return lines + [f"Not measured in this run{why}: `python benchmarks/http_load.py --out {h['expected_path']}` "
                        "writes it, and the next `make bench` reads it."]
    data = h["data"]
    lines += [f"From `{h['path']}`" + (f" ({data.get('date')})" if isinstance(data, dict) and data.get("date") else "")
              + ":", ""]
    scalars: list[tuple[str, object]] = []

    def flat(prefix: str, d) -> None:  # noqa: ANN001
        if isinstance(d, dict):
            for k, v in d.items():
                flat(f"{prefix}.{k}" if prefix else k, v)
        elif isinstance(d, list) and d and all(isinstance(x, dict) for x in d):
            cols = [k for k in d[0] if not isinstance(d[0][k], (dict, list))]
            nested = [k for k in d[0] if isinstance(d[0][k], dict)]
            lines.extend([f"`{prefix}`:", "", "| " + " | ".join(cols + nested) + " |",
                          "|" + "---|" * (len(cols) + len(nested))])
            for row in d:
                cells = [_f(row.get(c), 2) for c in cols]
                cells += [", ".join(f"{k}: {v}" for k, v in (row.get(c) or {}).items()) for c in nested]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
        elif isinstance(d, (int, float, str, bool)) and prefix != "date":
            scalars.append((prefix, d))

    flat("", data)
    if scalars:
        lines += ["| key | value |", "|---|---:|"] + [f"| {k} | {v} |" for k, v in scalars]
    return lines


def _flood(h: dict) -> list[str]:
    """benchmarks/flood.py's JSON: what a normal client sees while large-image batches and slow uploads hit."""
    lines = ["## Flood", ""]
    if not h.get("provided"):
        why = f" ({h['error']})" if h.get("error") else ""
        return lines + [f"Not measured in this run{why}: `python benchmarks/flood.py --out {h['expected_path']}` "
                        "(part of `make bench-http`) writes it, and the next `make bench` reads it."]
    d = h["data"]
    a, png, srv, nc = d["attack"], d["attack"]["large_png"], d["server"], d["normal_client"]
    lines += [f"From `{h['path']}` ({d['date']}, {d['machine']['cpus']} cores, server and clients on one machine): "
              f"for {a['seconds']:g} s, {a['batch_senders']} clients post batches of {a['files_per_batch']} "
              f"{png['side']}x{png['side']} 16-bit greyscale PNGs ({png['bytes']:,} bytes each on the wire, "
              f"{png['declared_decoded_bytes'] / 2**20:,.0f} MiB declared decoded) back to back, and {a['drips']} "
              f"connections send a body at 1 byte every {a['drip_interval_s']:g} s (reconnecting when cut), while "
              f"one normal client checks real photos. Server: `{srv['model']}`, --max-inflight "
              f"{srv['max_inflight']}, --max-inflight-per-key {srv['max_inflight_per_key']}, --decode-threads "
              f"{srv['decode_threads']}, other settings default.", "",
              "| normal client | requests | status | 503 share | p50 ms | p99 ms | max ms |",
              "|---|---:|---|---:|---:|---:|---:|"]
    for name, row in (("alone", nc["baseline"]), ("during the flood", nc["flood"])):
        status = ", ".join(f"{k}: {v}" for k, v in row["status"].items())
        lines.append(f"| {name} | {row['requests']} | {status} | {_f(row['share_503'], 3)} | {_f(row['p50_ms'], 1)} | "
                     f"{_f(row['p99_ms'], 1)} | {_f(row['max_ms'], 1)} |")
    rss, b, dr = d["server_rss_mib"], d["batches"], d["drips"]

    def kv(x: dict) -> str:
        return ", ".join(f"{k}: {v}" for k, v in x.items()) or "none"

    counters = {k.removeprefix("brandguard_").removesuffix("_total"): int(v) for k, v in d["counters"].items()}
    lines += ["", f"Server RSS: {rss['after_warmup']:,} MiB after warm-up, peak {rss['peak_vmhwm']:,} MiB (VmHWM). "
              f"Large batches: {b['sent']} sent ({kv(b['status'])}); images of the answered ones: {kv(b['images'])}; "
              f"server counters: {kv(counters)}. A batch's images past its decode budget are answered at once "
              "(decode_budget); the budgeted ones decode one at a time in the large-image lane, and a batch whose "
              "decodes do not finish within the request timeout answers 504. "
              f"Slow uploads: {dr['connections']} connections ({kv(dr['status'])}), median "
              f"{_f(dr['median_s_to_answer'], 2)} s to the answer. Checks: {kv(d['checks'])}."]
    return lines


def write_markdown(results: dict, doc: Path) -> Path:
    env = results["environment"]
    v = env["versions"]
    model = results.get("model") or {}
    lines = [
        "# brandguard benchmarks", "",
        "<!-- generated by benchmarks/run.py from bench_out/results.json; do not edit by hand -->", "",
        f"Generated by `{results['command']}` on {env['date']}, mode **{results['mode']}**, "
        f"{results['seconds']:.0f} s in all.", "",
        f"Machine: {env['machine']} ({env['arch']}), {env['cores']} cores, {env['memory_gb']} GB RAM, load average "
        f"at start {env['load_average_at_start']}; {env['os']}.", "",
        f"Versions: Python {env['python']}, brandguard {v.get('brandguard')} (git {env.get('git_commit')}), "
        f"onnxruntime {v.get('onnxruntime')}, faiss-cpu {v.get('faiss-cpu')}, OpenCV {v.get('opencv-python-headless')}, "
        f"numpy {v.get('numpy')}, torch {v.get('torch')}, ray {v.get('ray')}, imagededup {v.get('imagededup')}, "
        f"imagehash {v.get('imagehash')}, pdqhash {v.get('pdqhash')}.", "",
        f"Model: `{model.get('name')}` sha256 `{(model.get('sha256') or '')[:12]}…`, {model.get('architecture')}, "
        f"input {model.get('input_size')} px, {model.get('embedding_dim')}-d embedding.", "",
    ]
    if results["mode"] == "quick":
        lines += ["> Quick mode: tiny corpus and tiny sizes, a smoke run. These numbers say the harness works, "
                  "not how good or fast anything is.", ""]
    for key, fn in (("quality", lambda q: _quality(q, doc)), ("speed", _speed), ("faiss", _faiss),
                     ("local_index", _local_index), ("text", _text), ("http", _http), ("flood", _flood)):
        sec = results.get(key)
        if not sec or sec.get("skipped"):
            lines += [f"## {TITLES[key]}", "", "Not run in this run (`--parts`).", ""]
            continue
        if sec.get("error"):
            lines += [f"## {TITLES[key]}", "", f"Failed: {sec['error']}", ""]
            continue
        body = fn(sec)
        if sec.get("reused_from"):
            body[1:1] = ["", f"*From the run of {sec['reused_from']} (this run did not repeat this part: `--parts`).*"]
        lines += body + [""]
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return doc
