//! Finite-difference checks, in f64, of the sequence and vector ops' backward (the
//! LSTM through time and layers, linear over steps, log-softmax, picking, concatenation,
//! tanh, elementwise product, L2 normalisation), and the LSTM against PyTorch's
//! `nn.LSTM` written out step by step.

use std::sync::Arc;

use attrib_dfdx::ops::sequence::{self as seq, Lstm};
use attrib_dfdx::ops::{self, tensor4, Tensor4};
use attrib_dfdx::{Cpu, KernelDevice};
use dfdx::tensor::{OwnedTape, Trace};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

type Traced = Tensor4<f64, Cpu, OwnedTape<f64, Cpu>>;

fn rand_vec(rng: &mut StdRng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect()
}

fn numeric_grad(x: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let h = 1e-6;
    (0..x.len())
        .map(|i| {
            let (mut p, mut m) = (x.to_vec(), x.to_vec());
            p[i] += h;
            m[i] -= h;
            (f(&p) - f(&m)) / (2.0 * h)
        })
        .collect()
}

fn assert_close(what: &str, analytic: &[f64], numeric: &[f64]) {
    assert_eq!(analytic.len(), numeric.len(), "{what}: lengths");
    let scale = numeric.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    let worst = analytic
        .iter()
        .zip(numeric)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f64, f64::max);
    assert!(
        scale > 1e-3,
        "{what}: degenerate gradient (scale {scale:e})"
    );
    assert!(
        worst <= 1e-6 * scale,
        "{what}: max |analytic - fd| = {worst:e} at scale {scale:e}"
    );
}

/// `sum(seed * f(x))` and its analytic gradient, for a one-input op.
fn check1(what: &str, shape: [usize; 4], rng: &mut StdRng, f: impl Fn(Traced) -> Traced) {
    let dev = Cpu::default();
    let x = rand_vec(rng, shape.iter().product());
    let probe = f(tensor4(&dev, x.clone(), shape).unwrap().leaky_trace());
    let seed = rand_vec(rng, probe.as_vec().len());
    drop(probe);
    let run = |x: &[f64]| -> (f64, Vec<f64>) {
        let xt = tensor4(&dev, x.to_vec(), shape).unwrap();
        let loss = ops::seed_loss(f(xt.leaky_trace()), seed.clone()).unwrap();
        let v = loss.as_vec()[0];
        let grads = <Cpu as KernelDevice<f64>>::run_backward(loss).unwrap();
        (v, grads.get(&xt).as_vec())
    };
    let (_, g) = run(&x);
    assert_close(what, &g, &numeric_grad(&x, |x| run(x).0));
}

fn lstm(rng: &mut StdRng, input: usize, hidden: usize, layers: usize) -> Arc<Lstm<f64>> {
    let per = (0..layers)
        .map(|k| {
            let d = if k == 0 { input } else { hidden };
            [
                rand_vec(rng, 4 * hidden * d),
                rand_vec(rng, 4 * hidden * hidden),
                rand_vec(rng, 4 * hidden),
                rand_vec(rng, 4 * hidden),
            ]
        })
        .collect();
    Arc::new(Lstm::new(input, hidden, per).unwrap())
}

#[test]
fn lstm_backpropagates_through_time_and_layers() {
    let mut rng = StdRng::seed_from_u64(1);
    for (n, t, d, h, layers) in [
        (1, 1, 3, 2, 1),
        (2, 4, 3, 5, 1),
        (2, 3, 4, 3, 2),
        (1, 5, 2, 2, 3),
    ] {
        let l = lstm(&mut rng, d, h, layers);
        check1(
            &format!("lstm n{n} t{t} d{d} h{h} l{layers}"),
            [n, t, d, 1],
            &mut rng,
            |x| seq::lstm(x, &l).unwrap(),
        );
    }
}

#[test]
fn lstm_is_pytorchs_recurrence() {
    // The recurrence written out for one layer, one item: gates i, f, g, o from
    // W_ih x + b_ih + W_hh h + b_hh; c = f c + i g; h = o tanh(c).
    let mut rng = StdRng::seed_from_u64(2);
    let (t, d, h) = (3, 2, 2);
    let w_ih = rand_vec(&mut rng, 4 * h * d);
    let w_hh = rand_vec(&mut rng, 4 * h * h);
    let (b_ih, b_hh) = (rand_vec(&mut rng, 4 * h), rand_vec(&mut rng, 4 * h));
    let l = Arc::new(
        Lstm::new(
            d,
            h,
            vec![[w_ih.clone(), w_hh.clone(), b_ih.clone(), b_hh.clone()]],
        )
        .unwrap(),
    );
    let x = rand_vec(&mut rng, t * d);
    let dev = Cpu::default();
    let y = seq::lstm(tensor4(&dev, x.clone(), [1, t, d, 1]).unwrap(), &l)
        .unwrap()
        .as_vec();
    let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
    let (mut hs, mut cs) = (vec![0.0; h], vec![0.0; h]);
    for s in 0..t {
        let pre: Vec<f64> = (0..4 * h)
            .map(|r| {
                b_ih[r]
                    + b_hh[r]
                    + (0..d).map(|j| w_ih[r * d + j] * x[s * d + j]).sum::<f64>()
                    + (0..h).map(|j| w_hh[r * h + j] * hs[j]).sum::<f64>()
            })
            .collect();
        for j in 0..h {
            let (i, f, g, o) = (
                sig(pre[j]),
                sig(pre[h + j]),
                pre[2 * h + j].tanh(),
                sig(pre[3 * h + j]),
            );
            cs[j] = f * cs[j] + i * g;
            hs[j] = o * cs[j].tanh();
            assert!((y[s * h + j] - hs[j]).abs() < 1e-14, "step {s} unit {j}");
        }
    }
}

