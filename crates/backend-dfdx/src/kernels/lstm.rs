//! `torch.nn.LSTM` on host slices, exactly as PyTorch defines it: gates in the order
//! input, forget, cell, output (`i, f, g, o`), both biases added (`b_ih + b_hh`), any
//! number of layers, zero initial state, batch-first `(N, T, D)` layout. The forward
//! keeps what the backward needs (the gates and cell states of every step); the
//! backward is backpropagation through time to the inputs (no parameter gradients:
//! attribution never asks for them).

use crate::Elem;

use super::linear::{linear_backward_input, linear_forward};

/// One layer's parameters, PyTorch's `weight_ih_l{k}` `(4H, D)`, `weight_hh_l{k}`
/// `(4H, H)` and the sum of `bias_ih_l{k}` and `bias_hh_l{k}` `(4H)`.
#[derive(Debug, Clone, PartialEq)]
pub struct LstmLayer<E> {
    /// Input size `D` of this layer (the hidden size above the first).
    pub input: usize,
    /// Hidden size `H`.
    pub hidden: usize,
    /// `(4H, D)`, gates `i, f, g, o` stacked.
    pub w_ih: Vec<E>,
    /// `(4H, H)`.
    pub w_hh: Vec<E>,
    /// `b_ih + b_hh`, `(4H)`.
    pub bias: Vec<E>,
}

/// What one layer's forward keeps for its backward.
#[derive(Debug, Clone)]
pub struct LstmTrace<E> {
    /// Activated gates per step, `(T, N, 4H)`: `i, f, o` after the sigmoid, `g`
    /// after the tanh.
    gates: Vec<E>,
    /// Cell states per step, `(T + 1, N, H)`, the first all zero.
    cells: Vec<E>,
    /// Hidden states per step, `(T + 1, N, H)`, the first all zero.
    hiddens: Vec<E>,
}

fn sigmoid<E: Elem>(x: E) -> E {
    E::one() / (E::one() + (-x).exp())
}

/// Runs every layer over `x (N, T, D)`; returns the last layer's hidden states
/// `(N, T, H)`, the final hidden and cell states of every layer (`(L, N, H)` each, as
/// PyTorch's `h_n, c_n`), and each layer's trace.
pub fn lstm_forward<E: Elem>(
    layers: &[LstmLayer<E>],
    n: usize,
    t: usize,
    x: &[E],
) -> (Vec<E>, Vec<E>, Vec<E>, Vec<LstmTrace<E>>) {
    let mut input = x.to_vec();
    let mut h_n = Vec::new();
    let mut c_n = Vec::new();
    let mut traces = Vec::with_capacity(layers.len());
    for layer in layers {
        let (out, trace) = layer_forward(layer, n, t, &input);
        h_n.extend_from_slice(&trace.hiddens[t * n * layer.hidden..]);
        c_n.extend_from_slice(&trace.cells[t * n * layer.hidden..]);
        traces.push(trace);
        input = out;
    }
    (input, h_n, c_n, traces)
}

