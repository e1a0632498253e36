//! [`GpuNetwork`]: one forward and one backward pass of a [`Network`] on a [`GpuApi`].
//!
//! The graph is static, so the backward pass needs no tape: the forward records the
//! steps it ran (as [`Network::plan_step`] planned them, the CPU's own plan) and the
//! backward walks them in reverse, each step adding its inputs' gradients. What the
//! backward reads is kept: the outputs of rectifiers (their rule looks at them) and
//! max-pool switches; other values are freed after their last use, as on the CPU.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use attrib_core::{
    check_input, BackwardOutput, BackwardRequest, Error, LayerInfo, LayerTap, LinearHead, Model,
    Rectifier, RectifierKind, Result, TapOutput,
};
use dfdx::tensor::{Cpu, NoneTape, OwnedTape, PutTape};
use ndarray::{Array2, Array4, ArrayView4};

use super::{Args, Gemm, GpuApi};
use crate::graph::{shared_rows, Executor, Head, Identity, Layer};
use crate::kernels::{ConvGeom, PoolGeom};
use crate::ops::{self, backend, tensor4, Fused, Tensor4};
use crate::{KernelDevice, Network};

/// A network's parameters on the device, per node.
enum Params<B> {
    None,
    Conv { w: B, bias: Option<B> },
    Affine { scale: B, shift: B },
    Linear { w: B, bias: Option<B> },
}

/// A value: its buffer (shared: flatten is a view) and NCHW dimensions.
struct Val<B> {
    buf: Arc<B>,
    dims: [usize; 4],
}

impl<B> Clone for Val<B> {
    fn clone(&self) -> Self {
        Val {
            buf: self.buf.clone(),
            dims: self.dims,
        }
    }
}

impl<B> Val<B> {
    fn len(&self) -> usize {
        self.dims.iter().product()
    }
}

/// The values of a pass: kept ones and the output, `None` where freed.
type Values<B> = Vec<Option<Val<B>>>;

/// The values of a pass and the steps it recorded.
type Pass<B> = (Values<B>, Vec<Step<B>>);

/// A layer's output and, for a max pool, its switches.
type Produced<B> = (Val<B>, Option<B>);

/// A step the forward ran while recording, with what its backward needs.
struct Step<B> {
    node: usize,
    folded: bool,
    act: Option<Fused>,
    out: usize,
    /// Dimensions of the inputs and of the output.
    in_dims: Vec<[usize; 4]>,
    out_dims: [usize; 4],
    /// The step's output, when its backward applies a rectifier rule to it.
    y: Option<Val<B>>,
    /// Max-pool switches.
    argmax: Option<B>,
}

/// A [`Network`] run on a GPU through `A` (see the [module docs](super)): the same
/// [`Model`] and [`LayerTap`] as the network on the CPU, in `f32`.
///
/// Layer listings, the linear head and [`LayerTap::forward_from`] (Ablation-CAM's
/// replaced activations) are answered by the CPU network it wraps; every forward and
/// backward pass, and [`LayerTap::activations`], run on the device.
pub struct GpuNetwork<A: GpuApi> {
    net: Network<f32, Cpu>,
    api: Arc<A>,
    params: Vec<Params<A::Buf>>,
    folded: Vec<Option<Params<A::Buf>>>,
    /// One pass at a time: the device runs them in order anyway, and scratch buffers
    /// of concurrent passes would only add up.
    lock: Mutex<()>,
}

impl<A: GpuApi> std::fmt::Debug for GpuNetwork<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuNetwork")
            .field("device", &self.api.describe())
            .field("nodes", &self.net.nodes.len())
            .finish()
    }
}

fn act_code(act: Option<Fused>) -> i64 {
    act.map_or(0, |a| kind_code(a.kind))
}

fn kind_code(kind: RectifierKind) -> i64 {
    match kind {
        RectifierKind::Relu => 1,
        RectifierKind::Relu6 => 2,
    }
}

fn rule_code(rule: Rectifier) -> i64 {
    match rule {
        Rectifier::Gradient => 0,
        Rectifier::Guided => 1,
        Rectifier::Deconvnet => 2,
    }
}

fn geom_ints(g: &ConvGeom) -> [i64; 14] {
    [
        g.n,
        g.c_in,
        g.h,
        g.w,
        g.kernel[0],
        g.kernel[1],
        g.stride[0],
        g.stride[1],
        g.dilation[0],
        g.dilation[1],
        g.pad[0],
        g.pad[2],
        g.ho,
        g.wo,
    ]
    .map(|v| v as i64)
}

