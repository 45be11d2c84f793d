"""Quick-look figures (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def _tangent(ra, dec, ra0, dec0):
    """Gnomonic projection (degrees) about (ra0, dec0); x grows to the east."""
    ra, dec, ra0, dec0 = map(np.radians, (ra, dec, ra0, dec0))
    cosc = np.sin(dec0) * np.sin(dec) + np.cos(dec0) * np.cos(dec) * np.cos(ra - ra0)
    x = np.cos(dec) * np.sin(ra - ra0) / cosc
    y = (np.cos(dec0) * np.sin(dec) - np.sin(dec0) * np.cos(dec) * np.cos(ra - ra0)) / cosc
    return np.degrees(x), np.degrees(y)


def plot_footprint(survey, path: Path) -> None:
    """SCA outlines on the sky, coloured by exposure, over the catalog's source density."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Polygon

    from .survey.footprint import footprint_cap, window_bounds, SCAView

    views = survey.views
    ra0, dec0, radius = footprint_cap(views)
    fig, ax = plt.subplots(figsize=(8, 7.2), dpi=110)

    cat = survey.catalog
    if len(cat):
        cx, cy = _tangent(np.asarray(cat["ra"], float), np.asarray(cat["dec"], float), ra0, dec0)
        lim = radius * 1.15
        bins = max(int(2 * lim * 60 / 1.5), 10)  # ~1.5 arcmin bins
        h, xe, ye = np.histogram2d(cx, cy, bins=bins, range=[[-lim, lim], [-lim, lim]])
        arcmin2 = ((2 * lim / bins) * 60) ** 2
        h = np.ma.masked_equal(h / arcmin2, 0)
        mesh = ax.pcolormesh(xe, ye, h.T, cmap="Greys", shading="flat", alpha=0.55,
                             vmin=0, vmax=float(np.percentile(h.compressed(), 99)))
        fig.colorbar(mesh, ax=ax, shrink=0.8, label="catalog sources per arcmin$^2$")

    exposures = survey.exposures
    colours = plt.get_cmap("tab10" if len(exposures) <= 10 else "viridis")
    full = window_bounds(4088)
    extent = radius
    for k, view in enumerate(views):
        ie = k // len(survey.scas)
        colour = colours(ie % 10 if len(exposures) <= 10 else ie / max(len(exposures) - 1, 1))
        if survey.config.detector.window < 4088:
            outer = SCAView(view.exposure, view.sca, view.wcs, full)
            px, py = _tangent(*outer.corners(), ra0, dec0)
            extent = max(extent, np.abs(px).max(), np.abs(py).max())
            ax.add_patch(Polygon(np.c_[px, py], closed=True, fill=False, lw=0.8, ls="--",
                                 ec=colour))
        px, py = _tangent(*view.corners(), ra0, dec0)
        ax.add_patch(Polygon(np.c_[px, py], closed=True, fill=True, alpha=0.25, lw=1.2,
                             ec=colour, fc=colour,
                             label=f"exposure {view.exposure.id} ({view.exposure.filter})"
                             if view.sca == survey.scas[0] else None))
        if ie == 0:
            ax.text(px.mean(), py.mean(), str(view.sca), ha="center", va="center",
                    fontsize=7, color="k")
    lim = extent * 1.05
    ax.set_xlim(lim, -lim)  # east to the left
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xlabel(f"east offset from RA {ra0:.4f} deg [deg]")
    ax.set_ylabel(f"north offset from Dec {dec0:.4f} deg [deg]")
    title = "simulated windows (filled) and full SCAs (dashed)" \
        if survey.config.detector.window < 4088 else "SCA footprint"
    ax.set_title(f"romandask footprint: {len(exposures)} exposures x {len(survey.scas)} SCAs\n"
                 f"{title}", fontsize=10)
    ax.legend(loc="upper right", fontsize=7, framealpha=0.8)
    ax.grid(alpha=0.3)
    fig.tight_layout()

    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    # Fixed metadata: the PNG bytes do not depend on when it was made.
    fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)
    os.replace(tmp, path)
