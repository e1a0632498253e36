"""Writes the fixtures of the FCLN (DenseCap) building blocks against torchvision:
RoI bilinear sampling (`torchvision.ops.roi_align`, values and the gradient to the
features) on odd box geometries, non-maximum suppression (`torchvision.ops.nms`) and
Faster R-CNN box decoding (`torchvision.models.detection._utils.BoxCoder`, clipping
with `torchvision.ops.clip_boxes_to_image`).

    python tools/reference/fcln_ops.py

Everything is float64, so the Rust tests can compare to 1e-12 in f64 (and to 1e-5
in f32). Outputs go to fixtures/fcln/.
"""

import json
import math
import os

import numpy as np
import torch
import torchvision
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import clip_boxes_to_image, nms, roi_align

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "fixtures", "fcln")


def save(name, a):
    np.save(os.path.join(OUT, name + ".npy"), np.ascontiguousarray(np.asarray(a, dtype=np.float64)))


def roi_cases():
    g = torch.Generator().manual_seed(14)
    feats = torch.rand(2, 3, 7, 9, generator=g, dtype=torch.float64) * 2 - 1
    save("roi.features", feats)
    # [batch index, x1, y1, x2, y2] in image pixels; the features are at 1/scale.
    boxes = torch.tensor(
        [
            [0, 2.0, 1.0, 10.0, 9.0],  # inside
            [1, -6.0, -3.0, 5.0, 4.0],  # past the top-left border
            [0, 12.0, 8.0, 25.0, 19.0],  # past the bottom-right border
            [1, 4.3, 5.1, 4.6, 5.5],  # sub-pixel
            [0, 9.0, 7.0, 3.0, 2.0],  # inverted
            [1, 5.0, 5.0, 5.0, 5.0],  # empty
            [0, 0.0, 0.0, 18.0, 14.0],  # the whole image at scale 0.5
            [1, -40.0, -40.0, -20.0, -20.0],  # entirely outside
            [0, 16.9, 0.2, 17.9, 13.7],  # a thin strip at the right edge
        ],
        dtype=torch.float64,
    )
    save("roi.boxes", boxes)
    grad_out = None
    cases = []
    for i, (scale, ratio, aligned, out_hw) in enumerate(
        [
            (0.5, 2, False, (3, 2)),
            (0.5, 2, True, (3, 2)),
            (0.5, -1, False, (2, 3)),
            (0.5, -1, True, (7, 7)),
            (1.0, 1, True, (2, 2)),
            (1.0, 0, False, (4, 3)),
        ]
    ):
        f = feats.clone().requires_grad_(True)
        out = roi_align(f, boxes, output_size=out_hw, spatial_scale=scale, sampling_ratio=ratio, aligned=aligned)
        grad_out = torch.rand(out.shape, generator=g, dtype=torch.float64) * 2 - 1
        (out * grad_out).sum().backward()
        save(f"roi.{i}.out", out.detach())
        save(f"roi.{i}.grad_out", grad_out)
        save(f"roi.{i}.grad_features", f.grad)
        cases.append({"spatial_scale": scale, "sampling_ratio": ratio, "aligned": aligned, "output_size": list(out_hw)})
    with open(os.path.join(OUT, "roi.json"), "w") as fh:
        json.dump(cases, fh, indent=1)
        fh.write("\n")


def nms_cases():
    g = torch.Generator().manual_seed(15)
    xy = torch.rand(300, 2, generator=g, dtype=torch.float64) * 100
    wh = torch.rand(300, 2, generator=g, dtype=torch.float64) * 40 + 1
    boxes = torch.cat([xy, xy + wh], 1)
    scores = torch.rand(300, generator=g, dtype=torch.float64)
    save("nms.boxes", boxes)
    save("nms.scores", scores)
    for iou in (0.7, 0.5, 0.3):
        keep = nms(boxes, scores, iou)
        save(f"nms.keep{int(iou * 10)}", keep.double())


def decode_cases():
    g = torch.Generator().manual_seed(16)
    xy = torch.rand(64, 2, generator=g, dtype=torch.float64) * 60 - 10
    wh = torch.rand(64, 2, generator=g, dtype=torch.float64) * 30 + 2
    anchors = torch.cat([xy, xy + wh], 1)
    deltas = torch.randn(64, 4, generator=g, dtype=torch.float64)
    deltas[:4, 2:] = 8.0  # past the clamp at log(1000 / 16)
    coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0), bbox_xform_clip=math.log(1000.0 / 16))
    decoded = coder.decode_single(deltas, anchors)
    save("decode.anchors", anchors)
    save("decode.deltas", deltas)
    save("decode.boxes", decoded)
    save("decode.clipped", clip_boxes_to_image(decoded, (48, 56)))  # (height, width)


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(1)
    roi_cases()
    nms_cases()
    decode_cases()
    with open(os.path.join(OUT, "versions.json"), "w") as fh:
        json.dump({"torch": torch.__version__, "torchvision": torchvision.__version__}, fh, indent=1)
        fh.write("\n")


if __name__ == "__main__":
    main()
