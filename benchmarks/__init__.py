"""Benchmarks of speed, memory and accuracy: `python -m benchmarks --parts data,step,memory,sr,predict`.

Each part writes outputs/benchmarks/<part>.json; every run re-renders outputs/benchmarks/results.md from all the
JSON files there. Timings are quoted as ratios measured in the same run, on the same machine and device
(`--device`: auto, the GPU when there is one; cpu; cuda).

Parts (one module each):
  data      training throughput on PBC at S=64 (an epoch after the first) against a plain torchvision
            ImageFolder + transforms + DataLoader baseline training the same model with the same batch size
  step      end-to-end training step throughput (Lightning, cached data, augmentation) against the bare
            model step on tensors already in memory
  memory    peak resident memory of a PBC run at S=128
  sr        per-method SR cost (ms/image) and PSNR/SSIM on the PBC test split at S=128, x4; cached vs uncached
  sweep     wall time of a 4-method x 3-seed sweep against 12 runs of sr=none (fresh caches)
  predict   prediction throughput over 1,000 PBC images against the bare model on in-memory tensors
  accuracy  the experiments conf/experiment/pbc_models64, pbc_models128 and pbc_sr_study128 (PBC four classes,
            split seed 0, 3 seeds: cnn and resnet18 at S=64 and 128; the SR study at 128, x4)
"""
