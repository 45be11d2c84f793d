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


#: Side of the density map's bins, arcmin.
DENSITY_BIN_ARCMIN = 0.6
#: Line styles and markers that tell exposures apart beside their colours.
_STYLES = ("-", "--", ":", "-.")
_MARKERS = ("s", "D", "^", "o", "v", "P", "X", "<", ">", "h")


def _density_sample(survey, full_views):
    """Positions for the density map, over every full SCA, and what they are.

    The run's own catalog where it covers the SCAs (a catalog file, or a
    full-frame run); for a synthetic sky simulated on windows, which is drawn
    only around the windows, a draw of the same model (same seed and
    settings) over the full SCAs.
    """
    from .scene.catalog import synthesize_catalog
    from .survey.footprint import footprint_cap

    cfg = survey.config
    if cfg.catalog.synthetic is None or cfg.detector.window >= 4088:
        ra, dec = survey.sky.positions(full_views)
        return ra, dec, "catalog sources per arcmin$^2$", None
    from . import rng

    syn = cfg.catalog.synthetic
    ra, dec, radius = footprint_cap(full_views, 2 * DENSITY_BIN_ARCMIN / 60)
    sample = synthesize_catalog(ra, dec, radius, rng.generator(cfg.seed, "catalog"),
                                filters=["F158"], galaxy_mag_range=syn.galaxy_mag_range,
                                star_mag_range=syn.star_mag_range,
                                density_scale=syn.density_scale)
    return (np.asarray(sample["ra"], float), np.asarray(sample["dec"], float),
            "synthetic sky model: sources per arcmin$^2$", (ra, dec, radius))


