"""The bundled annotated set of `attrib eval` (assets/eval): real photos with boxes
drawn by hand, imgaug's quokka with its own box, and a composite holding two objects of
different ImageNet classes (a cat and a cup of coffee), whose boxes follow exactly from
the hand boxes of its parts.

Run once from the repository root: python tools/reference/eval_set.py
It needs Pillow. The quokka photo comes from the PyPI package imgaug (MIT):
    pip download --no-deps imgaug==0.4.0 && unzip -o imgaug-0.4.0-*.whl 'imgaug/quokka*'
    cp imgaug/quokka.jpg assets/eval/quokka.jpg
(its box, from imgaug/quokka_annotations.json: x1=148, y1=50, x2=550, y2=642).
"""
import json
import os

from PIL import Image

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
ASSETS = os.path.join(ROOT, "assets")
OUT = os.path.join(ASSETS, "eval")

# Hand boxes, 0-based inclusive pixel corners (x0, y0, x1, y1).
CAT = (0, 0, 395, 299)  # chelsea.png, 451x300: the cat, to where the background starts
CUP = (172, 18, 410, 306)  # coffee.png, 600x400: the cup with its handle and the coffee
QUOKKA = (148, 50, 550, 642)  # quokka.jpg, 960x643: imgaug's box, clipped to the image

# The composite: chelsea's columns 50..349 beside coffee's square 100..479 x 0..379
# scaled to 300x300.
CAT_CROP = (50, 0, 350, 300)
CUP_CROP = (100, 0, 480, 380)
SIDE = 300


def composite():
    cat = Image.open(os.path.join(ASSETS, "chelsea.png")).convert("RGB").crop(CAT_CROP)
    cup = Image.open(os.path.join(ASSETS, "coffee.png")).convert("RGB").crop(CUP_CROP)
    cup = cup.resize((SIDE, SIDE), Image.LANCZOS)
    img = Image.new("RGB", (2 * SIDE, SIDE))
    img.paste(cat, (0, 0))
    img.paste(cup, (SIDE, 0))
    img.save(os.path.join(OUT, "cat-and-coffee.jpg"), quality=92)
    # The cat fills the left half; the cup's box scales with its crop.
    cat_box = (0, 0, SIDE - 1, SIDE - 1)
    s = SIDE / (CUP_CROP[2] - CUP_CROP[0])
    x0, y0, x1, y1 = CUP
    cup_box = (
        SIDE + round((x0 - CUP_CROP[0]) * s),
        round((y0 - CUP_CROP[1]) * s),
        SIDE + round((x1 - CUP_CROP[0]) * s),
        round((y1 - CUP_CROP[1]) * s),
    )
    return cat_box, cup_box


def voc(name, file, size, objects):
    w, h = size
    lines = [
        "<annotation>",
        "  <folder>assets</folder>",
        f"  <filename>{file}</filename>",
        f"  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>",
    ]
    for label, (x0, y0, x1, y1) in objects:
        # VOC's corners are 1-based.
        lines += [
            "  <object>",
            f"    <name>{label}</name>",
            "    <difficult>0</difficult>",
            f"    <bndbox><xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin>"
            f"<xmax>{x1 + 1}</xmax><ymax>{y1 + 1}</ymax></bndbox>",
            "  </object>",
        ]
    lines.append("</annotation>")
    with open(os.path.join(OUT, "annotations", name + ".xml"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    os.makedirs(os.path.join(OUT, "annotations"), exist_ok=True)
    cat_box, cup_box = composite()
    voc("chelsea", "chelsea.png", (451, 300), [("cat", CAT)])
    voc("coffee", "coffee.png", (600, 400), [("coffee", CUP)])
    voc("quokka", "eval/quokka.jpg", (960, 643), [("quokka", QUOKKA)])
    voc("cat-and-coffee", "eval/cat-and-coffee.jpg", (2 * SIDE, SIDE),
        [("cat", cat_box), ("coffee", cup_box)])
    # ImageNet has no quokka; its nearest class is the wallaby, a close relative.
    classes = {
        "cat": [281, 282, 283, 284, 285],
        "coffee": [967, 968],
        "quokka": [104],
    }
    with open(os.path.join(OUT, "classes.json"), "w") as f:
        json.dump(classes, f, indent=1)
        f.write("\n")
    print("cat-and-coffee boxes:", cat_box, cup_box)


if __name__ == "__main__":
    main()
