"""Writes the parity fixtures of the baseline methods (issue 12): pytorch-grad-cam's
CAM variants and Captum's integrated-gradients and noise-tunnel family, on the same
two networks and inputs as generate.py (synthetic ResNet-18 at layer4, the tiny VGG
at features[7]; batch 2, per-item targets).

Run after generate.py (it reads the tiny VGG's weights and both inputs from
fixtures/reference/), in the same virtualenv:

    python tools/reference/baselines.py

pytorch-grad-cam's CAM classes return min-max normalised maps resized to the input;
the issue asks for its raw maps (`get_cam_image` with the ReLU it applies). Its
`scale_cam_image` is therefore replaced by the identity while the raw maps are
taken (the single-layer path calls nothing else after the ReLU), and restored for
the multi-layer fixture, which is its normal, normalised output.
"""

import copy
import os
import sys

import numpy as np
import torch
import torchvision
from captum.attr import (
    GuidedGradCam,
    InputXGradient,
    IntegratedGradients,
    LayerGradCam,
    NoiseTunnel,
    Saliency,
)
from pytorch_grad_cam import (
    AblationCAM,
    EigenCAM,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from pytorch_grad_cam import base_cam
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import (
    get_2d_projection,
    get_2d_projection_with_sign_correction,
)
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(__file__))
from generate import OUT, TinyVgg, no_inplace, save  # noqa: E402
from synthetic import load_synthetic  # noqa: E402

CAMS = {
    "grad-cam-plus-plus": GradCAMPlusPlus,
    "xgrad-cam": XGradCAM,
    "layer-cam": LayerCAM,
    "hires-cam": HiResCAM,
    "score-cam": ScoreCAM,
    "ablation-cam": AblationCAM,
    "eigen-cam": EigenCAM,
    # The method examples/custom-method adds outside attrib-methods.
    "grad-cam-elementwise": GradCAMElementWise,
}


def load(name):
    return torch.from_numpy(np.load(os.path.join(OUT, name + ".npy")))


def raw_cams(model, layer, x, target, prefix):
    """Every pytorch-grad-cam CAM's raw map at `layer`, (N, h, w)."""
    targets = [ClassifierOutputTarget(t) for t in target]
    original = base_cam.scale_cam_image
    base_cam.scale_cam_image = lambda cam, target_size=None: cam
    try:
        for name, cls in CAMS.items():
            cam = cls(model=model, target_layers=[layer])
            out = cam(input_tensor=x, targets=targets)
            save(prefix + "." + name, out)
    finally:
        base_cam.scale_cam_image = original
    # Eigen-CAM's sign is arbitrary: the raw projection, and the one whose sign is
    # fixed by pytorch-grad-cam's own rule (flip when |min| > |max|), ReLU'd.
    acts = {}
    handle = layer.register_forward_hook(lambda m, i, o: acts.setdefault("a", o.detach()))
    with torch.no_grad():
        model(x)
    handle.remove()
    a = acts["a"].numpy()
    raw = get_2d_projection(a)
    pgc = np.load(os.path.join(OUT, prefix + ".eigen-cam.npy"))
    assert np.allclose(pgc, np.maximum(raw, 0)), "EigenCAM is ReLU(get_2d_projection)"
    save(prefix + ".eigen-cam-projection", raw)
    save(prefix + ".eigen-cam", np.maximum(get_2d_projection_with_sign_correction(a), 0))


def multi_layer(model, layers, x, target, prefix):
    """pytorch-grad-cam's GradCAM over a list of target layers, its normal output."""
    cam = GradCAM(model=model, target_layers=layers)
    out = cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in target])
    save(prefix + ".multi-layer-grad-cam", out)


def gradients(model, layer, x, target, prefix, riemann=False, ig_in_f64=False):
    """Captum's gradient family. `ig_in_f64`: integrated gradients in float64 (see
    resnet18())."""
    ig = IntegratedGradients(model)
    if ig_in_f64:
        ig64 = IntegratedGradients(copy.deepcopy(model).double())
        a = ig64.attribute(x.detach().double(), target=target, n_steps=50)
    else:
        a = ig.attribute(x, target=target, n_steps=50)
    save(prefix + ".integrated-gradients", a.detach())
    if riemann:
        for method in ["riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"]:
            a = ig.attribute(x, target=target, n_steps=7, method=method, baselines=0.5)
            save(prefix + ".integrated-gradients-" + method.replace("_", "-"), a.detach())
    save(prefix + ".input-x-gradient", InputXGradient(model).attribute(x, target=target).detach())
    ggc = GuidedGradCam(model, layer).attribute(x, target=target, interpolate_mode="nearest")
    save(prefix + ".guided-grad-cam-nearest", ggc.detach())
    per_channel = LayerGradCam(model, layer).attribute(
        x, target=target, attr_dim_summation=False, relu_attributions=False
    )
    save(prefix + ".grad-cam-per-channel", per_channel.detach())


def noise_tunnel(model, x, target, prefix, samples=4, std=0.2, seed=12):
    """Captum's NoiseTunnel, its noise drawn again from the same seed and saved so
    attrib can add exactly the same noise."""
    n = x.shape[0]
    torch.manual_seed(seed)
    noise = torch.normal(0, torch.tensor(std).repeat((n * samples,) + tuple(x.shape[1:])))
    save(prefix + ".noise", noise)
    cases = [
        ("smoothgrad", Saliency(model), {"abs": False}, "gradient"),
        ("smoothgrad_sq", InputXGradient(model), {}, "input-x-gradient"),
        ("vargrad", Saliency(model), {"abs": False}, "gradient"),
    ]
    for nt_type, inner, extra, inner_name in cases:
        torch.manual_seed(seed)
        a = NoiseTunnel(inner).attribute(
            x, nt_type=nt_type, nt_samples=samples, stdevs=std, target=target, **extra
        )
        save(prefix + "." + nt_type.replace("_", "-") + "." + inner_name, a.detach())


def resnet18():
    model = no_inplace(torchvision.models.resnet18(num_classes=10))
    load_synthetic(model, seed=0)
    model.eval()
    x = load("resnet18.input")
    target = [3, 7]
    raw_cams(model, model.layer4, x, target, "resnet18")
    multi_layer(model, [model.layer3, model.layer4], x, target, "resnet18")
    xg = x.clone().requires_grad_(True)
    # One of the 50 points on ResNet-18's path lies within float32 rounding of a
    # ReLU's kink: float32 implementations disagree there by which side they land
    # on (1e-4 of the map), so its reference is taken in float64, where the
    # gradient at every point is unambiguous.
    gradients(model, model.layer4, xg, target, "resnet18", ig_in_f64=True)


def tiny_vgg():
    model = TinyVgg().eval()
    model.load_state_dict(load_file(os.path.join(OUT, "tiny_vgg.safetensors")))
    x = load("tiny_vgg.input")
    target = [1, 4]
    raw_cams(model, model.features[7], x, target, "tiny_vgg")
    multi_layer(model, [model.features[4], model.features[7]], x, target, "tiny_vgg")
    xg = x.clone().requires_grad_(True)
    gradients(model, model.features[7], xg, target, "tiny_vgg", riemann=True)
    noise_tunnel(model, x, target, "tiny_vgg")


def main():
    torch.set_num_threads(2)
    resnet18()
    tiny_vgg()


if __name__ == "__main__":
    main()
