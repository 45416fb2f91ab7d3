"""Hostile catalogue rows through the real `brandguard scan` (issue #16).

A bad row becomes one ``inconclusive`` result with a reason and the rest of the catalogue is
judged; the re-run (resume) works too. Listing images are read only under the catalogue's
folder (or ``--image-root``), only from regular files, never past the size limit. A catalogue
that is unusable as a whole exits 2 with one line on stderr.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from brandguard.cli.main import EXIT_OK, EXIT_USAGE, main
from brandguard.scan.report import thumbnail_data_uri
from brandguard.scan.results import read_results
from tests_helpers import blob_image, save

BRANDS = ("acme", "bolt")
GOOD = {"copy_acme": "copy", "copy_bolt": "copy", "plain_0": "clear", "plain_1": "clear"}
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bundle(tiny_bundle, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile_scan")
    for i, b in enumerate(BRANDS):
        save(blob_image(300 + i), root / "refs" / b / "logo.png")
    assert main(["index", str(root / "refs"), "--bundle", str(tiny_bundle), "--out", str(root / "b")]) == EXIT_OK
    return root / "b"


def good_rows(folder: Path) -> list[dict]:
    """Listings that must be judged whatever else the catalogue holds: two copies, two clear."""
    rows = []
    for i, b in enumerate(BRANDS):
        save(blob_image(300 + i)[6:234, 8:312], folder / "l" / f"copy_{b}.jpg", quality=75)
        rows.append({"listing_id": f"copy_{b}", "image": f"l/copy_{b}.jpg", "seller_id": "s1", "price": 12.5})
    for j in range(2):
        save(blob_image(700 + j), folder / "l" / f"plain_{j}.jpg", quality=85)
        rows.append({"listing_id": f"plain_{j}", "image": f"l/plain_{j}.jpg", "title": "a plain photo"})
    return rows


def jsonl_catalogue(folder: Path, bad_line: bytes) -> Path:
    """Good rows with ``bad_line`` (raw bytes, no newline) in the middle."""
    lines = [json.dumps(r).encode() for r in good_rows(folder)]
    lines.insert(2, bad_line)
    cat = folder / "cat.jsonl"
    cat.write_bytes(b"\n".join(lines) + b"\n")
    return cat


def scan_args(cat: Path, bundle: Path, out: Path, *extra: str) -> list[str]:
    return ["scan", str(cat), "--bundle", str(bundle), "--out", str(out), "--no-progress", "--quiet", *extra]


def assert_judged(out: Path, bad_id: str, reason: str, detail: str = "") -> dict:
    """Every good listing judged as built; the bad row inconclusive with ``reason``."""
    res = {r["listing_id"]: r for r in read_results(out)}
    assert set(res) == set(GOOD) | {bad_id}, sorted(res)
    for lid, verdict in GOOD.items():
        assert res[lid]["verdict"] == verdict, (lid, res[lid]["verdict"], res[lid]["reason"])
    bad = res[bad_id]
    ev = json.loads(bad["evidence"])
    assert (bad["verdict"], bad["reason"]) == ("inconclusive", reason), (bad["reason"], ev)
    assert detail in ev.get("detail", ""), ev
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inconclusive_reasons"] == {reason: 1}
    return bad


# --------------------------------------------------------------------------- bad rows
BIG_INT = "1" * 5000
NESTED = "[" * 100_000 + "]" * 100_000
ROW_CASES = [
    # (id, bad JSONL line, listing id of its result, reason, detail)
    ("nul_in_image_path", json.dumps({"listing_id": "bad", "image": "l/a\u0000.jpg"}).encode(),
     "bad", "bad_row", "NUL byte"),
    ("invalid_utf8_line", b'{"listing_id": "bad", "image": "l/\xff\xfe.jpg"}',
     "cat.jsonl:3", "bad_row", "not valid UTF-8"),
    ("int_of_5000_digits", f'{{"listing_id": "bad", "image": "l/plain_0.jpg", "seller_id": {BIG_INT}}}'.encode(),
     "cat.jsonl:3", "bad_row", "integer string conversion"),
    ("price_of_401_digits", f'{{"listing_id": "bad", "image": "l/plain_0.jpg", "price": 1{"0" * 400}}}'.encode(),
     "bad", "bad_price", "401 digits"),
    ("json_nested_100000_deep", f'{{"listing_id": "bad", "image": "l/plain_0.jpg", "x": {NESTED}}}'.encode(),
     "cat.jsonl:3", "bad_row", "nested too deeply"),
    ("lone_surrogate_in_title", b'{"listing_id": "bad", "image": "l/plain_0.jpg", "title": "\\ud800"}',
     "bad", "bad_row", "title is not valid UTF-8"),
    ("line_over_1_mib", json.dumps({"listing_id": "bad", "image": "l/plain_0.jpg", "title": "t" * (1 << 20)}).encode(),
     "cat.jsonl:3", "bad_row", "line longer than"),
    ("list_as_listing_id", b'{"listing_id": ["a", "b"], "image": "l/plain_0.jpg"}',
     "cat.jsonl:3", "bad_row", "listing_id must be text or a number"),
]


@pytest.mark.parametrize("name,line,bad_id,reason,detail", ROW_CASES, ids=[c[0] for c in ROW_CASES])
def test_bad_jsonl_row_is_inconclusive_and_the_rest_judged(bundle, tmp_path, name, line, bad_id, reason, detail):
    cat = jsonl_catalogue(tmp_path, line)
    out = tmp_path / "out"
    assert main(scan_args(cat, bundle, out, "--workers", "0")) == EXIT_OK
    assert_judged(out, bad_id, reason, detail)
    # the re-run resumes: nothing left to scan, same results
    assert main(scan_args(cat, bundle, out, "--workers", "0")) == EXIT_OK
    assert json.loads((out / "summary.json").read_text())["scanned"] == 0
    assert_judged(out, bad_id, reason, detail)


def test_csv_field_over_the_csv_limit_is_one_bad_row(bundle, tmp_path):
    rows = good_rows(tmp_path)
    lines = ["listing_id,image,seller_id,title,price"]
    lines += [f'{r["listing_id"]},{r["image"]},{r.get("seller_id", "")},{r.get("title", "")},{r.get("price", "")}'
              for r in rows]
    lines.insert(3, "bad,l/plain_0.jpg,s9," + "x" * 140_000 + ",3")  # csv.Error: field larger than field limit
    cat = tmp_path / "cat.csv"
    cat.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert main(scan_args(cat, bundle, out, "--workers", "0")) == EXIT_OK
    assert_judged(out, "cat.csv:4", "bad_row", "field larger than field limit")


def test_csv_invalid_utf8_and_overlong_lines_are_bad_rows(bundle, tmp_path):
    rows = good_rows(tmp_path)
    body = [f'{r["listing_id"]},{r["image"]}'.encode() for r in rows]
    body.insert(1, b"bad,l/\xff.jpg")
    body.insert(3, b"long," + b"y" * ((1 << 20) + 10))  # one line over 1 MiB, no field over the csv limit
    cat = tmp_path / "cat.csv"
    cat.write_bytes(b"\n".join([b"listing_id,image"] + body) + b"\n")
    out = tmp_path / "out"
    assert main(scan_args(cat, bundle, out, "--workers", "0")) == EXIT_OK
    res = {r["listing_id"]: r for r in read_results(out)}
    assert {lid: res[lid]["verdict"] for lid in GOOD} == GOOD
    assert res["bad"]["reason"] == "bad_row" and "not valid UTF-8" in json.loads(res["bad"]["evidence"])["detail"]
    assert res["cat.csv:5"]["reason"] == "bad_row" and len(res) == len(GOOD) + 2


# --------------------------------------------------------------------------- files that are not files
PEAK_RSS_PROBE = ("import resource, sys\n"
                  "from brandguard.cli.main import main\n"
                  "rc = main(sys.argv[1:])\n"
                  "peak = max(resource.getrusage(w).ru_maxrss for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))\n"
                  "print('PEAK_RSS_KB', peak, flush=True)\n"
                  "sys.exit(rc)\n")
ADDRESS_SPACE = 6 << 30  # an unbounded read of /dev/zero dies here (MemoryError) instead of taking the machine


def run_scan_process(args: list[str], timeout: float) -> tuple[int, int, str]:
    """``brandguard scan`` in a fresh process group (decode workers included), killed as a group
    if it has not finished within ``timeout``: (exit code, peak RSS of the scan and its
    workers in KiB, stderr)."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))

    proc = subprocess.Popen([sys.executable, "-c", PEAK_RSS_PROBE, *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=limit)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"scan still running after {timeout:.0f} s: it hangs")
    peak = [int(line.split()[1]) for line in stdout.splitlines() if line.startswith("PEAK_RSS_KB")]
    return proc.returncode, peak[0] if peak else -1, stderr


