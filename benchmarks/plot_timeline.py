"""Draw a DDPGRAD_TIMELINE trace (one rank's Chrome-trace JSON) as a PNG: the training loop's
phases on one row, each bucket's reduction on a row of its own, ready times as ticks.

    python benchmarks/plot_timeline.py trace.rank0.json out.png [--last-steps 3]
"""

from __future__ import annotations

import argparse
import json

PHASE_COLORS = {
    "forward": "#4c72b0",
    "backward (from the first gradient)": "#55a868",
    "wait for reductions": "#c44e52",
    "after backward: optimizer step, loop": "#8172b2",
}


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def last_steps(events, steps):
    """Events from the start of the ``steps``-th last forward on."""
    forwards = sorted(e["ts"] for e in events if e.get("ph") == "X" and e["name"] == "forward")
    start = forwards[-steps] if len(forwards) >= steps else (forwards[0] if forwards else 0.0)
    return [e for e in events if e.get("ts", start) >= start], start


def draw(events, out, steps=3, title=None):
    import matplotlib  # noqa: PLC0415 - an optional dependency of the benchmarks only

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    events, t0 = last_steps(events, steps)
    spans = [e for e in events if e.get("ph") == "X"]
    buckets = sorted({e["tid"] for e in spans if e["tid"] >= 100})
    rows = {tid: k + 1 for k, tid in enumerate(buckets)}
    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.45 * (len(buckets) + 1)))
    for e in spans:
        x, w = (e["ts"] - t0) / 1e3, e["dur"] / 1e3
        if e["tid"] >= 100:
            ax.broken_barh([(x, w)], (rows[e["tid"]] - 0.35, 0.7), color="#dd8452")
        else:
            ax.broken_barh([(x, w)], (-0.35, 0.7), color=PHASE_COLORS.get(e["name"], "#999999"))
    for e in events:
        if e.get("ph") == "i" and e["name"].endswith("ready"):
            index = int(e["name"].split()[1])
            row = rows.get(100 + index)
            if row is not None:
                ax.plot([(e["ts"] - t0) / 1e3] * 2, [row - 0.45, row + 0.45], color="black", lw=0.8)
    ax.set_yticks([0] + [rows[t] for t in buckets], ["loop"] + [f"bucket {t - 100}" for t in buckets])
    ax.invert_yaxis()
    ax.set_xlabel("ms (ticks: bucket ready; orange: reduction in flight)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in PHASE_COLORS.values()]
    ax.legend(handles, ["forward", "backward", "wait", "optimizer step, loop"], loc="upper center",
              bbox_to_anchor=(0.5, -0.35 if len(buckets) < 4 else -0.2), ncol=4, fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("trace")
    p.add_argument("out")
    p.add_argument("--last-steps", type=int, default=3)
    p.add_argument("--title", default=None)
    a = p.parse_args(argv)
    draw(load(a.trace), a.out, a.last_steps, a.title)


if __name__ == "__main__":
    main()
