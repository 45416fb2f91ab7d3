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