fn pool_ints(g: &PoolGeom) -> [i64; 11] {
    [
        g.planes,
        g.h,
        g.w,
        g.kernel[0],
        g.kernel[1],
        g.stride[0],
        g.stride[1],
        g.pad[0],
        g.pad[1],
        g.ho,
        g.wo,
    ]
    .map(|v| v as i64)
}

fn cat(a: &[i64], b: &[i64]) -> Vec<i64> {
    a.iter().chain(b).copied().collect()
}

impl<A: GpuApi> GpuNetwork<A> {
    /// `net` with its parameters uploaded to `api`'s device.
    pub fn new(net: Network<f32, Cpu>, api: Arc<A>) -> Result<Self> {
        let upload = |layer: &Layer<f32>| -> Result<Params<A::Buf>> {
            Ok(match layer {
                Layer::Conv2d(c) => Params::Conv {
                    w: api.upload(&c.weight)?,
                    bias: c.bias.as_ref().map(|b| api.upload(b)).transpose()?,
                },
                Layer::BatchNorm2d(bn) => Params::Affine {
                    scale: api.upload(&bn.scale)?,
                    shift: api.upload(&bn.shift)?,
                },
                Layer::Linear(l) => Params::Linear {
                    w: api.upload(&l.weight)?,
                    bias: l.bias.as_ref().map(|b| api.upload(b)).transpose()?,
                },
                _ => Params::None,
            })
        };
        let params = net
            .nodes
            .iter()
            .map(|n| upload(&n.layer))
            .collect::<Result<_>>()?;
        let folded = (0..net.nodes.len())
            .map(|i| net.folded_layer(i).map(upload).transpose())
            .collect::<Result<_>>()?;
        Ok(GpuNetwork {
            net,
            api,
            params,
            folded,
            lock: Mutex::new(()),
        })
    }

    /// The CPU network this one runs.
    pub fn cpu(&self) -> &Network<f32, Cpu> {
        &self.net
    }

    /// The device API.
    pub fn api(&self) -> &A {
        &self.api
    }

    fn ptr(&self, b: &A::Buf) -> u64 {
        self.api.ptr(b)
    }

    fn launch(&self, name: &'static str, threads: usize, ptrs: &[u64], ints: &[i64]) -> Result<()> {
        if threads == 0 {
            return Ok(());
        }
        // SAFETY: every call below passes buffers sized for the geometry it passes:
        // values and gradients of `dims`, scratch of the im2col size, parameters of
        // the layer's validated shape.
        unsafe { self.api.launch(name, &Args::new(threads, ptrs, ints)) }
    }

    fn gemm(&self, g: Gemm) -> Result<()> {
        // SAFETY: as for `launch`: the matrices lie inside the buffers named.
        unsafe { self.api.gemm(&g) }
    }

    fn params_of(&self, i: usize, folded: bool) -> &Params<A::Buf> {
        match (folded, &self.folded[i]) {
            (true, Some(p)) => p,
            _ => &self.params[i],
        }
    }

    /// Runs the network on `x`: steps from `record_from` on are recorded for a
    /// backward pass; `keep` values (and the output) are kept in the result.
    fn run(
        &self,
        x: Val<A::Buf>,
        host: &[f32],
        rule: Rectifier,
        record_from: usize,
        keep: &HashSet<usize>,
    ) -> Result<Pass<A::Buf>> {
        let net = &self.net;
        let mut values: Vec<Option<Val<A::Buf>>> = vec![None; net.shapes.len()];
        // Equal rows share the part of the pass nothing is recorded in, as on the CPU
        // (`Network`'s executor says why this changes no value).
        let mut shared = if record_from > 0 {
            shared_rows(host, x.dims)
        } else {
            None
        };
        values[0] = Some(match &shared {
            Some((distinct, _)) => self.gather_rows(&x, distinct)?,
            None => x,
        });
        let mut steps = Vec::new();
        let mut i = 0;
        while i < net.nodes.len() {
            let node = &net.nodes[i];
            let recorded = i >= record_from;
            if recorded {
                if let Some((_, of_row)) = shared.take() {
                    self.expand_rows(&mut values, &of_row)?;
                }
            }
            let (folded, act, v) = net.plan_step(i, rule, record_from, keep, |_| false);
            let layer = folded.unwrap_or(&node.layer);
            let ins: Vec<Val<A::Buf>> = node
                .inputs
                .iter()
                .map(|&u| {
                    values[u]
                        .clone()
                        .expect("inputs are freed after their last use")
                })
                .collect();
            let (out, argmax) =
                self.layer_forward(layer, self.params_of(i, folded.is_some()), &ins, act)?;
            let keeps_y = match layer {
                Layer::Rectifier(_) => rule != Rectifier::Deconvnet,
                _ => act.is_some() && rule != Rectifier::Deconvnet,
            };
            if recorded {
                steps.push(Step {
                    node: i,
                    folded: folded.is_some(),
                    act,
                    out: v,
                    in_dims: ins.iter().map(|x| x.dims).collect(),
                    out_dims: out.dims,
                    y: keeps_y.then(|| out.clone()),
                    argmax,
                });
            }
            values[v] = Some(out);
            if v >= record_from {
                if let Some((_, of_row)) = shared.take() {
                    self.expand_rows(&mut values, &of_row)?;
                }
            }
            net.release_inputs(i, &mut values, keep);
            i = v;
        }
        if let Some((_, of_row)) = shared {
            self.expand_rows(&mut values, &of_row)?;
        }
        Ok((values, steps))
    }

