"""SSIM and PSNR agree with an independent implementation (scikit-image) at the same settings.

`train.metrics` computes them in torch for batches on any device; scikit-image's
`structural_similarity` with a Gaussian window of σ = 1.5 (truncated at 3.5σ: 11 px), K1 =
0.01, K2 = 0.03, population covariances and the target's data range is the same definition
(Wang et al. 2004), averaged over the valid windows, as ours is.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from stemdl.train.metrics import per_sample_metrics


@pytest.mark.parametrize("size", [32, 17])
def test_ssim_and_psnr_match_scikit_image(size: int) -> None:
    rng = np.random.default_rng(3)
    target = rng.normal(size=(3, 2, size, size)).cumsum(axis=-1)  # smooth-ish maps
    prediction = target + rng.normal(scale=0.7, size=target.shape)
    ours = per_sample_metrics(torch.from_numpy(prediction).float(),
                              torch.from_numpy(target).float())
    for sample in range(target.shape[0]):
        truth, guess = target[sample], prediction[sample]
        data_range = float(truth.max() - truth.min())
        ssim = np.mean([structural_similarity(
            truth[c], guess[c], data_range=data_range, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False, win_size=11) for c in range(truth.shape[0])])
        psnr = peak_signal_noise_ratio(truth, guess, data_range=data_range)
        assert float(ours["ssim"][sample]) == pytest.approx(ssim, abs=2e-5)
        assert float(ours["psnr_db"][sample]) == pytest.approx(psnr, abs=1e-3)
