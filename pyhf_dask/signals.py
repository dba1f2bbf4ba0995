"""Signal functions that return yields: where the yields go, and a chunk's yields.

A function-defined grid's signal function may return the yields of one sample instead
of a patch (``SignalGrid.from_function(..., sample="signal")``): :func:`signal_target`
says where they go (:class:`SignalTarget`, checked against the workspace), and a chunk's
yields are one :class:`SignalArrays`, which makes a point's patch only when a kernel asks
for it (the JAX kernel writes the yields straight into its arrays).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, overload

import numpy as np

from pyhf_dask.exceptions import InvalidOption, InvalidPatch
from pyhf_dask.simplemodels import Patch

__all__ = ["SignalArrays", "SignalTarget", "point_name", "refuse_yields", "signal_target"]


def point_name(labels: Sequence[str], row: Sequence[float] | np.ndarray) -> str:
    """The name of a function grid's point: each label and its value.

    Example:
        >>> point_name(("m1", "m2"), (300.0, 12.5))
        'm1_300_m2_12.5'
    """
    return "_".join(f"{lab}_{float(v):g}" for lab, v in zip(labels, row, strict=True))


class _Wrong(ValueError):
    """What is wrong with a signal function's return value (located by the caller)."""


@dataclass(frozen=True)
class SignalTarget:
    """Where a function grid's signal yields go: the data of one sample, in one or more
    channels (made by :func:`signal_target`).

    Attributes:
        sample: the sample's name.
        channels: the channels whose sample data the yields replace (workspace order).
        places: ``(channel index, sample index)`` in the workspace, per channel.
        bins: bins per channel.
        vectorized: the function is called once per chunk with coordinate arrays.

    Example:
        >>> from pyhf_dask.simplemodels import simple_workspace
        >>> ws = simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], [51.0, 48.0])
        >>> target = signal_target(ws, "signal", None, vectorized=True, where="f")
        >>> target.patch(np.array([1.0, 2.0]))
        [{'op': 'replace', 'path': '/channels/0/samples/0/data', 'value': [1.0, 2.0]}]
    """

    sample: str
    channels: tuple[str, ...]
    places: tuple[tuple[int, int], ...]
    bins: tuple[int, ...]
    vectorized: bool = False

    @cached_property
    def spans(self) -> list[tuple[int, int]]:
        """Columns of each channel in a row of yields."""
        ends = list(itertools.accumulate(self.bins))
        return list(zip([0, *ends[:-1]], ends, strict=True))

    def describe(self) -> dict[str, Any]:
        """What the grid's digest records of the target."""
        return {"sample": self.sample, "channels": list(self.channels)}

    def patch(self, row: np.ndarray) -> Patch:
        """The jsonpatch of one point's yields ``(sum(bins),)``."""
        return [
            {"op": "replace", "path": f"/channels/{c}/samples/{s}/data", "value": row[a:b].tolist()}
            for (c, s), (a, b) in zip(self.places, self.spans, strict=True)
        ]

    def check(self, signal: Callable[..., Any], labels: Sequence[str], values: np.ndarray) -> None:
        """Refuse a function whose yields are wrong: at every point if vectorized (in blocks
        of at most 128 MiB), else at the first (the others are checked where they are made).

        Raises:
            InvalidPatch: as :meth:`call`.
        """
        block = max(1, 2**24 // sum(self.bins)) if self.vectorized else 1
        for start in range(0, len(values) if self.vectorized else 1, block):
            self.call(signal, labels, values[start : start + block])

    def call(
        self, signal: Callable[..., Any], labels: Sequence[str], values: np.ndarray
    ) -> SignalArrays:
        """The yields of the points ``values`` (one call, or one per point).

        Raises:
            InvalidPatch: a return value of the wrong shape or type, or a negative or
                non-finite yield, named with the point (one line).
        """
        where = f"{getattr(signal, '__module__', '?')}.{getattr(signal, '__qualname__', signal)}"
        n = len(values)
        if self.vectorized:
            coords = {lab: np.ascontiguousarray(values[:, k]) for k, lab in enumerate(labels)}
            try:
                yields = self._yields(signal(**coords), n)
            except _Wrong as exc:
                first = point_name(labels, values[0]) if n else "no point"
                msg = f"{where} (vectorized, {n} points from {first}): {exc}"
                raise InvalidPatch(msg) from None
        else:
            rows = []
            for row in values:
                try:
                    coords = dict(zip(labels, row.tolist(), strict=True))
                    rows.append(self._yields(signal(**coords), None))
                except _Wrong as exc:
                    msg = f"{where} at {point_name(labels, row)}: {exc}"
                    raise InvalidPatch(msg) from None
            yields = np.concatenate(rows) if rows else np.empty((0, sum(self.bins)))
        ok = np.isfinite(yields) & (yields >= 0)
        if not ok.all():
            i, j = np.argwhere(~ok)[0].tolist()
            k = int(np.searchsorted(np.cumsum(self.bins), j, side="right"))
            kind = "non-finite" if not np.isfinite(yields[i, j]) else "negative"
            msg = (
                f"{where} at {point_name(labels, values[i])}: {kind} yield {yields[i, j]:g} in "
                f"bin {j - self.spans[k][0]} of sample {self.sample!r} in channel "
                f"{self.channels[k]!r}"
            )
            raise InvalidPatch(msg)
        return SignalArrays(self, yields)

    def _yields(self, out: Any, n: int | None) -> np.ndarray:
        """``(n, sum(bins))`` yields of a return value for ``n`` points (``None``: one)."""
        if isinstance(out, Mapping):
            if set(out) != set(self.channels):
                msg = (
                    f"returned yields for channels {', '.join(map(str, out)) or 'none'}; "
                    f"expected {', '.join(self.channels)} (sample {self.sample!r})"
                )
                raise _Wrong(msg)
            parts = [self._array(out[c], n, k) for k, c in enumerate(self.channels)]
            return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
        if len(self.channels) > 1:
            msg = (
                f"sample {self.sample!r} is in channels {', '.join(self.channels)}: return "
                "a dict channel -> yields, or pass channel=..."
            )
            raise _Wrong(msg)
        return self._array(out, n, 0)

    def _array(self, value: Any, n: int | None, k: int) -> np.ndarray:
        nbins = self.bins[k]
        what = f"{nbins} bins of sample {self.sample!r} in channel {self.channels[k]!r}"
        if isinstance(value, list) and value and isinstance(value[0], dict):
            msg = f"returned a jsonpatch; with sample= it returns yields ({what})"
            raise _Wrong(msg)
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            msg = f"returned {type(value).__name__}, not numbers ({what})"
            raise _Wrong(msg) from None
        want = (nbins,) if n is None else (n, nbins)
        if array.shape != want:
            msg = f"returned yields of shape {array.shape}, expected {want}: {what}"
            raise _Wrong(msg)
        return array.reshape(1 if n is None else n, nbins)


def refuse_yields(value: Any, where: str) -> None:
    """Refuse yields where a jsonpatch is expected (a function grid without ``sample=``).

    Example:
        >>> refuse_yields([1.0, 2.0], "f at x_1")
        Traceback (most recent call last):
        ...
        pyhf_dask.exceptions.InvalidPatch: f at x_1: returned yields, not a jsonpatch: pass ...
    """
    numbers = isinstance(value, list | tuple) and all(
        isinstance(x, int | float | np.number) for x in value
    )
    if isinstance(value, np.ndarray | Mapping) or (numbers and value):
        msg = f"{where}: returned yields, not a jsonpatch: pass sample=..., the sample they fill"
        raise InvalidPatch(msg)


def signal_target(
    spec: dict[str, Any],
    sample: str,
    channel: str | Sequence[str] | None,
    *,
    vectorized: bool,
    where: str,
) -> SignalTarget:
    """The :class:`SignalTarget` of ``sample`` in ``channel`` (default: every channel that
    has the sample), checked against the workspace ``spec``.

    Raises:
        InvalidOption: no such sample or channel, or the sample is not in the channel.

    Example:
        >>> from pyhf_dask.simplemodels import simple_workspace
        >>> ws = simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], [51.0, 48.0])
        >>> signal_target(ws, "signal", None, vectorized=False, where="f").channels
        ('singlechannel',)
        >>> signal_target(ws, "sig", None, vectorized=False, where="f")
        Traceback (most recent call last):
        ...
        pyhf_dask.exceptions.InvalidOption: f: no sample 'sig' in the workspace (samples: ...)
    """
    channels = {c["name"]: (i, c) for i, c in enumerate(spec["channels"])}

    def samples(ch: dict[str, Any]) -> list[str]:
        return [s["name"] for s in ch["samples"]]

    if channel is None:
        names = [name for name, (_, ch) in channels.items() if sample in samples(ch)]
        if not names:
            known = sorted({s for _, ch in channels.values() for s in samples(ch)})
            msg = f"{where}: no sample {sample!r} in the workspace (samples: {', '.join(known)})"
            raise InvalidOption(msg)
    else:
        names = [channel] if isinstance(channel, str) else list(channel)
        if not names or len(set(names)) != len(names):
            msg = f"{where}: channel= names no channel or one twice ({', '.join(names)})"
            raise InvalidOption(msg)
        for name in names:
            if name not in channels:
                msg = f"{where}: no channel {name!r} (channels: {', '.join(channels)})"
                raise InvalidOption(msg)
            if sample not in samples(channels[name][1]):
                there = ", ".join(samples(channels[name][1]))
                msg = f"{where}: no sample {sample!r} in channel {name!r} (samples there: {there})"
                raise InvalidOption(msg)
        names = [name for name in channels if name in names]  # workspace order
    places, bins = [], []
    for name in names:
        i, ch = channels[name]
        s = samples(ch).index(sample)
        places.append((i, s))
        bins.append(len(ch["samples"][s]["data"]))
    return SignalTarget(sample, tuple(names), tuple(places), tuple(bins), vectorized)


class SignalArrays(Sequence[Patch]):
    """The signal yields of a chunk's points as one array, a patch per point on demand.

    Kernels that need patches (the reference kernel, fallbacks) index or iterate it;
    :func:`~pyhf_dask.kernels.jax_arrays.build_arrays` reads :attr:`yields` directly.

    Attributes:
        target: where the yields go.
        yields: ``(n_points, sum(target.bins))``, channels in ``target.channels`` order.

    Example:
        >>> from pyhf_dask.simplemodels import simple_workspace
        >>> ws = simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], [51.0, 48.0])
        >>> target = signal_target(ws, "signal", None, vectorized=False, where="f")
        >>> chunk = SignalArrays(target, np.array([[1.0, 2.0], [3.0, 4.0]]))
        >>> len(chunk), chunk[1][0]["value"], chunk.channel("singlechannel").shape
        (2, [3.0, 4.0], (2, 2))
    """

    __slots__ = ("target", "yields")

    def __init__(self, target: SignalTarget, yields: np.ndarray) -> None:
        self.target = target
        self.yields = yields

    def __len__(self) -> int:
        return len(self.yields)

    @overload
    def __getitem__(self, index: int) -> Patch: ...

    @overload
    def __getitem__(self, index: slice) -> SignalArrays: ...

    def __getitem__(self, index: int | slice) -> Patch | SignalArrays:
        if isinstance(index, slice):
            return SignalArrays(self.target, self.yields[index])
        return self.target.patch(self.yields[index])

    def __iter__(self) -> Iterator[Patch]:
        for row in self.yields:
            yield self.target.patch(row)

    def __reduce__(self) -> tuple[Any, ...]:
        return (SignalArrays, (self.target, self.yields))

    def __repr__(self) -> str:
        return f"SignalArrays({len(self)} points, sample={self.target.sample!r})"

    def channel(self, name: str) -> np.ndarray:
        """The ``(n_points, bins)`` yields of one channel (a view)."""
        a, b = self.target.spans[self.target.channels.index(name)]
        return self.yields[:, a:b]