    /// The rows `rows` of `v`, in that order.
    fn gather_rows(&self, v: &Val<A::Buf>, rows: &[usize]) -> Result<Val<A::Buf>> {
        let idx = self.upload_rows(rows)?;
        self.gather(v, &idx, rows.len())
    }

    /// Row numbers on the device, as `gather_rows` reads them (floats, exact below
    /// 2^24).
    fn upload_rows(&self, rows: &[usize]) -> Result<A::Buf> {
        let idx: Vec<f32> = rows.iter().map(|&r| r as f32).collect();
        self.api.upload(&idx)
    }

    /// The `rows` rows of `v` that `idx` lists.
    fn gather(&self, v: &Val<A::Buf>, idx: &A::Buf, rows: usize) -> Result<Val<A::Buf>> {
        let [_, c, h, w] = v.dims;
        let out = self.new_val([rows, c, h, w])?;
        let ptrs = [self.ptr(&out.buf), self.ptr(&v.buf), self.ptr(idx)];
        self.launch("gather_rows", out.len(), &ptrs, &[(c * h * w) as i64])?;
        Ok(out)
    }

    /// Every live value, from one row per distinct input row to all rows (the row
    /// list uploaded once for all of them).
    fn expand_rows(&self, values: &mut [Option<Val<A::Buf>>], of_row: &[usize]) -> Result<()> {
        let idx = self.upload_rows(of_row)?;
        for v in values.iter_mut().flatten() {
            *v = self.gather(v, &idx, of_row.len())?;
        }
        Ok(())
    }

    fn new_val(&self, dims: [usize; 4]) -> Result<Val<A::Buf>> {
        Ok(Val {
            buf: Arc::new(self.api.alloc(dims.iter().product())?),
            dims,
        })
    }