def plot_footprint(survey, path: Path) -> None:
    """What was simulated, on the sky: each exposure's simulated windows
    (filled, in its colour, line style and marker), the full SCAs around them
    (thin outlines, numbered), over the source density, with a zoom on one
    SCA's windows when they are small."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Polygon

    from .survey.footprint import SCAView, footprint_cap, window_bounds

    views = survey.views
    exposures = survey.exposures
    nsca = len(survey.scas)
    window = survey.config.detector.window
    full = window_bounds(4088)
    full_views = [SCAView(v.exposure, v.sca, v.wcs, full) for v in views]
    ra0, dec0, _ = footprint_cap(full_views)
    outlines = [np.c_[_tangent(*v.corners(), ra0, dec0)] for v in full_views]
    windows = [np.c_[_tangent(*v.corners(), ra0, dec0)] for v in views]
    extent = max(np.abs(o).max() for o in outlines) * 1.04

    fig, ax = plt.subplots(figsize=(9, 8.2), dpi=110)
    # the source density, over every SCA
    ra, dec, label, cap = _density_sample(survey, full_views)
    if len(ra):
        cx, cy = _tangent(ra, dec, ra0, dec0)
        step = DENSITY_BIN_ARCMIN / 60
        bins = max(int(np.ceil(2 * extent / step)), 10)
        h, xe, ye = np.histogram2d(cx, cy, bins=bins, range=[[-extent, extent]] * 2)
        h = h / (step * 60) ** 2
        xc, yc = np.meshgrid(0.5 * (xe[1:] + xe[:-1]), 0.5 * (ye[1:] + ye[:-1]), indexing="ij")
        if cap is not None:  # bins the model's draw covers whole
            ccx, ccy = _tangent(cap[0], cap[1], ra0, dec0)
            outside = np.hypot(xc - ccx, yc - ccy) > cap[2] - step
        else:
            outside = h == 0
        h = np.ma.masked_array(h, outside)
        top = float(np.percentile(h.compressed(), 99)) if h.count() else 1.0
        mesh = ax.pcolormesh(xe, ye, h.T, cmap="Greys", shading="flat", alpha=0.45,
                             vmin=0, vmax=top, rasterized=True, zorder=0)
        fig.colorbar(mesh, ax=ax, shrink=0.75, pad=0.02,
                     label=f"{label} ({DENSITY_BIN_ARCMIN:g}$'$ bins)")

    ncol = len(exposures)
    cmap = plt.get_cmap("tab10" if ncol <= 10 else "turbo")

    def colour(ie):
        return cmap(ie % 10) if ncol <= 10 else cmap(0.05 + 0.9 * ie / max(ncol - 1, 1))

    # windows smaller than ~8 plotted pixels get a marker at their centre too
    side_deg = window * 0.11 / 3600
    axes_px = 0.7 * fig.get_figwidth() * fig.dpi
    small = side_deg / (2 * extent) * axes_px < 8
    fill = 0.55 if window < 1024 else 0.3  # large windows: the density shows through
    for k, view in enumerate(views):
        ie = k // nsca
        c, ls = colour(ie), _STYLES[ie % len(_STYLES)]
        ax.add_patch(Polygon(outlines[k], closed=True, fill=False, lw=0.6, ls=ls, ec=c,
                             alpha=0.7, zorder=2))
        ax.add_patch(Polygon(windows[k], closed=True, fill=True, fc=c, alpha=fill, zorder=3))
        ax.add_patch(Polygon(windows[k], closed=True, fill=False, ec=c, lw=1.2, ls=ls,
                             zorder=4))
        if small:
            x, y = windows[k].mean(axis=0)
            ax.plot(x, y, _MARKERS[ie % len(_MARKERS)], ms=6, mfc=c, mec="k", mew=0.5,
                    zorder=5)
    # SCA numbers towards the top edge of each SCA (first exposure), clear of its window
    for k in range(nsca):
        o = outlines[k]
        centre = o.mean(axis=0)
        edges = [0.5 * (o[i] + o[(i + 1) % 4]) for i in range(4)]
        top_edge = max(edges, key=lambda e: e[1])
        x, y = centre + 0.62 * (top_edge - centre)
        ax.text(x, y, str(views[k].sca), ha="center", va="center", fontsize=7, color="0.15",
                zorder=6, bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                                "alpha": 0.6})

    handles = []
    for ie, e in enumerate(exposures[:12]):
        c, ls = colour(ie), _STYLES[ie % len(_STYLES)]
        text = f"exposure {e.id}: {e.filter}, RA {e.ra:.4f}, Dec {e.dec:.4f}, PA {e.pa:g}"
        handles.append(Line2D([], [], color=c, ls=ls, lw=1.2,
                              marker=_MARKERS[ie % len(_MARKERS)] if small else "s",
                              ms=7, mfc=c, mec="k" if small else c, mew=0.5, label=text))
    if len(exposures) > 12:
        handles.append(Patch(fc="none", ec="none", label=f"... {len(exposures) - 12} more"))
    if window < 4088:
        handles.append(Patch(fc="none", ec="0.3", lw=0.6, label="full SCA (4088$^2$)"))
    # the legend and the zoom go to the corners the SCAs leave most free
    corners = _free_corners(outlines, extent)
    ax.legend(handles=handles, loc=corners[0][1], fontsize=7, framealpha=0.9)
    if len(exposures) > 1 or window < 4088:
        _zoom(ax, views, windows, nsca, colour, corners[1][0], fill)

    ax.set_xlim(extent, -extent)  # east to the left
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    ax.set_xlabel(f"east offset from RA {ra0:.4f} deg [deg]")
    ax.set_ylabel(f"north offset from Dec {dec0:.4f} deg [deg]")
    what = (f"simulated {window} x {window} windows (filled) in full SCAs (outlined)"
            if window < 4088 else "simulated SCAs (filled)")
    ax.set_title(f"romandask footprint: {len(exposures)} exposure(s) x {nsca} SCA(s)\n{what}",
                 fontsize=10)
    ax.grid(alpha=0.25, zorder=1)
    fig.tight_layout()

    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    # Fixed metadata: the PNG bytes do not depend on when it was made.
    fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)
    os.replace(tmp, path)
    # a region survey's depth map goes beside it (an earlier run's, if any, goes)
    depth_map = path.with_name("coverage.png")
    if survey.config.survey.region is not None:
        plot_coverage(survey.config, depth_map)
    else:
        depth_map.unlink(missing_ok=True)


def _free_corners(outlines: list[np.ndarray], extent: float
                  ) -> list[tuple[list[float], str]]:
    """The axes' corners (inset bounds, legend location), the emptiest first:
    fewest outline points (offsets, east to the left) within a third of the
    axes of the corner."""
    corners = [([0.015, 0.685, 0.3, 0.3], "upper left", -1, 1),
               ([0.685, 0.685, 0.3, 0.3], "upper right", 1, 1),
               ([0.015, 0.015, 0.3, 0.3], "lower left", -1, -1),
               ([0.685, 0.015, 0.3, 0.3], "lower right", 1, -1)]
    # points along the outlines' edges and inside them
    sample = np.array([o[0] + u * (o[1] - o[0]) + v * (o[3] - o[0])
                       for o in outlines
                       for u in np.linspace(0, 1, 7) for v in np.linspace(0, 1, 7)])
    x, y = sample[:, 0] / extent, sample[:, 1] / extent  # in [-1, 1]; east (x > 0) left

    def crowd(c):
        sx, sy = c[2], c[3]
        # axes x grows to the west: the left of the axes is east (x > 0)
        return int(np.sum((-sx * x > 0.33) & (sy * y > 0.33)))

    ranked = sorted(corners, key=crowd)
    return [(c[0], c[1]) for c in ranked]


def _zoom(ax, views, windows, nsca, colour, bounds, fill) -> None:
    """An inset at scale on the first SCA, every exposure's window: the whole
    windows when they are small, else a corner, where dithers part."""
    from matplotlib.patches import Polygon

    mine = [k for k in range(len(views)) if k % nsca == 0]
    whole = views[0].shape[0] < 1024
    pts = np.concatenate([windows[k] for k in mine]) if whole else \
        np.array([windows[k][0] for k in mine])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    half = max(0.6 * (hi - lo).max(), 15 / 3600)
    mid = 0.5 * (lo + hi)
    inset = ax.inset_axes(bounds)
    for k in mine:
        ie = k // nsca
        c, ls = colour(ie), _STYLES[ie % len(_STYLES)]
        inset.add_patch(Polygon(windows[k], closed=True, fill=True, fc=c, alpha=fill * 0.7))
        inset.add_patch(Polygon(windows[k], closed=True, fill=False, ec=c, lw=1.4, ls=ls))
    inset.set_xlim(mid[0] + half, mid[0] - half)
    inset.set_ylim(mid[1] - half, mid[1] + half)
    inset.set_aspect("equal")
    inset.set_xticks([])
    inset.set_yticks([])
    arcsec = 2 * half * 3600
    where = "" if whole else ", a corner"
    inset.set_title(f"SCA {views[mine[0]].sca}{where}, every exposure ({arcsec:.0f}\" across)",
                    fontsize=7, pad=2)
    inset.patch.set_alpha(0.9)


#: Most grid points per axis drawn in the coverage map.
_COVERAGE_DRAWN = 500


def plot_coverage(config, path: Path) -> None:
    """The depth of a region survey: how many exposures of each filter cover
    each point of the region (the 18 SCAs' full outlines), one panel per
    filter, over RA (increasing to the left) and Dec, with the region's
    outline and a colour bar of the depth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import BoundaryNorm, ListedColormap

    from .survey import sky
    from .survey.region import Healpix
    from .survey.tiling import coverage

    rs = config.survey.region
    from .survey.tiling import plane_bounds

    x0, x1, y0, y1 = plane_bounds(rs.region, rs.region.plane())
    margin = 0.12 * max(x1 - x0, y1 - y0) + 0.05  # to show the tiles beyond the region
    cov = coverage(rs.region, config.survey.exposures, margin=margin)
    plane = cov.plane
    ra0, dec0 = (float(a) for a in sky.radec(plane.centre))
    step = max(1, int(np.ceil(max(cov.inside.shape) / _COVERAGE_DRAWN)))
    xs, ys = cov.xs[::step], cov.ys[::step]
    h = cov.spacing * step
    # cell corners of the drawn grid, on the sky
    cx = np.concatenate([xs - h / 2, [xs[-1] + h / 2]])
    cy = np.concatenate([ys - h / 2, [ys[-1] + h / 2]])
    gy, gx = np.meshgrid(cy, cx, indexing="ij")
    pole = bool(rs.region.contains(np.array([[0, 0, 1.0], [0, 0, -1.0]])).any())
    if pole:  # RA is no axis there: offsets in the region's tangent plane
        X, Y = gx, gy

        def sky_xy(xyz):
            return plane.project(xyz)
        xlabel = f"east offset from RA {ra0:.3f} deg [deg]"
        ylabel = f"north offset from Dec {dec0:.3f} deg [deg]"
    else:
        def sky_xy(xyz):
            ra, dec = sky.radec(xyz)
            return ra0 + sky.wrap(ra - ra0), dec
        X, Y = sky_xy(plane.deproject(gx, gy))
        xlabel, ylabel = "RA [deg]", "Dec [deg]"

    filters = cov.filters
    ncol = min(len(filters), 4)
    nrow = int(np.ceil(len(filters) / ncol))
    top = max(max(int(cov.depth[f][cov.inside].max()) for f in filters), 1)
    # holes in red, then viridis from 1 exposure up
    colours = ["#c0392b"] + [plt.get_cmap("viridis")(v) for v in np.linspace(0.1, 1.0, top)]
    cmap = ListedColormap(colours)
    norm = BoundaryNorm(np.arange(-0.5, top + 1.5), cmap.N)
    fig, axes = plt.subplots(nrow, ncol, figsize=(max(4.8 * ncol + 1.3, 7.5), 4.6 * nrow + 1.2),
                             dpi=100, squeeze=False, layout="constrained")
    inside = cov.inside[::step, ::step]
    for ax, flt in zip(axes.flat, filters):
        depth = cov.depth[flt][::step, ::step]
        # in the region full colour; beyond it, faint
        rgba = cmap(norm(depth))
        rgba[~inside, 3] = 0.3
        ax.pcolormesh(X, Y, rgba, shading="flat", rasterized=True, edgecolors="none",
                      antialiased=False)
        if isinstance(rs.region, Healpix):
            mx, my = np.meshgrid(xs, ys)
            px, py = sky_xy(plane.deproject(mx, my))
            ax.contour(px, py, inside.astype(float), levels=[0.5], colors="k",
                       linewidths=1.2)
        else:
            for ring in rs.region.outlines():
                ox, oy = sky_xy(ring)
                ax.plot(np.append(ox, ox[0]), np.append(oy, oy[0]), "k-", lw=1.2)
        fr = cov.fractions(flt, min(top, 4))
        ax.set_title(f"{flt}: {cov.exposures[flt]} exposures\n"
                     + "   ".join(f"\u2265{k + 1}: {100 * f:.1f}%" for k, f in enumerate(fr)),
                     fontsize=9)
        ax.set_xlim(np.nanmax(X), np.nanmin(X))  # RA (east) to the left
        ax.set_ylim(np.nanmin(Y), np.nanmax(Y))
        ax.set_aspect(1.0 if pole else 1.0 / max(np.cos(np.radians(dec0)), 1e-3))
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        if not pole:
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(
                lambda v, _: f"{v % 360:g}"))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(filters):]:
        ax.set_visible(False)
    bar = fig.colorbar(ScalarMappable(norm, cmap), ax=list(axes.flat), shrink=0.85, pad=0.02,
                       ticks=np.arange(0, top + 1, max(1, (top + 1) // 10)))
    bar.set_label("exposures covering the point (depth); red: none")
    t = rs.tiling
    fig.suptitle(f"romandask coverage: {rs.region.describe()} ({t.area:.2f} deg$^2$, outlined)"
                 f"\n{t.tiles} tiles x {rs.pattern.dithers} dither(s) per filter; the 18 SCAs' "
                 f"full outlines\ndepth counted every {cov.spacing * 3600:.0f}\", drawn every "
                 f"{cov.spacing * 3600 * step:.0f}\"", fontsize=10)
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)
    os.replace(tmp, path)
