//! Tape ops on sequences and vectors, for the models whose head is more than a
//! classifier (captioning, VQA). Sequences are `(N, T, D, 1)` tensors (batch first,
//! steps, features), vectors `(N, D, 1, 1)`, as everywhere in attrib. Each op records
//! the gradient of its inputs only; `tanh` and the LSTM's gates pass the plain
//! gradient whatever the pass's rectifier rule (the rules belong to rectifiers).

use std::sync::Arc;

use attrib_core::{Error, Result};
use dfdx::tensor::{Merge, PutTape, SplitTape, Tape};

use super::{dims, record, tensor4, with_tape, Tensor4};
use crate::kernels::{self, LstmLayer};
use crate::{Elem, KernelDevice};

/// `torch.nn.LSTM(batch_first=True)`: its layers, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Lstm<E> {
    /// One entry per layer.
    pub layers: Vec<LstmLayer<E>>,
}

impl<E: Elem> Lstm<E> {
    /// From PyTorch's per-layer tensors `(weight_ih, weight_hh, bias_ih, bias_hh)`,
    /// checking their shapes chain: `(4H, D)`, `(4H, H)`, `(4H)`, `(4H)`, each layer's
    /// input the hidden size of the one below.
    pub fn new(input: usize, hidden: usize, layers: Vec<[Vec<E>; 4]>) -> Result<Self> {
        if hidden == 0 || layers.is_empty() {
            return Err(Error::param(
                "lstm",
                "needs a positive hidden size and at least one layer",
            ));
        }
        let mut out = Vec::with_capacity(layers.len());
        for (k, [w_ih, w_hh, b_ih, b_hh]) in layers.into_iter().enumerate() {
            let d = if k == 0 { input } else { hidden };
            for (what, got, want) in [
                ("weight_ih", w_ih.len(), 4 * hidden * d),
                ("weight_hh", w_hh.len(), 4 * hidden * hidden),
                ("bias_ih", b_ih.len(), 4 * hidden),
                ("bias_hh", b_hh.len(), 4 * hidden),
            ] {
                if got != want {
                    return Err(Error::shape(
                        format!("lstm {what}_l{k}"),
                        format!("{want} values (hidden {hidden}, input {d})"),
                        format!("{got} values"),
                    ));
                }
            }
            let bias = b_ih.iter().zip(&b_hh).map(|(&a, &b)| a + b).collect();
            out.push(LstmLayer {
                input: d,
                hidden,
                w_ih,
                w_hh,
                bias,
            });
        }
        Ok(Lstm { layers: out })
    }

    /// Input size of the first layer.
    pub fn input_size(&self) -> usize {
        self.layers[0].input
    }

    /// Hidden size.
    pub fn hidden_size(&self) -> usize {
        self.layers[0].hidden
    }

    /// Number of layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }
}

/// What `lstm_op` returns: the last layer's hidden states as a sequence on the tape,
/// and the final hidden and cell states of every layer (`(L, N, H)`, PyTorch's `h_n`,
/// `c_n`) as host values, not differentiated.
pub struct LstmOutput<E: Elem, D: KernelDevice<E>> {
    /// `(N, T, H, 1)`.
    pub output: Tensor4<E, D>,
    /// `(L, N, H)`.
    pub h_n: Vec<E>,
    /// `(L, N, H)`.
    pub c_n: Vec<E>,
}

fn sequence_dims<E: Elem, D: KernelDevice<E>>(x: &Tensor4<E, D>, what: &str) -> Result<[usize; 3]> {
    let [n, t, d, one] = dims(x);
    if one != 1 {
        return Err(Error::shape(
            what.to_string(),
            "a sequence (N, T, D, 1)",
            format!("({n}, {t}, {d}, {one})"),
        ));
    }
    Ok([n, t, d])
}