    fn layer_forward(
        &self,
        layer: &Layer<f32>,
        params: &Params<A::Buf>,
        ins: &[Val<A::Buf>],
        act: Option<Fused>,
    ) -> Result<Produced<A::Buf>> {
        let x = &ins[0];
        let [n, c, h, w] = x.dims;
        let px = self.ptr(&x.buf);
        match (layer, params) {
            (Layer::Conv2d(conv), Params::Conv { w: wb, bias }) => {
                let g = conv.cfg.geometry(x.dims, conv.shape)?;
                let y = self.new_val([n, g.c_out, g.ho, g.wo])?;
                let bias = bias.as_ref().map_or(0, |b| self.ptr(b));
                self.conv_forward(&g, px, self.ptr(wb), bias, self.ptr(&y.buf), act)?;
                Ok((y, None))
            }
            (Layer::BatchNorm2d(_), Params::Affine { scale, shift }) => {
                let y = self.new_val(x.dims)?;
                let ptrs = [self.ptr(&y.buf), px, self.ptr(scale), self.ptr(shift)];
                self.launch("affine", y.len(), &ptrs, &[c as i64, (h * w) as i64])?;
                Ok((y, None))
            }
            (Layer::Rectifier(kind), _) => {
                let y = self.new_val(x.dims)?;
                self.launch(
                    "rectify",
                    y.len(),
                    &[self.ptr(&y.buf), px],
                    &[kind_code(*kind)],
                )?;
                Ok((y, None))
            }
            (Layer::MaxPool2d(cfg), _) => {
                let g = cfg.geometry(x.dims)?;
                let y = self.new_val([n, c, g.ho, g.wo])?;
                let argmax = self.api.alloc(y.len())?;
                let ptrs = [self.ptr(&y.buf), self.ptr(&argmax), px];
                self.launch("max_pool", y.len(), &ptrs, &pool_ints(&g))?;
                Ok((y, Some(argmax)))
            }
            (
                Layer::AvgPool2d {
                    cfg,
                    count_include_pad,
                },
                _,
            ) => {
                let g = cfg.geometry(x.dims)?;
                let y = self.new_val([n, c, g.ho, g.wo])?;
                let ints = cat(&pool_ints(&g), &[*count_include_pad as i64]);
                self.launch("avg_pool", y.len(), &[self.ptr(&y.buf), px], &ints)?;
                Ok((y, None))
            }
            (Layer::AdaptiveAvgPool2d([ho, wo]), _) => {
                let y = self.new_val([n, c, *ho, *wo])?;
                let ints = [(n * c) as i64, h as i64, w as i64, *ho as i64, *wo as i64];
                self.launch("adaptive_avg", y.len(), &[self.ptr(&y.buf), px], &ints)?;
                Ok((y, None))
            }
            (Layer::Flatten, _) => Ok((
                Val {
                    buf: x.buf.clone(),
                    dims: [n, c * h * w, 1, 1],
                },
                None,
            )),
            (Layer::Linear(l), Params::Linear { w: wb, bias }) => {
                let [k, f] = l.shape;
                if c * h * w != f {
                    return Err(Error::shape("linear input features", f, c * h * w));
                }
                let y = self.new_val([n, k, 1, 1])?;
                let py = self.ptr(&y.buf);
                self.gemm(Gemm {
                    m: n,
                    n: k,
                    k: f,
                    a: px,
                    lda: f,
                    trans_a: false,
                    b: self.ptr(wb),
                    ldb: f,
                    trans_b: true,
                    c: py,
                    ldc: k,
                    beta: 0.0,
                })?;
                if let Some(b) = bias {
                    self.launch("bias_rows", n * k, &[py, self.ptr(b)], &[k as i64])?;
                }
                Ok((y, None))
            }
            (Layer::Add, _) => {
                let b = &ins[1];
                if b.dims != x.dims {
                    return Err(Error::shape(
                        "residual add",
                        format!("{:?}", x.dims),
                        format!("{:?}", b.dims),
                    ));
                }
                let y = self.new_val(x.dims)?;
                let ptrs = [self.ptr(&y.buf), px, self.ptr(&b.buf)];
                self.launch("add_act", y.len(), &ptrs, &[act_code(act)])?;
                Ok((y, None))
            }
            _ => Err(Error::Backend(format!(
                "layer `{}` has no parameters on the device",
                layer.kind()
            ))),
        }
    }

    /// `y = act(conv(x) + bias)`: a direct kernel for depthwise convolutions, im2col
    /// and one gemm per group (covering the whole batch) otherwise.
    fn conv_forward(
        &self,
        g: &ConvGeom,
        x: u64,
        w: u64,
        bias: u64,
        y: u64,
        act: Option<Fused>,
    ) -> Result<()> {
        let geo = geom_ints(g);
        if g.is_depthwise() {
            let ints = cat(&geo, &[g.c_out as i64, act_code(act)]);
            return self.launch("depthwise", g.out_len(), &[y, x, w, bias], &ints);
        }
        let np = g.n * g.pixels();
        // One image's 1x1/stride-1/unpadded convolution reads the input as its own
        // im2col matrix, and its gemm result is already NCHW.
        let direct = g.is_pointwise() && g.n == 1;
        let col = if direct {
            None
        } else {
            let col = self.api.alloc(g.c_in * g.kernel[0] * g.kernel[1] * np)?;
            let threads = g.c_in * g.kernel[0] * g.kernel[1] * np;
            self.launch("im2col", threads, &[self.ptr(&col), x], &geo)?;
            Some(col)
        };
        let pcol = col.as_ref().map_or(x, |c| self.ptr(c));
        let tmp = if g.n == 1 {
            None
        } else {
            Some(self.api.alloc(g.c_out * np)?)
        };
        let ptmp = tmp.as_ref().map_or(y, |t| self.ptr(t));
        self.grouped_gemm(g, w, false, pcol, ptmp, 0.0)?;
        let ints = [g.n as i64, g.c_out as i64, g.pixels() as i64, act_code(act)];
        self.launch("onp_to_nchw", g.out_len(), &[y, ptmp, bias], &ints)
    }

