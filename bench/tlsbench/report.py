"""Summaries and output files: results.json, results.md and a PNG chart."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .runner import Collected, fmt
from .suite import Metric, Sample
from .targets import PEERS


@dataclass
class Summary:
    median: float
    low: float
    high: float
    per_cpu: float | None
    n: int
    notes: list[str]
    other_load_max: float | None


@dataclass
class MetricRow:
    metric: Metric
    by_target: dict[str, Summary]
    best_peer: str | None
    tunnel_ratio: float | None
    tunnel_ratio_per_cpu: float | None
    # The peer with the most work per CPU-second (not always the fastest one).
    best_peer_per_cpu: str | None = None


def summarize(samples: list[Sample]) -> Summary:
    values = [s.value for s in samples]
    per_cpu = [p for p in (s.per_cpu for s in samples) if p is not None]
    other = [s.other_load for s in samples if s.other_load is not None]
    return Summary(
        median=statistics.median(values),
        low=min(values),
        high=max(values),
        per_cpu=statistics.median(per_cpu) if per_cpu else None,
        n=len(values),
        notes=sorted({s.note for s in samples if s.note}),
        other_load_max=max(other) if other else None,
    )


def _best_peer(metric: Metric, by_target: dict[str, Summary]) -> str | None:
    peers = [p for p in PEERS if p in by_target]
    if not peers:
        return None
    pick = max if metric.higher_is_better else min
    return pick(peers, key=lambda p: by_target[p].median)


def _best_peer_per_cpu(by_target: dict[str, Summary]) -> str | None:
    peers = [p for p in PEERS if p in by_target and by_target[p].per_cpu]
    return max(peers, key=lambda p: by_target[p].per_cpu or 0.0) if peers else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def build_rows(metrics: list[Metric], collected: Collected) -> list[MetricRow]:
    rows = []
    for metric in metrics:
        by_target = {t: summarize(s) for t, s in collected.samples.get(metric.key, {}).items()}
        best = _best_peer(metric, by_target)
        tunnel = by_target.get("tunnel")
        peer = by_target.get(best) if best else None
        ratio = _ratio(tunnel.median, peer.median) if tunnel and peer else None
        # Per CPU-second, Tunnel is compared with the peer that is best *per CPU-second*.
        best_cpu = _best_peer_per_cpu(by_target)
        cpu_peer = by_target.get(best_cpu) if best_cpu else None
        ratio_cpu = _ratio(tunnel.per_cpu, cpu_peer.per_cpu) if tunnel and cpu_peer else None
        rows.append(MetricRow(metric, by_target, best, ratio, ratio_cpu, best_cpu))
    return rows


# ---------------------------------------------------------------- JSON


def write_json(
    path: Path,
    meta: dict[str, Any],
    rows: list[MetricRow],
    collected: Collected,
    speed: dict[str, float],
) -> None:
    doc = {
        **meta,
        "targets": {name: asdict(state) for name, state in collected.states.items()},
        "metrics": [
            {
                **asdict(row.metric),
                "best_peer": row.best_peer,
                "tunnel_over_best_peer": row.tunnel_ratio,
                "best_peer_per_cpu": row.best_peer_per_cpu,
                "tunnel_over_best_peer_per_cpu": row.tunnel_ratio_per_cpu,
                "by_target": {t: asdict(s) for t, s in row.by_target.items()},
                "samples": {
                    t: [asdict(s) for s in samples]
                    for t, samples in collected.samples.get(row.metric.key, {}).items()
                },
            }
            for row in rows
        ],
        "openssl_speed_one_core": {
            name: {"title": title, "unit": unit, "value": value}
            for name, (title, unit, value) in speed.items()
        },
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")


# ---------------------------------------------------------------- Markdown


def _direction(metric: Metric) -> str:
    return "↑" if metric.higher_is_better else "↓"


def _ratio_text(ratio: float | None) -> str:
    return f"{ratio:.2f}x" if ratio is not None else "-"


def _summary_table(rows: list[MetricRow], targets: list[str]) -> list[str]:
    head = ["Metric", "unit", *targets, "best peer", "Tunnel / best", "per CPU-s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [f"{row.metric.title} {_direction(row.metric)}", row.metric.unit]
        for target in targets:
            summary = row.by_target.get(target)
            cells.append(fmt(summary.median) if summary else "-")
        cells += [
            row.best_peer or "-",
            _ratio_text(row.tunnel_ratio),
            _ratio_text(row.tunnel_ratio_per_cpu)
            + (f" ({row.best_peer_per_cpu})" if row.tunnel_ratio_per_cpu is not None else ""),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _detail_table(rows: list[MetricRow]) -> list[str]:
    head = [
        "Metric",
        "target",
        "median",
        "min-max",
        "per terminator CPU-s",
        "n",
        "other load",
        "notes",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        for target, s in row.by_target.items():
            per_cpu = f"{fmt(s.per_cpu)} {row.metric.per_cpu_unit}" if s.per_cpu else "-"
            cells = [
                row.metric.title,
                target,
                f"{fmt(s.median)} {row.metric.unit}",
                f"{fmt(s.low)}-{fmt(s.high)}",
                per_cpu,
                str(s.n),
                f"{s.other_load_max:.2f}" if s.other_load_max is not None else "-",
                "; ".join(s.notes),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _target_table(collected: Collected, versions: dict[str, str]) -> list[str]:
    lines = [
        "| target | version | status | TLS 1.3 cipher | session resumption (s_client) | errors |",
        "|---|---|---|---|---|---|",
    ]
    for name, st in collected.states.items():
        status = st.status + (f": {st.error}" if st.error else "")
        errors = "<br>".join(st.errors[:5]) + (" …" if len(st.errors) > 5 else "")
        version = versions.get(name, "") if name != "direct" else "plain HTTP to the backend"
        cells = [name, version, status, st.cipher or "-", st.resumption or "-", errors]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_markdown(
    path: Path,
    meta: dict[str, Any],
    rows: list[MetricRow],
    collected: Collected,
    speed: dict[str, tuple[str, str, float]],
) -> None:
    machine = meta["machine"]
    targets = list(collected.states)
    out = [
        "# Tunnel vs. peers — TLS terminator benchmark",
        "",
        f"- date: {meta['date']}",
        f"- mode: {meta['mode']}, {meta['rounds']} round(s), workers = {meta['workers']}",
        f"- machine: {machine['nproc']} CPUs, {machine['cpu']}, kernel {machine['kernel']}",
        f"- OpenSSL: {machine['openssl_cli']} (Python ssl: {machine['python_ssl']})",
        f"- durations: {meta['durations']}",
        f"- 1-min load average before / after: {meta['load_average_before']:.2f} / "
        f"{meta['load_average_after']:.2f} (the benchmark itself adds ~2; a high value "
        "*before* means other work shared the machine)",
        "",
        "↑ higher is better, ↓ lower is better. Cells are medians over rounds; "
        "*Tunnel / best* is Tunnel's median divided by the best peer's (hitch, HAProxy, "
        "nginx, stunnel); *per CPU-s* divides Tunnel's work per terminator CPU-second by that "
        "of the peer doing the most work per CPU-second (named in brackets). "
        "*other load* is the most CPU (in cores) that work unrelated to the benchmark used "
        "during any of the samples: well above ~0.2 means the figures are disturbed.",
        "",
        "## Summary",
        "",
        *_summary_table(rows, targets),
        "",
        "## Details",
        "",
        *_detail_table(rows),
        "",
        "## Targets",
        "",
        *_target_table(collected, meta["versions"]),
        "",
        "## Physical limits (openssl speed, one core)",
        "",
        "| algorithm | speed |",
        "|---|---|",
        *[f"| {title} | {fmt(value)} {unit} |" for title, unit, value in speed.values()],
        "",
    ]
    path.write_text("\n".join(out))


# ---------------------------------------------------------------- chart


COLORS = {
    "tunnel": "tab:orange",
    "hitch": "tab:blue",
    "haproxy": "tab:green",
    "nginx": "tab:purple",
    "stunnel": "tab:gray",
}


def write_chart(path: Path, rows: list[MetricRow], targets: list[str]) -> bool:
    """Bar charts (log scale): Tunnel / best peer, and every target relative to the best peer."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [r for r in rows if r.best_peer and r.metric.in_chart]
    labels = [f"{r.metric.title} {_direction(r.metric)}" for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 11))
    _tunnel_panel(top, rows, labels)
    _all_targets_panel(bottom, rows, labels, [t for t in targets if t in COLORS])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _advantage(metric: Metric, ratio: float | None) -> float:
    """Ratio turned so that > 1 always means "better than the reference" (NaN if unknown)."""
    if not ratio:
        return float("nan")
    return ratio if metric.higher_is_better else 1.0 / ratio


