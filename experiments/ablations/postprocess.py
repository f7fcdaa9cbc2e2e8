"""Post-processing choices on the ablations' trained runs: each spec fitted on the run's own
training descriptors, scored on every split next to the raw descriptors.

    python experiments/ablations/postprocess.py                  # base and edits_asym, seed 0
    python experiments/ablations/postprocess.py --variants lr4x --specs pca255,l2

Output: ``experiments/ablations/postprocess.md`` (μAP / R@P90 per split and spec).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments" / "recipes"))
sys.path.insert(0, str(ROOT / "experiments" / "ablations"))
import ablate  # noqa: E402
import study  # noqa: E402

from fisc.files import atomic_path  # noqa: E402
from fisc.inference import DescriptorPipeline  # noqa: E402
from fisc.postprocess.spec import PostProcessor  # noqa: E402

SPECS = ["pca_whiten128,l2", "pca255,l2", "pca_whiten255,l2", "pca255,l2,stretch5:2.5"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", nargs="+", default=["base", "edits_asym"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--specs", nargs="+", default=SPECS)
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "ablations")
    p.add_argument("--results", type=Path, default=ROOT / "experiments" / "ablations")
    a = p.parse_args()
    cfg = study._compose("demo", ablate.BASE)
    _, truths, queries, references, train = study._data(cfg)
    head = ["variant", "post-processing"] + [
        f"{study.SPLIT_TITLES[s]} μAP / R@P90" for s in truths
    ]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for variant in a.variants:
        run = a.out / variant / f"seed{a.seed}"
        last = json.loads((run / "train_result.json").read_text())["last_checkpoint"]
        pipeline = DescriptorPipeline.from_checkpoint(last)
        q, r, t = (study.describe(pipeline, s) for s in (queries, references, train))
        rows = {"none (raw)": study.score(None, q, r, truths)}
        for spec in a.specs:
            rows[spec] = study.score(pipeline, q, r, truths, PostProcessor(spec).fit(t))
        for spec, sc in rows.items():
            kind = "raw" if spec == "none (raw)" else "post"
            cells = [f"{sc[s][kind]['micro_ap']:.3f} / {sc[s][kind]['recall_at_p90']:.3f}"
                     for s in truths]  # fmt: skip
            lines.append("| " + " | ".join([variant, f"`{spec}`", *cells]) + " |")
            print(lines[-1], flush=True)
    a.results.mkdir(parents=True, exist_ok=True)
    with atomic_path(a.results / "postprocess.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
