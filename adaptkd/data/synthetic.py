"""``synthetic``: a deterministic, CPU-sized stand-in for CIFAR-100.

Fine classes are grouped into coarse super-classes; every fine class's appearance is its
coarse prototype plus a smaller class-specific component plus one of a few per-class
"modes", so fine classes of one coarse class look alike and a teacher's soft targets carry
real "dark knowledge". Images then get nuisance variation (translation, flips, background
clutter, colour/brightness/contrast jitter, occluders, pixel noise) so that capacity pays.
The full generative process is documented in ``docs/data.md``.

Everything is drawn from CPU ``torch.Generator`` streams seeded from ``seed`` and computed in
float64, so a given set of arguments gives bit-identical tensors on every run and machine.
"""

from __future__ import annotations

import math

import torch

from ._core import DataBundle, DataError, Split, channel_stats, seeded_generator

CHANNELS = 3
CHUNK = 1024  # samples drawn per generator stream; fixed so that results never depend on memory


def coarse_of_class(num_classes: int, coarse: int) -> torch.Tensor:
    """int64 ``[num_classes]``: the coarse super-class of every fine class. Fine classes are
    dealt to coarse classes in contiguous, equal (±1) blocks: class ``k`` belongs to coarse
    class ``k * coarse // num_classes``."""
    return torch.arange(num_classes, dtype=torch.int64) * coarse // num_classes


def _cosine_basis(size: int, freqs: int) -> torch.Tensor:
    """float64 ``[size, freqs]``: B[x, u] = cos(pi * u * (x + 0.5) / size) (DCT-II basis)."""
    x = torch.arange(size, dtype=torch.float64) + 0.5
    u = torch.arange(freqs, dtype=torch.float64)
    return torch.cos(math.pi * torch.outer(x, u) / size)


def _random_fields(gen: torch.Generator, n: int, size: int, freqs: int) -> torch.Tensor:
    """``n`` smooth random RGB fields float64 ``[n, 3, size, size]``: a 2-D cosine series with
    i.i.d. N(0, 1) coefficients for the frequencies u, v < ``freqs``, damped as 1 / (1 + u + v)
    (natural-image-like spectrum), each field rescaled to unit RMS."""
    coef = torch.randn((n, CHANNELS, freqs, freqs), generator=gen, dtype=torch.float64)
    u = torch.arange(freqs, dtype=torch.float64)
    coef = coef / (1.0 + u[:, None] + u[None, :])
    basis = _cosine_basis(size, freqs)
    fields = torch.einsum("xu,ncuv,yv->ncxy", basis, coef, basis)
    rms = fields.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp_min(1e-12)
    return fields / rms


def _check(name: str, value: float, lo: float, hi: float | None = None) -> None:
    if not (value >= lo and (hi is None or value <= hi)):  # also rejects NaN
        expected = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise DataError(f"make_synthetic: {name} must be {expected}, got {value}")


