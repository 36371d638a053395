#!/usr/bin/env python3
"""Tables and latency plots from benches/compare.sh's results (one JSON line per run).

    python3 benches/compare_report.py target/compare.jsonl target/compare

Prints one Markdown table per workload, a column per system, and draws each fan-out run's
latency distribution (one CDF curve per system, logarithmic latency axis) to
<dir>/<workload>.svg. Standard library only.
"""

import json
import math
import os
import sys

ORDER = ["rtm", "rtm-ws", "nats", "nats-tls", "redis", "redis-tls"]
COLOURS = {
    "rtm": "#d62728",
    "rtm-ws": "#ff9896",
    "nats": "#1f77b4",
    "nats-tls": "#aec7e8",
    "redis": "#2ca02c",
    "redis-tls": "#98df8a",
}
COLUMNS = {
    "rate": ["subs", "rate", "delivered", "expected", "p50_us", "p90_us", "p99_us", "p999_us",
             "max_us", "server_cpu_pct", "client_cpu_pct", "server_us_per_delivery",
             "client_us_per_delivery"],
    "throughput": ["msgs_per_s", "p50_us", "p99_us", "server_cpu_pct", "client_cpu_pct",
                   "server_us_per_delivery", "client_us_per_delivery"],
    "conns": ["conns", "server_kib_per_conn", "server_rss_after_kib", "server_idle_cpu_pct",
              "connect_s"],
}


def name_of(row):
    """The system's column: compare.sh names it; older files only have system/transport/tls."""
    if "name" in row:
        return row["name"]
    name = row.get("system", "?")
    if row.get("transport") == "websocket":
        name += "-ws"
    elif name != "rtm" and row.get("tls"):
        name += "-tls"
    return name


def kind_of(systems):
    """The table's kind, from the first run that has a workload (a failed run has none)."""
    workload = next((r["workload"] for r in systems.values() if "workload" in r), None)
    return {"throughput": "throughput", "conns": "conns"}.get(workload, "rate")


def table(label, systems):
    names = [n for n in ORDER if n in systems] + sorted(n for n in systems if n not in ORDER)
    kind = kind_of(systems)
    lines = [f"\n## {label}\n", "| metric | " + " | ".join(names) + " |",
             "|---|" + "--:|" * len(names)]
    for column in COLUMNS[kind]:
        values = []
        for n in names:
            row = systems[n]
            values.append(str(row.get(column, row.get("error", "-"))))
        lines.append(f"| {column} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def svg_cdf(label, systems):
    """One CDF curve per system: x = latency (log scale), y = the share of messages received
    within it, on a percentile scale that gives each nine the same height."""
    curves = {n: r["cdf"] for n, r in systems.items() if r.get("cdf")}
    if not curves:
        return None
    width, height = 640, 360
    left, right, top, bottom = 70, 130, 30, 45
    pw, ph = width - left - right, height - top - bottom
    values = [max(v, 1.0) for c in curves.values() for _, v in c]
    lo = 10 ** math.floor(math.log10(min(values)))
    hi = 10 ** math.ceil(math.log10(max(values)))
    if hi <= lo:
        hi = lo * 10

    def x(us):
        return left + pw * (math.log10(max(us, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

    # The fraction axis stretches the tail: equal steps for 90 %, 99 %, 99.9 %, 99.99 %, and
    # the maximum on the top line.
    nines = 5.0

    def y(q):
        depth = nines if q >= 1.0 else min(-math.log10(1.0 - q), nines)
        return top + ph * (1.0 - depth / nines)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="18" font-size="14">{label}: latency distribution</text>']
    decade = lo
    while decade <= hi:
        px = x(decade)
        out.append(f'<line x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{top + ph}" stroke="#ddd"/>')
        text = f"{decade / 1000:g} ms" if decade >= 1000 else f"{decade:g} µs"
        out.append(f'<text x="{px:.1f}" y="{top + ph + 16}" text-anchor="middle">{text}</text>')
        decade *= 10
    for q, text in ((0.0, "0"), (0.5, "50 %"), (0.9, "90 %"), (0.99, "99 %"), (0.999, "99.9 %"),
                    (0.9999, "99.99 %"), (1.0, "max")):
        py = y(q)
        out.append(f'<line x1="{left}" y1="{py:.1f}" x2="{left + pw}" y2="{py:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 6}" y="{py + 4:.1f}" text-anchor="end">{text}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 8}" text-anchor="middle">'
               'publish-to-receive latency (log scale)</text>')
    out.append(f'<text x="14" y="{top + ph / 2}" text-anchor="middle" '
               f'transform="rotate(-90 14 {top + ph / 2})">received within (percentile)</text>')
    names = [n for n in ORDER if n in curves] + sorted(n for n in curves if n not in ORDER)
    for i, name in enumerate(names):
        colour = COLOURS.get(name, "#555")
        points = " ".join(f"{x(v):.1f},{y(q):.1f}" for q, v in curves[name])
        out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        ly = top + 14 + 18 * i
        out.append(f'<line x1="{left + pw + 12}" y1="{ly - 4}" x2="{left + pw + 32}" y2="{ly - 4}" '
                   f'stroke="{colour}" stroke-width="3"/>')
        out.append(f'<text x="{left + pw + 38}" y="{ly}">{name}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    plots = sys.argv[2] if len(sys.argv) > 2 else None
    by_label = {}
    for row in rows:
        by_label.setdefault(row.get("label") or "?", {})[name_of(row)] = row
    for label, systems in by_label.items():
        print(table(label, systems))
        if plots and kind_of(systems) == "rate":
            svg = svg_cdf(label, systems)
            if svg:
                os.makedirs(plots, exist_ok=True)
                path = os.path.join(plots, f"{label}.svg")
                with open(path, "w") as f:
                    f.write(svg)
                print(f"\n(plot: {path})")


if __name__ == "__main__":
    main()
