"""Trains the small VQA model ("deeper LSTM Q + norm I", tools/reference/models.py)
attrib's demo and pointing-game check use, on easy-vqa (PyPI `easy-vqa`, MIT: 64x64
images of one coloured shape, with questions and answers). CPU, a few minutes, fixed
seed:

    pip install easy-vqa
    python tools/reference/train_vqa.py

Model: conv trunk (16, 32, 64, 64 channels, max pools after the first two: a 16x16
map), embeddings 32, a 2-layer LSTM of 64, common space 128, classifier 128, the 13
answers; Adam (2e-3, divided by 0.3 at epochs 8 and 11), batches of 128, 13 epochs. Inputs normalised with ImageNet's mean and std, as attrib does. Writes
assets/models/vqa/{vqa.pth, questions.txt, answers.txt}, and for the pointing game
100 test questions whose answer names the shape or its colour, with their images and
the shape's box (pixels differing from the background colour), to
fixtures/pointing/vqa/.
"""

import json
import os
import re
import shutil
import sys

import easy_vqa as ev
import numpy as np
import torch
import torch.nn as nn
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
from models import VqaNet  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "assets", "models", "vqa")
HELD = os.path.join(ROOT, "fixtures", "pointing", "vqa")
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def tokenize(text):
    """attrib's tokenisation: lower case, words and punctuation marks."""
    return re.findall(r"[a-z0-9']+|[^\sa-z0-9']", text.lower())


def load_image(path):
    a = (np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(a.transpose(2, 0, 1).copy())


def shape_box(path):
    a = np.asarray(Image.open(path).convert("RGB")).astype(int)
    diff = np.abs(a - a[0, 0]).sum(-1) > 30
    ys, xs = np.nonzero(diff)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def batchify(questions, vocab):
    ids = [[vocab.get(w, 1) for w in tokenize(q)] for q in questions]
    lengths = [len(t) for t in ids]
    t = max(lengths)
    return torch.tensor([q + [0] * (t - len(q)) for q in ids]), lengths


def main():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    answers = ev.get_answers()
    tq, ta, ti = ev.get_train_questions()
    words = sorted({w for q in tq for w in tokenize(q)})
    vocab_list = ["<pad>", "<unk>"] + words
    vocab = {w: i for i, w in enumerate(vocab_list)}
    paths = ev.get_train_image_paths()
    images = {k: load_image(p) for k, p in paths.items()}
    net = VqaNet(len(vocab_list), len(answers), channels=(16, 32, 64, 64),
                 pools=(True, True, False, False))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[8, 11], gamma=0.3)
    loss_fn = nn.CrossEntropyLoss()
    y = torch.tensor([answers.index(a) for a in ta])
    n = len(tq)
    for epoch in range(13):
        net.train()
        perm = torch.randperm(n).tolist()
        total = 0.0
        for i in range(0, n - 127, 128):
            b = perm[i:i + 128]
            q, lengths = batchify([tq[j] for j in b], vocab)
            x = torch.stack([images[ti[j]] for j in b])
            loss = loss_fn(net(x, q, lengths), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        sched.step()
        print(f"epoch {epoch}: loss {total / (n // 128):.4f}", flush=True)
    net.eval()
    sq, sa, si = ev.get_test_questions()
    test_paths = ev.get_test_image_paths()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(sq), 256):
            q, lengths = batchify(sq[i:i + 256], vocab)
            x = torch.stack([load_image(test_paths[k]) for k in si[i:i + 256]])
            pred = net(x, q, lengths).argmax(1)
            correct += sum(answers[p] == a for p, a in zip(pred.tolist(), sa[i:i + 256]))
    print(f"test accuracy: {correct / len(sq):.4f} ({correct}/{len(sq)})")
    os.makedirs(OUT, exist_ok=True)
    torch.save(net.state_dict(), os.path.join(OUT, "vqa.pth"))
    with open(os.path.join(OUT, "questions.txt"), "w") as f:
        f.write("\n".join(vocab_list) + "\n")
    with open(os.path.join(OUT, "answers.txt"), "w") as f:
        f.write("\n".join(answers) + "\n")
    # Held-out pointing set: the first 100 test questions whose answer is a shape
    # or a colour, one per image.
    os.makedirs(HELD, exist_ok=True)
    content = {"circle", "rectangle", "triangle", "red", "green", "blue", "black", "gray",
               "teal", "brown", "yellow"}
    held, seen = [], set()
    for q, a, k in zip(sq, sa, si):
        if a not in content or k in seen:
            continue
        seen.add(k)
        name = f"{k}.png"
        shutil.copy(test_paths[k], os.path.join(HELD, name))
        held.append({"image": name, "question": q, "answer": a, "box": shape_box(test_paths[k])})
        if len(held) == 100:
            break
    with open(os.path.join(HELD, "questions.json"), "w") as f:
        json.dump(held, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