/// One layer over `x (N, T, D)`: the hidden states `(N, T, H)` and the trace.
fn layer_forward<E: Elem>(l: &LstmLayer<E>, n: usize, t: usize, x: &[E]) -> (Vec<E>, LstmTrace<E>) {
    let (d, h) = (l.input, l.hidden);
    // The input projections of every step at once: (N*T, 4H).
    let mut pre_x = vec![E::zero(); n * t * 4 * h];
    linear_forward(n * t, d, 4 * h, x, &l.w_ih, Some(&l.bias), &mut pre_x);
    let mut gates = vec![E::zero(); t * n * 4 * h];
    let mut cells = vec![E::zero(); (t + 1) * n * h];
    let mut hiddens = vec![E::zero(); (t + 1) * n * h];
    let mut out = vec![E::zero(); n * t * h];
    let mut pre = vec![E::zero(); n * 4 * h];
    for s in 0..t {
        let (h_prev, h_rest) = hiddens[s * n * h..].split_at_mut(n * h);
        linear_forward(n, h, 4 * h, h_prev, &l.w_hh, None, &mut pre);
        let (c_prev, c_rest) = cells[s * n * h..].split_at_mut(n * h);
        let g_step = &mut gates[s * n * 4 * h..][..n * 4 * h];
        for b in 0..n {
            let px = &pre_x[(b * t + s) * 4 * h..][..4 * h];
            let a = &mut pre[b * 4 * h..][..4 * h];
            let gs = &mut g_step[b * 4 * h..][..4 * h];
            for j in 0..4 * h {
                let v = a[j] + px[j];
                gs[j] = if (2 * h..3 * h).contains(&j) {
                    v.tanh()
                } else {
                    sigmoid(v)
                };
            }
            for j in 0..h {
                let (i, f, g, o) = (gs[j], gs[h + j], gs[2 * h + j], gs[3 * h + j]);
                let c = f * c_prev[b * h + j] + i * g;
                c_rest[b * h + j] = c;
                let hv = o * c.tanh();
                h_rest[b * h + j] = hv;
                out[(b * t + s) * h + j] = hv;
            }
        }
    }
    (
        out,
        LstmTrace {
            gates,
            cells,
            hiddens,
        },
    )
}

/// Adds `dL/dx (N, T, D)` into `dx` given `dL/d out (N, T, H)` for the last layer's
/// hidden states (the final states `h_n, c_n` are not differentiated: the models
/// that use them use them on constant inputs).
pub fn lstm_backward<E: Elem>(
    layers: &[LstmLayer<E>],
    traces: &[LstmTrace<E>],
    n: usize,
    t: usize,
    dy: &[E],
    dx: &mut [E],
) {
    let mut d_out = dy.to_vec();
    for (k, (l, tr)) in layers.iter().zip(traces).enumerate().rev() {
        let (d, h) = (l.input, l.hidden);
        // Pre-activation gradients of every step, (N, T, 4H), then one product for
        // the inputs.
        let mut d_pre = vec![E::zero(); n * t * 4 * h];
        let mut dh_next = vec![E::zero(); n * h];
        let mut dc_next = vec![E::zero(); n * h];
        let mut d_step = vec![E::zero(); n * 4 * h];
        for s in (0..t).rev() {
            let gs_all = &tr.gates[s * n * 4 * h..][..n * 4 * h];
            let c_prev = &tr.cells[s * n * h..][..n * h];
            let c_cur = &tr.cells[(s + 1) * n * h..][..n * h];
            for b in 0..n {
                let gs = &gs_all[b * 4 * h..][..4 * h];
                let ds = &mut d_step[b * 4 * h..][..4 * h];
                for j in 0..h {
                    let (i, f, g, o) = (gs[j], gs[h + j], gs[2 * h + j], gs[3 * h + j]);
                    let tc = c_cur[b * h + j].tanh();
                    let dh = d_out[(b * t + s) * h + j] + dh_next[b * h + j];
                    let dc = dc_next[b * h + j] + dh * o * (E::one() - tc * tc);
                    ds[j] = dc * g * i * (E::one() - i);
                    ds[h + j] = dc * c_prev[b * h + j] * f * (E::one() - f);
                    ds[2 * h + j] = dc * i * (E::one() - g * g);
                    ds[3 * h + j] = dh * tc * o * (E::one() - o);
                    dc_next[b * h + j] = dc * f;
                }
                d_pre[(b * t + s) * 4 * h..][..4 * h].copy_from_slice(ds);
            }
            dh_next.iter_mut().for_each(|v| *v = E::zero());
            linear_backward_input(n, h, 4 * h, &d_step, &l.w_hh, &mut dh_next);
        }
        if k == 0 {
            linear_backward_input(n * t, d, 4 * h, &d_pre, &l.w_ih, dx);
        } else {
            let mut below = vec![E::zero(); n * t * d];
            linear_backward_input(n * t, d, 4 * h, &d_pre, &l.w_ih, &mut below);
            d_out = below;
        }
    }
}
