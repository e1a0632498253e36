//! Ops dfdx 0.13 lacks on stable (its conv/pool are nightly-only), registered on its
//! tape with `Tape::add_backward_op`. Each op computes its forward with the host
//! kernels in [`crate::kernels`] and records a backward closure that
//!
//! * takes the gradient of its output (consuming it: memory is freed as the backward
//!   pass proceeds),
//! * adds the gradient of its inputs, and of its parameters only when the caller
//!   traced them (attribution never does),
//! * for rectifiers, follows the [`Rectifier`] rule chosen for the pass.
//!
//! The functions taking tape-carrying tensors (`conv2d`, `rectify`, ...) are the
//! public, dfdx-style API; the networks ([`crate::Network`]) call the `*_op`
//! versions, which take the tape separately so that one forward can switch from
//! untraced to traced at a tap.

use std::fmt::Display;
use std::sync::Arc;

use attrib_core::{Error, Rectifier, RectifierKind, Result};
use dfdx::shapes::{HasShape, Rank0};
use dfdx::tensor::{Merge, NoneTape, OwnedTape, PutTape, SplitTape, Tape, Tensor};

pub mod region;
pub mod sequence;

use crate::kernels::{self, ConvGeom, PoolGeom};
use crate::winograd::Winograd;
use crate::{Elem, KernelDevice};

/// The runtime NCHW shape every activation has; vectors are `(N, F, 1, 1)`.
pub type Shape4 = (usize, usize, usize, usize);

/// A 4-d tensor on device `D` with tape `T`.
pub type Tensor4<E, D, T = NoneTape> = Tensor<Shape4, E, D, T>;

/// A 1-d tensor (biases).
pub type Tensor1<E, D, T = NoneTape> = Tensor<(usize,), E, D, T>;

pub(crate) fn backend(e: impl Display) -> Error {
    Error::Backend(e.to_string())
}

/// The NCHW dimensions of a 4-d tensor.
pub fn dims<E, D: dfdx::tensor::Storage<E>, T>(t: &Tensor4<E, D, T>) -> [usize; 4] {
    let s = t.shape();
    [s.0, s.1, s.2, s.3]
}

/// A 4-d tensor from host data, checking the length.
pub fn tensor4<E: Elem, D: KernelDevice<E>>(
    dev: &D,
    data: Vec<E>,
    shape: [usize; 4],
) -> Result<Tensor4<E, D>> {
    let n: usize = shape.iter().product();
    if data.len() != n {
        return Err(Error::shape(
            "tensor data",
            format!("{n} values for {shape:?}"),
            format!("{} values", data.len()),
        ));
    }
    dev.try_tensor_from_vec(data, (shape[0], shape[1], shape[2], shape[3]))
        .map_err(backend)
}

/// Records a backward closure for `out = op(inputs)`: it takes `dL/d out` (consuming
/// it) and calls `back(dy, k, dx_k)` for each input `k`, which must *add* that input's
/// gradient into `dx_k` — the gradient buffer itself on the CPU, so no temporary is
/// allocated and no second pass adds it in.
fn record<E, D, T>(
    tape: &mut T,
    out: &Tensor4<E, D>,
    inputs: &[&Tensor4<E, D>],
    back: impl FnMut(&[E], usize, &mut [E]) + 'static,
) where
    E: Elem,
    D: KernelDevice<E>,
    T: Tape<E, D>,
{
    record_fused(tape, out, inputs, None, back)
}

