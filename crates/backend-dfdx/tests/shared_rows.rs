//! Rows that are equal share the part of a pass below the first recorded layer (one
//! image under several queries: a region model's regions, several targets): the
//! outputs, taps and gradients are those of each row computed alone, in f64, for a
//! ResNet (whose residual branches cross the recording point) and every kind of
//! pass.

use attrib_core::{BackwardRequest, LayerTap, Model, Rectifier, Target};
use attrib_dfdx::Arch;
use ndarray::{concatenate, s, Array4, Axis};

fn image(seed: usize) -> Array4<f64> {
    Array4::from_shape_fn((1, 3, 40, 40), |(_, c, i, j)| {
        (((c + 1) * 37 + i * 11 + j * 5 + seed * 17) % 23) as f64 / 11.0 - 1.0
    })
}

fn close(a: ndarray::ArrayViewD<f64>, b: ndarray::ArrayViewD<f64>, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}");
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
    let d = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
    assert!(d <= 1e-12 * scale, "{what}: {d:e} at {scale:e}");
}

#[test]
fn equal_rows_give_each_row_its_own_results() {
    let net = Arch::Resnet18.synthetic::<f64>(5, 10).unwrap();
    let (a, b) = (image(0), image(1));
    // Rows: a, b, a, a.
    let x = concatenate(Axis(0), &[a.view(), b.view(), a.view(), a.view()]).unwrap();
    let alone = |r: usize| if r == 1 { b.clone() } else { a.clone() };
    let classes = vec![3, 1, 7, 3];
    let target = Target::PerSample(classes.clone());
    let taps = ["layer3".to_string(), "layer4.1.relu1".to_string()];
    for rule in [Rectifier::Gradient, Rectifier::Guided] {
        let mut req = BackwardRequest::tap(x.view(), &target, &taps[0]);
        req.taps = taps.to_vec();
        req.rectifier = rule;
        let out = net.backward(&req).unwrap();
        for (r, &class) in classes.iter().enumerate() {
            let xr = alone(r);
            let t = Target::PerSample(vec![class]);
            let mut one = BackwardRequest::tap(xr.view(), &t, &taps[0]);
            one.taps = taps.to_vec();
            one.rectifier = rule;
            let o = net.backward(&one).unwrap();
            close(
                out.scores.slice(s![r..r + 1, ..]).into_dyn(),
                o.scores.view().into_dyn(),
                "scores",
            );
            for name in &taps {
                let (g, w) = (out.tap(name).unwrap(), o.tap(name).unwrap());
                let row = |t: &Array4<f64>| t.slice(s![r..r + 1, .., .., ..]).to_owned().into_dyn();
                close(
                    row(&g.activation).view(),
                    w.activation.view().into_dyn(),
                    name,
                );
                close(row(&g.gradient).view(), w.gradient.view().into_dyn(), name);
            }
        }
    }
    // Forward, activations and running from a layer: the same rows.
    let scores = net.forward(x.view()).unwrap();
    let (s2, acts) = net.activations(x.view(), &taps).unwrap();
    close(
        scores.view().into_dyn(),
        s2.view().into_dyn(),
        "forward vs activations",
    );
    let from = net
        .forward_from(x.view(), "layer3", acts[0].view(), &[0, 1, 2, 3])
        .unwrap();
    close(
        from.view().into_dyn(),
        scores.view().into_dyn(),
        "forward_from",
    );
    for r in 0..4 {
        let o = net.forward(alone(r).view()).unwrap();
        close(
            scores.slice(s![r..r + 1, ..]).into_dyn(),
            o.view().into_dyn(),
            "forward",
        );
    }
    // With the input gradient nothing is shared, and each row gets its own.
    let g = net
        .backward(&BackwardRequest::input_gradient(
            x.view(),
            &target,
            Rectifier::Gradient,
        ))
        .unwrap()
        .input_grad
        .unwrap();
    for (r, &class) in classes.iter().enumerate() {
        let t = Target::PerSample(vec![class]);
        let o = net
            .backward(&BackwardRequest::input_gradient(
                alone(r).view(),
                &t,
                Rectifier::Gradient,
            ))
            .unwrap()
            .input_grad
            .unwrap();
        close(
            g.slice(s![r..r + 1, .., .., ..]).into_dyn(),
            o.view().into_dyn(),
            "input gradient",
        );
    }
}
