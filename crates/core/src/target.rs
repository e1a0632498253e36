use std::fmt;
use std::sync::Arc;

use ndarray::{Array1, Array2, ArrayView1, ArrayView2};

use crate::{Error, Result, Scalar};

type ObjectiveFn<F> = dyn Fn(usize, ArrayView1<F>) -> (F, Array1<F>) + Send + Sync;

/// Any differentiable function of one item's outputs: given the batch index and that
/// item's scores it returns the value and its gradient with respect to the scores.
/// This is the paper's "any differentiable output" (Fig. 2): the gradient becomes the
/// seed of the backward pass, the value is what occlusion measures.
#[derive(Clone)]
pub struct Objective<F: Scalar> {
    name: String,
    f: Arc<ObjectiveFn<F>>,
}

impl<F: Scalar> Objective<F> {
    /// Wraps a function returning `(value, d value / d scores)` for one item.
    pub fn new(
        name: impl Into<String>,
        f: impl Fn(usize, ArrayView1<F>) -> (F, Array1<F>) + Send + Sync + 'static,
    ) -> Self {
        Objective {
            name: name.into(),
            f: Arc::new(f),
        }
    }

    /// The softmax probability of `class`, `p_c = softmax(s)_c`, with gradient
    /// `p_c (e_c - p)`. Explaining a probability rather than a logit is a common
    /// variant; the paper recommends logits, which is why `Target::Class` uses them.
    pub fn softmax_probability(class: usize) -> Self {
        Objective::new(format!("softmax[{class}]"), move |_, s: ArrayView1<F>| {
            let max = s.iter().copied().fold(F::neg_infinity(), F::max);
            let e = s.mapv(|v| (v - max).exp());
            let p = &e / e.sum();
            let pc = p.get(class).copied().unwrap_or_else(F::nan);
            let mut g = p.mapv(|v| -pc * v);
            if let Some(gc) = g.get_mut(class) {
                *gc = *gc + pc;
            }
            (pc, g)
        })
    }

    /// The objective's name, for summaries.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Evaluates value and gradient for one item.
    pub fn eval(&self, item: usize, scores: ArrayView1<F>) -> (F, Array1<F>) {
        (self.f)(item, scores)
    }
}

impl<F: Scalar> fmt::Debug for Objective<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Objective({})", self.name)
    }
}

/// What to explain: a seed `dL/dS` on the model's outputs, one row per batch item.
#[derive(Debug, Clone)]
pub enum Target<F: Scalar> {
    /// The same class for every item (the logit before softmax, as in the paper).
    Class(usize),
    /// One class per batch item.
    PerSample(Vec<usize>),
    /// Each item's highest-scoring class.
    TopPredicted,
    /// An explicit seed `(N, num_outputs)`: explains `sum_k seed[n,k] * S[n,k]`, any
    /// linear combination of outputs.
    Seed(Array2<F>),
    /// Any differentiable function of an item's outputs.
    Objective(Objective<F>),
    /// The negation of another target: counterfactual explanations (paper, Sec. 5)
    /// follow the negated gradients.
    Negated(Box<Target<F>>),
}

/// `n class` or `n classes`.
fn classes_text(n: usize) -> String {
    format!("{n} {}", if n == 1 { "class" } else { "classes" })
}

fn per_sample_mismatch(items: usize, classes: usize) -> Error {
    Error::shape(
        "per-sample target classes",
        format!("{} (one per batch item)", classes_text(items)),
        classes_text(classes),
    )
}

impl<F: Scalar> Target<F> {
    /// This target with the sign of its seed and value flipped.
    pub fn negated(&self) -> Target<F> {
        match self {
            Target::Negated(inner) => (**inner).clone(),
            other => Target::Negated(Box::new(other.clone())),
        }
    }

