"""The FCLN of DenseCap (Johnson, Karpathy & Fei-Fei, CVPR 2016) as a PyTorch module
attrib loads by its state-dict names, a synthetic dense-captioning dataset, and its
training with the paper's losses (proposals included).

    python tools/reference/densecap.py --out assets/models/densecap [--steps 3000]

The paper's model was Lua Torch; this module follows its structure at a small scale:

- trunk (`trunk.features.N`): 3x3 convolutions with ReLU, the first four each followed
  by a 2x2 max pool, the last by its ReLU only: stride 16, as VGG-16's conv layers up
  to conv5_3 (`features.0`-`29`), which have the same names and structure;
- localisation layer: `loc.conv` (3x3) + ReLU, then 1x1 convolutions `loc.box`
  (4 offsets per anchor, Faster R-CNN parametrisation) and `loc.score` (1 per
  anchor); `loc.anchors` (a buffer, (k, 2)) holds the (w, h) of the k anchors, each
  centred on every cell;
  at test time boxes are decoded, clipped, ranked by score and suppressed at IoU 0.7
  (`torchvision.ops.nms`) down to the top proposals;
- RoI bilinear sampling of each box into 7x7 trunk features
  (`torchvision.ops.roi_align`, spatial scale 1/16, sampling ratio 2, aligned=False);
- recognition network: flatten, `recog.0` (linear) + ReLU, `recog.2` (linear) + ReLU,
  then `refine` (4 box offsets) and `objectness` (1 score);
- language model: `project` maps the region code to the LSTM's first input; then the
  words, embedded by `embed`, through `lstm` (batch first), scored by `linear`, as in
  Show and Tell (the decoder's names are the captioner's).

Data: 96x96 canvases (8-bit, as a PNG) with 2-4 non-overlapping shapes (circle, square, triangle), each
of one of 4 colours and 2 sizes, on a noisy grey background; each shape's box is a
region captioned "<size> <colour> <shape>". Fixed seeds: training scenes from seed 0,
held-out scenes from seed 1.
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import box_iou, nms, roi_align

SIZE = 96
STRIDE = 16
ANCHORS = [(16, 16), (28, 28), (40, 40), (24, 14), (14, 24)]
COLOURS = {"red": (0.9, 0.15, 0.1), "green": (0.1, 0.75, 0.2), "blue": (0.15, 0.3, 0.9), "yellow": (0.95, 0.85, 0.1)}
SHAPES = ["circle", "square", "triangle"]
SIZES = {"small": 18, "large": 30}
WORDS = ["<pad>", "<start>", "<end>", "<unk>"] + list(SIZES) + list(COLOURS) + SHAPES
# The model reads images as attrib's commands give them: in [0, 1], normalised with
# ImageNet's mean and std (as a VGG-16 trunk would be).
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)[:, None, None]
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)[:, None, None]


def scene(rng):
    """One canvas (3, SIZE, SIZE) in [0, 1] and its regions [(box, caption words)]."""
    img = 0.5 + 0.05 * rng.standard_normal((SIZE, SIZE, 3))
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    regions = []
    for _ in range(rng.integers(2, 5)):
        for _try in range(30):
            size_name = rng.choice(list(SIZES))
            s = SIZES[size_name]
            x0, y0 = rng.integers(2, SIZE - s - 2, size=2)
            box = (float(x0), float(y0), float(x0 + s), float(y0 + s))
            if all(box[2] + 2 <= b[0] or b[2] + 2 <= box[0] or box[3] + 2 <= b[1] or b[3] + 2 <= box[1] for b, _ in regions):
                break
        else:
            continue
        colour = rng.choice(list(COLOURS))
        shape = rng.choice(SHAPES)
        cx, cy = x0 + s / 2, y0 + s / 2
        if shape == "circle":
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= (s / 2) ** 2
        elif shape == "square":
            mask = (xx >= x0) & (xx <= x0 + s) & (yy >= y0) & (yy <= y0 + s)
        else:
            mask = (yy >= y0) & (yy <= y0 + s) & (np.abs(xx - cx) <= (yy - y0) / 2)
        img[mask] = COLOURS[colour]
        regions.append((box, [size_name, colour, shape]))
    # Quantised to 8 bits, as the PNG a user would give attrib.
    img = np.round(np.clip(img, 0, 1) * 255) / 255
    return img.transpose(2, 0, 1).astype(np.float32), regions


def normalise(img):
    """(3, H, W) in [0, 1] -> the model's input."""
    return (img - MEAN) / STD


