"""Stronger baselines: the aligned nearest neighbour and integrated centre of mass (iCoM).

Why these two. `train.scoring`'s plain nearest neighbour compares a test stack with each
training stack as stored. But the model trains on the 8 D4 transforms of every sample (the
loader's exact augmentation, `datasets.augment`), and every sample's scanned square sits at a
random place within ±`scan.shift_a` of its supercell's centre, so two scans of the same
crystal usually differ by a shift. A nearest neighbour that gets neither is a weak straw man.

* `aligned_nearest_neighbour`: the references are the training stacks under all 8 D4
  operations (`augment.apply_d4`, cbed and target together), each compared with the query at
  every shift (sy, sx) of whole probe positions up to `max_shift` (a quarter of the probe grid):
  query probe (y, x) against reference probe (y + sy, x + sx), over the overlap only, as the
  mean squared difference per probe. The prediction is the winner's transformed target moved by
  the same shift in target pixels (f = target_px / probe grid pixels per probe step); the band
  the reference does not cover is 0, the standardized mean. To keep this affordable on a CPU
  (8 × 25 searches over the whole training split) the distance is taken on patterns
  average-pooled by `pool` (3: 33 → 11 px), a pooling symmetric about the zero-frequency
  pixel, so D4 commutes with it.

* `icom`: the physics a microscopist would use. The centre of mass of each raw CBED pattern is
  the expectation value of the transverse momentum, which for a thin specimen is proportional
  to the probe-averaged gradient of the projected potential: ⟨k⟩ ∝ ∇(|ψ|² ⊛ V) (the beam is
  pulled towards the nuclei, so the CoM shift points up the potential). Integrating the CoM
  field in Fourier space (Lazić et al., Ultramicroscopy 160 (2016); py4DSTEM's DPC):
  φ = F⁻¹[ (qx·F[Cx] + qy·F[Cy]) / (2πi·|q|²) ], with φ(q=0) = 0, gives the potential (blurred
  by the probe) on the probe grid; it is upsampled to the target grid (bicubic, pixel centres
  aligned: probe (i, j) sits at the centre of its cell, as target pixels do) and standardized
  per sample, like the model's output. It reads the raw patterns (the loader with
  `input_transform: none` and no standardization), with the same Poisson noise at a dose.
  Pattern axes are (ky, kx) with zero frequency at pixel H // 2 (`simulate/physics.py`); scan
  positions are row-major (y, x), as the store holds them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from stemdl.configs.dataset import LoaderConfig
from stemdl.configs.simulation import SampleShape
from stemdl.datasets.augment import D4_SIZE, apply_d4
from stemdl.train.scoring import SplitArrays, load_split

ALIGNED_NN = "aligned_nearest_neighbour"
ICOM = "icom"


# ----------------------------------------------------------------- iCoM


def centre_of_mass(cbed: torch.Tensor, scan_gpts: tuple[int, int]) -> torch.Tensor:
    """(N, 2, gy, gx) float64 CoM (ky, kx) in pixels from the zero-frequency pixel H//2, W//2,
    of raw patterns `cbed` (N, P, H, W)."""
    n, _, h, w = cbed.shape
    x = cbed.double().clamp_min(0.0)
    ky = torch.arange(h, dtype=torch.float64) - h // 2
    kx = torch.arange(w, dtype=torch.float64) - w // 2
    total = x.sum(dim=(-2, -1)).clamp_min(1e-30)
    com_y = (x.sum(dim=-1) * ky).sum(dim=-1) / total
    com_x = (x.sum(dim=-2) * kx).sum(dim=-1) / total
    return torch.stack([com_y, com_x], dim=1).reshape(n, 2, *scan_gpts)


def fourier_integrate(gradient: torch.Tensor) -> torch.Tensor:
    """φ (N, gy, gx) whose gradient (∂y, ∂x) in grid steps is closest to `gradient`
    (N, 2, gy, gx) in the least-squares sense, on a periodic grid, mean zero."""
    gy, gx = gradient.shape[-2:]
    qy = torch.fft.fftfreq(gy, dtype=torch.float64)[:, None]
    qx = torch.fft.fftfreq(gx, dtype=torch.float64)[None, :]
    q2 = qy**2 + qx**2
    q2[0, 0] = 1.0
    fy = torch.fft.fft2(gradient[:, 0])
    fx = torch.fft.fft2(gradient[:, 1])
    phi = (qy * fy + qx * fx) / (2j * np.pi * q2)
    phi[:, 0, 0] = 0.0
    return torch.fft.ifft2(phi).real


def standardize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Per sample and channel: zero mean, unit variance (the loader's target convention)."""
    mean = maps.mean(dim=(-2, -1), keepdim=True)
    std = maps.std(dim=(-2, -1), unbiased=False, keepdim=True)
    return (maps - mean) / (std + 1e-6)


def icom_prediction(raw_cbed: torch.Tensor, scan_gpts: tuple[int, int],
                    target_px: tuple[int, int], channels: int = 1) -> torch.Tensor:
    """(N, channels, *target_px) float32 standardized iCoM maps of raw patterns (N, P, H, W)
    (every depth channel gets the same map: the CoM sees the whole projection)."""
    phi = fourier_integrate(centre_of_mass(raw_cbed, scan_gpts))
    up = F.interpolate(phi[:, None], size=tuple(target_px), mode="bicubic",
                       align_corners=False)
    return standardize_maps(up).float().expand(-1, channels, -1, -1).clone()


# ----------------------------------------------------------------- aligned nearest neighbour


