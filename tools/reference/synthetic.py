"""attrib's deterministic synthetic weights (attrib_dfdx::Synthetic), in numpy,
bit for bit: u = (splitmix64((fnv1a64(key) ^ seed) + i * golden) >> 40) / 2^23 - 1,
scaled by the parameter's kind in float64 and rounded once to float32."""

import numpy as np
import torch
import torch.nn as nn

MASK = (1 << 64) - 1


def fnv1a(s):
    h = 0xCBF29CE484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & MASK
    return h


def uniform(key, n, seed=0):
    with np.errstate(over="ignore"):
        base = np.uint64(fnv1a(key) ^ seed)
        z = base + np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) / float(1 << 23) - 1.0


def values(key, shape, kind, seed=0):
    n = int(np.prod(shape))
    u = uniform(key, n, seed)
    fan_in = max(int(np.prod(shape[1:])), 1)
    if kind == "weight":
        v = u * np.sqrt(6.0 / fan_in)
    elif kind in ("bias", "bn_bias", "bn_mean"):
        v = 0.1 * u
    elif kind == "bn_weight":
        v = 1.0 + 0.25 * u
    elif kind == "bn_var":
        v = 1.0 + 0.5 * u
    else:
        raise ValueError(kind)
    return v.astype(np.float32).reshape(shape)


def load_synthetic(model, seed=0):
    """Overwrites every conv, linear, batch-norm (1-d and 2-d), embedding and LSTM
    parameter and statistic."""
    with torch.no_grad():
        for name, m in model.named_modules():
            p = name + "." if name else ""
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(torch.from_numpy(values(p + "weight", tuple(m.weight.shape), "weight", seed)))
                if m.bias is not None:
                    m.bias.copy_(torch.from_numpy(values(p + "bias", tuple(m.bias.shape), "bias", seed)))
            elif isinstance(m, nn.Embedding):
                m.weight.copy_(torch.from_numpy(values(p + "weight", tuple(m.weight.shape), "weight", seed)))
            elif isinstance(m, nn.LSTM):
                for pname, param in m.named_parameters():
                    kind = "weight" if pname.startswith("weight") else "bias"
                    param.copy_(torch.from_numpy(values(p + pname, tuple(param.shape), kind, seed)))
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                c = (m.num_features,)
                m.weight.copy_(torch.from_numpy(values(p + "weight", c, "bn_weight", seed)))
                m.bias.copy_(torch.from_numpy(values(p + "bias", c, "bn_bias", seed)))
                m.running_mean.copy_(torch.from_numpy(values(p + "running_mean", c, "bn_mean", seed)))
                m.running_var.copy_(torch.from_numpy(values(p + "running_var", c, "bn_var", seed)))
