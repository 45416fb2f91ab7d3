"""The hostile-image corpus through the HTTP API: every input answered, no 5xx, nothing escapes."""

from __future__ import annotations

import pytest

from hostile import hostile_corpus
from test_serve import serving


@pytest.fixture(scope="module")
def served(tiny_bundle, tmp_path_factory):
    with serving(tiny_bundle, tmp_path_factory.mktemp("serve_hostile")) as s:
        yield s


def test_every_hostile_upload_gets_an_answer(served):
    with served.client("scanner") as c:
        for name, data, expected in hostile_corpus():
            r = c.post("/v1/check", files={"file": (name, data, "application/octet-stream")},
                       data={"listing_id": f"hostile-{name}"})
            if len(data) > served.settings.max_upload_bytes:
                assert r.status_code == 413, name
                continue
            assert r.status_code == 200, (name, r.status_code, r.text[:300])
            body = r.json()
            if expected is None:
                assert body["verdict"] in ("copy", "knockoff", "clear"), (name, body)
            else:
                assert body["verdict"] == "inconclusive" and body["reason"] == expected, (name, body)
        assert c.get("/healthz").status_code == 200  # still alive and well


def test_hostile_file_names_and_listing_ids_stay_inside_the_service(served):
    """Path-like names in uploads and listing ids are data, never paths."""
    copy = served.images["copy_acme"]
    with served.client("scanner") as c:
        for lid in ("../../../../tmp/pwned", "/etc/passwd", "..\\..\\win", "a/../../b", "%2e%2e%2fx"):
            r = c.post("/v1/check", files={"file": ("../../../../tmp/evil.jpg", copy, "image/jpeg")},
                       data={"listing_id": lid})
            assert r.status_code in (200, 400), (lid, r.status_code)
    media = served.settings.media_path.resolve()
    written = [p.resolve() for p in served.root.rglob("*") if p.is_file()]
    outside = [p for p in written if not str(p).startswith(str(served.root.resolve()))]
    assert not outside
    for p in media.rglob("*"):
        assert p.resolve().is_relative_to(media)


def test_service_and_scanner_give_the_same_verdict_with_geometric_evidence(tiny_bundle, tmp_path):
    """The service verifies candidates with local features exactly as the scanner does."""
    import cv2
    import numpy as np

    from brandguard.cli.main import main
    from brandguard.cases.leads import LeadStore
    from brandguard.scan.scanner import ScanOptions, read_results, scan
    from brandguard.serve.app import create_app
    from brandguard.serve.settings import Settings
    from brandguard.engine.decide import Calibration
    from brandguard.engine.pipeline import Pipeline
    from test_serve import LiveServer
    from tests_helpers import blob_image, save

    rng = np.random.default_rng(0)
    tex = cv2.GaussianBlur((rng.random((240, 320, 3)) * 255).astype(np.uint8), (3, 3), 0)
    save(tex, tmp_path / "refs" / "tex" / "logo.png")
    bundle = tmp_path / "bundle"
    assert main(["index", str(tmp_path / "refs"), "--bundle", str(tiny_bundle), "--out", str(bundle)]) == 0
    # thresholds that only a geometric verification can pass
    (bundle / "calibration.json").write_text(Calibration(copy=1.0, knockoff=1.0, verify_floor=0.0,
                                                         min_inliers=15, method="test").to_json())
    scene = blob_image(777, 480, 640)
    scene[100:340, 200:520] = tex
    save(scene, tmp_path / "l" / "scene.jpg", quality=90)
    (tmp_path / "cat.jsonl").write_text('{"listing_id": "s", "image": "l/scene.jpg"}\n')
    scan(tmp_path / "cat.jsonl", Pipeline.from_bundle(bundle, require_index=True), tmp_path / "out",
         ScanOptions(workers=0, progress=False))
    (row,) = read_results(tmp_path / "out")
    settings = Settings(bundle=bundle, leads_db=tmp_path / "leads.sqlite", threads=1)
    store = LeadStore(settings.leads_db)
    token, _ = store.create_key("scanner")
    store.close()
    import httpx

    with LiveServer(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=30,
                                                               headers={"Authorization": f"Bearer {token}"}) as c:
        r = c.post("/v1/check", files={"file": ("scene.jpg", (tmp_path / "l" / "scene.jpg").read_bytes(),
                                                "image/jpeg")})
    assert r.status_code == 200
    body = r.json()
    assert row["verdict"] == body["verdict"] == "copy" and row["brand"] == body["brand"] == "tex"
    import json as _json

    scan_geometry = _json.loads(row["evidence"])["geometry"]
    assert body["evidence"]["geometry"]["inliers"] == scan_geometry["inliers"] >= 15
    assert body["evidence"]["decided_by"] == "geometric verification"


def test_malformed_multipart_is_a_client_error(served):
    """Broken multipart framing is answered with a 4xx, never a 5xx or a hang."""
    bodies = [
        (b"--XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n\r\nabc",  # no end
         "multipart/form-data; boundary=XYZ"),
        (b"garbage without any boundary", "multipart/form-data; boundary=XYZ"),
        (b"--XYZ--\r\n", "multipart/form-data; boundary=XYZ"),  # no parts at all
        (b"--XYZ\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc\r\n--XYZ--\r\n",
         "multipart/form-data"),  # boundary missing from the header
    ]
    with served.client("scanner") as c:
        for body, ctype in bodies:
            r = c.post("/v1/check", content=body, headers={"Content-Type": ctype})
            assert 400 <= r.status_code < 500, (body[:40], r.status_code, r.text[:200])
        assert c.get("/healthz").status_code == 200
