"""Part `sr`: PSNR/SSIM and cost of each SR method on the PBC test split at S=128, x4 (in-domain ESPCN/EDSR),
its set-up time first and from the cache."""

from __future__ import annotations

import json
import time

import numpy as np

from benchmarks.harness import datamodule, sr_resolvers


def run(args) -> dict:
    from wbc.resize import upscale
    from wbc.sr.quality import sr_quality
    from wbc.sr.report import sr_cost_ms

    size, scale, result = args.sr_size, 4, {}
    for name, resolver in sr_resolvers(args, scale).items():
        dm = datamodule(args, size, scale, sr=resolver, augment=False)
        start = time.perf_counter()
        dm.setup()  # trains (or loads) the in-domain SR model, then applies it to every image (cached)
        setup_s = time.perf_counter() - start
        start = time.perf_counter()
        again = datamodule(args, size, scale, sr=resolver, augment=False)
        again.setup()
        cached_s = time.perf_counter() - start
        rows = np.unique(dm.datasets["test"].rows)
        refs = np.asarray(dm.references[rows])
        quality = sr_quality(np.asarray(dm.datasets["test"].images[rows]), refs)
        low_res = dm.preprocessor.degrade(refs)
        bicubic = np.stack([upscale(im, size, "bicubic") for im in low_res])
        base = sr_quality(bicubic, refs)
        result[name] = {
            **quality,
            "psnr_gain_over_bicubic": quality["psnr"] - base["psnr"],
            "ssim_gain_over_bicubic": quality["ssim"] - base["ssim"],
            "ms_per_image": sr_cost_ms(dm.preprocessor.restorer, low_res),
            "sr_train_seconds": (resolver.train_stats or {}).get("seconds"),
            "setup_seconds_first": setup_s,
            "setup_seconds_cached": cached_s,
        }
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in result[name].items()}
        print(f"sr {name}: {json.dumps(shown)}", flush=True)
    return {
        "image_size": size,
        "scale": scale,
        "test_images": int(len(rows)),
        "split_seed": 0,
        "anchors_set5_x4_psnr": {"bicubic": 28.42, "espcn": 30.90, "edsr": 32.46},
        "note": "PSNR on RGB 0..255 against the S x S reference, mean over test images",
        "results": result,
    }
