"""Parity fixtures for the CNN+LSTM models (fixtures/reference/sat.*, vqa.*, lstm.*),
all with attrib's synthetic weights (synthetic.py), so no weights are committed:

    python tools/reference/cnn_lstm_fixtures.py

- lstm.*: a 2-layer nn.LSTM(5, 7, batch_first=True) on (2, 4, 5): outputs, h_n, c_n.
- sat.*: Show and Tell (ResNet-18 trunk, embed 32, hidden 24, 2 layers, 15 words) on
  two 64x64 inputs with captions of 6 and 4 tokens: the teacher-forced token
  log-probabilities (NaN past the shorter caption's end); for word 1 of each caption
  and for each whole caption (the sum of its log-probabilities): the input gradient,
  Grad-CAM at resnet.7 (Captum LayerGradCam, relu_attributions=True) and Guided
  Grad-CAM (Captum, bilinear).
- vqa.*: VqaNet (conv trunk 16-32-64, 2-layer LSTM) on two 64x64 inputs with
  questions of 5 and 3 tokens: the answer scores, and for answers 3 and 6 the input
  gradient, Grad-CAM at the trunk's last ReLU and Guided Grad-CAM.
"""

import os
import sys

import numpy as np
import torch
import torch.nn as nn
from captum.attr import GuidedGradCam, LayerGradCam

sys.path.insert(0, os.path.dirname(__file__))
from generate import save  # noqa: E402
from models import DecoderRNN, EncoderCNN, VqaNet  # noqa: E402
from synthetic import load_synthetic  # noqa: E402


class Scores(nn.Module):
    """An image-in, scores-out module: what attrib's conditioned models are. The
    modules `fn` uses are registered as children, so that Captum's guided backprop
    finds their ReLUs."""

    def __init__(self, fn, *parts):
        super().__init__()
        self.fn = fn
        self.parts = nn.ModuleList(parts)

    def forward(self, x):
        return self.fn(x)


def lstm_fixture():
    lstm = nn.LSTM(5, 7, 2, batch_first=True)
    load_synthetic(lstm, seed=3)
    rng = np.random.default_rng(11)
    x = torch.from_numpy(rng.uniform(-1, 1, size=(2, 4, 5)).astype(np.float32))
    y, (h, c) = lstm(x)
    save("lstm.input", x)
    save("lstm.output", y.detach())
    save("lstm.h_n", h.detach())
    save("lstm.c_n", c.detach())


def explain(model, layer, x, target, prefix):
    """Gradient, Grad-CAM and Guided Grad-CAM of `model` for `target` (a column of its
    scores per item)."""
    xg = x.clone().requires_grad_(True)
    out = model(xg)
    grad = torch.autograd.grad(out[torch.arange(len(target)), target].sum(), xg)[0]
    save(prefix + ".gradient", grad.detach())
    gc = LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True)
    save(prefix + ".grad-cam", gc.detach()[:, 0])
    ggc = GuidedGradCam(model, layer).attribute(x, target=target, interpolate_mode="bilinear")
    save(prefix + ".guided-grad-cam", ggc.detach())


def show_and_tell_fixture():
    torch.manual_seed(0)
    enc = EncoderCNN(32, "resnet18")
    dec = DecoderRNN(32, 24, 15, 2)
    load_synthetic(enc, seed=0)
    load_synthetic(dec, seed=0)
    enc.eval()
    dec.eval()
    rng = np.random.default_rng(7)
    x = torch.from_numpy(rng.uniform(-1, 1, size=(2, 3, 64, 64)).astype(np.float32))
    save("sat.input", x)
    # <start> = 1, <end> = 2; padded with 0.
    captions = torch.tensor([[1, 4, 7, 9, 5, 2], [1, 12, 6, 2, 0, 0]])
    lengths = [6, 4]

    def scores(img):
        return dec.token_log_probs(enc(img), captions, lengths)[0]

    lp = scores(x).detach()
    save("sat.scores", lp)
    word = Scores(scores, enc, dec)
    explain(word, enc.resnet[7], x, [1, 1], "sat.word1")

    def whole(img):
        lp, valid = dec.token_log_probs(enc(img), captions, lengths)
        return torch.where(valid, lp, torch.zeros_like(lp)).sum(1, keepdim=True)

    explain(Scores(whole, enc, dec), enc.resnet[7], x, [0, 0], "sat.caption")
    with torch.no_grad():
        save("sat.greedy", dec.sample(enc(x)).float())


def vqa_fixture():
    net = VqaNet(vocab=20, answers=9)
    load_synthetic(net, seed=1)
    net.eval()
    rng = np.random.default_rng(9)
    x = torch.from_numpy(rng.uniform(-1, 1, size=(2, 3, 64, 64)).astype(np.float32))
    save("vqa.input", x)
    q = torch.tensor([[4, 8, 3, 15, 11], [7, 2, 19, 0, 0]])
    lengths = [5, 3]

    def scores(img):
        return net(img, q, lengths)

    save("vqa.scores", scores(x).detach())
    relu = net.cnn[len(net.cnn) - 1]
    explain(Scores(scores, net), relu, x, [3, 6], "vqa.answer")


def main():
    torch.set_num_threads(2)
    lstm_fixture()
    show_and_tell_fixture()
    vqa_fixture()


if __name__ == "__main__":
    main()
