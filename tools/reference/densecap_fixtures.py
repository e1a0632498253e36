"""Fixtures of the trained DenseCap (assets/models/densecap, from densecap.py), in
fixtures/densecap/:

    python tools/reference/densecap_fixtures.py

Parity (float64, held-out scene 0, ImageNet-normalised as attrib reads a PNG; the
model's weights are float32 and exact in float64):
- `input` (1, 3, 96, 96) and `input.png` (the same scene, 8-bit);
- `proposals` (10, 6): the test-time proposals, `x1, y1, x2, y2, score, anchor`
  (60 best anchors, NMS at IoU 0.7, the first 10);
- `regions` (R, 4): the explained boxes: the scene's first two ground-truth regions,
  then proposal 0; `tokens` (R, L) int64: their captions, `<start> ... <end>`, padded with
  -1 (the ground truth's, and proposal 0's greedy caption);
- `recognition` (R, 5): objectness and refined box of each region;
- `greedy` (R, 5) int64: greedy decoding from each region's code (5 steps);
- `scores` (R, L - 1): teacher-forced token log-probabilities (NaN past the end);
- `caption.{gradient,grad-cam,guided-grad-cam}`: each region's whole caption (the sum
  of its log-probabilities) explained in one batch of R rows of the image: the input
  gradient, Captum's LayerGradCam at `trunk.features.13` (the last ReLU,
  relu_attributions=True) and GuidedGradCam (bilinear), the input-sized two stored in
  float32; `word1.grad-cam`: word 1.

Localisation (`heldout/NNN.png`, `heldout.json`): the first 30 held-out scenes, with
their regions' boxes and captions. `versions.json`: the versions that wrote them.
"""

import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
from captum.attr import GuidedGradCam, LayerGradCam
from safetensors.torch import load_file
from torchvision.ops import nms, roi_align

sys.path.insert(0, os.path.dirname(__file__))
from densecap import SIZE, STRIDE, WORDS, DenseCap, dataset, decode, encode, greedy, normalise, proposals  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
OUT = os.path.join(ROOT, "fixtures", "densecap")


def save(name, a, dtype=np.float64):
    np.save(os.path.join(OUT, name + ".npy"), np.ascontiguousarray(np.asarray(a, dtype=dtype)))


def png(path, img):
    from PIL import Image

    Image.fromarray(np.round(img.transpose(1, 2, 0) * 255).astype(np.uint8)).save(path)


class RegionScores(nn.Module):
    """Image rows -> per-row token log-probabilities of each row's region and caption
    (NaN past the end), or their sum (`whole`); the model is a child, so that Captum's
    guided backprop finds its ReLUs."""

    def __init__(self, model, boxes, tokens, whole):
        super().__init__()
        self.model, self.boxes, self.tokens, self.whole = model, boxes, tokens, whole

    def forward(self, x):
        m = self.model
        f = m.features(x)
        rois = torch.cat([torch.arange(len(self.boxes), dtype=self.boxes.dtype)[:, None], self.boxes], 1)
        r = roi_align(f, rois, output_size=(7, 7), spatial_scale=1.0 / STRIDE, sampling_ratio=2, aligned=False)
        code = m.recog(r.flatten(1))
        tok = self.tokens.clamp(min=0)
        logits = m.caption_logits(code, tok)
        lp = torch.log_softmax(logits, -1).gather(2, tok[:, 1:, None])[..., 0]
        valid = self.tokens[:, 1:] >= 0
        if self.whole:
            return torch.where(valid, lp, torch.zeros_like(lp)).sum(1, keepdim=True)
        return torch.where(valid, lp, torch.full_like(lp, float("nan")))


def main():
    torch.set_num_threads(2)
    os.makedirs(os.path.join(OUT, "heldout"), exist_ok=True)
    model = DenseCap()
    model.load_state_dict(load_file(os.path.join(ROOT, "assets", "models", "densecap", "densecap.safetensors")))
    model.eval()
    model.double()
    held_out = dataset(200, 1)
    img, regs = held_out[0]
    png(os.path.join(OUT, "input.png"), img)
    x = torch.from_numpy(normalise(img))[None].double()
    save("input", x)
    with torch.no_grad():
        f = model.features(x)
        boxes, scores = proposals(model, f)[0]
        # The anchor of each proposal: proposals() again, keeping the indices.
        off, score = model.localise(f)
        order = score[0].argsort(descending=True)[:60]
        ranked = decode(DenseCap.anchors(f.shape[2], f.shape[3]).double()[order], off[0][order]).clamp(0, SIZE)
        anchor = order[nms(ranked, score[0][order], 0.7)[:10]]
        assert torch.equal(score[0][anchor], scores)
        save("proposals", torch.cat([boxes, scores[:, None], anchor[:, None].float()], 1))
        regs = regs[:2]
        region_boxes = torch.cat([torch.tensor([r[0] for r in regs], dtype=torch.float64), boxes[:1]])
        rois = torch.cat([torch.zeros(len(region_boxes), 1, dtype=torch.float64), region_boxes], 1)
        code = model.region_codes(f, rois)
        toks = greedy(model, code)
        caps = [encode(words) for _, words in regs]
        own = [1] + toks[-1][: toks[-1].index(2) + 1 if 2 in toks[-1] else 5]
        if own[-1] != 2:
            own.append(2)
        caps.append(own)
        length = max(len(c) for c in caps)
        tokens = torch.tensor([c + [-1] * (length - len(c)) for c in caps])
        save("regions", region_boxes)
        save("tokens", tokens, np.int64)
        save("greedy", torch.tensor(toks), np.int64)
        obj = model.objectness(code)
        d = model.refine(code)
        save("recognition", torch.cat([obj, decode(region_boxes, d)], 1))
    n = len(region_boxes)
    xs = x.repeat(n, 1, 1, 1)
    layer = model.trunk.features[13]
    per_token = RegionScores(model, region_boxes, tokens, whole=False)
    save("scores", per_token(xs).detach())
    whole = RegionScores(model, region_boxes, tokens, whole=True)
    xg = xs.clone().requires_grad_(True)
    # The input-sized maps are stored in float32 (computed in float64, rounded once)
    # to keep the repository lean.
    save("caption.gradient", torch.autograd.grad(whole(xg).sum(), xg)[0], np.float32)
    target = [0] * n
    save("caption.grad-cam", LayerGradCam(whole, layer).attribute(xs, target=target, relu_attributions=True)[:, 0].detach())
    ggc = GuidedGradCam(whole, layer).attribute(xs, target=target, interpolate_mode="bilinear")
    save("caption.guided-grad-cam", ggc.detach(), np.float32)
    gc1 = LayerGradCam(per_token, layer).attribute(xs, target=[1] * n, relu_attributions=True)
    save("word1.grad-cam", gc1[:, 0].detach())
    print(f"{n} regions; captions:", [" ".join(WORDS[t] for t in c[1:-1]) for c in caps])
    items = []
    for i, (img, regs) in enumerate(held_out[:30]):
        name = f"{i:03d}.png"
        png(os.path.join(OUT, "heldout", name), img)
        items.append({"file": name, "regions": [{"box": list(b), "caption": " ".join(w)} for b, w in regs]})
    with open(os.path.join(OUT, "heldout.json"), "w") as fh:
        json.dump(items, fh, indent=1)
        fh.write("\n")
    import captum
    import torchvision

    with open(os.path.join(OUT, "versions.json"), "w") as fh:
        json.dump({"torch": torch.__version__, "torchvision": torchvision.__version__, "captum": captum.__version__}, fh, indent=1)
        fh.write("\n")


if __name__ == "__main__":
    main()
