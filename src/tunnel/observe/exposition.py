"""Pure: the Prometheus text format (version 0.0.4) of the metric families Tunnel builds.

Why not ``prometheus_client``: importing any part of it loads the whole package (about 90
modules, its HTTP servers and exporters included), which put ~6 MB into the supervisor at
the first scrape of ``/metrics``. Tunnel needs three kinds of family and one text format.
The family classes take the arguments ``prometheus_client``'s families take, so
:mod:`tunnel.observe.metrics` builds them the same way; tests/unit/test_exposition.py
checks the text against ``prometheus_client``'s, byte for byte.

The format: per family a ``# HELP`` and a ``# TYPE`` line, then one line per sample,
``name{label="value",...} number``, labels sorted by name. Counters are exposed with
``_total``; a histogram's samples are its cumulative ``_bucket`` lines (label ``le``),
then ``_count`` and ``_sum``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Sample:
    """One line of the exposition."""

    name: str
    labels: dict[str, str]
    value: float


class Metric:
    """A metric family: a name, its help text, label names and the samples added."""

    kind = "untyped"
    suffix = ""  # what the HELP and TYPE lines add to the name (counters: _total)

    def __init__(self, name: str, documentation: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = tuple(labels)
        self.samples: list[Sample] = []

    def _sample(
        self, suffix: str, values: Sequence[str], value: float, extra: dict[str, str] | None = None
    ) -> None:
        if len(values) != len(self.labels):
            raise ValueError(f"{self.name}: {len(values)} label values for {self.labels}")
        labels = dict(zip(self.labels, values, strict=True))
        labels.update(extra or {})
        self.samples.append(Sample(self.name + suffix, labels, float(value)))


class CounterMetricFamily(Metric):
    """A counter; ``name`` without ``_total`` (a trailing ``_total`` is dropped)."""

    kind = "counter"
    suffix = "_total"

    def __init__(self, name: str, documentation: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name.removesuffix("_total"), documentation, labels)

    def add_metric(self, labels: Sequence[str], value: float) -> None:
        """The counter's value for one set of label values."""
        self._sample("_total", labels, value)


class GaugeMetricFamily(Metric):
    """A gauge."""

    kind = "gauge"

    def add_metric(self, labels: Sequence[str], value: float) -> None:
        """The gauge's value for one set of label values."""
        self._sample("", labels, value)


class HistogramMetricFamily(Metric):
    """A histogram, given as cumulative buckets."""

    kind = "histogram"

    def add_metric(
        self, labels: Sequence[str], buckets: Sequence[tuple[str, float]], sum_value: float
    ) -> None:
        """``buckets``: (upper bound as text, cumulative count), the last one ``+Inf``."""
        for bound, count in buckets:
            self._sample("_bucket", labels, count, {"le": bound})
        self._sample("_count", labels, buckets[-1][1] if buckets else 0)
        self._sample("_sum", labels, sum_value)


def number(value: float) -> str:
    """A sample value as Prometheus' own (Go) code writes it: 3.0, 1.2345678e+07, +Inf."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(value)
    point = text.find(".")
    if value > 0 and point > 6:
        # Go writes exponents from 1e+07 on where Python writes 10000000.0.
        digits = (text[:point] + text[point + 1 :]).rstrip("0")
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{mantissa}e+{point - 1:02d}"
    return text


def _label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _line(sample: Sample) -> str:
    labels = ",".join(f'{k}="{_label_value(v)}"' for k, v in sorted(sample.labels.items()))
    return f"{sample.name}{{{labels}}} " if labels else f"{sample.name} "


def generate_latest(families: Iterable[Metric]) -> bytes:
    """The text exposition of ``families``, UTF-8."""
    out: list[str] = []
    for family in families:
        name = family.name + family.suffix
        help_text = family.documentation.replace("\\", "\\\\").replace("\n", "\\n")
        out.append(f"# HELP {name} {help_text}\n# TYPE {name} {family.kind}\n")
        out += [f"{_line(sample)}{number(sample.value)}\n" for sample in family.samples]
    return "".join(out).encode("utf-8")
