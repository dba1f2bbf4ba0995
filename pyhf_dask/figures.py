"""What every plot of pyhf_dask shares: figures, labels, colours, legend, ``save_figure``.

Figures are made without pyplot (no global state, nothing to close) as instances of a
Figure subclass with a PNG representation, so a plot returned as the last expression of a
notebook cell is shown inline, with no ``%matplotlib inline`` or ``plt.show()``.

Colours follow the experiments' convention for expected bands, the same in every plot:
green for ±1σ, yellow for ±2σ (:data:`BAND_COLORS`); the observed limit is red and solid,
the expected limit blue and dashed.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import xarray as xr

from pyhf_dask._optional import require
from pyhf_dask.planes import Plane, SliceValue

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "BAND_COLORS",
    "SYMBOLS",
    "analysis_text",
    "axis_label",
    "coordinate_text",
    "poi_label",
    "poi_symbol",
    "save_figure",
    "unit_of",
]

log = logging.getLogger(__name__)

#: Symbols of common SUSY mass labels, used with ``symbols=True``.
SYMBOLS = {
    "msb": r"$m(\tilde{b}_1)$",
    "mst": r"$m(\tilde{t}_1)$",
    "mgl": r"$m(\tilde{g})$",
    "msq": r"$m(\tilde{q})$",
    "mn1": r"$m(\tilde{\chi}^0_1)$",
    "mn2": r"$m(\tilde{\chi}^0_2)$",
    "mc1": r"$m(\tilde{\chi}^\pm_1)$",
    "mslep": r"$m(\tilde{\ell})$",
}
#: Colours of the expected bands in every plot: green ±1σ, yellow ±2σ (the experiments'
#: Brazil-plot convention).
BAND_COLORS = {1: "#00cc00", 2: "#ffe600"}
OBS_COLOR, EXP_COLOR = "#cc0000", "#1f3a93"
_MASS = re.compile(r"^m[a-z]*\d*$", re.IGNORECASE)
_LEGEND_ORDER = (
    "Observed",
    "Expected limit",
    "Expected CLs",
    r"1\sigma",
    r"2\sigma",
    "CLs =",
    "Kinematic",
    "Fitted",
    "Failed",
    "Pending",
    "Missing",
)


@functools.cache
def _figure_class() -> type[Figure]:
    """The Figure subclass of every plot: Jupyter renders it as an image by itself."""
    from matplotlib.figure import Figure as _Figure

    class ResultFigure(_Figure):
        """A matplotlib Figure with a PNG representation for IPython and Jupyter."""

        def _repr_png_(self) -> bytes:
            buffer = io.BytesIO()
            self.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
            return buffer.getvalue()

    return ResultFigure


def new_axes(ax: Axes | None, *, figsize: tuple[float, float] = (6.4, 5.2)) -> Axes:
    """``ax``, or the axes of a new figure (constrained layout) when it is None."""
    require("matplotlib", "plot")
    if ax is not None:
        return ax
    return _figure_class()(figsize=figsize, layout="constrained").add_subplot()


def save_figure(
    fig: Figure, path: str | os.PathLike[str], *, dpi: int = 150, **kwargs: Any
) -> Path:
    """Write ``fig`` to ``path`` (its suffix picks the format: .png, .pdf, .svg, ...).

    As cabinetry's ``save_figure``: the folder is created when missing.

    Args:
        fig: a Figure returned by a plot function (or any matplotlib Figure).
        path: the file to write.
        dpi: resolution of raster formats.
        **kwargs: passed on to :meth:`matplotlib.figure.Figure.savefig`.

    Returns:
        The path written.

    Example:
        >>> save_figure(ds.pyhf_dask.plot_exclusion(), "figures/a.pdf")  # doctest: +SKIP
        PosixPath('figures/a.pdf')
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, **kwargs)
    log.info("wrote %s", path)
    return path


def finish(ax: Axes, path: str | os.PathLike[str] | None) -> Figure:
    """The figure of ``ax``, written to ``path`` when one is given."""
    fig = ax.get_figure(root=True)
    assert fig is not None
    if path is not None:
        save_figure(fig, path)
    return fig


def unit_of(name: str, ds: xr.Dataset | None = None) -> str | None:
    """The unit of a grid coordinate: its ``units`` attribute, else GeV for mass-like names.

    Example:
        >>> unit_of("msb"), unit_of("scale")
        ('GeV', None)
    """
    if ds is not None and name in ds.coords and ds[name].attrs.get("units"):
        return str(ds[name].attrs["units"])
    return "GeV" if _MASS.match(name) else None