def make_synthetic(
    *,
    num_classes: int = 64,
    coarse: int = 8,
    image_size: int = 16,
    train_size: int = 10000,
    test_size: int = 2000,
    seed: int = 0,
    modes: int = 3,
    coarse_weight: float = 1.0,
    fine_weight: float = 0.5,
    mode_weight: float = 0.5,
    coarse_freq: int = 3,
    fine_freq: int = 8,
    envelope: float = 0.4,
    max_shift: int | None = None,
    flip: bool = True,
    clutter: float = 0.6,
    color_jitter: float = 0.15,
    brightness: float = 0.3,
    contrast: float = 0.2,
    occlusion: float = 0.4,
    occlusion_size: float = 0.5,
    noise: float = 0.3,
) -> DataBundle:
    """Generate the ``synthetic`` benchmark (RGB uint8, ``num_classes`` fine classes in
    ``coarse`` super-classes).

    Structure: ``num_classes``, ``coarse`` (super-classes), ``modes`` (appearance modes per
    fine class), ``coarse_weight`` / ``fine_weight`` / ``mode_weight`` (amplitudes of the shared
    coarse prototype, the class-specific component and the per-mode component; lower
    ``fine_weight`` relative to ``coarse_weight`` makes siblings harder to tell apart),
    ``coarse_freq`` / ``fine_freq`` (number of cosine frequencies per axis of the coarse and of
    the fine/mode patterns: higher means finer detail), ``envelope`` (std of the Gaussian
    window that confines the object, as a fraction of ``image_size``).
    Nuisance: ``max_shift`` (pixels of random translation each way; default
    ``image_size // 4``), ``flip`` (random horizontal flips), ``clutter`` (amplitude of a
    per-image random background texture), ``color_jitter`` (log-std of per-channel gains),
    ``brightness`` (std of a per-image offset), ``contrast`` (log-std of a per-image gain),
    ``occlusion`` (probability of a random occluding rectangle), ``occlusion_size`` (its
    largest side as a fraction of ``image_size``), ``noise`` (std of i.i.d. pixel noise).
    All amplitudes are in logit units of the pixel: pixel = round(255 * sigmoid(value)).

    Labels cycle through the classes (class balance exact up to ±1 per class). Train and test
    are independent draws from the same class prototypes; the test set does not depend on
    ``train_size`` and vice versa (a smaller train set is a prefix of a larger one). The
    defaults take about a second on one CPU core.
    """
    if num_classes < 2:
        raise DataError(f"make_synthetic: num_classes must be >= 2, got {num_classes}")
    if not 1 <= coarse <= num_classes:
        raise DataError(f"make_synthetic: coarse must be in [1, num_classes={num_classes}], got {coarse}")
    if not 8 <= image_size <= 32:
        raise DataError(f"make_synthetic: image_size must be in [8, 32], got {image_size}")
    for name, n in (("train_size", train_size), ("test_size", test_size)):
        if n < 1:
            raise DataError(f"make_synthetic: {name} must be >= 1, got {n}")
    if modes < 1:
        raise DataError(f"make_synthetic: modes must be >= 1, got {modes}")
    if coarse_freq < 1 or fine_freq < 1:
        raise DataError(f"make_synthetic: coarse_freq and fine_freq must be >= 1, got {coarse_freq}, {fine_freq}")
    shift = image_size // 4 if max_shift is None else max_shift
    _check("max_shift", shift, 0, image_size // 2)
    for name, value in (
        ("coarse_weight", coarse_weight), ("fine_weight", fine_weight), ("mode_weight", mode_weight),
        ("clutter", clutter), ("color_jitter", color_jitter), ("brightness", brightness),
        ("contrast", contrast), ("noise", noise),
    ):
        _check(name, value, 0.0)
    _check("envelope", envelope, 0.05)
    _check("occlusion", occlusion, 0.0, 1.0)
    _check("occlusion_size", occlusion_size, 0.0, 1.0)

    s, canvas = image_size, image_size + 2 * shift
    coarse_map = coarse_of_class(num_classes, coarse)

    # Class appearance, drawn once: [num_classes * modes, 3, canvas, canvas] plus the envelope.
    gen = seeded_generator("synthetic", seed, "prototypes")
    coarse_fields = _random_fields(gen, coarse, canvas, coarse_freq)
    fine_fields = _random_fields(gen, num_classes, canvas, fine_freq)
    mode_fields = _random_fields(gen, num_classes * modes, canvas, fine_freq).view(
        num_classes, modes, CHANNELS, canvas, canvas
    )
    appearance = (
        coarse_weight * coarse_fields[coarse_map][:, None]
        + fine_weight * fine_fields[:, None]
        + mode_weight * mode_fields
    ).reshape(num_classes * modes, CHANNELS, canvas, canvas)
    r = torch.arange(canvas, dtype=torch.float64) - (canvas - 1) / 2
    window = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * (envelope * s) ** 2))

    def draw(n: int, split: str) -> Split:
        return _draw_split(
            appearance, window, n, seeded_stream=("synthetic", seed, split),
            num_classes=num_classes, modes=modes, s=s, shift=shift, flip=flip, fine_freq=fine_freq,
            clutter=clutter, color_jitter=color_jitter, brightness=brightness, contrast=contrast,
            occlusion=occlusion, occlusion_size=occlusion_size, noise=noise,
        )

    train = draw(train_size, "train")
    test = draw(test_size, "test")
    mean, std = channel_stats(train.x)
    per = [int((coarse_map[:k] == coarse_map[k]).sum()) for k in range(num_classes)]
    names = [f"coarse{int(coarse_map[k])}_fine{per[k]}" for k in range(num_classes)]
    return DataBundle(
        name="synthetic",
        train=train,
        test=test,
        num_classes=num_classes,
        in_channels=CHANNELS,
        image_size=s,
        mean=mean,
        std=std,
        class_names=names,
    )