    /// This target with [`Target::TopPredicted`] (also inside [`Target::Negated`])
    /// replaced by the classes it picks on `scores`: a method that evaluates the model
    /// at several inputs (integrated gradients, a noise tunnel, Score-CAM) explains
    /// the same classes at every one.
    pub fn pinned(&self, scores: ArrayView2<F>) -> Result<Target<F>> {
        Ok(match self {
            Target::TopPredicted => {
                let r = self.resolve(scores)?;
                Target::PerSample(r.classes.into_iter().map(|c| c.unwrap_or(0)).collect())
            }
            Target::Negated(inner) => Target::Negated(Box::new(inner.pinned(scores)?)),
            other => other.clone(),
        })
    }

    /// The target for a batch whose row `j` stands for item `items[j]` of a batch of
    /// `n` (a stack of perturbed copies of the items): one class, seed row or
    /// objective per row. [`Target::TopPredicted`] must be [`Target::pinned`] first,
    /// or each copy would explain its own top class.
    pub fn for_items(&self, items: &[usize], n: usize) -> Result<Target<F>> {
        if let Some(&bad) = items.iter().find(|&&i| i >= n) {
            return Err(Error::param(
                "target items",
                format!("item {bad} is not in a batch of {n}"),
            ));
        }
        Ok(match self {
            Target::Class(c) => Target::Class(*c),
            Target::TopPredicted => {
                return Err(Error::param(
                    "target",
                    "top-predicted must be pinned to the original batch's classes before it is repeated",
                ))
            }
            Target::PerSample(cs) => {
                if cs.len() != n {
                    return Err(per_sample_mismatch(n, cs.len()));
                }
                Target::PerSample(items.iter().map(|&i| cs[i]).collect())
            }
            Target::Seed(seed) => {
                if seed.nrows() != n {
                    return Err(Error::shape("target seed rows", n, seed.nrows()));
                }
                Target::Seed(seed.select(ndarray::Axis(0), items))
            }
            Target::Objective(obj) => {
                let inner = obj.clone();
                let items = items.to_vec();
                Target::Objective(Objective::new(obj.name(), move |j, s| {
                    inner.eval(items[j], s)
                }))
            }
            Target::Negated(inner) => Target::Negated(Box::new(inner.for_items(items, n)?)),
        })
    }

    /// The target for batch items `start..end` of a batch of `n`, so that a batch can
    /// be explained in chunks (and batch results compared with per-item ones).
    pub fn slice(&self, start: usize, end: usize, n: usize) -> Result<Target<F>> {
        if start > end || end > n {
            return Err(Error::param(
                "target slice",
                format!("{start}..{end} is not inside a batch of {n}"),
            ));
        }
        Ok(match self {
            Target::Class(c) => Target::Class(*c),
            Target::TopPredicted => Target::TopPredicted,
            Target::PerSample(cs) => {
                if cs.len() != n {
                    return Err(per_sample_mismatch(n, cs.len()));
                }
                Target::PerSample(cs[start..end].to_vec())
            }
            Target::Seed(seed) => {
                if seed.nrows() != n {
                    return Err(Error::shape("target seed rows", n, seed.nrows()));
                }
                Target::Seed(seed.slice(ndarray::s![start..end, ..]).to_owned())
            }
            Target::Objective(obj) => {
                let inner = obj.clone();
                Target::Objective(Objective::new(obj.name(), move |i, s| {
                    inner.eval(i + start, s)
                }))
            }
            Target::Negated(inner) => Target::Negated(Box::new(inner.slice(start, end, n)?)),
        })
    }