def test_dev_zero_is_refused_without_reading_it(bundle, tmp_path):
    rows = good_rows(tmp_path)
    rows.insert(2, {"listing_id": "zero", "image": "/dev/zero"})
    cat = tmp_path / "cat.jsonl"
    cat.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # by default /dev/zero is simply not under the catalogue's folder
    rc, _, err = run_scan_process(scan_args(cat, bundle, tmp_path / "out", "--workers", "1"), timeout=240)
    assert rc == EXIT_OK, err[-2000:]
    assert_judged(tmp_path / "out", "zero", "path_outside_root", "/dev/zero")
    # allowed to read anywhere, the scanner still opens regular files only
    rc, peak_kb, err = run_scan_process(scan_args(cat, bundle, tmp_path / "out2", "--workers", "1",
                                                  "--allow-absolute-paths"), timeout=240)
    assert rc == EXIT_OK, err[-2000:]
    assert_judged(tmp_path / "out2", "zero", "not_a_regular_file", "device")
    assert 0 < peak_kb < 1024 * 1024, f"peak RSS {peak_kb} KiB"  # the 50 MB read limit alone would allow less


def test_fifo_is_refused_without_opening_it(bundle, tmp_path):
    rows = good_rows(tmp_path)
    os.mkfifo(tmp_path / "l" / "pipe.jpg")  # inside the catalogue's folder: only its type is wrong
    rows.insert(2, {"listing_id": "fifo", "image": "l/pipe.jpg"})
    cat = tmp_path / "cat.jsonl"
    cat.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rc, _, err = run_scan_process(scan_args(cat, bundle, tmp_path / "out", "--workers", "1"), timeout=240)
    assert rc == EXIT_OK, err[-2000:]
    assert_judged(tmp_path / "out", "fifo", "not_a_regular_file", "FIFO")