/// The LSTM over `x (N, T, D, 1)` from a zero state.
pub(crate) fn lstm_op<E: Elem, D: KernelDevice<E>, T: Tape<E, D>>(
    x: &Tensor4<E, D>,
    lstm: &Arc<Lstm<E>>,
    tape: &mut T,
) -> Result<LstmOutput<E, D>> {
    let [n, t, d] = sequence_dims(x, "lstm input")?;
    if d != lstm.input_size() {
        return Err(Error::shape("lstm input features", lstm.input_size(), d));
    }
    let xs = D::host(x);
    let (y, h_n, c_n, traces) = kernels::lstm_forward(&lstm.layers, n, t, &xs);
    let output = tensor4(x.device(), y, [n, t, lstm.hidden_size(), 1])?;
    if T::OWNS_TAPE {
        let lstm = lstm.clone();
        record(tape, &output, &[x], move |dy, _, dx| {
            kernels::lstm_backward(&lstm.layers, &traces, n, t, dy, dx)
        });
    }
    Ok(LstmOutput { output, h_n, c_n })
}

/// A linear layer applied at every step: `(N, T, F, 1) -> (N, T, K, 1)`.
pub(crate) fn seq_linear_op<E: Elem, D: KernelDevice<E>, T: Tape<E, D>>(
    x: &Tensor4<E, D>,
    weight: &Arc<Vec<E>>,
    wshape: [usize; 2],
    bias: Option<&Arc<Vec<E>>>,
    tape: &mut T,
) -> Result<Tensor4<E, D>> {
    let [n, t, f] = sequence_dims(x, "linear input")?;
    let [k, wf] = wshape;
    if f != wf {
        return Err(Error::shape("linear input features", wf, f));
    }
    let xs = D::host(x);
    let mut y = vec![E::zero(); n * t * k];
    kernels::linear_forward(n * t, f, k, &xs, weight, bias.map(|b| b.as_slice()), &mut y);
    let out = tensor4(x.device(), y, [n, t, k, 1])?;
    let w = weight.clone();
    record(tape, &out, &[x], move |dy, _, dx| {
        kernels::linear_backward_input(n * t, f, k, dy, &w, dx)
    });
    Ok(out)
}

/// `log_softmax` over the features of every step: `(N, T, K, 1)`.
pub(crate) fn log_softmax_op<E: Elem, D: KernelDevice<E>, T: Tape<E, D>>(
    x: &Tensor4<E, D>,
    tape: &mut T,
) -> Result<Tensor4<E, D>> {
    let [n, t, k] = sequence_dims(x, "log-softmax input")?;
    let xs = D::host(x);
    let mut y = vec![E::zero(); xs.len()];
    kernels::log_softmax_forward(k, &xs, &mut y);
    let out = tensor4(x.device(), y.clone(), [n, t, k, 1])?;
    record(tape, &out, &[x], move |dy, _, dx| {
        kernels::log_softmax_backward(k, &y, dy, dx)
    });
    Ok(out)
}

/// Entry `index[n * T + t]` of the features at every step: `(N, T, K, 1) -> (N, T, 1,
/// 1)`, the `(N, T)` values laid out as a vector of `T` outputs per item.
pub(crate) fn pick_op<E: Elem, D: KernelDevice<E>, T: Tape<E, D>>(
    x: &Tensor4<E, D>,
    index: &[usize],
    tape: &mut T,
) -> Result<Tensor4<E, D>> {
    let [n, t, k] = sequence_dims(x, "pick input")?;
    if index.len() != n * t {
        return Err(Error::shape("pick indices", n * t, index.len()));
    }
    if let Some(&bad) = index.iter().find(|&&i| i >= k) {
        return Err(Error::param(
            "pick index",
            format!("{bad} is beyond the {k} features"),
        ));
    }
    let xs = D::host(x);
    let y: Vec<E> = index
        .iter()
        .enumerate()
        .map(|(r, &i)| xs[r * k + i])
        .collect();
    let out = tensor4(x.device(), y, [n, t, 1, 1])?;
    let index = index.to_vec();
    record(tape, &out, &[x], move |dy, _, dx| {
        for (r, (&i, &g)) in index.iter().zip(dy).enumerate() {
            dx[r * k + i] += g;
        }
    });
    Ok(out)
}

