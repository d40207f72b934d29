"""Run artefacts: results.json and pictures (matplotlib, jepsen checker/perf style).

- ``results.json``: valid?, anomalies with the ops involved, counts of
  ok/fail/info per function, linearizability per partition, the replica
  check (``replicas``: every node's data dir against the others and the
  drain, per node and partition: start, end, records compared), the
  consumer-group check (``groups``: anomalies, duplicates, unowned time),
  what the disk-full nemesis did (``disk_full``), notes.
- ``latency-raw.png``: every completed op as a point, time vs latency (log
  scale), colour by outcome, marker by function; nemesis windows shaded.
- ``rate.png``: completions per second by function and outcome, same shading.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .history import Completed, Op, OpType, nemesis_windows, pair

COLOURS = {OpType.OK: "#2a9d3f", OpType.INFO: "#e0a31a", OpType.FAIL: "#d1342f"}
MARKERS = ["o", "s", "^", "v", "D", "P", "X", "*"]
WINDOW_COLOURS = {"partition": "#7aa6d9", "kill": "#d97a7a", "pause": "#b69ad9",
                  "delay": "#d9c27a", "membership": "#8fd9a8", "disk-full": "#8a8a8a",
                  "clock": "#c79ad9"}
NS = 1e9


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    return plt


def _shade(ax: Any, windows: list[dict[str, Any]]) -> None:
    seen: set[str] = set()
    for w in windows:
        kind = w["kind"]
        ax.axvspan(w["start_ns"] / NS, w["end_ns"] / NS, alpha=0.18,
                   color=WINDOW_COLOURS.get(kind, "#999999"),
                   label=None if kind in seen else f"nemesis: {kind}")
        seen.add(kind)


def _completed(ops: Sequence[Op]) -> list[Completed]:
    return [c for c in pair(ops) if c.complete_ns is not None]


def latency_plot(ops: Sequence[Op], path: Path) -> Path:
    plt = _plt()
    done = _completed(ops)
    fig, ax = plt.subplots(figsize=(12, 6))
    fs = sorted({c.f for c in done})
    for i, f in enumerate(fs):
        for t in (OpType.OK, OpType.INFO, OpType.FAIL):
            pts = [c for c in done if c.f == f and c.type is t]
            if not pts:
                continue
            xs = [c.invoke_ns / NS for c in pts]
            ys = [max((c.complete_ns or 0) - c.invoke_ns, 1_000) / 1e6 for c in pts]
            ax.scatter(xs, ys, s=6, alpha=0.6, c=COLOURS[t], marker=MARKERS[i % len(MARKERS)],
                       label=f"{f} {t.value}", linewidths=0)
    _shade(ax, nemesis_windows(ops))
    ax.set_yscale("log")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title("latency of every operation")
    # Below the axes: inside, it would hide the slowest ops (the interesting ones).
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=7, ncols=6,
              markerscale=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def rate_plot(ops: Sequence[Op], path: Path, bucket_s: float = 1.0) -> Path:
    plt = _plt()
    done = _completed(ops)
    series: dict[tuple[str, OpType], dict[int, int]] = defaultdict(lambda: defaultdict(int))
    last = 0
    for c in done:
        b = int((c.complete_ns or 0) / NS / bucket_s)
        series[(c.f, c.type)][b] += 1
        last = max(last, b)
    fig, ax = plt.subplots(figsize=(12, 5))
    # Colour by function, line style by outcome: each series stays distinguishable.
    styles = {OpType.OK: "-", OpType.INFO: "--", OpType.FAIL: ":"}
    palette = plt.get_cmap("tab10").colors
    fs = sorted({f for f, _ in series})
    for (f, t), counts in sorted(series.items(), key=lambda kv: (kv[0][0], kv[0][1].value)):
        xs = [b * bucket_s for b in range(last + 1)]
        ys = [counts.get(b, 0) / bucket_s for b in range(last + 1)]
        ax.plot(xs, ys, styles[t], color=palette[fs.index(f) % len(palette)],
                label=f"{f} {t.value}", linewidth=1)
    _shade(ax, nemesis_windows(ops))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("completions / s")
    ax.set_title("throughput")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), fontsize=7, ncols=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def op_counts(ops: Sequence[Op]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for c in pair(ops):
        counts[c.f][c.type.value] += 1
    return {f: dict(v) for f, v in sorted(counts.items())}


def availability(ops: Sequence[Op]) -> list[dict[str, Any]]:
    """Time from each nemesis stop/heal to the next acknowledged send, per partition."""
    sends = sorted(
        ((c.complete_ns or 0, (c.value or {}).get("key")) for c in pair(ops)
         if c.f == "send" and c.type is OpType.OK),
    )
    out = []
    for op in ops:
        if op.process != "nemesis" or not (op.f.startswith("stop-") or op.f == "heal"):
            continue
        per_key: dict[Any, float] = {}
        for t, key in sends:
            if t >= op.time_ns and key not in per_key:
                per_key[key] = round((t - op.time_ns) / NS, 3)
        firsts = {str(k): v for k, v in sorted(per_key.items(), key=lambda kv: repr(kv[0]))}
        out.append({"event": op.f, "at_s": round(op.time_ns / NS, 3),
                    "first_ok_send_after_s": firsts})
    return out


def disk_full(ops: Sequence[Op]) -> dict[str, Any]:
    """What the disk-full nemesis did: its windows, the disks it filled, and the
    nodes that stopped on a full disk (how often each), from the history."""
    windows = targets = 0
    stops: dict[str, int] = defaultdict(int)
    for op in ops:
        if op.process != "nemesis":
            continue
        if op.f == "start-disk-full":
            windows += 1
            targets += len((op.value or {}).get("nodes") or [])
        elif op.f == "disk-full-stopped":
            stops[str((op.value or {}).get("node"))] += 1
    return {"windows": windows, "disks_filled": targets,
            "nodes_stopped": sum(stops.values()), "stops_by_node": dict(sorted(stops.items()))}


def disk_full_lines(results: dict[str, Any]) -> list[str]:
    d = results.get("disk_full")
    if not d:
        return []
    by_node = ", ".join(f"{n} x{c}" for n, c in d["stops_by_node"].items())
    return [f"disk-full: {d['windows']} windows filled {d['disks_filled']} disks; "
            f"{d['nodes_stopped']} node stops on a full disk"
            + (f" ({by_node})" if by_node else "")]


MAX_REPLICA_NOTES = 8
MAX_ROW_PARTITIONS = 8  # per node line; results.json has them all


def _node_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One line per node: each partition's [start, end) and the records compared."""
    by_node: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_node[r["node"]].append(r)
    lines = []
    for node, parts in sorted(by_node.items()):
        cells = [f"p{r['key']} [{r['start']}, {r['end']}) {r['compared']} compared"
                 for r in sorted(parts, key=lambda r: r["key"])]
        more = len(cells) - MAX_ROW_PARTITIONS
        lines.append(f"replicas {node}: " + ", ".join(cells[:MAX_ROW_PARTITIONS])
                     + (f", ... {more} more" if more > 0 else ""))
    return lines