    /// One gemm per group over the whole batch (`N * Ho * Wo` columns): `c = w_g b_g`
    /// for the forward pass, `c = w_g^T b_g` (`transpose`) for the input gradient, with
    /// `w_g` group `g`'s `(c_out/groups) x (c_in/groups * kh * kw)` weight rows and
    /// `b_g`, `c_g` its rows of `b` and `c`.
    fn grouped_gemm(
        &self,
        g: &ConvGeom,
        w: u64,
        transpose: bool,
        b: u64,
        c: u64,
        beta: f32,
    ) -> Result<()> {
        let (np, kk, og) = (g.n * g.pixels(), g.kk(), g.og());
        let (m, k) = if transpose { (kk, og) } else { (og, kk) };
        let at = |base: u64, elems: usize| base + (elems * std::mem::size_of::<f32>()) as u64;
        for grp in 0..g.groups {
            self.gemm(Gemm {
                m,
                n: np,
                k,
                a: at(w, grp * og * kk),
                lda: kk,
                trans_a: transpose,
                b: at(b, grp * k * np),
                ldb: np,
                trans_b: false,
                c: at(c, grp * m * np),
                ldc: np,
                beta,
            })?;
        }
        Ok(())
    }

    /// `dx (+)= conv^T(dy)`: the input gradient of [`Self::conv_forward`].
    fn conv_backward(&self, g: &ConvGeom, dy: u64, w: u64, dx: u64, acc: bool) -> Result<()> {
        let geo = geom_ints(g);
        if g.is_depthwise() {
            let ints = cat(&geo, &[g.c_out as i64, acc as i64]);
            return self.launch(
                "depthwise_back",
                g.n * g.c_in * g.h * g.w,
                &[dx, dy, w],
                &ints,
            );
        }
        let np = g.n * g.pixels();
        let tmp = if g.n == 1 {
            None
        } else {
            let t = self.api.alloc(g.c_out * np)?;
            let ints = [g.n as i64, g.c_out as i64, g.pixels() as i64];
            self.launch("nchw_to_onp", g.out_len(), &[self.ptr(&t), dy], &ints)?;
            Some(t)
        };
        let ptmp = tmp.as_ref().map_or(dy, |t| self.ptr(t));
        let direct = g.is_pointwise() && g.n == 1;
        let dcol = if direct {
            None
        } else {
            Some(self.api.alloc(g.c_in * g.kernel[0] * g.kernel[1] * np)?)
        };
        let pdcol = dcol.as_ref().map_or(dx, |c| self.ptr(c));
        let beta = if direct && acc { 1.0 } else { 0.0 };
        self.grouped_gemm(g, w, true, ptmp, pdcol, beta)?;
        if direct {
            return Ok(());
        }
        let ints = cat(&geo, &[acc as i64]);
        self.launch("col2im", g.n * g.c_in * g.h * g.w, &[dx, pdcol], &ints)
    }

    fn upload_input(&self, input: &ArrayView4<f32>) -> Result<(Val<A::Buf>, Vec<f32>)> {
        check_input(input, self.net.input_shape[0])?;
        let (n, c, h, w) = input.dim();
        let data: Vec<f32> = input.iter().copied().collect();
        let val = Val {
            buf: Arc::new(self.api.upload(&data)?),
            dims: [n, c, h, w],
        };
        Ok((val, data))
    }

    fn to_array4(&self, v: &Val<A::Buf>) -> Result<Array4<f32>> {
        let [n, c, h, w] = v.dims;
        let data = self.api.download(&v.buf)?;
        Array4::from_shape_vec((n, c, h, w), data)
            .map_err(|e| Error::Backend(format!("device buffer of {:?}: {e}", v.dims)))
    }

    /// The network's output on the host, as the CPU head's input.
    fn output_on_host(&self, values: &[Option<Val<A::Buf>>]) -> Result<Tensor4<f32, Cpu>> {
        let out = values.last().and_then(Option::as_ref).expect("output kept");
        tensor4(&Cpu::default(), self.api.download(&out.buf)?, out.dims)
    }

    /// The head's scores `(N, K)` from its `(N, K, 1, 1)` output, checked.
    fn scores_of(&self, s: &Tensor4<f32, Cpu>, n: usize) -> Result<Array2<f32>> {
        let [sn, k, h, w] = ops::dims(s);
        if h != 1 || w != 1 || sn != n {
            return Err(Error::shape(
                "head scores",
                format!("({n}, K, 1, 1)"),
                format!("({sn}, {k}, {h}, {w})"),
            ));
        }
        Array2::from_shape_vec((n, k), s.as_vec()).map_err(|e| Error::Backend(e.to_string()))
    }

