"""A run's speed and curves, for docs/training.md: `python -m trainer.anystyle_report RUN OUT`.

Writes OUT/loss_curves.png (trainer.evaluate.plot_curves) and OUT/run_summary.json: steps
done, median steps/s over the logged records after the first (which holds the compile), and
the last and best logged losses.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from .evaluate import plot_curves

LOSSES = ("content", "style", "identity", "tv", "g_adv", "d_loss")


def summarise(metrics_file: Path) -> dict:
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    if not rows:
        return {"steps": 0}
    rates = [r["steps_per_s"] for r in rows[1:]] or [rows[0]["steps_per_s"]]
    tail = rows[-min(len(rows), 20):]
    return {"steps": rows[-1]["step"], "steps_per_s_median": statistics.median(rates),
            "last20_mean": {k: statistics.fmean(r[k] for r in tail) for k in LOSSES
                            if k in tail[0]}}


def main(argv: list[str] | None = None) -> int:
    run, out = (Path(a) for a in (argv or sys.argv[1:])[:2])
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(run / "metrics.jsonl")
    (out / "run_summary.json").write_text(json.dumps(summary, indent=2))
    plot_curves(run / "metrics.jsonl", out / "loss_curves.png")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