def dataset(n, seed):
    rng = np.random.default_rng(seed)
    return [scene(rng) for _ in range(n)]


def encode(words):
    return [1] + [WORDS.index(w) for w in words] + [2]


class DenseCap(nn.Module):
    def __init__(self, widths=(32, 64, 96, 128, 128), loc=96, fc=256, embed=48, hidden=96):
        super().__init__()
        layers, c = [], 3
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(c, w, 3, padding=1), nn.ReLU()]
            if i < 4:
                layers.append(nn.MaxPool2d(2, 2))
            c = w
        self.trunk = nn.Module()
        self.trunk.features = nn.Sequential(*layers)
        k = len(ANCHORS)
        self.loc = nn.Module()
        self.loc.conv = nn.Conv2d(c, loc, 3, padding=1)
        self.loc.box = nn.Conv2d(loc, 4 * k, 1)
        self.loc.score = nn.Conv2d(loc, k, 1)
        self.loc.register_buffer("anchors", torch.tensor(ANCHORS, dtype=torch.float32))
        self.recog = nn.Sequential(nn.Linear(c * 49, fc), nn.ReLU(), nn.Linear(fc, fc), nn.ReLU())
        self.refine = nn.Linear(fc, 4)
        self.objectness = nn.Linear(fc, 1)
        self.project = nn.Linear(fc, embed)
        self.embed = nn.Embedding(len(WORDS), embed)
        self.lstm = nn.LSTM(embed, hidden, 1, batch_first=True)
        self.linear = nn.Linear(hidden, len(WORDS))

    def features(self, x):
        return self.trunk.features(x)

    def localise(self, f):
        """Per anchor: offsets (N, A, 4) and scores (N, A); anchor index
        ((i * W + j) * K + a) for cell (i, j) and anchor a."""
        h = F.relu(self.loc.conv(f))
        n, _, hh, ww = h.shape
        k = len(ANCHORS)
        box = self.loc.box(h).view(n, k, 4, hh, ww).permute(0, 3, 4, 1, 2).reshape(n, -1, 4)
        score = self.loc.score(h).permute(0, 2, 3, 1).reshape(n, -1)
        return box, score

    @staticmethod
    def anchors(hh, ww):
        out = []
        for i in range(hh):
            for j in range(ww):
                cx, cy = (j + 0.5) * STRIDE, (i + 0.5) * STRIDE
                for w, h in ANCHORS:
                    out.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        return torch.tensor(out, dtype=torch.float32)

    def region_codes(self, f, rois):
        """rois (R, 5): [item, x1, y1, x2, y2] -> (R, fc)."""
        r = roi_align(f, rois, output_size=(7, 7), spatial_scale=1.0 / STRIDE, sampling_ratio=2, aligned=False)
        return self.recog(r.flatten(1))

    def caption_logits(self, code, tokens):
        """Teacher forcing, as Show and Tell: the projected code is the LSTM's first
        input (its output unused), then `<start>` and the words. code (R, fc), tokens
        (R, T) from `<start>` to `<end>` -> logits (R, T - 1, V) for tokens 1..T."""
        first = self.project(code).unsqueeze(1)
        inp = torch.cat([first, self.embed(tokens[:, :-1])], 1)
        h, _ = self.lstm(inp)
        return self.linear(h[:, 1:])


def decode(anchors, d):
    w, h = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    cx, cy = anchors[:, 0] + 0.5 * w, anchors[:, 1] + 0.5 * h
    dw, dh = d[:, 2].clamp(max=math.log(1000 / 16)), d[:, 3].clamp(max=math.log(1000 / 16))
    pcx, pcy = d[:, 0] * w + cx, d[:, 1] * h + cy
    pw, ph = dw.exp() * w, dh.exp() * h
    return torch.stack([pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph], 1)


def encode_boxes(anchors, gt):
    w, h = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    cx, cy = anchors[:, 0] + 0.5 * w, anchors[:, 1] + 0.5 * h
    gw, gh = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    gx, gy = gt[:, 0] + 0.5 * gw, gt[:, 1] + 0.5 * gh
    return torch.stack([(gx - cx) / w, (gy - cy) / h, torch.log(gw / w), torch.log(gh / h)], 1)