    fn forward_pass<H: Head<f32, Cpu>>(
        &self,
        input: &ArrayView4<f32>,
        keep: &HashSet<usize>,
        head: &H,
    ) -> Result<(Array2<f32>, Values<A::Buf>)> {
        let (x, host) = self.upload_input(input)?;
        let n = x.dims[0];
        let values = self.run(x, &host, Rectifier::Gradient, usize::MAX, keep)?.0;
        let out = self.output_on_host(&values)?;
        let s = head.scores(&out, Rectifier::Gradient, &mut NoneTape)?;
        Ok((self.scores_of(&s, n)?, values))
    }

    fn backward_pass<H: Head<f32, Cpu>>(
        &self,
        req: &BackwardRequest<'_, f32>,
        head: &H,
    ) -> Result<BackwardOutput<f32>> {
        let net = &self.net;
        let (x, host) = self.upload_input(&req.input)?;
        let n = x.dims[0];
        let (tap_values, record_from) = net.recording(req)?;
        let keep: HashSet<usize> = tap_values.iter().copied().collect();
        let (values, steps) = self.run(x, &host, req.rectifier, record_from, &keep)?;
        // The head runs on the CPU, on dfdx's tape (a classifier's is the identity):
        // its backward gives the gradient at the network's output, where the device's
        // backward pass starts.
        let out = self.output_on_host(&values)?;
        if !req.input_grad && tap_values.is_empty() {
            let s = head.scores(&out, req.rectifier, &mut NoneTape)?;
            let scores = self.scores_of(&s, n)?;
            let target = req.target.resolve(scores.view())?;
            return Ok(BackwardOutput {
                scores,
                target,
                input_grad: None,
                taps: Vec::new(),
            });
        }
        let mut tape = OwnedTape::<f32, Cpu>::default();
        let s = head.scores(&out, req.rectifier, &mut tape)?;
        let scores = self.scores_of(&s, n)?;
        let target = req.target.resolve(scores.view())?;
        let mut output = BackwardOutput {
            scores,
            target,
            input_grad: None,
            taps: Vec::new(),
        };
        let seed = output.target.seed.iter().copied().collect();
        let loss = ops::seed_loss(s.put_tape(tape), seed)?;
        let mut head_grads = <Cpu as KernelDevice<f32>>::run_backward(loss).map_err(backend)?;
        let d_out = head_grads.get_or_alloc_mut(&out).map_err(backend)?;
        let mut grads: Vec<Option<Arc<A::Buf>>> = vec![None; net.shapes.len()];
        grads[net.shapes.len() - 1] = Some(Arc::new(self.api.upload(d_out)?));
        let mut tap_grads: Vec<Option<Vec<f32>>> = vec![None; tap_values.len()];
        let read_taps = |v: usize, g: &A::Buf, tap_grads: &mut Vec<Option<Vec<f32>>>| {
            for (k, &tv) in tap_values.iter().enumerate() {
                if tv == v && tap_grads[k].is_none() {
                    tap_grads[k] = Some(self.api.download(g)?);
                }
            }
            Ok::<_, Error>(())
        };
        for s in steps.iter().rev() {
            let Some(dy) = grads[s.out].take() else {
                continue;
            };
            read_taps(s.out, &dy, &mut tap_grads)?;
            let pdy = self.ptr(&dy);
            let out_len: usize = s.out_dims.iter().product();
            if let Some(a) = s.act {
                let py = s.y.as_ref().map_or(0, |y| self.ptr(&y.buf));
                let ints = [kind_code(a.kind), rule_code(a.rule), 0];
                self.launch("rectifier_back", out_len, &[pdy, pdy, py], &ints)?;
            }
            let node = &net.nodes[s.node];
            for (k, &u) in node.inputs.iter().enumerate() {
                if u < record_from {
                    continue;
                }
                let xd = s.in_dims[k];
                let (dx, acc) = match grads[u].take() {
                    Some(g) => (g, true),
                    None => (Arc::new(self.api.alloc(xd.iter().product())?), false),
                };
                self.input_grad(s, xd, pdy, self.ptr(&dx), acc, req.rectifier)?;
                grads[u] = Some(dx);
            }
        }
        for (k, &v) in tap_values.iter().enumerate() {
            if tap_grads[k].is_none() {
                if let Some(g) = &grads[v] {
                    tap_grads[k] = Some(self.api.download(g)?);
                }
            }
        }
        if req.input_grad {
            let g = grads[0].as_ref().ok_or_else(|| {
                Error::Backend("the backward pass did not reach the input".into())
            })?;
            let (n, c, h, w) = req.input.dim();
            output.input_grad = Some(
                Array4::from_shape_vec((n, c, h, w), self.api.download(g)?)
                    .map_err(|e| Error::Backend(e.to_string()))?,
            );
        }
        for ((name, &v), g) in req.taps.iter().zip(&tap_values).zip(tap_grads) {
            let act = values[v].as_ref().expect("taps are kept");
            let activation = self.to_array4(act)?;
            // A gradient that was not computed is an error, never zeros.
            let g = g.ok_or_else(|| {
                Error::Backend(format!(
                    "the backward pass did not reach tap `{name}`: its gradient was not computed"
                ))
            })?;
            let gradient = Array4::from_shape_vec(activation.dim(), g)
                .map_err(|e| Error::Backend(e.to_string()))?;
            output.taps.push(TapOutput {
                name: name.clone(),
                activation,
                gradient,
            });
        }
        Ok(output)
    }

