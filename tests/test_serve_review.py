"""The reviewer's API on a real service (uvicorn on loopback, SQLite): decisions from any open
state, undo as a new history entry, bulk decisions, filters and sort; and the OpenAPI
description: a response model for every route, the API-key security schemes."""

from __future__ import annotations

import pytest

from brandguard.cases.leads import LeadStore
from test_serve import serving


@pytest.fixture(scope="module")
def srv(tiny_bundle, tmp_path_factory):
    with serving(tiny_bundle, tmp_path_factory.mktemp("review")) as s:
        yield s


def _leads(s, n: int, prefix: str, image: str = "copy_acme", **fields) -> list[int]:
    with s.client("scanner") as c:
        ids = []
        for i in range(n):
            r = c.post("/v1/check", files={"file": ("l.jpg", s.images[image], "image/jpeg")},
                       data={"listing_id": f"{prefix}-{i}", **fields})
            ids.append(r.json()["lead_id"])
    assert all(ids)
    return ids


def test_confirm_then_undo_keeps_the_whole_history(srv):
    (lead_id,) = _leads(srv, 1, "U")
    with srv.client("brand:acme") as c:
        first = c.get(f"/v1/leads/{lead_id}").json()
        assert first["can_undo"] is False and set(first["allowed_next"]) == {
            "confirmed_counterfeit", "genuine", "dismissed", "test_buy", "sent"}
        assert c.post(f"/v1/leads/{lead_id}/undo").json()["error"] == "nothing_to_undo"
        done = c.post(f"/v1/leads/{lead_id}/feedback", json={"status": "confirmed_counterfeit", "note": "fake"})
        assert done.status_code == 200 and done.json()["status"] == "confirmed_counterfeit"
        assert done.json()["allowed_next"] == [] and done.json()["can_undo"] is True
        back = c.post(f"/v1/leads/{lead_id}/undo", json={"note": "wrong listing"})
        assert back.status_code == 200, back.text
        body = back.json()
        assert body["status"] == "new" and body["can_undo"] is False
        assert [(h["kind"], h["from_status"], h["status"]) for h in body["history"]] == [
            ("decision", "new", "confirmed_counterfeit"), ("undo", "confirmed_counterfeit", "new")]
        assert body["history"][1]["undoes"] == body["history"][0]["id"]
        assert body["history"][1]["note"] == "wrong listing" and body["history"][1]["who"].startswith("brand:acme/")
        empty = c.post(f"/v1/leads/{lead_id}/undo")
        assert empty.status_code == 409 and empty.json()["error"] == "nothing_to_undo"
    with srv.client("brand:bolt") as c:  # another brand's lead: not found, untouched
        assert c.post(f"/v1/leads/{lead_id}/undo").status_code == 404
    store = LeadStore(srv.settings.leads_db)
    try:
        assert store.get_lead(lead_id).status == "new" and len(store.history(lead_id)) == 2
    finally:
        store.close()


def test_bulk_decision_reports_each_lead(srv):
    ids = _leads(srv, 3, "B")
    (bolt_id,) = _leads(srv, 1, "B-bolt", image="copy_bolt")
    with srv.client("brand:acme") as c:
        assert c.post(f"/v1/leads/{ids[2]}/feedback", json={"status": "genuine"}).status_code == 200
        r = c.post("/v1/leads/bulk", json={"ids": [*ids, bolt_id], "action": "dismissed", "note": "spam"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["action"], body["updated"], body["failed"]) == ("dismissed", 2, 2)
        assert [(x["id"], x["ok"], x["status"], x["error"]) for x in body["results"]] == [
            (ids[0], True, "dismissed", None), (ids[1], True, "dismissed", None),
            (ids[2], False, None, "illegal_transition"), (bolt_id, False, None, "not_found")]
        undo = c.post("/v1/leads/bulk", json={"ids": ids[:2], "action": "undo"}).json()
        assert [x["status"] for x in undo["results"]] == ["new", "new"]
        assert c.post("/v1/leads/bulk", json={"ids": [], "action": "dismissed"}).status_code == 422
        assert c.post("/v1/leads/bulk", json={"ids": ids, "action": "bogus"}).status_code == 400
    with srv.client("admin") as c:
        assert c.get(f"/v1/leads/{bolt_id}").json()["status"] == "new"


def test_filters_and_sort(srv):
    _leads(srv, 1, "F-cheap", price="1", seller_id="s-f")
    _leads(srv, 1, "F-dear", price="1000", seller_id="s-f")
    with srv.client("brand:acme") as c:
        by_risk = c.get("/v1/leads", params={"sort": "risk", "limit": 1000}).json()
        risks = [x["risk"] for x in by_risk["leads"]]
        assert by_risk["sort"] == "risk" and risks == sorted(risks, reverse=True)
        copies = c.get("/v1/leads", params={"verdict": "copy", "status": "new"}).json()["leads"]
        assert copies and all(x["verdict"] == "copy" and x["status"] == "new" for x in copies)
        assert c.get("/v1/leads", params={"verdict": "knockoff"}).json()["count"] == 0
        assert c.get("/v1/leads", params={"min_risk": 2}).status_code == 422
        assert c.get("/v1/leads", params={"sort": "price"}).status_code == 422


# --------------------------------------------------------------------------- OpenAPI
def test_every_route_has_a_response_model_and_the_key_schemes(srv):
    with srv.client() as c:
        spec = c.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearer"] == {"type": "http", "scheme": "bearer", "bearerFormat": "API key",
                                 "description": schemes["bearer"]["description"]}
    assert (schemes["apiKey"]["type"], schemes["apiKey"]["in"], schemes["apiKey"]["name"]) == \
        ("apiKey", "header", "X-API-Key")
    models = spec["components"]["schemas"]
    assert {"CheckOut", "LeadOut", "LeadDetailOut", "BulkOut", "ComplaintOut", "ReferenceListOut",
            "ErrorOut"} <= set(models)
    assert "drawing" in models["LeadOut"]["properties"] and "risk" in models["CheckOut"]["properties"]
    missing = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            ok = {k: v for k, v in op["responses"].items() if k.startswith("2")}
            assert ok, f"{method} {path}: no success response"
            for code, resp in ok.items():
                content = resp.get("content") or {}
                js = content.get("application/json", {}).get("schema")
                if "application/json" in content and not (js and ("$ref" in js or js.get("type") == "object"
                                                                  and js.get("properties"))):
                    missing.append(f"{method.upper()} {path} {code}")
                if not content:
                    missing.append(f"{method.upper()} {path} {code}: no content")
            if path not in ("/healthz", "/readyz", "/metrics") and not path.startswith("/review"):
                assert {"bearer": []} in op.get("security", []) and {"apiKey": []} in op.get("security", []), \
                    f"{method} {path} does not declare the key schemes"
    assert not missing, f"routes answering JSON without a response model: {missing}"
