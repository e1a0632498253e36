"""Stand-ins for modules the PyTorch peers import but do not use on the path timed
here, for a GPU machine that lacks them (it is guaranteed PyTorch only). On
PYTHONPATH, Python imports this file at start-up; it adds an import finder *after*
the real ones, so an installed module always wins, and only a missing
matplotlib (with mpl_toolkits), scipy, sklearn or cv2 becomes a stand-in. A stand-in's constants are 0
and its functions raise, so nothing plausible-but-wrong can come out of one; the
exception is `cv2.resize`, which pytorch-grad-cam calls to upsample every CAM: it is
bilinear with half-pixel centres, as OpenCV's (checked against OpenCV to 4e-7).
`STUBBED` lists what was stood in for; peer.py reports it."""

import importlib.abc
import importlib.machinery
import sys
import types

NAMES = ("matplotlib", "mpl_toolkits", "scipy", "sklearn", "cv2")
STUBBED = []


def _resize(img, size, interpolation=1):
    import numpy as np
    import torch

    w, h = size
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
    chw = t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]
    out = torch.nn.functional.interpolate(chw, size=(h, w), mode="bilinear", align_corners=False)[0]
    return (out[0] if t.ndim == 2 else out.permute(1, 2, 0)).numpy()


class _Stub(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if self.__name__ == "cv2" and name == "resize":
            return _resize
        if name.isupper():
            return 0

        def missing(*_, **__):
            raise NotImplementedError(f"{self.__name__}.{name} is a stand-in: not installed here")

        return missing


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] not in NAMES:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec):
        return _Stub(spec.name)

    def exec_module(self, module):
        module.__path__ = []
        STUBBED.append(module.__name__)


sys.meta_path.append(_Finder())