/// [`record`] for an op with a fused rectifier: the incoming gradient is first
/// masked by the rectifier's rule (against the op's output, which is the rectifier's).
fn record_fused<E, D, T>(
    tape: &mut T,
    out: &Tensor4<E, D>,
    inputs: &[&Tensor4<E, D>],
    act: Option<Fused>,
    mut back: impl FnMut(&[E], usize, &mut [E]) + 'static,
) where
    E: Elem,
    D: KernelDevice<E>,
    T: Tape<E, D>,
{
    if !T::OWNS_TAPE {
        return;
    }
    let out_g = out.ghost();
    let in_g: Vec<_> = inputs.iter().map(|t| t.ghost()).collect();
    // The output tells where the rectifier is active (y > 0, and y < 6 for ReLU6,
    // exactly where the input is), so the backward keeps a reference to it rather
    // than a mask; deconvnet ignores the forward pass altogether.
    let kept = act
        .filter(|a| a.rule != Rectifier::Deconvnet)
        .map(|_| out.clone());
    tape.add_backward_op(move |grads| {
        let mut dy = D::take_host(grads.get_or_alloc_mut(&out_g)?)?;
        if let Some(a) = act {
            let ys = kept.as_ref().map(|t| D::host(t));
            kernels::rectifier_mask(a.kind, a.rule, ys.as_deref(), &mut dy);
        }
        for (k, g) in in_g.iter().enumerate() {
            D::accumulate(grads.get_or_alloc_mut(g)?, |dx| back(&dy, k, dx))?;
        }
        Ok(())
    });
}

/// A rectifier fused into the op that produces its input (a convolution or a
/// residual add that it alone consumes): applied in place to the op's output, so the
/// pair has one output buffer and one pass less, and its rule applied to the
/// incoming gradient before the op's backward.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Fused {
    pub kind: RectifierKind,
    pub rule: Rectifier,
}

impl Fused {
    fn apply<E: Elem>(act: Option<Fused>, y: &mut [E]) {
        if let Some(a) = act {
            kernels::par_update(y, |v| *v = a.kind.apply(*v));
        }
    }
}

/// `dx += dy`: the backward of ops that pass gradients through unchanged.
fn add_into<E: Elem>(dy: &[E], _: usize, dx: &mut [E]) {
    kernels::par_map(dx, dy, |d, &g| *d += g);
}

/// Zero padding of a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// Fixed padding: top, bottom, left, right.
    Explicit([usize; 4]),
    /// TensorFlow's "same": output `ceil(in / stride)`, the odd pixel of padding at the
    /// bottom/right. Computed from each input's size, so it is asymmetric when needed.
    Same,
}

impl Padding {
    /// Symmetric padding of `p` on every side (PyTorch's `padding=p`).
    pub fn symmetric(p: usize) -> Self {
        Padding::Explicit([p; 4])
    }

    /// The four paddings for an input of `h x w`.
    pub fn resolve(
        &self,
        h: usize,
        w: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
    ) -> [usize; 4] {
        match *self {
            Padding::Explicit(p) => p,
            Padding::Same => {
                let same = |len: usize, k: usize, s: usize, d: usize| {
                    let out = len.div_ceil(s.max(1));
                    let total = ((out.max(1) - 1) * s + (k.max(1) - 1) * d + 1).saturating_sub(len);
                    (total / 2, total - total / 2)
                };
                let (t, b) = same(h, kernel[0], stride[0], dilation[0]);
                let (l, r) = same(w, kernel[1], stride[1], dilation[1]);
                [t, b, l, r]
            }
        }
    }
}

/// Stride, dilation, padding and groups of a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dConfig {
    /// Stride (vertical, horizontal).
    pub stride: [usize; 2],
    /// Dilation (vertical, horizontal).
    pub dilation: [usize; 2],
    /// Zero padding.
    pub padding: Padding,
    /// Channel groups; `in_channels` for depthwise.
    pub groups: usize,
}

impl Default for Conv2dConfig {
    fn default() -> Self {
        Conv2dConfig {
            stride: [1, 1],
            dilation: [1, 1],
            padding: Padding::Explicit([0; 4]),
            groups: 1,
        }
    }
}

impl Conv2dConfig {
    /// Validates the convolution of an input of shape `x` with weights `w`.
    pub fn geometry(&self, x: [usize; 4], w: [usize; 4]) -> Result<ConvGeom> {
        let kernel = [w[2], w[3]];
        let pad = self
            .padding
            .resolve(x[2], x[3], kernel, self.stride, self.dilation);
        ConvGeom::new(
            x,
            w[0],
            w[1],
            kernel,
            self.stride,
            self.dilation,
            pad,
            self.groups,
        )
    }
}

/// A pooling window: kernel, stride, symmetric padding, PyTorch's `ceil_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2dConfig {
    /// Window height and width.
    pub kernel: [usize; 2],
    /// Stride.
    pub stride: [usize; 2],
    /// Padding (vertical, horizontal), at most half the kernel.
    pub padding: [usize; 2],
    /// Round the output size up instead of down.
    pub ceil_mode: bool,
}