def test_image_replaced_by_a_fifo_before_the_rerun(bundle, tmp_path):
    """The incremental re-run fingerprints changed images: that read is guarded too."""
    rows = good_rows(tmp_path)
    save(blob_image(901), tmp_path / "l" / "later.jpg")
    rows.insert(2, {"listing_id": "later", "image": "l/later.jpg"})
    cat = tmp_path / "cat.jsonl"
    cat.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    assert main(scan_args(cat, bundle, out, "--workers", "0")) == EXIT_OK
    (tmp_path / "l" / "later.jpg").unlink()
    os.mkfifo(tmp_path / "l" / "later.jpg")
    rc, _, err = run_scan_process(scan_args(cat, bundle, out, "--workers", "1"), timeout=240)
    assert rc == EXIT_OK, err[-2000:]
    assert_judged(out, "later", "not_a_regular_file", "FIFO")


# --------------------------------------------------------------------------- confinement
def outside_copy(tmp_path: Path) -> Path:
    """A listing image outside the catalogue's folder that copies acme's logo: judged, it would
    be flagged and thumbnailed."""
    return save(blob_image(300)[4:236, 4:316], tmp_path / "elsewhere" / "secret.jpg", quality=80)


@pytest.mark.parametrize("how", ["etc_passwd", "absolute", "dotdot", "symlink"])
def test_images_outside_the_catalogue_folder_are_not_read(bundle, tmp_path, how):
    folder = tmp_path / "catalogue"
    rows = good_rows(folder)
    secret = outside_copy(tmp_path)
    image = {"etc_passwd": "/etc/passwd", "absolute": str(secret), "dotdot": "../elsewhere/secret.jpg",
             "symlink": "l/link.jpg"}[how]
    if how == "symlink":
        (folder / "l" / "link.jpg").symlink_to(secret)
    rows.insert(1, {"listing_id": "out", "image": image})
    cat = folder / "cat.jsonl"
    cat.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    assert main(scan_args(cat, bundle, out, "--workers", "0")) == EXIT_OK
    assert_judged(out, "out", "path_outside_root")
    page = (out / "report.html").read_text()
    assert page.count('class="card inconclusive"') == 1 and "no image" in page
    assert thumbnail_data_uri(str(secret)) not in page
    if how == "etc_passwd":
        return
    # the catalogue's owner widens the root: the same row is read and judged
    for extra in (["--image-root", str(tmp_path)], ["--allow-absolute-paths"]):
        out2 = tmp_path / f"out{len(extra)}"
        assert main(scan_args(cat, bundle, out2, "--workers", "0", *extra)) == EXIT_OK
        res = {r["listing_id"]: r for r in read_results(out2)}
        assert (res["out"]["verdict"], res["out"]["brand"]) == ("copy", "acme"), res["out"]["reason"]
        assert thumbnail_data_uri(str(secret)) in (out2 / "report.html").read_text()