    fn layer_of(&self, s: &Step<A::Buf>) -> &Layer<f32> {
        if s.folded {
            self.net
                .folded_layer(s.node)
                .expect("a folded step has a folded layer")
        } else {
            &self.net.nodes[s.node].layer
        }
    }

    /// Adds input `k`'s share of step `s`'s backward into `dx` (`acc`) or writes it.
    fn input_grad(
        &self,
        s: &Step<A::Buf>,
        xd: [usize; 4],
        dy: u64,
        dx: u64,
        acc: bool,
        rule: Rectifier,
    ) -> Result<()> {
        let [n, c, h, w] = xd;
        let x_len = n * c * h * w;
        let acc_i = acc as i64;
        match (self.layer_of(s), self.params_of(s.node, s.folded)) {
            (Layer::Conv2d(conv), Params::Conv { w: wb, .. }) => {
                let g = conv.cfg.geometry(xd, conv.shape)?;
                self.conv_backward(&g, dy, self.ptr(wb), dx, acc)
            }
            (Layer::BatchNorm2d(_), Params::Affine { scale, .. }) => self.launch(
                "affine_back",
                x_len,
                &[dx, dy, self.ptr(scale)],
                &[c as i64, (h * w) as i64, acc_i],
            ),
            (Layer::Rectifier(kind), _) => {
                let py = s.y.as_ref().map_or(0, |y| self.ptr(&y.buf));
                let ints = [kind_code(*kind), rule_code(rule), acc_i];
                self.launch("rectifier_back", x_len, &[dx, dy, py], &ints)
            }
            (Layer::MaxPool2d(cfg), _) => {
                let g = cfg.geometry(xd)?;
                let sw = s.argmax.as_ref().expect("max pool keeps its switches");
                let ints = cat(&pool_ints(&g), &[acc_i]);
                self.launch("max_pool_back", x_len, &[dx, dy, self.ptr(sw)], &ints)
            }
            (
                Layer::AvgPool2d {
                    cfg,
                    count_include_pad,
                },
                _,
            ) => {
                let g = cfg.geometry(xd)?;
                let ints = cat(&pool_ints(&g), &[*count_include_pad as i64, acc_i]);
                self.launch("avg_pool_back", x_len, &[dx, dy], &ints)
            }
            (Layer::AdaptiveAvgPool2d([ho, wo]), _) => {
                let ints = [
                    (n * c) as i64,
                    h as i64,
                    w as i64,
                    *ho as i64,
                    *wo as i64,
                    acc_i,
                ];
                self.launch("adaptive_avg_back", x_len, &[dx, dy], &ints)
            }
            (Layer::Flatten, _) | (Layer::Add, _) => {
                self.launch("copy_add", x_len, &[dx, dy], &[acc_i])
            }
            (Layer::Linear(l), Params::Linear { w: wb, .. }) => {
                let [kk, f] = l.shape;
                self.gemm(Gemm {
                    m: n,
                    n: f,
                    k: kk,
                    a: dy,
                    lda: kk,
                    trans_a: false,
                    b: self.ptr(wb),
                    ldb: f,
                    trans_b: false,
                    c: dx,
                    ldc: f,
                    beta: if acc { 1.0 } else { 0.0 },
                })
            }
            (layer, _) => Err(Error::Backend(format!(
                "layer `{}` has no parameters on the device",
                layer.kind()
            ))),
        }
    }
}