def replica_lines(results: dict[str, Any]) -> list[str]:
    """The replica check for the text summary: its verdict line, one line per anomaly
    type, one per node, then its notes (lagging replicas ...), the first
    MAX_REPLICA_NOTES of them."""
    rep = results.get("replicas")
    if not rep:
        return []
    lines = [rep["summary"]]
    for t, n in sorted(rep.get("counts", {}).items()):
        first = (rep.get("anomalies", {}).get(t) or [{}])[0]
        lines.append(f"anomaly {t}: {n} (e.g. partition {first.get('key')}: "
                     f"{first.get('message')})")
    lines += _node_lines(rep.get("replicas") or [])
    notes = rep.get("notes") or []
    lines += [f"replicas: {n}" for n in notes[:MAX_REPLICA_NOTES]]
    if len(notes) > MAX_REPLICA_NOTES:
        lines.append(f"replicas: ... {len(notes) - MAX_REPLICA_NOTES} more notes in results.json")
    return lines


def group_lines(results: dict[str, Any]) -> list[str]:
    """The consumer-group check for the text summary: anomalies, duplicates,
    rebalances and the longest time each partition had no owner."""
    g = results.get("groups")
    if not g:
        return []
    st = g.get("stats", {})
    lines = [f"groups: {st.get('deliveries', 0)} deliveries in {st.get('polls', 0)} polls, "
             f"{st.get('duplicates', 0)} duplicates ({st.get('explained_by_rebalance', 0)} "
             f"after a rebalance or restart), {st.get('stints', 0)} assignments, "
             f"{st.get('rebalances_seen', 0)} rebalances seen by consumers"]
    for t, n in sorted(g.get("counts", {}).items()):
        first = (g.get("anomalies", {}).get(t) or [{}])[0]
        lines.append(f"anomaly {t}: {n} (e.g. partition {first.get('key')}: "
                     f"{first.get('message')})")
    unowned = st.get("unowned") or {}
    if unowned:
        lines.append("groups unowned: " + ", ".join(
            f"p{p} {u['total_s']}s in {u['windows']} window(s), longest {u['max_s']}s"
            for p, u in sorted(unowned.items(), key=lambda kv: int(kv[0]))))
    committed, ends = st.get("final_committed") or {}, st.get("drained_end") or {}
    if committed:
        lines.append("groups committed/end: " + ", ".join(
            f"p{p} {o}/{ends.get(p, '?')}"
            for p, o in sorted(committed.items(), key=lambda kv: int(kv[0]))))
    return lines


def write_results(out_dir: Path, results: dict[str, Any]) -> Path:
    path = out_dir / "results.json"
    path.write_text(json.dumps(results, indent=2, sort_keys=True, default=str) + "\n")
    return path


def write_plots(ops: Sequence[Op], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return [latency_plot(ops, out_dir / "latency-raw.png"), rate_plot(ops, out_dir / "rate.png")]
