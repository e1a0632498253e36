"""PyTorch peer timings, the counterpart of `attrib bench`: same architecture (random
weights), input size, batch and thread count, on the CPU or a CUDA GPU; prints one
JSON line per method (`--method` takes a comma-separated list, so that one process,
one import of torch and one CUDA start-up serve them all)."""

import argparse
import json
import resource
import statistics
import sys
import time

import torch
import torchvision


def model_for(arch):
    if arch == "efficientnet-lite0":
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name("efficientnet-lite0")
        return net, net._bn1  # the head activation is applied functionally after _bn1
    net = getattr(torchvision.models, arch)()
    for m in net.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False  # Captum's hooks refuse in-place ReLUs
    layer = {"resnet18": "layer4", "resnet34": "layer4", "resnet50": "layer4"}.get(arch)
    return net, getattr(net, layer) if layer else net.features[29]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", required=True)
    ap.add_argument("--peer", required=True, choices=["captum", "pytorch-grad-cam"])
    ap.add_argument("--method", required=True)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    net, layer = model_for(a.arch)
    net.eval().to(dev)
    x = (torch.rand(a.batch, 3, a.size, a.size) * 2 - 1).to(dev)
    with torch.no_grad():
        target = net(x).argmax(1).tolist()
    for method in a.method.split(","):
        time_one(a, method, net, layer, x, target, dev)


def time_one(a, method, net, layer, x, target, dev):
    cuda = dev.type == "cuda"

    if a.peer == "captum":
        from captum.attr import (
            Deconvolution,
            GuidedBackprop,
            GuidedGradCam,
            InputXGradient,
            IntegratedGradients,
            LayerGradCam,
            Saliency,
        )

        xg = x.clone().requires_grad_(True)
        run = {
            "grad-cam": lambda: LayerGradCam(net, layer).attribute(x, target=target, relu_attributions=True),
            "saliency": lambda: Saliency(net).attribute(x, target=target, abs=True).amax(1),
            "guided-backprop": lambda: GuidedBackprop(net).attribute(x, target=target),
            "deconvnet": lambda: Deconvolution(net).attribute(x, target=target),
            "guided-grad-cam": lambda: GuidedGradCam(net, layer).attribute(x, target=target, interpolate_mode="bilinear"),
            # Captum's defaults (50 Gauss-Legendre steps), 64 path points per pass
            # as attrib's IntegratedGradients runs them.
            "integrated-gradients": lambda: IntegratedGradients(net).attribute(
                x, target=target, n_steps=50, internal_batch_size=64
            ),
            "input-x-gradient": lambda: InputXGradient(net).attribute(xg, target=target),
        }[method]
    else:
        import pytorch_grad_cam as pgc
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cls = {
            "grad-cam": pgc.GradCAM,
            "grad-cam-plus-plus": pgc.GradCAMPlusPlus,
            "xgrad-cam": pgc.XGradCAM,
            "layer-cam": pgc.LayerCAM,
            "hires-cam": pgc.HiResCAM,
            "score-cam": pgc.ScoreCAM,
            "ablation-cam": pgc.AblationCAM,
            "eigen-cam": pgc.EigenCAM,
        }[method]
        cam = cls(model=net, target_layers=[layer])
        # Score-CAM's default of 16 masked copies per pass; attrib's is 32 (as is
        # Ablation-CAM's in both).
        if method == "score-cam":
            cam.batch_size = 32
        targets = [ClassifierOutputTarget(t) for t in target]
        run = lambda: cam(input_tensor=x, targets=targets)  # noqa: E731

    for _ in range(a.warmup):
        run()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(a.iters):
        t = time.perf_counter()
        run()
        if cuda:
            torch.cuda.synchronize()  # the work, not just its launch
        times.append((time.perf_counter() - t) * 1e3)
    print(json.dumps({
        "arch": a.arch, "peer": a.peer, "method": method, "batch": a.batch, "size": a.size,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "threads": torch.get_num_threads(), "median_ms": round(statistics.median(times), 2),
        "min_ms": round(min(times), 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "gpu_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
        "stand_ins": getattr(sys.modules.get("sitecustomize"), "STUBBED", []),
    }), flush=True)


if __name__ == "__main__":
    main()