def proposals(model, f, top=10, pre=60, iou=0.7):
    """Test-time proposals per item: decoded, clipped, ranked, NMS, top."""
    box, score = model.localise(f)
    anchors = DenseCap.anchors(f.shape[2], f.shape[3])
    out = []
    for b in range(f.shape[0]):
        order = score[b].argsort(descending=True)[:pre]
        boxes = decode(anchors[order], box[b][order]).clamp(0, SIZE)
        keep = nms(boxes, score[b][order], iou)[:top]
        out.append((boxes[keep], score[b][order][keep]))
    return out


def losses(model, x, regions, rng):
    f = model.features(x)
    box, score = model.localise(f)
    anchors = DenseCap.anchors(f.shape[2], f.shape[3])
    rpn_cls, rpn_box, rois, tgt_boxes, tgt_obj, caps = [], [], [], [], [], []
    for b, regs in enumerate(regions):
        gt = torch.tensor([r[0] for r in regs])
        ious = box_iou(anchors, gt)
        best, which = ious.max(1)
        labels = torch.full((len(anchors),), -1.0)
        labels[best < 0.3] = 0
        labels[best >= 0.6] = 1
        labels[ious.argmax(0)] = 1
        pos = torch.nonzero(labels == 1).flatten()
        neg = torch.nonzero(labels == 0).flatten()
        neg = neg[torch.from_numpy(rng.permutation(len(neg))[: max(3 * len(pos), 16)])]
        idx = torch.cat([pos, neg])
        rpn_cls.append(F.binary_cross_entropy_with_logits(score[b][idx], labels[idx]))
        rpn_box.append(F.smooth_l1_loss(box[b][pos], encode_boxes(anchors[pos], gt[which[pos]]), beta=1 / 9))
        # Regions for recognition: jittered ground truth (positives, captioned) and
        # random boxes far from any (negatives).
        with torch.no_grad():
            order = score[b].argsort(descending=True)[:60]
            props = decode(anchors[order], box[b][order]).clamp(0, SIZE)
        cand = torch.cat([props, gt + torch.from_numpy(rng.normal(0, 2, gt.shape)).float()])
        piou, pw = box_iou(cand, gt).max(1)
        for i in range(len(cand)):
            if piou[i] >= 0.5:
                rois.append([b, *cand[i].tolist()])
                tgt_boxes.append(encode_boxes(cand[i : i + 1], gt[pw[i] : pw[i] + 1])[0])
                tgt_obj.append(1.0)
                caps.append(encode(regs[pw[i]][1]))
            elif piou[i] < 0.3 and rng.random() < 0.3:
                rois.append([b, *cand[i].tolist()])
                tgt_boxes.append(torch.zeros(4))
                tgt_obj.append(0.0)
                caps.append(None)
    rois_t = torch.tensor(rois, dtype=torch.float32)
    code = model.region_codes(f, rois_t)
    obj = torch.tensor(tgt_obj)
    l_obj = F.binary_cross_entropy_with_logits(model.objectness(code)[:, 0], obj)
    posm = obj > 0
    l_ref = F.smooth_l1_loss(model.refine(code)[posm], torch.stack(tgt_boxes)[posm])
    cap_idx = [i for i, c in enumerate(caps) if c is not None]
    tokens = torch.tensor([caps[i] for i in cap_idx])
    logits = model.caption_logits(code[cap_idx], tokens)
    l_cap = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
    return torch.stack(rpn_cls).mean() + torch.stack(rpn_box).mean() + l_obj + l_ref + l_cap, l_cap


def greedy(model, code, steps=5):
    """Greedy captions of region codes (R, fc) -> token lists (without <start>)."""
    _, h = model.lstm(model.project(code).unsqueeze(1))
    inp = model.embed(torch.ones(code.shape[0], dtype=torch.long)).unsqueeze(1)
    out = [[] for _ in range(code.shape[0])]
    done = [False] * code.shape[0]
    for _ in range(steps):
        y, h = model.lstm(inp, h)
        tok = model.linear(y[:, 0]).argmax(1)
        for i, t in enumerate(tok.tolist()):
            if not done[i]:
                out[i].append(t)
                done[i] = t == 2
        inp = model.embed(tok).unsqueeze(1)
    return out


