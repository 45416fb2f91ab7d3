"""Model definition, training and ONNX export (the only subpackage that imports torch).

model (the network), data (marks, photos, paired views, input normalisation), losses, loop (the
training loop), train (its config and ``python -m brandguard.training.train``), checkpoint (ckpt.pt
and weights.pt, and weights recovered from a bundle's ONNX), runlog (log.csv, loss plot, summary,
progress lines), export / export_xfeat (ONNX bundles), and retrain/ (per-brand fine-tune, base
retrain, their benchmarks and the promotion gate).
"""