    /// Turns the target into a concrete seed for `scores` `(N, K)`, checking class
    /// ranges and seed shapes.
    pub fn resolve(&self, scores: ArrayView2<F>) -> Result<ResolvedTarget<F>> {
        let (n, k) = scores.dim();
        if n == 0 {
            return Err(Error::EmptyBatch);
        }
        let one_hot = |classes: Vec<usize>| -> Result<ResolvedTarget<F>> {
            let mut seed = Array2::zeros((n, k));
            for (item, &c) in classes.iter().enumerate() {
                if c >= k {
                    return Err(Error::ClassOutOfRange {
                        class: c,
                        item,
                        num_classes: k,
                    });
                }
                if scores[[item, c]].is_nan() {
                    return Err(Error::UndefinedOutput { item, output: c });
                }
                seed[[item, c]] = F::one();
            }
            let values =
                Array1::from_iter(classes.iter().enumerate().map(|(i, &c)| scores[[i, c]]));
            Ok(ResolvedTarget {
                seed,
                values,
                classes: classes.into_iter().map(Some).collect(),
                objective: None,
                sign: F::one(),
            })
        };
        match self {
            Target::Class(c) => one_hot(vec![*c; n]),
            Target::PerSample(cs) => {
                if cs.len() != n {
                    return Err(per_sample_mismatch(n, cs.len()));
                }
                one_hot(cs.clone())
            }
            Target::TopPredicted => one_hot(
                scores
                    .rows()
                    .into_iter()
                    .map(|row| {
                        // First maximum, as torch.argmax; NaN never wins.
                        let mut best = 0;
                        for (j, &v) in row.iter().enumerate() {
                            if v > row[best] {
                                best = j;
                            }
                        }
                        best
                    })
                    .collect(),
            ),
            Target::Seed(seed) => {
                if seed.dim() != (n, k) {
                    return Err(Error::shape(
                        "target seed",
                        format!("({n}, {k})"),
                        format!("{:?}", seed.dim()),
                    ));
                }
                if let Some(bad) = seed.iter().find(|v| !v.is_finite()) {
                    return Err(Error::param(
                        "target seed",
                        format!("contains non-finite value {bad}"),
                    ));
                }
                // Outputs a model leaves undefined (NaN) may be skipped with a zero
                // seed; a non-zero seed on one is an error.
                for (((item, output), &w), &v) in seed.indexed_iter().zip(scores.iter()) {
                    if w != F::zero() && v.is_nan() {
                        return Err(Error::UndefinedOutput { item, output });
                    }
                }
                let values = Array1::from_iter(
                    seed.rows()
                        .into_iter()
                        .zip(scores.rows())
                        .map(|(w, s)| seeded_sum(w, s)),
                );
                Ok(ResolvedTarget {
                    seed: seed.clone(),
                    values,
                    classes: vec![None; n],
                    objective: None,
                    sign: F::one(),
                })
            }
            Target::Objective(obj) => {
                let mut seed = Array2::zeros((n, k));
                let mut values = Array1::zeros(n);
                for (i, row) in scores.rows().into_iter().enumerate() {
                    let (v, g) = obj.eval(i, row);
                    if g.len() != k {
                        return Err(Error::shape(
                            format!("gradient returned by objective `{}`", obj.name()),
                            format!("({k},)"),
                            format!("({},)", g.len()),
                        ));
                    }
                    seed.row_mut(i).assign(&g);
                    values[i] = v;
                }
                Ok(ResolvedTarget {
                    seed,
                    values,
                    classes: vec![None; n],
                    objective: Some(obj.clone()),
                    sign: F::one(),
                })
            }
            Target::Negated(inner) => {
                let mut r = inner.resolve(scores)?;
                r.seed.mapv_inplace(|v| -v);
                r.values.mapv_inplace(|v| -v);
                r.sign = -r.sign;
                Ok(r)
            }
        }
    }
}

/// `sum_k w_k s_k` over the outputs with a non-zero seed, so that outputs a model
/// leaves undefined (NaN) and the seed skips do not turn the value into NaN.
fn seeded_sum<F: Scalar>(w: ArrayView1<F>, s: ArrayView1<F>) -> F {
    w.iter()
        .zip(s.iter())
        .filter(|(w, _)| **w != F::zero())
        .fold(F::zero(), |a, (&w, &v)| a + w * v)
}

/// A target made concrete for one batch of scores.
#[derive(Debug, Clone)]
pub struct ResolvedTarget<F: Scalar> {
    /// `dL/dS`, `(N, K)`: what the backward pass starts from.
    pub seed: Array2<F>,
    /// The explained quantity `L` per item at the original input.
    pub values: Array1<F>,
    /// The class per item where the target is a class.
    pub classes: Vec<Option<usize>>,
    objective: Option<Objective<F>>,
    sign: F,
}