def evaluate(model, data):
    """Proposal recall at IoU 0.5 (top 10), exact-caption accuracy of the ground
    truth boxes, and the accuracy of each word (size, colour, shape)."""
    model.eval()
    hit = total = right = 0
    words_right = np.zeros(3)
    with torch.no_grad():
        for img, regs in data:
            x = torch.from_numpy(normalise(img))[None]
            f = model.features(x)
            boxes, _ = proposals(model, f)[0]
            gt = torch.tensor([r[0] for r in regs])
            if len(boxes):
                hit += int((box_iou(gt, boxes).max(1).values >= 0.5).sum())
            total += len(regs)
            rois = torch.cat([torch.zeros(len(gt), 1), gt], 1)
            for toks, (_, words) in zip(greedy(model, model.region_codes(f, rois)), regs):
                want = [WORDS.index(w) for w in words]
                right += int(toks == want + [2])
                words_right += [len(toks) > k and toks[k] == want[k] for k in range(3)]
    model.train()
    return hit / total, right / total, (words_right / total).tolist()


def pretrain(model, train, rng, steps, batch):
    """The paper starts from an ImageNet-trained VGG-16; this small trunk starts from
    region classification instead: the trunk and the recognition network learn to
    name each ground-truth region's size, colour and shape (three linear heads, then
    discarded). Without it, training the FCLN from scratch learned sizes and shapes
    but not colours (held-out colour words 0.45, a linear probe of the region codes
    0.37): the proposal losses, first to fall, leave features that do not tell
    colours apart."""
    heads = nn.ModuleList([nn.Linear(model.refine.in_features, len(v)) for v in (SIZES, COLOURS, SHAPES)])
    opt = torch.optim.Adam(list(model.parameters()) + list(heads.parameters()), lr=2e-3)
    names = [list(SIZES), list(COLOURS), SHAPES]
    for step in range(steps):
        idx = rng.integers(0, len(train), batch)
        x = torch.from_numpy(np.stack([normalise(train[i][0]) for i in idx]))
        rois, labels = [], []
        for b, i in enumerate(idx):
            for box, words in train[i][1]:
                jitter = rng.normal(0, 2, 4)
                rois.append([b, *(np.asarray(box) + jitter)])
                labels.append([names[k].index(words[k]) for k in range(3)])
        code = model.region_codes(model.features(x), torch.tensor(rois, dtype=torch.float32))
        y = torch.tensor(labels)
        loss = sum(F.cross_entropy(h(code), y[:, k]) for k, h in enumerate(heads))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"pretrain {step}: loss {loss.item():.3f}", file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "assets", "models", "densecap"))
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--pretrain-steps", type=int, default=400)
    ap.add_argument("--caption-weight", type=float, default=1.0)
    ap.add_argument("--eval-every", type=int, default=1000)
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    train, held_out = dataset(2000, 0), dataset(200, 1)
    model = DenseCap()
    pretrain(model, train, rng, a.pretrain_steps, a.batch)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, a.steps)
    for step in range(a.steps):
        idx = rng.integers(0, len(train), a.batch)
        x = torch.from_numpy(np.stack([normalise(train[i][0]) for i in idx]))
        loss, l_cap = losses(model, x, [train[i][1] for i in idx], rng)
        loss = loss + (a.caption_weight - 1) * l_cap
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0 or step == a.steps - 1:
            print(f"step {step}: loss {loss.item():.3f} (caption {l_cap.item():.3f})", file=sys.stderr, flush=True)
        if step % a.eval_every == a.eval_every - 1:
            print("held-out (first 50):", evaluate(model, held_out[:50]), file=sys.stderr, flush=True)
    recall, acc, per_word = evaluate(model, held_out)
    print(json.dumps({"proposal_recall@0.5": recall, "caption_accuracy": acc, "word_accuracy": per_word}))
    os.makedirs(a.out, exist_ok=True)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(a.out, "densecap.safetensors"))
    with open(os.path.join(a.out, "vocab.txt"), "w") as fh:
        fh.write("\n".join(WORDS) + "\n")
    with open(os.path.join(a.out, "metrics.json"), "w") as fh:
        json.dump({"pretrain_steps": a.pretrain_steps, "steps": a.steps, "proposal_recall@0.5": recall, "caption_accuracy": acc, "word_accuracy": per_word}, fh, indent=1)
        fh.write("\n")


if __name__ == "__main__":
    main()