def _draw_split(
    appearance: torch.Tensor,
    window: torch.Tensor,
    n: int,
    *,
    seeded_stream: tuple,
    num_classes: int,
    modes: int,
    s: int,
    shift: int,
    flip: bool,
    fine_freq: int,
    clutter: float,
    color_jitter: float,
    brightness: float,
    contrast: float,
    occlusion: float,
    occlusion_size: float,
    noise: float,
) -> Split:
    """Draw ``n`` images in chunks of CHUNK samples; chunk ``i`` uses its own generator seeded
    from (``seeded_stream``, i) and always draws a full chunk, so the result never depends on
    anything but the arguments (and a smaller split is a prefix of a larger one)."""
    xs, ys = [], []
    pos = torch.arange(s)
    rev = s - 1 - pos
    basis = _cosine_basis(s, fine_freq)
    damp = 1.0 / (1.0 + torch.arange(fine_freq, dtype=torch.float64)[:, None] + torch.arange(fine_freq)[None, :])
    for chunk, start in enumerate(range(0, n, CHUNK)):
        g = seeded_generator(*seeded_stream, chunk)
        m = CHUNK
        y = (torch.arange(start, start + m) % num_classes).to(torch.int64)
        mode = torch.randint(0, modes, (m,), generator=g)
        off = torch.randint(0, 2 * shift + 1, (2, m), generator=g)
        flips = torch.randint(0, 2, (m,), generator=g).bool() & flip
        bg_coef = torch.randn((m, CHANNELS, fine_freq, fine_freq), generator=g, dtype=torch.float64) * damp
        gains = torch.randn((m, CHANNELS), generator=g, dtype=torch.float64)
        bright = torch.randn((m,), generator=g, dtype=torch.float64)
        contr = torch.randn((m,), generator=g, dtype=torch.float64)
        occ = torch.rand((5, m), generator=g, dtype=torch.float64)
        occ_colour = torch.randn((m, CHANNELS), generator=g, dtype=torch.float64)
        pixel_noise = torch.randn((m, CHANNELS, s, s), generator=g, dtype=torch.float64)

        # object: crop a window of the (shifted) class appearance, flipped horizontally if drawn
        rows = off[0][:, None] + pos  # [m, s]
        cols = off[1][:, None] + torch.where(flips[:, None], rev, pos)  # [m, s]
        t = y * modes + mode
        obj = appearance[t[:, None, None], :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
        w = window[rows[:, :, None], cols[:, None, :]][:, None]  # [m, 1, s, s]

        # background texture, unit RMS per image, visible where the object is not
        bg = torch.einsum("xu,ncuv,yv->ncxy", basis, bg_coef, basis)
        bg = bg / bg.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp_min(1e-12)
        v = w * obj + (1 - w) * clutter * bg

        # photometric jitter
        v = v * torch.exp(color_jitter * gains)[:, :, None, None]
        v = v * torch.exp(contrast * contr)[:, None, None, None] + brightness * bright[:, None, None, None]

        # occluder: an axis-aligned rectangle of a random flat colour
        side = occlusion_size * s
        h = (1 + occ[0] * (side - 1)).floor().clamp(1, s).long() if side >= 1 else torch.ones(m, dtype=torch.long)
        wd = (1 + occ[1] * (side - 1)).floor().clamp(1, s).long() if side >= 1 else torch.ones(m, dtype=torch.long)
        y0 = (occ[2] * (s - h + 1)).floor().long()
        x0 = (occ[3] * (s - wd + 1)).floor().long()
        on = (occ[4] < occlusion) & (occlusion_size > 0)
        inside = (
            ((pos[None] >= y0[:, None]) & (pos[None] < (y0 + h)[:, None]))[:, :, None]
            & ((pos[None] >= x0[:, None]) & (pos[None] < (x0 + wd)[:, None]))[:, None, :]
            & on[:, None, None]
        )[:, None]
        v = torch.where(inside, occ_colour[:, :, None, None], v)

        v = v + noise * pixel_noise
        x = torch.round(255.0 * torch.sigmoid(v)).to(torch.uint8)
        take_n = min(CHUNK, n - start)
        xs.append(x[:take_n])
        ys.append(y[:take_n])
    return Split(torch.cat(xs).contiguous(), torch.cat(ys))