def test_folder_catalogue_symlink_out_of_the_folder_is_not_read(bundle, tmp_path):
    folder = tmp_path / "catalogue"
    good_rows(folder)
    (folder / "l" / "out.jpg").symlink_to(outside_copy(tmp_path))
    out = tmp_path / "out"
    assert main(scan_args(folder, bundle, out, "--workers", "0")) == EXIT_OK
    res = {r["listing_id"]: r for r in read_results(out)}
    assert {lid: res[f"l/{lid}"]["verdict"] for lid in GOOD} == GOOD
    assert (res["l/out"]["verdict"], res["l/out"]["reason"]) == ("inconclusive", "path_outside_root")


def test_etc_passwd_with_any_path_allowed_is_just_not_an_image(bundle, tmp_path):
    rows = good_rows(tmp_path)
    rows.insert(1, {"listing_id": "out", "image": "/etc/passwd"})
    cat = tmp_path / "cat.jsonl"
    cat.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(scan_args(cat, bundle, tmp_path / "out", "--workers", "0", "--allow-absolute-paths")) == EXIT_OK
    assert_judged(tmp_path / "out", "out", "not_an_image")


def test_report_embeds_no_thumbnail_outside_its_root(tmp_path):
    """Results name whatever their catalogue said; the report reads only under its root."""
    from brandguard.scan.report import write_html_report

    secret = outside_copy(tmp_path)
    inside = save(blob_image(5), tmp_path / "catalogue" / "l" / "a.jpg")
    rows = [{"listing_id": lid, "verdict": "copy", "brand": "acme", "confidence": 0.9, "score": 0.9,
             "reason": None, "top_reference_id": None, "evidence": "{}", "image": str(p), "seller_id": "s",
             "price": None} for lid, p in (("in", inside), ("out", secret))]
    page = write_html_report(rows, {}, tmp_path / "r.html", image_root=str(tmp_path / "catalogue")).read_text()
    assert thumbnail_data_uri(str(inside)) in page and thumbnail_data_uri(str(secret)) not in page


# --------------------------------------------------------------------------- whole-input problems
def _parquet(path: Path, table: pa.Table) -> Path:
    pq.write_table(table, path)
    return path


WHOLE_INPUT_CASES = {
    "empty_jsonl": lambda d: (d / "cat.jsonl", b""),
    "blank_lines_only_jsonl": lambda d: (d / "cat.jsonl", b"\n  \n\n"),
    "header_only_csv": lambda d: (d / "cat.csv", b"listing_id,image\n"),
    "csv_without_image_column": lambda d: (d / "cat.csv", b"listing_id,picture\na,l/plain_0.jpg\n"),
    "text_named_parquet": lambda d: (d / "cat.parquet", b"listing_id,image\na,l/plain_0.jpg\n"),
    "parquet_image_column_of_ints": lambda d: _parquet(d / "cat.parquet", pa.table(
        {"listing_id": ["a", "b"], "image": pa.array([1, 2], pa.int64())})),
    "parquet_price_column_of_lists": lambda d: _parquet(d / "cat.parquet", pa.table(
        {"listing_id": ["a"], "image": ["l/plain_0.jpg"], "price": pa.array([[1.0]], pa.list_(pa.float64()))})),
    "empty_parquet": lambda d: _parquet(d / "cat.parquet", pa.table(
        {"listing_id": pa.array([], pa.string()), "image": pa.array([], pa.string())})),
}


@pytest.mark.parametrize("case", list(WHOLE_INPUT_CASES))
def test_unusable_catalogue_exits_2_with_one_line(bundle, tmp_path, capsys, case):
    good_rows(tmp_path)
    made = WHOLE_INPUT_CASES[case](tmp_path)
    if isinstance(made, tuple):
        made[0].write_bytes(made[1])
        made = made[0]
    capsys.readouterr()
    rc = main(scan_args(made, bundle, tmp_path / "out", "--workers", "0"))
    err = capsys.readouterr().err
    assert rc == EXIT_USAGE, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_scan_help_documents_exit_code_2(capsys):
    with pytest.raises(SystemExit):
        main(["scan", "--help"])
    text = capsys.readouterr().out
    assert "2 bad arguments or unusable input as a whole" in text and "path_outside_root" in text