/// `a` then `b` along axis 1 (steps of sequences, channels of maps):
/// `(N, A, B, C) + (N, A', B, C) -> (N, A + A', B, C)`.
pub(crate) fn concat_op<E: Elem, D: KernelDevice<E>, T: Tape<E, D>>(
    a: &Tensor4<E, D>,
    b: &Tensor4<E, D>,
    tape: &mut T,
) -> Result<Tensor4<E, D>> {
    let ([n, ca, h, w], [nb, cb, hb, wb]) = (dims(a), dims(b));
    if n != nb || h != hb || w != wb {
        return Err(Error::shape(
            "concatenation",
            format!("({n}, _, {h}, {w})"),
            format!("({nb}, _, {hb}, {wb})"),
        ));
    }
    let (ha, hb_) = (D::host(a), D::host(b));
    let (la, lb) = (ca * h * w, cb * h * w);
    let mut y = Vec::with_capacity(n * (la + lb));
    for i in 0..n {
        y.extend_from_slice(&ha[i * la..][..la]);
        y.extend_from_slice(&hb_[i * lb..][..lb]);
    }
    let out = tensor4(a.device(), y, [n, ca + cb, h, w])?;
    record(tape, &out, &[a, b], move |dy, k, dx| {
        let (off, len) = if k == 0 { (0, la) } else { (la, lb) };
        for i in 0..n {
            let src = &dy[i * (la + lb) + off..][..len];
            dx[i * len..][..len]
                .iter_mut()
                .zip(src)
                .for_each(|(d, &g)| *d += g);
        }
    });
    Ok(out)
}

/// Elementwise `tanh`.
pub(crate) fn tanh_op<E: Elem, D: KernelDevice<E>, T: Tape<E, D>>(
    x: &Tensor4<E, D>,
    tape: &mut T,
) -> Result<Tensor4<E, D>> {
    let y: Vec<E> = D::host(x).iter().map(|v| v.tanh()).collect();
    let out = tensor4(x.device(), y.clone(), dims(x))?;
    record(tape, &out, &[x], move |dy, _, dx| {
        for ((d, &g), &v) in dx.iter_mut().zip(dy).zip(&y) {
            *d += g * (E::one() - v * v);
        }
    });
    Ok(out)
}

/// Elementwise product of two same-shaped tensors.
pub(crate) fn mul_op<E: Elem, D: KernelDevice<E>, T: Tape<E, D>>(
    a: &Tensor4<E, D>,
    b: &Tensor4<E, D>,
    tape: &mut T,
) -> Result<Tensor4<E, D>> {
    if dims(a) != dims(b) {
        return Err(Error::shape(
            "elementwise product",
            format!("{:?}", dims(a)),
            format!("{:?}", dims(b)),
        ));
    }
    let (ha, hb) = (D::host(a).into_owned(), D::host(b).into_owned());
    let y = kernels::par_zip_new(&ha, &hb, |u, v| u * v);
    let out = tensor4(a.device(), y, dims(a))?;
    record(tape, &out, &[a, b], move |dy, k, dx| {
        let other = if k == 0 { &hb } else { &ha };
        for ((d, &g), &o) in dx.iter_mut().zip(dy).zip(other) {
            *d += g * o;
        }
    });
    Ok(out)
}

