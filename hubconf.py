"""torch.hub entry point: a fisc descriptor pipeline from a checkpoint or a frozen artifact.

    pipeline = torch.hub.load("path/to/fisc", "fisc_descriptor", path="artifacts/demo",
                              source="local")

fisc publishes no weights: ``path`` names a training checkpoint or an artifact you have.
"""

dependencies = [
    "torch",
    "torchvision",
    "timm",
    "safetensors",
    "numpy",
    "h5py",
    "PIL",
    "cv2",
    "tqdm",
]


def fisc_descriptor(path, device="cpu", **kwargs):
    """``fisc.load(path, device, **kwargs)``: a frozen artifact folder (``fisc freeze``,
    verified on load) or a training checkpoint (``.ckpt``; ``postprocess="run"`` adds the
    run's fitted post-processor). Returns a ``fisc.inference.DescriptorPipeline``:
    ``pipeline.queries(fisc.list_images(folder))`` gives the final descriptors."""
    import fisc

    return fisc.load(path, device=device, **kwargs)
