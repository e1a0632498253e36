"""Trains the small Show-and-Tell captioner attrib's demo and pointing-game check use,
on synthetic scenes with known object positions. CPU, a few minutes, fixed seeds:

    python tools/reference/train_captioner.py

Data recipe: 96x96 images of a plain light background (a random colour) with one
coloured shape (circle, square, triangle; red, green, blue or yellow, jittered;
22-34 px) and one or two soft grey blobs, none overlapping, captioned "a <colour>
<shape>" after the coloured shape. The blobs are never named and have neither its
colours nor sharp outlines: the words' evidence is one object, and pointing at it
among the blobs is a test. (Grey distractors of the named shapes, or crosses and bars,
were tried: the shape words' evidence is the shapes' outlines whatever their colour,
and Grad-CAM faithfully points at the distractors too.) (Captions naming two objects in a fixed
order were tried first: with the globally pooled feature of the tutorial's encoder,
the second object's words then lean on the first object as well, and word-level
Grad-CAM points at it; it is the model, faithfully explained, not a useful check.)
8000 training scenes (seed 1), 100 held-out scenes (seed 2) written with their boxes
to fixtures/pointing/captions/ for the pointing game.

Model (tools/reference/models.py): EncoderCNN with a conv trunk (16, 32, 64, 64
channels, max pools after the first two: a 24x24 map), embed 64; DecoderRNN, hidden
128, 1 layer; Adam, label smoothing 0.1. Inputs normalised with ImageNet's mean and
std, as attrib does.
Writes assets/models/captioner/{encoder.pth, decoder.pth, vocab.txt}.
"""

import json
import os
import re
import sys

import numpy as np
import torch
import torch.nn as nn
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, os.path.dirname(__file__))
from models import DecoderRNN, EncoderCNN  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "assets", "models", "captioner")
HELD = os.path.join(ROOT, "fixtures", "pointing", "captions")
SIZE = 96
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (50, 70, 220), "yellow": (230, 200, 30)}
SHAPES = ["circle", "square", "triangle"]
# The grey distractors: soft blobs, never named, with neither the colours nor the
# sharp outlines of the named shapes, so that no word has evidence outside its
# object.
DISTRACTORS = ["blob"]
VOCAB = ["<pad>", "<start>", "<end>", "<unk>", "a"] + list(COLOURS) + SHAPES
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def tokenize(text):
    """attrib's tokenisation: lower case, words and punctuation marks."""
    return re.findall(r"[a-z0-9']+|[^\sa-z0-9']", text.lower())


def draw(d, shape, box, colour):
    x0, y0, x1, y1 = box
    if shape == "circle":
        d.ellipse(box, fill=colour)
    elif shape == "square":
        d.rectangle((x0, y0, x1 - 1, y1 - 1), fill=colour)
    else:
        d.polygon([((x0 + x1) / 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=colour)


def scene(rng):
    """One coloured shape, the one the caption names, and one or two grey shapes it
    does not: a word's evidence is the named object alone, and the distractors make
    pointing at it a test."""
    bg = rng.integers(190, 250, size=3)
    img = Image.new("RGB", (SIZE, SIZE), tuple(int(v) for v in bg))
    d = ImageDraw.Draw(img)
    objects = []
    want = 1 + int(rng.integers(1, 3))
    while len(objects) < want:
        s = int(rng.integers(22, 35))
        x, y = int(rng.integers(0, SIZE - s)), int(rng.integers(0, SIZE - s))
        box = (x, y, x + s, y + s)
        if any(not (box[2] + 2 <= o["box"][0] or o["box"][2] + 2 <= box[0]
                    or box[3] + 2 <= o["box"][1] or o["box"][3] + 2 <= box[1]) for o in objects):
            continue
        if not objects:
            shape = SHAPES[rng.integers(len(SHAPES))]
            colour = list(COLOURS)[rng.integers(len(COLOURS))]
            jitter = rng.integers(-15, 16, size=3)
            fill = tuple(int(v) for v in np.clip(np.array(COLOURS[colour]) + jitter, 0, 255))
        else:
            shape = DISTRACTORS[rng.integers(len(DISTRACTORS))]
            colour = "grey"
            g = int(rng.integers(90, 150))
            fill = (g, g, g)
        if shape == "blob":
            blob = Image.new("L", (SIZE, SIZE), 0)
            ImageDraw.Draw(blob).ellipse(box, fill=255)
            blob = blob.filter(ImageFilter.GaussianBlur(s / 5))
            img.paste(Image.new("RGB", (SIZE, SIZE), fill), (0, 0), blob)
        else:
            draw(d, shape, box, fill)
        objects.append({"shape": shape, "colour": colour, "box": list(box)})
    caption = f"a {objects[0]['colour']} {objects[0]['shape']}"
    return img, objects, caption


def to_input(img):
    a = (np.asarray(img, dtype=np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(a.transpose(2, 0, 1).copy())


def encode(caption):
    idx = {w: i for i, w in enumerate(VOCAB)}
    return [1] + [idx.get(w, 3) for w in tokenize(caption)] + [2]


def main():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    rng = np.random.default_rng(1)
    n_train = 8000
    xs, caps = [], []
    for _ in range(n_train):
        img, _, cap = scene(rng)
        xs.append(to_input(img))
        caps.append(encode(cap))
    x = torch.stack(xs)
    c = torch.tensor(caps)
    enc = EncoderCNN(64, "cnn", channels=(16, 32, 64, 64), pools=(True, True, False, False))
    dec = DecoderRNN(64, 128, len(VOCAB), 1)
    params = list(enc.parameters()) + list(dec.parameters())
    opt = torch.optim.Adam(params, lr=2e-3)
    # Label smoothing keeps the word probabilities off 1, where the gradient of a
    # log-probability (what Grad-CAM explains) would vanish.
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    lengths = [c.size(1)] * 64
    for epoch in range(10):
        perm = torch.randperm(n_train)
        total = 0.0
        enc.train()
        dec.train()
        for i in range(0, n_train - 63, 64):
            b = perm[i:i + 64]
            feats = enc(x[b])
            out = dec(feats, c[b], lengths)
            targets = torch.nn.utils.rnn.pack_padded_sequence(c[b], lengths, batch_first=True)[0]
            loss = loss_fn(out, targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        print(f"epoch {epoch}: loss {total / (n_train // 64):.4f}", flush=True)
    enc.eval()
    dec.eval()
    # The held-out set, and greedy captions on it.
    os.makedirs(HELD, exist_ok=True)
    rng = np.random.default_rng(2)
    held, exact = [], 0
    for i in range(100):
        img, objects, cap = scene(rng)
        name = f"scene{i:03d}.png"
        img.save(os.path.join(HELD, name))
        with torch.no_grad():
            ids = dec.sample(enc(to_input(img).unsqueeze(0)))[0].tolist()
        words = []
        for t in ids[1:]:
            if t == 2:
                break
            words.append(VOCAB[t])
        exact += " ".join(words) == cap
        held.append({"image": name, "caption": cap, "objects": objects, "greedy": " ".join(words)})
    with open(os.path.join(HELD, "scenes.json"), "w") as f:
        json.dump(held, f, indent=1)
        f.write("\n")
    print(f"held-out greedy captions exactly right: {exact}/100")
    os.makedirs(OUT, exist_ok=True)
    torch.save(enc.state_dict(), os.path.join(OUT, "encoder.pth"))
    torch.save(dec.state_dict(), os.path.join(OUT, "decoder.pth"))
    with open(os.path.join(OUT, "vocab.txt"), "w") as f:
        f.write("\n".join(VOCAB) + "\n")


if __name__ == "__main__":
    main()