/// PyTorch's `F.normalize(x, p=2, dim=1, eps)` of vectors `(N, F, 1, 1)`.
pub(crate) fn l2_normalize_op<E: Elem, D: KernelDevice<E>, T: Tape<E, D>>(
    x: &Tensor4<E, D>,
    eps: f64,
    tape: &mut T,
) -> Result<Tensor4<E, D>> {
    let [n, f, h, w] = dims(x);
    if h != 1 || w != 1 {
        return Err(Error::shape(
            "L2 normalisation input",
            "vectors (N, F, 1, 1)",
            format!("({n}, {f}, {h}, {w})"),
        ));
    }
    let eps = E::of(eps);
    let xs = D::host(x);
    let mut y = vec![E::zero(); xs.len()];
    let norms = kernels::l2_normalize_forward(f, eps, &xs, &mut y);
    let out = tensor4(x.device(), y.clone(), [n, f, 1, 1])?;
    record(tape, &out, &[x], move |dy, _, dx| {
        kernels::l2_normalize_backward(f, eps, &y, &norms, dy, dx)
    });
    Ok(out)
}

/// Rows of an embedding table `(V, E)` for `tokens` `(N, T)`: `(N, T, E, 1)`. Token
/// indices get no gradient, and the table is not traced: the result is a constant of
/// the pass.
pub fn embedding<E: Elem, D: KernelDevice<E>>(
    dev: &D,
    table: &[E],
    dim: usize,
    tokens: &[usize],
    n: usize,
) -> Result<Tensor4<E, D>> {
    let vocab = table.len().checked_div(dim).unwrap_or(0);
    if n == 0 || !tokens.len().is_multiple_of(n) {
        return Err(Error::shape(
            "embedding tokens",
            "N x T indices",
            tokens.len(),
        ));
    }
    let mut y = Vec::with_capacity(tokens.len() * dim);
    for &tok in tokens {
        if tok >= vocab {
            return Err(Error::param(
                "token",
                format!("{tok} is beyond the embedding's {vocab} entries"),
            ));
        }
        y.extend_from_slice(&table[tok * dim..][..dim]);
    }
    tensor4(dev, y, [n, tokens.len() / n, dim, 1])
}