def coordinate_text(name: str, *, symbols: bool = False) -> str:
    """A coordinate's name, or its symbol with ``symbols=True``."""
    return SYMBOLS.get(name, name) if symbols else name


def axis_label(name: str, ds: xr.Dataset | None = None, *, symbols: bool = False) -> str:
    """Axis label of a coordinate: its name (or symbol) and unit.

    Example:
        >>> axis_label("msb"), axis_label("msb", symbols=True)
        ('msb [GeV]', '$m(\\\\tilde{b}_1)$ [GeV]')
    """
    unit = unit_of(name, ds)
    text = coordinate_text(name, symbols=symbols)
    return f"{text} [{unit}]" if unit else text


def slice_text(plane: Plane, ds: xr.Dataset, symbols: bool) -> str:
    """The slice of a plane as text with units, e.g. ``mn1 = 60 GeV``."""
    parts = []
    for name, value in plane.selection.items():
        parts.append(_value_text(name, value, ds, symbols))
    return ", ".join(parts)


def _value_text(name: str, value: SliceValue, ds: xr.Dataset | None, symbols: bool) -> str:
    text = coordinate_text(name, symbols=symbols)
    unit = unit_of(name, ds)
    suffix = f" {unit}" if unit else ""
    if isinstance(value, tuple):
        return f"{value[0]:g} ≤ {text} ≤ {value[1]:g}{suffix}"
    return f"{text} = {value:g}{suffix}"


def poi_symbol(ds: xr.Dataset) -> str:
    r"""The POI's symbol: μ with the rest of a ``mu...`` name as subscript, else its name.

    Example:
        >>> print(poi_symbol(xr.Dataset(attrs={"poi_name": "mu_SIG"})))
        $\mu_{\mathrm{SIG}}$
        >>> print(poi_symbol(xr.Dataset(attrs={"poi_name": "mu"})), poi_symbol(xr.Dataset()))
        $\mu$ POI
    """
    name = str(ds.attrs.get("poi_name") or "POI")
    match = re.fullmatch(r"mu_?(\w*)", name, flags=re.IGNORECASE)
    if not match:
        return name
    sub = match.group(1).strip("_")
    return rf"$\mu_{{\mathrm{{{sub}}}}}$" if sub else r"$\mu$"


def poi_label(ds: xr.Dataset) -> str:
    r"""The POI as an axis label: its symbol and its name in the workspace.

    Example:
        >>> print(poi_label(xr.Dataset(attrs={"poi_name": "mu_SIG"})))
        Signal strength $\mu_{\mathrm{SIG}}$ (mu_SIG)
        >>> poi_label(xr.Dataset(attrs={"poi_name": "xsec"}))
        'POI xsec'
    """
    name = str(ds.attrs.get("poi_name") or "POI")
    symbol = poi_symbol(ds)
    if symbol == name:
        return name if name == "POI" else f"POI {name}"
    return f"Signal strength {symbol} ({name})"


def analysis_text(
    label: str | None = None, *, energy: float | None = None, lumi: float | None = None
) -> str | None:
    """The analysis label of a plot: its text, then ``√s = 13 TeV, 139 fb⁻¹``.

    Example:
        >>> analysis_text("sbottom", energy=13, lumi=139)
        'sbottom\\n$\\\\sqrt{s}$ = 13 TeV, 139 fb$^{-1}$'
    """
    run = []
    if energy is not None:
        run.append(f"$\\sqrt{{s}}$ = {energy:g} TeV")
    if lumi is not None:
        run.append(f"{lumi:g} fb$^{{-1}}$")
    lines = [text for text in (label, ", ".join(run)) if text]
    return "\n".join(lines) or None


def legend(ax: Axes, *, title: str | None = None, loc: str = "upper left") -> None:
    """The legend in a fixed order, headed by the analysis label when there is one.

    It has a white, slightly transparent background without an edge, so that it stays
    readable where it covers a band.
    """
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: _legend_rank(labels[i]))
    ax.legend(  # type: ignore[call-overload]
        [handles[i] for i in order],
        [labels[i] for i in order],
        loc=loc,
        frameon=True,
        framealpha=0.85,
        edgecolor="none",
        fontsize=9,
        title=title,
        title_fontsize=9,
        alignment="left",
    )


def _legend_rank(label: str) -> int:
    ranks = [k for k, key in enumerate(_LEGEND_ORDER) if key in label]
    return ranks[0] if ranks else len(_LEGEND_ORDER)
