"""Training, checkpointing and export: small real runs (tiny model, few marks, CPU, 1 thread)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("torchvision")
pytest.importorskip("onnx")

from brandguard.errors import InputError  # noqa: E402
from brandguard.training.checkpoint import CKPT_NAME, load_checkpoint  # noqa: E402
from brandguard.training.data import (  # noqa: E402
    MEAN,
    STD,
    ViewConfig,
    ViewMaker,
    load_marks,
    to_model_input,
)
from brandguard.training.loop import train  # noqa: E402
from brandguard.training.losses import info_nce, koleo  # noqa: E402
from brandguard.training.model import ModelConfig, build_model  # noqa: E402
from brandguard.training.runlog import LOG_NAME, PLOT_NAME  # noqa: E402
from brandguard.training.train import TrainConfig  # noqa: E402
from brandguard.vision.bundle import Bundle, ModelCard  # noqa: E402
from brandguard.vision.preprocess import normalise_batch, preprocess_batch  # noqa: E402

TINY = dict(input_size=64, dim=32, hidden=64, batch_size=4, max_marks=8, mark_px=48,
            workers=0, threads=1, eval_marks=0, bn_batches=1, warmup_steps=2, minutes=2.0)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("marks")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run")
    train(TrainConfig(out=str(out), steps=3, cache_dir=str(cache_dir), **TINY))
    return out


def _log_steps(path: Path) -> list[int]:
    with open(path, newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def test_model_output_is_unit_norm_with_requested_dim() -> None:
    model = build_model(ModelConfig(input_size=64, dim=32, hidden=64)).eval()
    with torch.no_grad():
        z = model(torch.randn(3, 3, 64, 64))
    assert z.shape == (3, 32)
    assert torch.allclose(z.norm(dim=1), torch.ones(3), atol=1e-5)
    assert model.pool.p.requires_grad  # GeM exponent is learned


def test_bad_model_and_train_config_raise_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        build_model(ModelConfig(input_size=100))  # not a multiple of 32
    with pytest.raises(InputError):
        TrainConfig(out=str(tmp_path), batch_size=1).validate()
    with pytest.raises(InputError):
        TrainConfig(out=str(tmp_path), workers=3).validate()


def test_torch_normalisation_equals_inference_preprocessing() -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    card = ModelCard(name="t", architecture="t", input_size=64, embedding_dim=8, sha256="0" * 64, mean=MEAN, std=STD)
    ours = to_model_input(torch.from_numpy(imgs), MEAN, STD).contiguous().numpy()
    np.testing.assert_allclose(ours, normalise_batch(imgs, card), rtol=0, atol=1e-6)


def test_views_are_deterministic_per_step_and_model_sized(cache_dir: Path) -> None:
    marks = load_marks("train", 0, 48, 8, cache_dir)
    maker = ViewMaker(marks, [], ViewConfig(input_size=64, batch_size=4))
    x1, ids1 = maker.batch(0, 7)
    x2, ids2 = maker.batch(0, 7)
    x3, _ = maker.batch(0, 8)
    assert x1.shape == (8, 64, 64, 3) and x1.dtype == np.uint8
    assert len(set(ids1.tolist())) == 4  # distinct instances: each other's negatives
    assert np.array_equal(x1, x2) and np.array_equal(ids1, ids2)
    assert not np.array_equal(x1, x3)


def test_train_and_val_marks_are_disjoint_brands(cache_dir: Path) -> None:
    tr = load_marks("train", 0, 48, 8, cache_dir)
    va = load_marks("val", 0, 48, 8, cache_dir)
    assert not set(tr.slugs) & set(va.slugs)


def test_losses_reward_aligned_and_spread_embeddings() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=1)
    b = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=1)
    aligned = info_nce(torch.cat([a, a + 0.01 * b]), 8, 0.1)
    random = info_nce(torch.cat([a, b]), 8, 0.1)
    assert aligned < random
    clustered = torch.nn.functional.normalize(a[:1] + 0.05 * b, dim=1)
    assert koleo(a) < koleo(clustered)


def test_few_steps_on_one_batch_reduce_the_loss(cache_dir: Path) -> None:
    torch.manual_seed(0)
    marks = load_marks("train", 0, 48, 8, cache_dir)
    x_u8, _ = ViewMaker(marks, [], ViewConfig(input_size=64, batch_size=6)).batch(0, 0)
    x = to_model_input(torch.from_numpy(x_u8), MEAN, STD)
    model = build_model(ModelConfig(input_size=64, dim=32, hidden=64)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(12):
        loss = info_nce(model(x), 6, 0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < losses[0]


def test_tiny_run_writes_checkpoint_log_plot_and_summary(tiny_run: Path) -> None:
    ckpt = load_checkpoint(tiny_run / CKPT_NAME)  # weights_only=True inside
    assert ckpt["step"] == 3
    assert ckpt["model_config"]["dim"] == 32
    assert _log_steps(tiny_run / LOG_NAME) == [1, 2, 3]
    assert (tiny_run / PLOT_NAME).stat().st_size > 1000
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert np.isfinite(summary["final_loss"]) and summary["images_seen"] == 3 * 8


def test_resume_continues_the_step_count(tiny_run: Path, tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "resumed"
    out.mkdir()
    for name in (CKPT_NAME, LOG_NAME):
        (out / name).write_bytes((tiny_run / name).read_bytes())
    with open(out / LOG_NAME, "a") as f:  # a step logged after the checkpoint, then killed
        f.write("4,9.0,0.001,9.9,9.9,0.0,0.0,0.0,0.0\n")
    res = train(TrainConfig(out=str(out), steps=5, resume=True, cache_dir=str(cache_dir), **TINY))
    assert res.step == 5
    assert _log_steps(out / LOG_NAME) == [1, 2, 3, 4, 5]
    assert load_checkpoint(out / CKPT_NAME)["step"] == 5


def test_resume_with_other_model_shape_is_refused(tiny_run: Path, cache_dir: Path) -> None:
    with pytest.raises(InputError):
        train(TrainConfig(out=str(tiny_run), steps=5, resume=True, cache_dir=str(cache_dir),
                          **{**TINY, "dim": 64}))


def test_export_writes_a_loadable_bundle_matching_torch(tiny_run: Path, tmp_path: Path) -> None:
    from brandguard.training.checkpoint import model_from_checkpoint
    from brandguard.training.export import export_bundle

    dest = tmp_path / "bundle"
    rep = export_bundle(tiny_run / CKPT_NAME, dest, parity_n=4, sanity_n=4)
    bundle = Bundle.load(dest)
    card = bundle.card
    assert (card.input_size, card.embedding_dim, card.input_name, card.output_name) == (64, 32, "image", "embedding")
    assert card.training["steps"] == 3 and card.metrics["parity_max_abs_diff"] <= 1e-3
    assert rep.sha256 == card.sha256

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(bundle.model_path), sess_options=opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    imgs = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((80, 50), (64, 64), (30, 90))]
    x = preprocess_batch(imgs, card)
    got = sess.run(["embedding"], {"image": x})[0]
    model, _ = model_from_checkpoint(tiny_run / CKPT_NAME)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert got.shape == (3, 32)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_time_budget_stops_the_run_cleanly(tmp_path: Path, cache_dir: Path) -> None:
    res = train(TrainConfig(out=str(tmp_path), cache_dir=str(cache_dir), **{**TINY, "minutes": 0.01}))
    # no step limit: the 0.6 s budget is what ended the run, and the run ended cleanly there
    assert res.step >= 1 and res.elapsed_s >= 0.5
    assert load_checkpoint(tmp_path / CKPT_NAME)["step"] == res.step


@pytest.mark.slow
def test_run_with_a_worker_process_and_eval(tmp_path: Path, cache_dir: Path) -> None:
    res = train(TrainConfig(out=str(tmp_path), steps=4, cache_dir=str(cache_dir),
                            **{**TINY, "workers": 1, "eval_marks": 8}))
    assert res.step == 4 and 0.0 <= res.eval["recall_at_1"] <= 1.0


def test_cli_help_documents_the_main_options_and_builds_a_config() -> None:
    from brandguard.training.train import build_parser, config_from_args

    parser = build_parser()
    text = parser.format_help()
    for opt in ("--out", "--minutes", "--input-size", "--dim", "--photos", "--resume", "--device", "--profile"):
        assert opt in text
    cfg = config_from_args(parser.parse_args(["--out", "x", "--minutes", "3", "--input-size", "128", "--dim", "64"]))
    assert (cfg.out, cfg.minutes, cfg.input_size, cfg.dim) == ("x", 3.0, 128, 64)