impl Pool2dConfig {
    /// A square window `k`, stride `s`, padding `p`.
    pub fn new(k: usize, s: usize, p: usize) -> Self {
        Pool2dConfig {
            kernel: [k, k],
            stride: [s, s],
            padding: [p, p],
            ceil_mode: false,
        }
    }

    /// Validates the window on an input of shape `x`.
    pub fn geometry(&self, x: [usize; 4]) -> Result<PoolGeom> {
        PoolGeom::new(
            x[0] * x[1],
            x[2],
            x[3],
            self.kernel,
            self.stride,
            self.padding,
            self.ceil_mode,
        )
    }
}

/// Where parameter gradients go when the caller traces the parameters.
pub(crate) struct ParamGrads<'a, E, D: dfdx::tensor::Storage<E>> {
    pub weight: &'a Tensor4<E, D>,
    pub bias: Option<&'a Tensor1<E, D>>,
}

fn record_params<E, D, T>(
    tape: &mut T,
    out: &Tensor4<E, D>,
    params: ParamGrads<'_, E, D>,
    back: impl FnOnce(&[E], &mut [E], Option<&mut [E]>) + 'static,
) where
    E: Elem,
    D: KernelDevice<E>,
    T: Tape<E, D>,
{
    if !T::OWNS_TAPE {
        return;
    }
    let out_g = out.ghost();
    let w_g = params.weight.ghost();
    let w_len: usize = dims(params.weight).iter().product();
    let b = params.bias.map(|b| (b.ghost(), b.shape().0));
    // Pushed after the input-gradient closure, so it runs first and must read `dy`
    // without consuming it.
    tape.add_backward_op(move |grads| {
        let dy = D::read_host(grads.get_or_alloc_mut(&out_g)?)?;
        let mut dw = vec![E::zero(); w_len];
        let mut db = b.as_ref().map(|(_, n)| vec![E::zero(); *n]);
        back(&dy, &mut dw, db.as_deref_mut());
        D::add_host(grads.get_or_alloc_mut(&w_g)?, &dw)?;
        if let (Some((g, _)), Some(db)) = (&b, db) {
            D::add_host(grads.get_or_alloc_mut(g)?, &db)?;
        }
        Ok(())
    });
}

/// Convolution with host weights `(c_out, c_in/groups, kh, kw)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv2d_op<E: Elem, D: KernelDevice<E>, T: Tape<E, D>>(
    x: &Tensor4<E, D>,
    weight: &Arc<Vec<E>>,
    wshape: [usize; 4],
    bias: Option<&Arc<Vec<E>>>,
    cfg: &Conv2dConfig,
    winograd: Option<&Arc<Winograd<E>>>,
    act: Option<Fused>,
    params: Option<ParamGrads<'_, E, D>>,
    tape: &mut T,
) -> Result<Tensor4<E, D>> {
    let g = cfg.geometry(dims(x), wshape)?;
    let xs = D::host(x);
    let b = bias.map(|b| b.as_slice());
    let y = match winograd.filter(|_| Winograd::<E>::applies(&g)) {
        Some(wg) => {
            let mut y = kernels::biased_output(&g, b);
            wg.forward_add(&g, &xs, weight, &mut y);
            Fused::apply(act, &mut y);
            y
        }
        None => {
            kernels::conv2d_forward_new(&g, &xs, weight, b, &|y: &mut [E]| Fused::apply(act, y))
        }
    };
    let out = tensor4(x.device(), y, [g.n, g.c_out, g.ho, g.wo])?;
    let w = weight.clone();
    let winograd = winograd
        .filter(|_| T::OWNS_TAPE && Winograd::<E>::applies_backward(&g))
        .cloned();
    record_fused(tape, &out, &[x], act, move |dy, _, dx| match &winograd {
        Some(wg) => wg.backward_input(&g, dy, &w, dx),
        None => kernels::conv2d_backward_input(&g, dy, &w, dx),
    });
    if let Some(p) = params {
        let xs = xs.into_owned();
        record_params(tape, &out, p, move |dy, dw, db| {
            kernels::conv2d_backward_weight(&g, &xs, dy, dw, db)
        });
    }
    Ok(out)
}

