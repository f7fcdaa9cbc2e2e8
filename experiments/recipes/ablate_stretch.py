"""Post-processing ablation on the study's trained runs: PCA + L2 alone, with query stretching,
and PCA-whitening, for isc3rd_mini and demo.
Run after study.py: ``python experiments/recipes/ablate_stretch.py [SEED ...]`` (default 0 1 2);
the committed output is ``ablate_stretch.txt``."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import study  # noqa: E402

from fisc.inference import DescriptorPipeline  # noqa: E402
from fisc.postprocess.spec import PostProcessor  # noqa: E402

SEEDS = [int(a) for a in sys.argv[1:]] or [0, 1, 2]
SPECS = ["pca255,l2", "pca255,l2,stretch5:2.5", "pca_whiten128,l2"]

for recipe in ["isc3rd_mini", "demo"]:
    for seed in SEEDS:
        cfg = study._compose(recipe, [f"seed={seed}"])
        run = study.ROOT / "outputs" / "study" / recipe / f"seed{seed}"
        pipeline = DescriptorPipeline.from_checkpoint(
            json.loads((run / "train_result.json").read_text())["last_checkpoint"]
        )
        _, truths, queries, references, train = study._data(cfg)
        q, r, t = (study.describe(pipeline, s) for s in (queries, references, train))
        for spec in SPECS:
            sc = study.score(pipeline, q, r, truths, PostProcessor(spec).fit(t))
            dev, p2 = sc["dev"]["post"]["micro_ap"], sc["phase2"]["post"]["micro_ap"]
            print(
                f"{recipe} seed {seed} {spec}: dev μAP {dev:.3f}, Phase 2 μAP {p2:.3f}", flush=True
            )