def _bars(ax: Any, ys: list[float], values: list[float], height: float, **kw: Any) -> None:
    """Horizontal bars growing from 1.0 (left for worse, right for better), with labels."""
    ax.barh(ys, [v - 1.0 for v in values], left=1.0, height=height, **kw)
    for y, v in zip(ys, values, strict=True):
        if v == v:  # not NaN
            ax.text(v, y, f" {v:.2f} ", va="center", fontsize=6, ha="left" if v >= 1 else "right")


def _style_ratio_axis(ax: Any, labels: list[str]) -> None:
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _pos: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.tick_params(axis="x", which="minor", labelsize=6)
    ax.set_yticks(list(range(len(labels))), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("advantage, log scale (>1: better, <1: worse; lower-is-better rows inverted)")
    ax.grid(axis="x", which="both", alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)


def _tunnel_panel(ax: Any, rows: list[MetricRow], labels: list[str]) -> None:
    ys = list(range(len(rows)))
    raw = [_advantage(r.metric, r.tunnel_ratio) for r in rows]
    cpu = [_advantage(r.metric, r.tunnel_ratio_per_cpu) for r in rows]
    _bars(ax, [y - 0.2 for y in ys], raw, 0.4, color="tab:orange", label="Tunnel vs best peer")
    _bars(
        ax,
        [y + 0.2 for y in ys],
        cpu,
        0.4,
        color="tab:blue",
        label="same, per terminator CPU-second",
    )
    if not any(r.tunnel_ratio for r in rows):
        ax.text(0.5, 0.5, "no Tunnel results", transform=ax.transAxes, ha="center", fontsize=14)
        ax.set_xlim(0.5, 2)
    ax.set_title("Tunnel vs. the best peer per metric (right of 1 = Tunnel better)")
    _style_ratio_axis(ax, labels)


def _all_targets_panel(
    ax: Any, rows: list[MetricRow], labels: list[str], targets: list[str]
) -> None:
    width = 0.8 / max(1, len(targets))
    for i, target in enumerate(targets):
        values = []
        for row in rows:
            mine = row.by_target.get(target)
            best = row.by_target[row.best_peer] if row.best_peer else None
            ratio = mine.median / best.median if mine and best and best.median else None
            values.append(_advantage(row.metric, ratio))
        offsets = [y - 0.4 + width * (i + 0.5) for y in range(len(rows))]
        _bars(ax, offsets, values, width, label=target, color=COLORS[target])
    ax.set_title("Every target vs. the best peer (right of 1 = better)")
    _style_ratio_axis(ax, labels)
