"""Write ``docs/report.png``: the figures of a demo report on one image, for the README and docs/report.md.

    adaptkd demo --out runs/demo
    python benchmarks/report_png.py runs/demo/report docs/report.png

Rows: accuracy | accuracy vs cost, agreement | per-class accuracy, training curves; each figure scaled to the
row's width, the whole image reduced to 256 colours (the figures use few) to stay small.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

WIDTH = 1100
ROWS = [("accuracy.png", "tradeoff.png"), ("agreement.png", "per_class.png"), ("curves.png",)]


def row_image(files: list[Path], width: int) -> Image.Image:
    """The images side by side, scaled to one height so that together they are ``width`` wide."""
    ims = [Image.open(f).convert("RGB") for f in files]
    h = round(width / sum(im.width / im.height for im in ims))
    ims = [im.resize((round(im.width * h / im.height), h), Image.LANCZOS) for im in ims]
    out = Image.new("RGB", (sum(im.width for im in ims), h), "white")
    x = 0
    for im in ims:
        out.paste(im, (x, 0))
        x += im.width
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report", type=Path, help="a report folder (with its PNG figures)")
    ap.add_argument("out", type=Path, help="the image to write")
    args = ap.parse_args()
    rows = [row_image([args.report / f for f in r if (args.report / f).is_file()], WIDTH) for r in ROWS
            if any((args.report / f).is_file() for f in r)]
    gap = 12
    page = Image.new("RGB", (WIDTH, sum(r.height for r in rows) + gap * (len(rows) - 1)), "white")
    y = 0
    for r in rows:
        page.paste(r, ((WIDTH - r.width) // 2, y))
        y += r.height + gap
    page.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)
    print(f"{args.out}: {page.width}x{page.height}, {args.out.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
