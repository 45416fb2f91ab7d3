"""brands.json is validated: both spellings of authorised sellers work, anything else is named."""

from __future__ import annotations

import json

import pytest

from brandguard.cases.risk import BRAND_INFO_KEYS, load_brand_info
from brandguard.errors import InputError


def write(tmp_path, obj):
    p = tmp_path / "brands.json"
    p.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return p


@pytest.mark.parametrize("key", ["authorized_sellers", "authorised_sellers"])
def test_both_spellings_of_authorised_sellers_are_read(tmp_path, key):
    info = load_brand_info(write(tmp_path, {"nike": {key: ["s1", 7], "default_price": 100,
                                                      "reference_prices": {"sku1": "80"}}}))
    assert info["nike"].authorized_sellers == {"s1", "7"}
    assert info["nike"].default_price == 100.0 and info["nike"].reference_prices == {"sku1": 80.0}


@pytest.mark.parametrize("entry,message", [
    ({"authorized_seller": ["s1"]}, "unknown keys ['authorized_seller']"),
    ({"authorized_sellers": ["a"], "authorised_sellers": ["b"]}, "use one"),
    ({"authorized_sellers": "s1"}, "list of seller ids"),
    ({"default_price": -5}, "not negative"),
    ({"default_price": "1e999"}, "finite"),
    ({"reference_prices": {"x": "abc"}}, "bad entry"),
    ("not an object", "must be an object"),
])
def test_bad_entries_are_errors_that_say_what_is_accepted(tmp_path, entry, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")) as exc:
        load_brand_info(write(tmp_path, {"nike": entry}))
    if "unknown" in message:
        assert all(k in str(exc.value) for k in BRAND_INFO_KEYS)


def test_unreadable_files_are_input_errors(tmp_path):
    for text in ("{not json", "[" * 100_000, "[1, 2]"):
        with pytest.raises(InputError):
            load_brand_info(write(tmp_path, text))