/// Inference batch norm as a per-channel affine map `x * scale + shift`.
pub(crate) fn affine_op<E: Elem, D: KernelDevice<E>, T: Tape<E, D>>(
    x: &Tensor4<E, D>,
    scale: &Arc<Vec<E>>,
    shift: &Arc<Vec<E>>,
    tape: &mut T,
) -> Result<Tensor4<E, D>> {
    let [n, c, h, w] = dims(x);
    if scale.len() != c {
        return Err(Error::shape("batch norm channels", scale.len(), c));
    }
    let plane = h * w;
    let xs = D::host(x);
    let mut y = vec![E::zero(); xs.len()];
    for (i, (p, q)) in y
        .chunks_mut(plane.max(1))
        .zip(xs.chunks(plane.max(1)))
        .enumerate()
        .take(n * c)
    {
        let (a, b) = (scale[i % c], shift[i % c]);
        p.iter_mut().zip(q).for_each(|(v, &u)| *v = u * a + b);
    }
    let out = tensor4(x.device(), y, [n, c, h, w])?;
    let scale = scale.clone();
    record(tape, &out, &[x], move |dy, _, dx| {
        let planes = dx.chunks_mut(plane.max(1)).zip(dy.chunks(plane.max(1)));
        for (i, (p, q)) in planes.enumerate().take(n * c) {
            let a = scale[i % c];
            p.iter_mut().zip(q).for_each(|(d, &g)| *d += g * a);
        }
    });
    Ok(out)
}

/// A rectifier whose backward follows `rule`.
pub(crate) fn rectify_op<E: Elem, D: KernelDevice<E>, T: Tape<E, D>>(
    x: &Tensor4<E, D>,
    kind: RectifierKind,
    rule: Rectifier,
    tape: &mut T,
) -> Result<Tensor4<E, D>> {
    let xs = D::host(x);
    let mut y = vec![E::zero(); xs.len()];
    kernels::par_map(&mut y, &xs, |y, &v| *y = kind.apply(v));
    let out = tensor4(x.device(), y, dims(x))?;
    // On its own, a rectifier is the identity with the rectifier fused in.
    record_fused(tape, &out, &[x], Some(Fused { kind, rule }), add_into);
    Ok(out)
}

/// Max pool; backward routes each gradient through its argmax switch.
pub(crate) fn max_pool_op<E: Elem, D: KernelDevice<E>, T: Tape<E, D>>(
    x: &Tensor4<E, D>,
    cfg: &Pool2dConfig,
    tape: &mut T,
) -> Result<Tensor4<E, D>> {
    let [n, c, ..] = dims(x);
    let g = cfg.geometry(dims(x))?;
    let xs = D::host(x);
    let mut y = kernels::planes_filled(g.planes, g.ho * g.wo, |_| E::zero());
    let mut arg = kernels::planes_filled(g.planes, g.ho * g.wo, |_| 0u32);
    kernels::max_pool_forward(&g, &xs, &mut y, &mut arg);
    let out = tensor4(x.device(), y, [n, c, g.ho, g.wo])?;
    record(tape, &out, &[x], move |dy, _, dx| {
        kernels::max_pool_backward(&g, dy, &arg, dx)
    });
    Ok(out)
}

/// Average pool (PyTorch's `count_include_pad` semantics).
pub(crate) fn avg_pool_op<E: Elem, D: KernelDevice<E>, T: Tape<E, D>>(
    x: &Tensor4<E, D>,
    cfg: &Pool2dConfig,
    count_include_pad: bool,
    tape: &mut T,
) -> Result<Tensor4<E, D>> {
    let [n, c, ..] = dims(x);
    let g = cfg.geometry(dims(x))?;
    let xs = D::host(x);
    let mut y = vec![E::zero(); g.planes * g.ho * g.wo];
    kernels::avg_pool_forward(&g, count_include_pad, &xs, &mut y);
    let out = tensor4(x.device(), y, [n, c, g.ho, g.wo])?;
    record(tape, &out, &[x], move |dy, _, dx| {
        kernels::avg_pool_backward(&g, count_include_pad, dy, dx)
    });
    Ok(out)
}