macro_rules! unary {
    ($(#[$doc:meta])* $name:ident => $op:ident $(, $arg:ident: $ty:ty)*) => {
        $(#[$doc])*
        pub fn $name<E: Elem, D: KernelDevice<E>, T: Tape<E, D>>(
            x: Tensor4<E, D, T> $(, $arg: $ty)*
        ) -> Result<Tensor4<E, D, T>> {
            with_tape(x, |x, t| $op(x $(, $arg)*, t))
        }
    };
}

unary!(
    /// [`Lstm`] over a sequence; the last layer's hidden states.
    lstm => lstm_output, lstm: &Arc<Lstm<E>>
);
unary!(
    /// A linear layer at every step of a sequence.
    seq_linear => seq_linear_op, weight: &Arc<Vec<E>>, wshape: [usize; 2], bias: Option<&Arc<Vec<E>>>
);
unary!(
    /// `log_softmax` over the features of every step.
    log_softmax => log_softmax_op
);
unary!(
    /// One feature per step, by index.
    pick => pick_op, index: &[usize]
);
unary!(
    /// Elementwise `tanh`.
    tanh => tanh_op
);
unary!(
    /// `F.normalize(x, dim=1, eps)` of vectors.
    l2_normalize => l2_normalize_op, eps: f64
);

fn lstm_output<E: Elem, D: KernelDevice<E>, T: Tape<E, D>>(
    x: &Tensor4<E, D>,
    lstm: &Arc<Lstm<E>>,
    tape: &mut T,
) -> Result<Tensor4<E, D>> {
    lstm_op(x, lstm, tape).map(|o| o.output)
}

fn binary<E, D, T, R>(
    a: Tensor4<E, D, T>,
    b: Tensor4<E, D, R>,
    op: impl FnOnce(&Tensor4<E, D>, &Tensor4<E, D>, &mut T) -> Result<Tensor4<E, D>>,
) -> Result<Tensor4<E, D, T>>
where
    E: Elem,
    D: KernelDevice<E>,
    T: Tape<E, D> + Merge<R>,
    R: Tape<E, D>,
{
    let (a, ta) = a.split_tape();
    let (b, tb) = b.split_tape();
    let mut tape = ta.merge(tb);
    let y = op(&a, &b, &mut tape)?;
    Ok(y.put_tape(tape))
}

/// `a` then `b` along axis 1.
pub fn concat<E, D, T, R>(a: Tensor4<E, D, T>, b: Tensor4<E, D, R>) -> Result<Tensor4<E, D, T>>
where
    E: Elem,
    D: KernelDevice<E>,
    T: Tape<E, D> + Merge<R>,
    R: Tape<E, D>,
{
    binary(a, b, concat_op)
}

/// Elementwise product.
pub fn mul<E, D, T, R>(a: Tensor4<E, D, T>, b: Tensor4<E, D, R>) -> Result<Tensor4<E, D, T>>
where
    E: Elem,
    D: KernelDevice<E>,
    T: Tape<E, D> + Merge<R>,
    R: Tape<E, D>,
{
    binary(a, b, mul_op)
}

/// The same values under another shape of as many elements (a vector `(N, E, 1, 1)`
/// as a one-step sequence `(N, 1, E, 1)`, say); the gradient passes through.
pub(crate) fn reshape_op<E: Elem, D: KernelDevice<E>, T: Tape<E, D>>(
    x: &Tensor4<E, D>,
    shape: [usize; 4],
    tape: &mut T,
) -> Result<Tensor4<E, D>> {
    let from = dims(x);
    if from.iter().product::<usize>() != shape.iter().product::<usize>() {
        return Err(Error::shape(
            "reshape",
            format!("{} values", from.iter().product::<usize>()),
            format!("{shape:?}"),
        ));
    }
    let out = tensor4(x.device(), D::host(x).into_owned(), shape)?;
    record(tape, &out, &[x], super::add_into);
    Ok(out)
}

/// Steps `start..start + len` of a sequence `(N, T, D, 1)`.
pub(crate) fn narrow_op<E: Elem, D: KernelDevice<E>, T: Tape<E, D>>(
    x: &Tensor4<E, D>,
    start: usize,
    len: usize,
    tape: &mut T,
) -> Result<Tensor4<E, D>> {
    let [n, t, d] = sequence_dims(x, "narrowed sequence")?;
    if start + len > t {
        return Err(Error::param(
            "steps",
            format!("{start}..{} is beyond the {t} steps", start + len),
        ));
    }
    let xs = D::host(x);
    let mut y = Vec::with_capacity(n * len * d);
    for i in 0..n {
        y.extend_from_slice(&xs[(i * t + start) * d..][..len * d]);
    }
    let out = tensor4(x.device(), y, [n, len, d, 1])?;
    record(tape, &out, &[x], move |dy, _, dx| {
        for i in 0..n {
            dx[(i * t + start) * d..][..len * d]
                .iter_mut()
                .zip(&dy[i * len * d..][..len * d])
                .for_each(|(a, &g)| *a += g);
        }
    });
    Ok(out)
}

/// The values where `valid`, NaN elsewhere: outputs a model does not define for an
/// item (steps beyond its caption) are marked, so that a target on one is an error
/// rather than a number. The gradient passes where valid.
pub(crate) fn mask_op<E: Elem, D: KernelDevice<E>, T: Tape<E, D>>(
    x: &Tensor4<E, D>,
    valid: &[bool],
    tape: &mut T,
) -> Result<Tensor4<E, D>> {
    let xs = D::host(x);
    if valid.len() != xs.len() {
        return Err(Error::shape("output mask", xs.len(), valid.len()));
    }
    let y: Vec<E> = xs
        .iter()
        .zip(valid)
        .map(|(&v, &ok)| if ok { v } else { E::nan() })
        .collect();
    let out = tensor4(x.device(), y, dims(x))?;
    let valid = valid.to_vec();
    record(tape, &out, &[x], move |dy, _, dx| {
        for ((d, &g), &ok) in dx.iter_mut().zip(dy).zip(&valid) {
            if ok {
                *d += g;
            }
        }
    });
    Ok(out)
}