#[test]
fn linear_over_steps_log_softmax_and_pick() {
    let mut rng = StdRng::seed_from_u64(3);
    let (n, t, f, k) = (2, 3, 4, 5);
    let w = Arc::new(rand_vec(&mut rng, k * f));
    let b = Arc::new(rand_vec(&mut rng, k));
    check1("linear over steps", [n, t, f, 1], &mut rng, |x| {
        seq::seq_linear(x, &w, [k, f], Some(&b)).unwrap()
    });
    check1("log-softmax", [n, t, k, 1], &mut rng, |x| {
        seq::log_softmax(x).unwrap()
    });
    let index = [0, 4, 2, 1, 1, 3];
    check1("pick", [n, t, k, 1], &mut rng, |x| {
        seq::pick(seq::log_softmax(x).unwrap(), &index).unwrap()
    });
    // log-softmax rows are log-probabilities.
    let dev = Cpu::default();
    let x = tensor4(&dev, rand_vec(&mut rng, n * t * k), [n, t, k, 1]).unwrap();
    let y = seq::log_softmax(x).unwrap().as_vec();
    for row in y.chunks(k) {
        let s: f64 = row.iter().map(|v| v.exp()).sum();
        assert!((s - 1.0).abs() < 1e-12);
    }
}

#[test]
fn tanh_l2_normalize_product_and_concatenation() {
    let mut rng = StdRng::seed_from_u64(4);
    check1("tanh", [2, 3, 4, 1], &mut rng, |x| seq::tanh(x).unwrap());
    check1("l2 normalise", [3, 5, 1, 1], &mut rng, |x| {
        seq::l2_normalize(x, 1e-12).unwrap()
    });
    let dev = Cpu::default();
    let other = tensor4(&dev, rand_vec(&mut rng, 15), [3, 5, 1, 1]).unwrap();
    check1("product with a constant", [3, 5, 1, 1], &mut rng, |x| {
        seq::mul(x, other.clone()).unwrap()
    });
    check1("product with itself", [3, 5, 1, 1], &mut rng, |x| {
        let (a, tape) = dfdx::tensor::SplitTape::split_tape(x);
        let b = a.clone();
        seq::mul(dfdx::tensor::PutTape::put_tape(a, tape), b.leaky_trace()).unwrap()
    });
    let tail = tensor4(&dev, rand_vec(&mut rng, 2 * 2 * 3), [2, 2, 3, 1]).unwrap();
    check1("concatenation, first", [2, 1, 3, 1], &mut rng, |x| {
        seq::concat(x, tail.clone()).unwrap()
    });
    let head = tensor4(&dev, rand_vec(&mut rng, 2 * 3), [2, 1, 3, 1]).unwrap();
    check1("concatenation, second", [2, 2, 3, 1], &mut rng, |x| {
        seq::concat(head.clone().leaky_trace(), x).unwrap()
    });
    // The clamped norm: a zero vector normalises to zero, with gradient dy / eps.
    let z = tensor4(&dev, vec![0.0; 3], [1, 3, 1, 1]).unwrap();
    assert_eq!(seq::l2_normalize(z, 1e-12).unwrap().as_vec(), vec![0.0; 3]);
}

#[test]
fn embedding_looks_up_rows_and_checks_tokens() {
    let dev = Cpu::default();
    let table: Vec<f64> = (0..12).map(|v| v as f64).collect();
    let e = seq::embedding(&dev, &table, 3, &[3, 0, 1, 1], 2).unwrap();
    assert_eq!(ops::dims(&e), [2, 2, 3, 1]);
    assert_eq!(
        e.as_vec(),
        vec![9.0, 10.0, 11.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 3.0, 4.0, 5.0]
    );
    let err = seq::embedding(&dev, &table, 3, &[4], 1).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid token: 4 is beyond the embedding's 4 entries"
    );
}

#[test]
fn lstm_matches_pytorchs_nn_lstm() {
    // A 2-layer nn.LSTM(5, 7, batch_first=True) with synthetic weights (seed 3) on
    // (2, 4, 5), from tools/reference/cnn_lstm_fixtures.py.
    use attrib_dfdx::{ParamKind, Synthetic};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/reference");
    let read = |n: &str| -> Vec<f32> {
        let a: ndarray::ArrayD<f32> =
            ndarray_npy::read_npy(root.join(format!("lstm.{n}.npy"))).unwrap();
        a.iter().copied().collect()
    };
    let synth = Synthetic::new(3, 0);
    let v = |key: &str, shape: &[usize], kind| -> Vec<f32> {
        synth
            .values(key, shape, kind)
            .into_iter()
            .map(|x| x as f32)
            .collect()
    };
    let (d, h) = (5, 7);
    let layers = (0..2)
        .map(|k| {
            let inp = if k == 0 { d } else { h };
            [
                v(&format!("weight_ih_l{k}"), &[4 * h, inp], ParamKind::Weight),
                v(&format!("weight_hh_l{k}"), &[4 * h, h], ParamKind::Weight),
                v(&format!("bias_ih_l{k}"), &[4 * h], ParamKind::Bias),
                v(&format!("bias_hh_l{k}"), &[4 * h], ParamKind::Bias),
            ]
        })
        .collect();
    let lstm = Lstm::<f32>::new(d, h, layers).unwrap();
    let x = read("input");
    let (y, h_n, c_n, _) = attrib_dfdx::kernels::lstm_forward(&lstm.layers, 2, 4, &x);
    for (what, got, want) in [
        ("output", y, read("output")),
        ("h_n", h_n, read("h_n")),
        ("c_n", c_n, read("c_n")),
    ] {
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert_eq!(got.len(), want.len(), "{what}");
        assert!(worst <= 1e-5, "{what}: max difference {worst:e}");
    }
}
