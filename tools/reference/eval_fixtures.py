"""Reference answers for attrib-eval's metrics (fixtures/eval/*.json), from the
implementations the papers' readers use:

    pip download --no-deps torchray==1.0.0.2 -d /tmp/w && tar xzf /tmp/w/torchray-1.0.0.2.tar.gz -C /tmp/w
    python tools/reference/eval_fixtures.py --torchray /tmp/w/torchray-1.0.0.2

- `pointing.json`: TorchRay's `PointingGame.evaluate` (its source, imported from the
  unpacked sdist: TorchRay's wheel pulls dependencies this needs not) on random
  images, boxes (as `voc_as_mask` fills them), points and tolerances; the maximum of
  random maps upsampled with `F.interpolate(bilinear, align_corners=False)`; and the
  class-averaged accuracy of a sequence of outcomes.
- `spearman.json`: `scipy.stats.spearmanr` on random vectors with ties.
- `segments.json`: the box of the largest 8-connected segment above a fraction of
  the maximum, by `skimage.measure.label(connectivity=2)` and `regionprops`.
- `ssim.json`: `skimage.metrics.structural_similarity` with its defaults and a
  given `data_range`, on random pairs of maps (alike, unrelated, constant).
- `hog.json`: `skimage.feature.hog` (L2-Hys) of random maps, several cell and block
  sizes.
- `causal.json`: RISE's deletion and insertion (`CausalMetric` and `gkern` of
  eclique/RISE's `evaluation.py`, transcribed below: RISE is not a package) with the
  zero, blur and mean substrates, on attrib's synthetic ResNet-18 (10 classes,
  `synthetic.py`) for a 3x32x32 input and a random map, 32 pixels per step.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "eval")


def pointing(rng):
    from torchray.benchmark.pointing_game import PointingGame

    cases = []
    for _ in range(300):
        h, w = int(rng.integers(10, 70)), int(rng.integers(10, 70))
        tol = int(rng.choice([0, 1, 5, 15]))
        boxes = []
        mask = torch.zeros((h, w), dtype=torch.bool)
        for _ in range(int(rng.integers(1, 4))):
            x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
            x1, y1 = x0 + int(rng.integers(0, 20)), y0 + int(rng.integers(0, 20))
            boxes.append([x0, y0, x1, y1])
            mask[y0 : y1 + 1, x0 : x1 + 1] = True
        point = [int(rng.integers(0, w)), int(rng.integers(0, h))]
        hit = PointingGame(1, tol).evaluate(mask, point)
        cases.append({"height": h, "width": w, "tolerance": tol, "boxes": boxes, "point": point, "hit": hit == 1})
    maps = []
    for _ in range(40):
        mh, mw = int(rng.integers(2, 9)), int(rng.integers(2, 9))
        h, w = int(rng.integers(mh, 80)), int(rng.integers(mw, 80))
        m = np.round(rng.standard_normal((mh, mw)), 3).astype(np.float32)
        up = F.interpolate(torch.from_numpy(m)[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        y, x = divmod(int(up.argmax()), w)
        maps.append({"map": [[round(float(v), 3) for v in row] for row in m], "height": h, "width": w, "point": [x, y]})
    game = PointingGame(4, 15)
    outcomes = [[int(rng.integers(0, 3)), bool(rng.random() < 0.6)] for _ in range(50)]
    for c, hit in outcomes:
        game.aggregate(1 if hit else -1, c)
    return {
        "hits": cases,
        "maps": maps,
        "game": {"classes": 4, "outcomes": outcomes, "class_accuracies": game.class_accuracies.tolist(), "accuracy": float(game.accuracy)},
    }


def spearman(rng):
    from scipy.stats import spearmanr

    cases = []
    for _ in range(60):
        n = int(rng.integers(3, 50))
        a = rng.integers(0, 6, n).astype(float) if rng.random() < 0.5 else rng.standard_normal(n)
        b = rng.integers(0, 6, n).astype(float) + 0.5 * a
        if np.all(a == a[0]) or np.all(b == b[0]):
            continue
        cases.append({"a": a.tolist(), "b": b.tolist(), "rho": float(spearmanr(a, b).statistic)})
    return cases


def segments(rng):
    from skimage.measure import label, regionprops

    cases = []
    for _ in range(60):
        h, w = int(rng.integers(4, 24)), int(rng.integers(4, 24))
        # Three decimals: exact as written in the JSON and read back as f32.
        m = np.round(rng.random((h, w)) ** 3, 3).astype(np.float32)
        frac = float(rng.choice([0.15, 0.2, 0.5, 0.8]))
        lab = label(m > frac * m.max(), connectivity=2)
        props = regionprops(lab)
        best = max(props, key=lambda p: (p.area, -p.label))
        r0, c0, r1, c1 = best.bbox
        cases.append({"map": [[round(float(v), 3) for v in row] for row in m], "fraction": frac, "box": [c0, r0, c1 - 1, r1 - 1]})
    return cases


def ssim(rng):
    from skimage.metrics import structural_similarity

    cases = []
    for k in range(30):
        h, w = int(rng.integers(7, 16)), int(rng.integers(7, 16))
        a = np.round(rng.random((h, w)), 3)
        b = np.round(a + rng.normal(0, 0.3, (h, w)) if k % 3 else rng.random((h, w)), 3)
        if k == 29:
            b = np.full((h, w), 0.25)
        r = float(max(a.max(), b.max()) - min(a.min(), b.min()))
        cases.append({"a": a.tolist(), "b": b.tolist(), "data_range": r, "ssim": float(structural_similarity(a, b, data_range=r))})
    return cases


def hog(rng):
    from skimage.feature import hog as sk_hog

    cases = []
    for cell, block, o in [(8, 3, 9), (4, 2, 9), (5, 2, 6), (7, 1, 8), (3, 3, 4)]:
        for _ in range(3):
            h, w = int(rng.integers(cell * block, cell * block + 12)), int(rng.integers(cell * block, cell * block + 12))
            m = np.round(rng.random((h, w)), 3)
            f = sk_hog(m, orientations=o, pixels_per_cell=(cell, cell), cells_per_block=(block, block), block_norm="L2-Hys")
            cases.append({"map": m.tolist(), "cell": cell, "block": block, "orientations": o, "hog": f.tolist()})
    return cases


def gkern(klen, nsig):
    """RISE's blur kernel: SciPy's gaussian_filter of a unit impulse."""
    from scipy.ndimage import gaussian_filter

    inp = np.zeros((klen, klen))
    inp[klen // 2, klen // 2] = 1
    k = gaussian_filter(inp, nsig)
    kern = np.zeros((3, 3, klen, klen))
    kern[0, 0] = k
    kern[1, 1] = k
    kern[2, 2] = k
    return torch.from_numpy(kern.astype("float32"))


class CausalMetric:
    """RISE's evaluation.py `CausalMetric.single_run`, on the CPU, the model's
    softmax probabilities; `np.argsort(kind="stable")` pins the order of equal
    values, which RISE leaves to quicksort."""

    def __init__(self, model, mode, step, substrate_fn):
        self.model, self.mode, self.step, self.substrate_fn = model, mode, step, substrate_fn

    def single_run(self, img_tensor, explanation, c):
        _, _, h, w = img_tensor.shape
        hw = h * w
        n_steps = (hw + self.step - 1) // self.step
        if self.mode == "del":
            start, finish = img_tensor.clone(), self.substrate_fn(img_tensor)
        else:
            start, finish = self.substrate_fn(img_tensor), img_tensor.clone()
        scores = np.empty(n_steps + 1)
        salient_order = np.flip(np.argsort(explanation.reshape(-1, hw), axis=1, kind="stable"), axis=-1)
        for i in range(n_steps + 1):
            pred = torch.softmax(self.model(start), 1)
            scores[i] = pred[0, c]
            if i < n_steps:
                coords = salient_order[:, self.step * i : self.step * (i + 1)]
                start.numpy().reshape(1, 3, hw)[0, :, coords] = finish.numpy().reshape(1, 3, hw)[0, :, coords]
        return scores


def auc(arr):
    return (arr.sum() - arr[0] / 2 - arr[-1] / 2) / (arr.shape[0] - 1)


def causal(rng):
    import torchvision

    sys.path.insert(0, os.path.dirname(__file__))
    from synthetic import load_synthetic

    model = torchvision.models.resnet18(num_classes=10)
    load_synthetic(model, seed=4)
    model.eval()
    x = torch.from_numpy(np.round(rng.uniform(-1, 1, (1, 3, 32, 32)), 3).astype(np.float32))
    sal = np.round(rng.random((32, 32)), 3).astype(np.float32)
    kern = gkern(11, 5)
    blur = lambda t: F.conv2d(t, kern, padding=11 // 2)  # noqa: E731
    mean = lambda t: t.mean((2, 3), keepdim=True).expand_as(t).clone()  # noqa: E731
    zero = torch.zeros_like
    with torch.no_grad():
        c = int(model(x).argmax())
        out = {"input": x[0].numpy().round(3).tolist(), "map": sal.tolist(), "class": c, "step": 32, "kernel": kern[0, 0].double().numpy().tolist(), "curves": []}
        for mode, name, fn in [("del", "zero", zero), ("ins", "blur", blur), ("del", "mean", mean), ("ins", "zero", zero)]:
            scores = CausalMetric(model, mode, 32, fn).single_run(x.clone(), sal, c)
            out["curves"].append({"game": mode, "substrate": name, "scores": scores.tolist(), "auc": float(auc(scores))})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--torchray", required=True, help="the unpacked TorchRay 1.0.0.2 sdist")
    a = ap.parse_args()
    sys.path.insert(0, a.torchray)
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, fn in [("pointing", pointing), ("spearman", spearman), ("segments", segments), ("causal", causal), ("ssim", ssim), ("hog", hog)]:
        with open(os.path.join(OUT, name + ".json"), "w") as fh:
            json.dump(fn(rng), fh)
            fh.write("\n")
    import scipy
    import skimage

    with open(os.path.join(OUT, "versions.json"), "w") as fh:
        json.dump({"torch": torch.__version__, "torchray": "1.0.0.2", "scipy": scipy.__version__, "scikit-image": skimage.__version__}, fh, indent=1)
        fh.write("\n")


if __name__ == "__main__":
    main()
