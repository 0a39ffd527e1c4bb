"""The overview's chart, drawn server-side as SVG by pygal (no script, no CDN)."""

from __future__ import annotations

import sys
from datetime import date, timedelta
from xml.etree import ElementTree

import pygal

from app.suppression import STRENGTH

# pygal appends an old-style import hook (for its map plugins, unused here) to sys.meta_path; on
# Python 3.11 every failed import anywhere then warns ("find_spec() not found"). Take it out.
sys.meta_path[:] = [f for f in sys.meta_path if type(f).__module__ != "pygal"]


def per_day_chart(per_day: list[tuple[str, str, int]], today: date, days: int) -> bytes:
    """A stacked bar chart of suppressions added per day, one series per outcome."""
    labels = [(today - timedelta(days=days - 1 - i)).isoformat() for i in range(days)]
    counts = {(d, o): n for d, o, n in per_day}
    chart = pygal.StackedBar(
        width=900,
        height=320,
        js=[],  # pygal links a tooltip script from its site by default: none here
        x_label_rotation=45,
        show_minor_x_labels=False,
        legend_at_bottom=True,
        title=f"Suppressions added per day, last {days} days (still active)",
    )
    chart.x_labels = labels
    chart.x_labels_major = labels[::7]
    for outcome in STRENGTH:
        chart.add(outcome, [counts.get((d, outcome), 0) for d in labels])
    # pygal always embeds its configuration in a <script>: drop every script element, so the
    # image is inert however it is opened.
    tree = chart.render_tree()
    for parent in list(tree.iter()):
        for child in list(parent):
            if str(child.tag).endswith("script"):
                parent.remove(child)
    return b"<?xml version='1.0' encoding='utf-8'?>\n" + ElementTree.tostring(tree)