/// Adaptive average pool to `out = (ho, wo)`; `(1, 1)` is global average pooling.
pub(crate) fn adaptive_avg_pool_op<E: Elem, D: KernelDevice<E>, T: Tape<E, D>>(
    x: &Tensor4<E, D>,
    out_hw: [usize; 2],
    tape: &mut T,
) -> Result<Tensor4<E, D>> {
    let [n, c, h, w] = dims(x);
    let [ho, wo] = out_hw;
    if ho == 0 || wo == 0 || h == 0 || w == 0 {
        return Err(Error::shape(
            "adaptive average pool",
            "non-empty input and output",
            format!("{h}x{w} -> {ho}x{wo}"),
        ));
    }
    let xs = D::host(x);
    let mut y = vec![E::zero(); n * c * ho * wo];
    kernels::adaptive_avg_forward(n * c, h, w, ho, wo, &xs, &mut y);
    let out = tensor4(x.device(), y, [n, c, ho, wo])?;
    record(tape, &out, &[x], move |dy, _, dx| {
        kernels::adaptive_avg_backward(n * c, h, w, ho, wo, dy, dx)
    });
    Ok(out)
}

/// `(N, C, H, W) -> (N, C*H*W, 1, 1)`, PyTorch's `flatten(1)` order.
pub(crate) fn flatten_op<E: Elem, D: KernelDevice<E>, T: Tape<E, D>>(
    x: &Tensor4<E, D>,
    tape: &mut T,
) -> Result<Tensor4<E, D>> {
    let [n, c, h, w] = dims(x);
    let out = tensor4(x.device(), D::host(x).into_owned(), [n, c * h * w, 1, 1])?;
    record(tape, &out, &[x], add_into);
    Ok(out)
}

/// Fully connected layer on `(N, F, 1, 1)` with host weights `(K, F)`.
pub(crate) fn linear_op<E: Elem, D: KernelDevice<E>, T: Tape<E, D>>(
    x: &Tensor4<E, D>,
    weight: &Arc<Vec<E>>,
    wshape: [usize; 2],
    bias: Option<&Arc<Vec<E>>>,
    params: Option<ParamGrads<'_, E, D>>,
    tape: &mut T,
) -> Result<Tensor4<E, D>> {
    let [n, f, h, w] = dims(x);
    let [k, wf] = wshape;
    if h != 1 || w != 1 || f != wf {
        return Err(Error::shape(
            "linear input",
            format!("(N, {wf}, 1, 1) (flatten or pool before a linear layer)"),
            format!("({n}, {f}, {h}, {w})"),
        ));
    }
    let xs = D::host(x);
    let mut y = vec![E::zero(); n * k];
    kernels::linear_forward(n, f, k, &xs, weight, bias.map(|b| b.as_slice()), &mut y);
    let out = tensor4(x.device(), y, [n, k, 1, 1])?;
    let wc = weight.clone();
    record(tape, &out, &[x], move |dy, _, dx| {
        kernels::linear_backward_input(n, f, k, dy, &wc, dx)
    });
    if let Some(p) = params {
        let xs = xs.into_owned();
        record_params(tape, &out, p, move |dy, dw, db| {
            kernels::linear_backward_weight(n, f, k, &xs, dy, dw, db)
        });
    }
    Ok(out)
}

/// Elementwise sum of two same-shaped tensors (residual connections).
pub(crate) fn add_op<E: Elem, D: KernelDevice<E>, T: Tape<E, D>>(
    a: &Tensor4<E, D>,
    b: &Tensor4<E, D>,
    act: Option<Fused>,
    tape: &mut T,
) -> Result<Tensor4<E, D>> {
    if dims(a) != dims(b) {
        return Err(Error::shape(
            "residual add",
            format!("{:?}", dims(a)),
            format!("{:?}", dims(b)),
        ));
    }
    let (ha, hb) = (D::host(a), D::host(b));
    let y = match act {
        Some(f) => kernels::par_zip_new(&ha, &hb, |u, v| f.kind.apply(u + v)),
        None => kernels::par_zip_new(&ha, &hb, |u, v| u + v),
    };
    let out = tensor4(a.device(), y, dims(a))?;
    record_fused(tape, &out, &[a, b], act, add_into);
    Ok(out)
}

