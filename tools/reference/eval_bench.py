"""Images per second of Grad-CAM + pointing game + deletion on ResNet-50 at 224: attrib
eval against TorchRay (its `grad_cam` and `PointingGame`) with RISE's deletion code, on
the same images, in the same run, on the same cores.

    pip download --no-deps torchray==1.0.0.2 -d /tmp/w && tar xzf /tmp/w/torchray-1.0.0.2.tar.gz -C /tmp/w
    cargo build --release -p attrib-cli
    python tools/reference/eval_bench.py --torchray /tmp/w/torchray-1.0.0.2 --threads 2

Both sides use torchvision's ResNet-50 with the same (seeded, untrained) weights: the
work per image does not depend on what the weights learned. The images are the
bundled annotated set (assets/eval), `--repeat` times. Work per image and label, on
both sides: one forward for the prediction, Grad-CAM at layer4 for the label's class,
the pointing game (map upsampled to the image, 15 px), deletion with RISE's step of
224 pixels (225 forwards) to zeros.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
sys.path.insert(0, os.path.dirname(__file__))
from eval_fixtures import CausalMetric, auc  # noqa: E402


def annotations():
    """The bundled set: (file, width, height, {label: [boxes]})."""
    folder = os.path.join(ROOT, "assets", "eval", "annotations")
    out = []
    for name in sorted(os.listdir(folder)):
        root = ET.parse(os.path.join(folder, name)).getroot()
        size = root.find("size")
        boxes = {}
        for o in root.findall("object"):
            b = o.find("bndbox")
            box = [int(b.find(k).text) - 1 for k in ("xmin", "ymin", "xmax", "ymax")]
            boxes.setdefault(o.find("name").text, []).append(box)
        out.append((root.find("filename").text, int(size.find("width").text), int(size.find("height").text), boxes))
    return out


def preprocess(path, size=224):
    img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    x = torch.from_numpy(img).permute(2, 0, 1).unsqueeze(0)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    return (x - MEAN) / STD


def python_side(model, images, classes, torchray):
    sys.path.insert(0, torchray)
    from torchray.attribution.grad_cam import grad_cam
    from torchray.benchmark.pointing_game import PointingGame

    game = PointingGame(1000, 15)
    deletion = CausalMetric(model, "del", 224, torch.zeros_like)
    aucs = []
    start = time.perf_counter()
    for file, w, h, boxes in images:
        x = preprocess(os.path.join(ROOT, "assets", file))
        with torch.no_grad():
            probs = torch.softmax(model(x), 1)[0]
        for label, bs in sorted(boxes.items()):
            c = max(classes[label], key=lambda k: float(probs[k]))
            sal = grad_cam(model, x, c, saliency_layer="layer4")
            up = F.interpolate(sal, size=(h, w), mode="bilinear", align_corners=False)[0, 0]
            y, xx = divmod(int(up.argmax()), w)
            mask = torch.zeros((h, w), dtype=torch.bool)
            for x0, y0, x1, y1 in bs:
                mask[y0 : y1 + 1, x0 : x1 + 1] = True
            game.aggregate(game.evaluate(mask, (xx, y)), c)
            small = F.interpolate(sal, size=(224, 224), mode="bilinear", align_corners=False)[0, 0]
            with torch.no_grad():
                aucs.append(auc(deletion.single_run(x.clone(), small.detach().numpy(), c)))
    return time.perf_counter() - start, float(np.mean(aucs))


def attrib_side(weights, images_repeat, threads, binary):
    with tempfile.TemporaryDirectory() as tmp:
        # The annotations repeated: copies of the XML files under new names.
        ann = os.path.join(tmp, "ann")
        os.makedirs(ann)
        folder = os.path.join(ROOT, "assets", "eval", "annotations")
        for r in range(images_repeat):
            for name in sorted(os.listdir(folder)):
                text = open(os.path.join(folder, name)).read()
                # Each copy names its image through its own link, so records do not collide.
                file = ET.fromstring(text).find("filename").text
                link = os.path.join(tmp, "data", f"r{r}", file)
                os.makedirs(os.path.dirname(link), exist_ok=True)
                if not os.path.exists(link):
                    os.symlink(os.path.join(ROOT, "assets", file), link)
                text = text.replace(f"<filename>{file}</filename>", f"<filename>r{r}/{file}</filename>")
                open(os.path.join(ann, f"r{r}-{name}"), "w").write(text)
        cmd = [
            binary, "eval", "--arch", "resnet50", "--weights", weights,
            "--data", os.path.join(tmp, "data"), "--annotations", ann,
            "--classes", os.path.join(ROOT, "assets", "eval", "classes.json"),
            "--method", "grad-cam", "--metric", "pointing,deletion",
            "--curve-steps", "224", "--examples", "0", "--quiet",
            "--out", os.path.join(tmp, "out"),
        ]
        env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        elapsed = time.perf_counter() - start
        rows = [json.loads(l) for l in open(os.path.join(tmp, "out", "records.jsonl"))]
        aucs = [l["deletion"]["auc"] for r in rows for l in r["labels"]]
        return elapsed, float(np.mean(aucs))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--torchray", required=True, help="the unpacked TorchRay sdist")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "attrib"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval()
    for m in model.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False
    classes = json.load(open(os.path.join(ROOT, "assets", "eval", "classes.json")))
    classes = {k: v if isinstance(v, list) else [v] for k, v in classes.items()}
    images = annotations() * args.repeat
    with tempfile.TemporaryDirectory() as tmp:
        from safetensors.torch import save_file

        weights = os.path.join(tmp, "r50.safetensors")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
        t_attrib, auc_attrib = attrib_side(weights, args.repeat, args.threads, args.binary)
    t_py, auc_py = python_side(model, images, classes, args.torchray)
    n = len(images)
    print(json.dumps({
        "images": n,
        "threads": args.threads,
        "attrib_images_per_s": n / t_attrib,
        "torchray_rise_images_per_s": n / t_py,
        "speedup": t_py / t_attrib,
        "attrib_s": t_attrib,
        "torchray_rise_s": t_py,
        "mean_deletion_auc": {"attrib": auc_attrib, "torchray_rise": auc_py},
    }, indent=1))


if __name__ == "__main__":
    main()
