"""Frozen artifacts and exports: freeze a checkpoint, TorchScript/ONNX runtimes, Phase 1 and
Phase 2 submission files (validated by :mod:`fisc.challenge`)."""