/// The scalar `sum(seed * y)`: backward starts from `seed` as `dL/dy`. This is how a
/// target becomes the first gradient of the pass.
pub fn seed_loss<E: Elem, D: KernelDevice<E>>(
    y: Tensor4<E, D, OwnedTape<E, D>>,
    seed: Vec<E>,
) -> Result<Tensor<Rank0, E, D, OwnedTape<E, D>>> {
    let (y, mut tape) = y.split_tape();
    let ys = y.as_vec();
    if ys.len() != seed.len() {
        return Err(Error::shape(
            "seed",
            format!("{} values", ys.len()),
            format!("{} values", seed.len()),
        ));
    }
    let v = ys
        .iter()
        .zip(&seed)
        .fold(E::zero(), |a, (&p, &q)| a + p * q);
    let loss = y
        .device()
        .try_tensor_from_vec(vec![v], ())
        .map_err(backend)?;
    let y_g = y.ghost();
    let loss_g = loss.ghost();
    tape.add_backward_op(move |grads| {
        let d = D::read_host(grads.get_or_alloc_mut(&loss_g)?)?;
        let scale = d.first().copied().unwrap_or_else(E::one);
        let g: Vec<E> = seed.iter().map(|&s| s * scale).collect();
        D::add_host(grads.get_or_alloc_mut(&y_g)?, &g)
    });
    Ok(loss.put_tape(tape))
}

fn with_tape<E, D, T>(
    x: Tensor4<E, D, T>,
    f: impl FnOnce(&Tensor4<E, D>, &mut T) -> Result<Tensor4<E, D>>,
) -> Result<Tensor4<E, D, T>>
where
    E: Elem,
    D: KernelDevice<E>,
    T: Tape<E, D>,
{
    let (x, mut tape) = x.split_tape();
    let y = f(&x, &mut tape)?;
    Ok(y.put_tape(tape))
}

/// The op's arguments from tape-carrying tensors: merges the tapes of the input and
/// the parameters, hands the op the parameters as host data (and, when they are
/// traced, where their gradients go), and puts the merged tape on the output.
fn with_params<E, D, T, R>(
    x: Tensor4<E, D, T>,
    weight: Tensor4<E, D, R>,
    bias: Option<Tensor1<E, D, R>>,
    op: impl FnOnce(
        &Tensor4<E, D>,
        &Arc<Vec<E>>,
        [usize; 4],
        Option<&Arc<Vec<E>>>,
        Option<ParamGrads<'_, E, D>>,
        &mut T,
    ) -> Result<Tensor4<E, D>>,
) -> Result<Tensor4<E, D, T>>
where
    E: Elem,
    D: KernelDevice<E>,
    T: Tape<E, D> + Merge<R>,
    R: Tape<E, D>,
{
    let (x, tx) = x.split_tape();
    let (w, tw) = weight.split_tape();
    let mut tape = tx.merge(tw);
    let b = bias.map(|b| {
        let (b, tb) = b.split_tape();
        tape = std::mem::take(&mut tape).merge(tb);
        b
    });
    let wh = Arc::new(w.as_vec());
    let bh = b.as_ref().map(|b| Arc::new(b.as_vec()));
    let params = R::OWNS_TAPE.then_some(ParamGrads {
        weight: &w,
        bias: b.as_ref(),
    });
    let y = op(&x, &wh, dims(&w), bh.as_ref(), params, &mut tape)?;
    Ok(y.put_tape(tape))
}

/// 2-d convolution, `weight (c_out, c_in/groups, kh, kw)`, optional `bias (c_out,)`.
/// Parameter gradients are computed only when the parameters carry a tape.
pub fn conv2d<E, D, T, R>(
    x: Tensor4<E, D, T>,
    weight: Tensor4<E, D, R>,
    bias: Option<Tensor1<E, D, R>>,
    cfg: &Conv2dConfig,
) -> Result<Tensor4<E, D, T>>
where
    E: Elem,
    D: KernelDevice<E>,
    T: Tape<E, D> + Merge<R>,
    R: Tape<E, D>,
{
    with_params(x, weight, bias, |x, w, wshape, b, params, tape| {
        conv2d_op(x, w, wshape, b, cfg, None, None, params, tape)
    })
}