impl<A: GpuApi> GpuNetwork<A> {
    /// Scores `(N, K)` of the network followed by `head` (the head on the CPU).
    pub fn forward_with<H: Head<f32, Cpu>>(
        &self,
        input: ArrayView4<f32>,
        head: &H,
    ) -> Result<Array2<f32>> {
        let _pass = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        Ok(self.forward_pass(&input, &HashSet::new(), head)?.0)
    }

    /// One backward pass of the network followed by `head`: the network forward and
    /// backward on the device, the head's on the CPU, between them the network's
    /// output and its gradient.
    pub fn backward_with<H: Head<f32, Cpu>>(
        &self,
        req: &BackwardRequest<'_, f32>,
        head: &H,
    ) -> Result<BackwardOutput<f32>> {
        let _pass = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.backward_pass(req, head)
    }

    /// The head's scores and the activations of `layers`, from one forward pass.
    pub fn activations_with<H: Head<f32, Cpu>>(
        &self,
        input: ArrayView4<f32>,
        layers: &[String],
        head: &H,
    ) -> Result<(Array2<f32>, Vec<Array4<f32>>)> {
        let values: Vec<usize> = layers
            .iter()
            .map(|l| self.net.value_of(l))
            .collect::<Result<_>>()?;
        let _pass = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let keep: HashSet<usize> = values.iter().copied().collect();
        let (scores, vals) = self.forward_pass(&input, &keep, head)?;
        let acts = values
            .iter()
            .map(|&v| self.to_array4(vals[v].as_ref().expect("kept")))
            .collect::<Result<_>>()?;
        Ok((scores, acts))
    }
}

impl<A: GpuApi> Model<f32> for GpuNetwork<A> {
    fn input_shape(&self) -> [usize; 3] {
        self.net.input_shape()
    }

    fn num_outputs(&self) -> usize {
        self.net.num_outputs()
    }

    fn forward(&self, input: ArrayView4<f32>) -> Result<Array2<f32>> {
        self.forward_with(input, &Identity)
    }

    fn backward(&self, req: &BackwardRequest<'_, f32>) -> Result<BackwardOutput<f32>> {
        self.backward_with(req, &Identity)
    }
}

impl<A: GpuApi> LayerTap<f32> for GpuNetwork<A> {
    fn layers(&self) -> Vec<LayerInfo> {
        self.net.layers()
    }

    fn default_layer(&self) -> String {
        self.net.default_layer()
    }

    fn activations(
        &self,
        input: ArrayView4<f32>,
        layers: &[String],
    ) -> Result<(Array2<f32>, Vec<Array4<f32>>)> {
        self.activations_with(input, layers, &Identity)
    }

    fn forward_from(
        &self,
        input: ArrayView4<f32>,
        layer: &str,
        activations: ArrayView4<f32>,
        items: &[usize],
    ) -> Result<Array2<f32>> {
        self.net.forward_from(input, layer, activations, items)
    }

    fn linear_head(&self) -> Option<LinearHead<f32>> {
        self.net.linear_head()
    }

    fn rectifiers_above(&self, layer: &str) -> Result<bool> {
        self.net.rectifiers_above(layer)
    }
}

impl<A: GpuApi> Executor<f32, Cpu> for GpuNetwork<A> {
    fn network(&self) -> &Network<f32, Cpu> {
        &self.net
    }

    fn forward_with<H: Head<f32, Cpu>>(
        &self,
        input: ArrayView4<f32>,
        head: &H,
    ) -> Result<Array2<f32>> {
        GpuNetwork::forward_with(self, input, head)
    }

    fn backward_with<H: Head<f32, Cpu>>(
        &self,
        req: &BackwardRequest<'_, f32>,
        head: &H,
    ) -> Result<BackwardOutput<f32>> {
        GpuNetwork::backward_with(self, req, head)
    }

    fn activations_with<H: Head<f32, Cpu>>(
        &self,
        input: ArrayView4<f32>,
        layers: &[String],
        head: &H,
    ) -> Result<(Array2<f32>, Vec<Array4<f32>>)> {
        GpuNetwork::activations_with(self, input, layers, head)
    }

    /// On the CPU network: Ablation-CAM's replaced activations are not run on the
    /// device.
    fn forward_from_with<H: Head<f32, Cpu>>(
        &self,
        input: ArrayView4<f32>,
        layer: &str,
        activations: ArrayView4<f32>,
        items: &[usize],
        head: &H,
    ) -> Result<Array2<f32>> {
        self.net
            .forward_from_with(input, layer, activations, items, head)
    }
}
