"""Writes the fixtures for the edges of attrib's "matches" claims and for its file
readers. Run once, in the same virtualenv as generate.py (see README.md):

    python tools/reference/edge_cases.py

- fixtures/reference/tiny_vgg.occlusion-*.npy: Captum's Occlusion where the stride
  does not tile the input (the last window is cropped), with a window spanning a
  whole axis and a stride larger than it, and a non-zero baseline;
- fixtures/reference/tiny_vgg.grad-cam-input.npy: Captum's LayerGradCam at the
  network input (attribute_to_layer_input=True on the first conv);
- fixtures/reference/resnet18.grad-cam-avgpool.npy: LayerGradCam at a 1x1 layer;
- fixtures/formats/expanded_{zip,legacy}.pth: torch.save of an expanded (stride-0)
  view of 2^33 elements over a one-element storage;
- fixtures/formats/<arch>.safetensors-header: the first 8 + n bytes (length and JSON
  header) of safetensors.torch.save_file of each zoo architecture's state dict, as
  Python writes them; the tests append data of the declared sizes.
"""

import os
import sys

import numpy as np
import torch
import torchvision
from captum.attr import LayerGradCam, Occlusion
from safetensors.torch import save_file
from safetensors.torch import load_file  # noqa: F401  (the same package reads them back)

sys.path.insert(0, os.path.dirname(__file__))
from generate import ROOT, TinyVgg, no_inplace, save  # noqa: E402
from synthetic import load_synthetic  # noqa: E402

FORMATS = os.path.join(ROOT, "fixtures", "formats")

# (name, window (h, w), stride (h, w), baseline) on the 32x32 tiny_vgg input.
OCCLUSION_CASES = [
    ("7x5-s3x4", (7, 5), (3, 4), 0.0),
    ("32x6-s40x5-b0.5", (32, 6), (40, 5), 0.5),
    ("3x3-s2", (3, 3), (2, 2), 0.0),
]


def tiny_vgg():
    from safetensors.torch import load_file as load

    model = TinyVgg().eval()
    model.load_state_dict(load(os.path.join(ROOT, "fixtures", "reference", "tiny_vgg.safetensors")))
    x = torch.from_numpy(np.load(os.path.join(ROOT, "fixtures", "reference", "tiny_vgg.input.npy")))
    return model, x


def occlusion_fixtures():
    model, x = tiny_vgg()
    target = [1, 4]
    for name, (wh, ww), (sh, sw), base in OCCLUSION_CASES:
        occ = Occlusion(model).attribute(
            x,
            target=target,
            sliding_window_shapes=(3, wh, ww),
            strides=(3, sh, sw),
            baselines=base,
        )
        save("tiny_vgg.occlusion-" + name, occ[:, 0])


def grad_cam_edges():
    model, x = tiny_vgg()
    gc = LayerGradCam(model, model.features[0]).attribute(
        x, target=[1, 4], relu_attributions=True, attribute_to_layer_input=True
    )
    save("tiny_vgg.grad-cam-input", gc.detach()[:, 0])
    r18 = no_inplace(torchvision.models.resnet18(num_classes=10))
    load_synthetic(r18, seed=0)
    r18.eval()
    xr = torch.from_numpy(np.load(os.path.join(ROOT, "fixtures", "reference", "resnet18.input.npy")))
    gc = LayerGradCam(r18, r18.avgpool).attribute(xr, target=[3, 7], relu_attributions=True)
    save("resnet18.grad-cam-avgpool", gc.detach()[:, 0])


def format_fixtures():
    os.makedirs(FORMATS, exist_ok=True)
    w = {"w": torch.zeros(1).expand(2**33)}
    torch.save(w, os.path.join(FORMATS, "expanded_zip.pth"))
    torch.save(w, os.path.join(FORMATS, "expanded_legacy.pth"), _use_new_zipfile_serialization=False)
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
    tmp = os.path.join(FORMATS, "tmp.safetensors")
    for name, m in models.items():
        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, tmp)
        with open(tmp, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            f.seek(0)
            head = f.read(8 + n)
        with open(os.path.join(FORMATS, name + ".safetensors-header"), "wb") as f:
            f.write(head)
        print(name, "header", n, "bytes, first byte", hex(head[0]))
    os.remove(tmp)


def main():
    torch.set_num_threads(2)
    occlusion_fixtures()
    grad_cam_edges()
    format_fixtures()


if __name__ == "__main__":
    main()
