"""Export a trained classifier with its SR stage:
`python scripts/export.py ckpt_path=... format=onnx|export|torchscript`.

format=export is torch.export (a .pt2 program: `torch.export.load(path).module()`); TorchScript tracing is
deprecated in current torch and kept for older deployments. Writes <output> (default: next to the checkpoint,
.onnx, .pt2 or .pt) and checks it against PyTorch: the maximum
absolute difference of the probabilities must be at most `tolerance` (default 1e-4). Input of the exported
model: (N, 3, S/f, S/f) float32 RGB in 0..255; output: (N, C) probabilities in the checkpoint's class order.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import wbc  # noqa: E402,F401


def main(argv: list[str]) -> int:
    args = dict(a.split("=", 1) for a in argv if "=" in a)
    unknown = set(args) - {"ckpt_path", "format", "output", "tolerance", "trust_checkpoint"}
    if "ckpt_path" not in args or unknown or len(args) != len(argv):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    from wbc.export import export
    from wbc.predict import CheckpointError, Predictor

    fmt = args.get("format", "onnx")
    ckpt = Path(args["ckpt_path"])
    suffix = {"onnx": ".onnx", "export": ".pt2"}.get(fmt, ".pt")
    output = Path(args.get("output", ckpt.with_suffix(suffix)))
    try:
        predictor = Predictor.from_checkpoint(ckpt, "cpu", trust=args.get("trust_checkpoint") == "true")
        result = export(predictor, output, fmt)
    except (CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result |= {"output": str(output), "format": fmt, "class_names": predictor.class_names}
    print(json.dumps(result, indent=2))
    tolerance = float(args.get("tolerance", 1e-4))
    if result["max_abs_diff"] > tolerance:
        print(
            f"error: exported model differs from PyTorch by {result['max_abs_diff']:.2e} > {tolerance}", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