/// Fully connected layer on `(N, F, 1, 1)`, `weight (K, F, 1, 1)`, optional `bias (K,)`.
pub fn linear<E, D, T, R>(
    x: Tensor4<E, D, T>,
    weight: Tensor4<E, D, R>,
    bias: Option<Tensor1<E, D, R>>,
) -> Result<Tensor4<E, D, T>>
where
    E: Elem,
    D: KernelDevice<E>,
    T: Tape<E, D> + Merge<R>,
    R: Tape<E, D>,
{
    with_params(x, weight, bias, |x, w, [k, f, ..], b, params, tape| {
        linear_op(x, w, [k, f], b, params, tape)
    })
}

/// ReLU or ReLU6 whose backward follows `rule`.
pub fn rectify<E: Elem, D: KernelDevice<E>, T: Tape<E, D>>(
    x: Tensor4<E, D, T>,
    kind: RectifierKind,
    rule: Rectifier,
) -> Result<Tensor4<E, D, T>> {
    with_tape(x, |x, t| rectify_op(x, kind, rule, t))
}

/// Inference batch norm with running statistics.
pub fn batch_norm2d<E: Elem, D: KernelDevice<E>, T: Tape<E, D>>(
    x: Tensor4<E, D, T>,
    bn: &crate::BatchNorm2d<E>,
) -> Result<Tensor4<E, D, T>> {
    with_tape(x, |x, t| affine_op(x, &bn.scale, &bn.shift, t))
}

/// Max pool with switches.
pub fn max_pool2d<E: Elem, D: KernelDevice<E>, T: Tape<E, D>>(
    x: Tensor4<E, D, T>,
    cfg: &Pool2dConfig,
) -> Result<Tensor4<E, D, T>> {
    with_tape(x, |x, t| max_pool_op(x, cfg, t))
}

/// Average pool.
pub fn avg_pool2d<E: Elem, D: KernelDevice<E>, T: Tape<E, D>>(
    x: Tensor4<E, D, T>,
    cfg: &Pool2dConfig,
    count_include_pad: bool,
) -> Result<Tensor4<E, D, T>> {
    with_tape(x, |x, t| avg_pool_op(x, cfg, count_include_pad, t))
}

/// Adaptive average pool to `(ho, wo)`.
pub fn adaptive_avg_pool2d<E: Elem, D: KernelDevice<E>, T: Tape<E, D>>(
    x: Tensor4<E, D, T>,
    out_hw: [usize; 2],
) -> Result<Tensor4<E, D, T>> {
    with_tape(x, |x, t| adaptive_avg_pool_op(x, out_hw, t))
}

/// Global average pool, `(N, C, H, W) -> (N, C, 1, 1)`.
pub fn global_avg_pool<E: Elem, D: KernelDevice<E>, T: Tape<E, D>>(
    x: Tensor4<E, D, T>,
) -> Result<Tensor4<E, D, T>> {
    adaptive_avg_pool2d(x, [1, 1])
}

/// `(N, C, H, W) -> (N, C*H*W, 1, 1)`.
pub fn flatten<E: Elem, D: KernelDevice<E>, T: Tape<E, D>>(
    x: Tensor4<E, D, T>,
) -> Result<Tensor4<E, D, T>> {
    with_tape(x, |x, t| flatten_op(x, t))
}

/// Residual sum `a + b`.
pub fn add<E, D, T, R>(a: Tensor4<E, D, T>, b: Tensor4<E, D, R>) -> Result<Tensor4<E, D, T>>
where
    E: Elem,
    D: KernelDevice<E>,
    T: Tape<E, D> + Merge<R>,
    R: Tape<E, D>,
{
    let (a, ta) = a.split_tape();
    let (b, tb) = b.split_tape();
    let mut tape = ta.merge(tb);
    let y = add_op(&a, &b, None, &mut tape)?;
    Ok(y.put_tape(tape))
}