def pool_patterns(cbed: torch.Tensor, pool: int) -> torch.Tensor:
    """Average-pool the last two axes by `pool` about the centre pixel (odd sizes: the pooled
    window stays symmetric about zero frequency); trailing pixels that do not fill a
    symmetric block are dropped."""
    if pool <= 1:
        return cbed
    h, w = cbed.shape[-2:]
    keep_h, keep_w = (h // pool) * pool, (w // pool) * pool
    if (keep_h // pool) % 2 == 0 and keep_h >= pool:  # keep an odd number of blocks
        keep_h -= pool
    if (keep_w // pool) % 2 == 0 and keep_w >= pool:
        keep_w -= pool
    top, left = h // 2 - keep_h // 2, w // 2 - keep_w // 2
    lead = cbed.shape[:-2]
    window = cbed[..., top:top + keep_h, left:left + keep_w].reshape(-1, 1, keep_h, keep_w)
    return F.avg_pool2d(window, pool).reshape(*lead, keep_h // pool, keep_w // pool)


def _shifted(target: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """out[..., Y, X] = target[..., Y + dy, X + dx], 0 where that is outside."""
    out = torch.zeros_like(target)
    h, w = target.shape[-2:]
    ys, yd = (slice(dy, h), slice(0, h - dy)) if dy >= 0 else (slice(0, h + dy), slice(-dy, h))
    xs, xd = (slice(dx, w), slice(0, w - dx)) if dx >= 0 else (slice(0, w + dx), slice(-dx, w))
    out[..., yd, xd] = target[..., ys, xs]
    return out


def aligned_nearest_neighbour(train_cbed: torch.Tensor, train_target: torch.Tensor,
                              query_cbed: torch.Tensor, scan_gpts: tuple[int, int],
                              max_shift: int | None = None, pool: int = 3,
                              chunk: int = 64) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
    """Predictions (N_query, C, H', W') and, per query, the chosen reference, D4 operation and
    shift (sy, sx) in probes (module docstring). Inputs are loader-normalized stacks (N, P, H, W)
    with P = gy·gx row-major; targets (N, C, H', W')."""
    gy, gx = scan_gpts
    th, tw = train_target.shape[-2:]
    if max_shift is None:
        max_shift = max(1, min(gy, gx) // 4)
    fy, fx = th // gy, tw // gx
    if th % gy or tw % gx:  # a shift of whole probes is no whole number of target pixels
        max_shift, fy, fx = 0, 0, 0
    refs = pool_patterns(train_cbed.float(), pool).numpy()
    targets = train_target.numpy()
    queries = pool_patterns(query_cbed.float(), pool).reshape(len(query_cbed), gy, gx, -1)
    nq = queries.shape[0]
    best = torch.full((nq,), float("inf"), dtype=torch.float64)
    choice = np.zeros((nq, 4), dtype=np.int64)  # reference, op, sy, sx
    shifts = [(sy, sx) for sy in range(-max_shift, max_shift + 1)
              for sx in range(-max_shift, max_shift + 1)]
    for op in range(D4_SIZE):
        ref_op, _ = apply_d4(refs, targets[:1], scan_gpts, op)
        ref_grid = torch.from_numpy(np.ascontiguousarray(ref_op)).reshape(len(refs), gy, gx, -1)
        for sy, sx in shifts:
            qy = slice(max(0, -sy), gy - max(0, sy))
            qx = slice(max(0, -sx), gx - max(0, sx))
            ry = slice(max(0, sy), gy + min(0, sy))
            rx = slice(max(0, sx), gx + min(0, sx))
            ref_flat = ref_grid[:, ry, rx].reshape(len(refs), -1)
            probes = (qy.stop - qy.start) * (qx.stop - qx.start)
            for start in range(0, nq, chunk):
                q = queries[start:start + chunk, qy, qx].reshape(-1, ref_flat.shape[1])
                d = torch.cdist(q, ref_flat).double() ** 2 / probes
                value, index = d.min(dim=1)
                rows = slice(start, start + len(q))
                better = value < best[rows]
                best[rows] = torch.where(better, value, best[rows])
                better_np = better.numpy()
                picked = np.stack([index.numpy(), np.full(len(q), op), np.full(len(q), sy),
                                   np.full(len(q), sx)], axis=1)
                choice[rows][better_np] = picked[better_np]  # a view: writes into choice
    predictions = torch.empty((nq, *train_target.shape[1:]), dtype=train_target.dtype)
    for i, (ref, op, sy, sx) in enumerate(choice):
        _, target = apply_d4(refs[:1], targets[ref], scan_gpts, int(op))
        predictions[i] = _shifted(torch.from_numpy(np.ascontiguousarray(target)),
                                  int(sy) * fy, int(sx) * fx)
    return predictions, {"reference": choice[:, 0], "op": choice[:, 1],
                         "shift_probes": choice[:, 2:]}


# ----------------------------------------------------------------- both, for `stemdl run`


def strong_baselines(store_url: str, loader: LoaderConfig, split: str, train: SplitArrays,
                     query: SplitArrays, shape: SampleShape, dose_e_per_a2: float | None,
                     seed: int) -> dict[str, torch.Tensor]:
    """The aligned nearest neighbour and iCoM predictions of `query` (a split loaded by
    `scoring.load_split` with the same dose and seed), keyed by name."""
    raw_loader = loader.model_copy(update={"input_transform": "none",
                                           "standardize_inputs": False})
    raw = load_split(store_url, raw_loader, split, dose_e_per_a2=dose_e_per_a2, seed=seed)
    if not np.array_equal(raw.index, query.index):
        raise RuntimeError(f"the raw and normalized {split} splits hold different samples")
    aligned, _ = aligned_nearest_neighbour(train.cbed, train.potential, query.cbed,
                                           shape.scan_gpts)
    return {ALIGNED_NN: aligned,
            ICOM: icom_prediction(raw.cbed, shape.scan_gpts, shape.target_px,
                                  channels=query.potential.shape[1])}