impl<F: Scalar> ResolvedTarget<F> {
    /// The explained quantity for `item` at other scores `(K,)` — what occlusion
    /// compares against [`ResolvedTarget::values`].
    pub fn value_at(&self, item: usize, scores: ArrayView1<F>) -> F {
        match &self.objective {
            Some(obj) => self.sign * obj.eval(item, scores).0,
            None => seeded_sum(self.seed.row(item), scores),
        }
    }

    /// Back to a [`Target`] that resolves to this one at the same scores, with no
    /// data-dependent choice left: classes stay classes (a top prediction becomes
    /// the classes it picked), an objective stays the objective, a seed stays the
    /// seed; a negated target stays negated.
    pub fn to_target(&self) -> Target<F> {
        let negate = |t: Target<F>| {
            if self.sign < F::zero() {
                t.negated()
            } else {
                t
            }
        };
        if let Some(obj) = &self.objective {
            return negate(Target::Objective(obj.clone()));
        }
        match self.classes.iter().copied().collect::<Option<Vec<usize>>>() {
            Some(classes) if !classes.is_empty() => negate(Target::PerSample(classes)),
            _ => Target::Seed(self.seed.clone()),
        }
    }

    /// Keeps only the items in `range` (used to explain a batch in chunks).
    pub fn slice_items(&self, start: usize, end: usize) -> ResolvedTarget<F> {
        ResolvedTarget {
            seed: self.seed.slice(ndarray::s![start..end, ..]).to_owned(),
            values: self.values.slice(ndarray::s![start..end]).to_owned(),
            classes: self.classes[start..end].to_vec(),
            objective: self.objective.clone(),
            sign: self.sign,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn class_resolves_to_one_hot() {
        let s = array![[1.0, 3.0, 2.0], [0.5, -1.0, 4.0]];
        let r = Target::Class(1).resolve(s.view()).unwrap();
        assert_eq!(r.seed, array![[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]);
        assert_eq!(r.values, array![3.0, -1.0]);
        let top = Target::<f64>::TopPredicted.resolve(s.view()).unwrap();
        assert_eq!(top.classes, vec![Some(1), Some(2)]);
        let neg = Target::PerSample(vec![0, 2])
            .negated()
            .resolve(s.view())
            .unwrap();
        assert_eq!(neg.seed, array![[-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]);
        assert_eq!(neg.values, array![-1.0, -4.0]);
        assert_eq!(neg.value_at(1, array![0.0, 0.0, 2.5].view()), -2.5);
    }

    #[test]
    fn resolved_targets_convert_back() {
        let s = array![[1.0f64, 3.0, 2.0], [5.0, 4.0, 0.0]];
        let seed = array![[0.5, 0.0, -1.0], [0.0, 2.0, 0.0]];
        let obj = Objective::softmax_probability(2);
        for t in [
            Target::TopPredicted,
            Target::Class(1),
            Target::PerSample(vec![2, 0]),
            Target::Seed(seed),
            Target::TopPredicted.negated(),
            Target::Objective(obj.clone()),
            Target::Objective(obj).negated(),
        ] {
            let r = t.resolve(s.view()).unwrap();
            let back = r.to_target().resolve(s.view()).unwrap();
            assert_eq!(back.seed, r.seed, "{t:?}");
            assert_eq!(back.values, r.values, "{t:?}");
            assert_eq!(back.classes, r.classes, "{t:?}");
        }
        // The top prediction is pinned: other scores keep the classes.
        let t = Target::<f64>::TopPredicted
            .resolve(s.view())
            .unwrap()
            .to_target();
        let other = array![[9.0, 0.0, 0.0], [0.0, 0.0, 9.0]];
        assert_eq!(
            t.resolve(other.view()).unwrap().classes,
            vec![Some(1), Some(0)]
        );
    }

    #[test]
    fn pinned_and_repeated_targets() {
        let s = array![[1.0f64, 3.0, 2.0], [5.0, 4.0, 0.0]];
        let pinned = Target::TopPredicted.negated().pinned(s.view()).unwrap();
        let rows = pinned.for_items(&[1, 0, 1], 2).unwrap();
        let stacked = array![[5.0, 4.0, 0.0], [1.0, 3.0, 2.0], [5.0, 4.0, 0.0]];
        let r = rows.resolve(stacked.view()).unwrap();
        assert_eq!(r.values, array![-5.0, -3.0, -5.0]);
        assert!(Target::<f64>::TopPredicted.for_items(&[0], 2).is_err());
        let seed = Target::Seed(array![[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]]);
        let r = seed
            .for_items(&[1, 1], 2)
            .unwrap()
            .resolve(stacked.slice(ndarray::s![..2, ..]))
            .unwrap();
        assert_eq!(r.values, array![0.0, 4.0]);
        let obj = Target::Objective(Objective::new("item", |i, s: ArrayView1<f64>| {
            (i as f64 * 10.0 + s[0], Array1::zeros(s.len()))
        }));
        let r = obj
            .for_items(&[1, 0], 2)
            .unwrap()
            .resolve(s.view())
            .unwrap();
        assert_eq!(r.values, array![11.0, 5.0]);
        assert!(Target::<f64>::Class(0).for_items(&[2], 2).is_err());
    }

    #[test]
    fn undefined_outputs_may_be_skipped_but_not_explained() {
        // Item 1 has one output fewer (a shorter caption, say): its last is NaN.
        let s = array![[1.0f64, 2.0, 3.0], [4.0, 5.0, f64::NAN]];
        let e = Target::Class(2).resolve(s.view()).unwrap_err();
        assert_eq!(e, Error::UndefinedOutput { item: 1, output: 2 });
        assert_eq!(
            e.to_string(),
            "output 2 of batch item 1 is not defined for that item (e.g. a step beyond its caption); explain only outputs it has"
        );
        let all = Target::Seed(array![[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
            .resolve(s.view())
            .unwrap();
        assert_eq!(all.values, array![6.0, 9.0]);
        assert_eq!(all.value_at(1, array![1.0, 1.0, f64::NAN].view()), 2.0);
        let e = Target::Seed(array![[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
            .resolve(s.view())
            .unwrap_err();
        assert_eq!(e, Error::UndefinedOutput { item: 1, output: 2 });
        assert_eq!(
            Target::<f64>::TopPredicted
                .resolve(s.view())
                .unwrap()
                .classes,
            vec![Some(2), Some(1)]
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let s = array![[1.0f32, 3.0]];
        assert_eq!(
            Target::Class(2).resolve(s.view()).unwrap_err(),
            Error::ClassOutOfRange {
                class: 2,
                item: 0,
                num_classes: 2
            }
        );
        let e = Target::PerSample(vec![0, 1]).resolve(s.view()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "shape mismatch for per-sample target classes: expected 1 class (one per batch item), got 2 classes"
        );
        let e = Target::Seed(array![[1.0f32]])
            .resolve(s.view())
            .unwrap_err();
        assert!(matches!(e, Error::ShapeMismatch { .. }));
        let e = Target::<f32>::TopPredicted
            .resolve(ndarray::Array2::zeros((0, 2)).view())
            .unwrap_err();
        assert_eq!(e, Error::EmptyBatch);
    }

    #[test]
    fn softmax_objective_gradient_matches_finite_difference() {
        let s = array![0.3f64, -1.2, 2.0, 0.7];
        let obj = Objective::softmax_probability(2);
        let (v, g) = obj.eval(0, s.view());
        let h = 1e-6;
        for j in 0..4 {
            let mut sp = s.clone();
            sp[j] += h;
            let mut sm = s.clone();
            sm[j] -= h;
            let fd = (obj.eval(0, sp.view()).0 - obj.eval(0, sm.view()).0) / (2.0 * h);
            assert!((fd - g[j]).abs() < 1e-8, "j={j} fd={fd} g={}", g[j]);
        }
        assert!(v > 0.0 && v < 1.0);
    }
}
