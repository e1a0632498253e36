//! proptest strategies: random network specs, inputs and targets, and whole cases
//! (a network, a batch, a target), for a method author's own `proptest!` blocks.

use attrib_core::Target;
use ndarray::{Array2, Array4};
use proptest::prelude::*;

use crate::nets::NetSpec;

/// Random [`NetSpec`]s: 1-3 input channels, 5-9 pixels, 2-4 channels, batch norm,
/// ReLU or ReLU6, max-pool and a residual block each on or off, 2-4 classes.
pub fn net_spec() -> impl Strategy<Value = NetSpec> {
    (
        1usize..=3,
        5usize..=9,
        2usize..=4,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        2usize..=4,
        any::<u64>(),
    )
        .prop_map(
            |(in_ch, size, hidden, batch_norm, relu6, max_pool, residual, classes, seed)| NetSpec {
                in_ch,
                size,
                hidden,
                batch_norm,
                relu6,
                max_pool,
                residual,
                classes,
                seed,
            },
        )
}

/// A batch of `n` inputs for `spec`, values uniform in `[-1, 1]`.
pub fn input(spec: NetSpec, n: usize) -> impl Strategy<Value = Array4<f64>> {
    let shape = (n, spec.in_ch, spec.size, spec.size);
    proptest::collection::vec(-1.0f64..1.0, n * spec.in_ch * spec.size * spec.size)
        .prop_map(move |v| Array4::from_shape_vec(shape, v).expect("the length matches"))
}

/// A target for `n` items of a model with `classes` outputs: one class, one per item,
/// the top prediction, or a seed of weights in `[-1, 1]`.
pub fn target(classes: usize, n: usize) -> impl Strategy<Value = Target<f64>> {
    prop_oneof![
        (0..classes).prop_map(Target::Class),
        proptest::collection::vec(0..classes, n).prop_map(Target::PerSample),
        Just(Target::TopPredicted),
        proptest::collection::vec(-1.0f64..1.0, n * classes).prop_map(move |v| {
            Target::Seed(Array2::from_shape_vec((n, classes), v).expect("the length matches"))
        }),
    ]
}

/// One test case: a network spec, a batch and a target.
#[derive(Debug, Clone)]
pub struct Case {
    /// The network.
    pub spec: NetSpec,
    /// The batch, `(N, C, H, W)`.
    pub input: Array4<f64>,
    /// The target.
    pub target: Target<f64>,
}

/// Cases with batches of 1 to `max_batch` items.
pub fn case(max_batch: usize) -> impl Strategy<Value = Case> {
    (net_spec(), 1..=max_batch.max(1)).prop_flat_map(|(spec, n)| {
        (input(spec, n), target(spec.classes, n)).prop_map(move |(input, target)| Case {
            spec,
            input,
            target,
        })
    })
}
