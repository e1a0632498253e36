//! Show and Tell's decoding: greedy decoding feeds each argmax back (the tutorial's
//! `sample`), and beam search with a beam as wide as the vocabulary finds the most
//! probable caption, checked against every caption of up to three words; checkpoints
//! round-trip through `.pth`, and mismatched files are errors naming both shapes.

use attrib_dfdx::zoo::show_and_tell::{DecoderSpec, ShowAndTell};
use attrib_dfdx::zoo::trunks::{ConvLayer, Trunk};
use attrib_dfdx::zoo::vqa::{Vqa, VqaSpec};
use attrib_dfdx::{Synthetic, WeightMap};

fn trunk() -> Trunk {
    Trunk::Convs(vec![ConvLayer {
        index: 0,
        out: 4,
        inp: 3,
        kernel: 3,
        bias: true,
        pool: false,
    }])
}

fn model() -> ShowAndTell<f64> {
    let spec = DecoderSpec {
        vocab: 5,
        embed: 4,
        hidden: 6,
        layers: 1,
    };
    ShowAndTell::synthetic(9, trunk(), spec).unwrap()
}

#[test]
fn greedy_feeds_back_each_argmax() {
    let m = model();
    let feature = [0.3, -0.2, 0.5, 0.1];
    let ids = m.greedy(&feature, 6).unwrap();
    let mut prefix = Vec::new();
    for &id in &ids {
        let lp = m.decoder.next_log_probs(&feature, &prefix).unwrap();
        let best = (0..lp.len())
            .max_by(|&a, &b| lp[a].total_cmp(&lp[b]))
            .unwrap();
        assert_eq!(id, best);
        prefix.push(id);
    }
}

#[test]
fn a_full_beam_finds_the_most_probable_caption() {
    let m = model();
    let feature = [1.0, -0.5, 0.25, 0.75];
    let (start, end) = (1, 2);
    // Every caption <start> w1 .. wk <end>, k <= 3, by total log-probability.
    let score = |words: &[usize]| -> f64 {
        let mut toks = vec![start];
        let mut total = 0.0;
        for &w in words.iter().chain([end].iter()) {
            total += m.decoder.next_log_probs(&feature, &toks).unwrap()[w];
            toks.push(w);
        }
        total
    };
    let mut best = (Vec::new(), f64::NEG_INFINITY);
    let others: Vec<usize> = (0..5).filter(|&w| w != end).collect();
    let mut stack: Vec<Vec<usize>> = vec![vec![]];
    while let Some(ws) = stack.pop() {
        let s = score(&ws);
        if s > best.1 {
            best = (ws.clone(), s);
        }
        if ws.len() < 3 {
            for &w in &others {
                let mut n = ws.clone();
                n.push(w);
                stack.push(n);
            }
        }
    }
    let (toks, s) = m.beam_search(&feature, 5, 3, start, end).unwrap();
    let mut want = vec![start];
    want.extend(&best.0);
    want.push(end);
    // A hypothesis cut at the length limit without <end> may also win; compare only
    // when the beam's caption ended.
    if toks.last() == Some(&end) {
        assert_eq!(toks, want, "beam {s} vs exhaustive {}", best.1);
        assert!((s - best.1).abs() < 1e-12);
    } else {
        assert!(s >= best.1 - 1e-12);
    }
}

#[test]
fn checkpoints_round_trip_and_mismatches_name_both_shapes() {
    let spec = DecoderSpec {
        vocab: 5,
        embed: 4,
        hidden: 6,
        layers: 2,
    };
    // The synthetic model's state dicts, through both checkpoint formats.
    let m = ShowAndTell::<f32>::synthetic(3, trunk(), spec).unwrap();
    let enc = state_dict(spec);
    let x = ndarray::Array4::from_shape_fn((1, 3, 8, 8), |(_, c, i, j)| (c + i * j) as f32 / 20.0);
    let back = ShowAndTell::<f32>::from_weights(
        WeightMap::from_bytes(&enc.0.to_pth().unwrap()).unwrap(),
        WeightMap::from_bytes(&enc.1.to_pth_legacy().unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(
        back.features(x.view()).unwrap(),
        m.features(x.view()).unwrap()
    );
    let caps = [vec![1, 3, 2]];
    use attrib_core::Model;
    assert_eq!(
        back.conditioned(&caps).unwrap().forward(x.view()).unwrap(),
        m.conditioned(&caps).unwrap().forward(x.view()).unwrap()
    );
    // A decoder missing its second layer's input weights: one layer is read, and
    // the rest of the second is reported as unused.
    let (e, mut d) = enc.clone();
    d.remove("lstm.weight_ih_l1");
    let err = ShowAndTell::<f32>::from_weights(e, d)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(
            "weights: decoder: unexpected tensors not used by the architecture: `lstm.bias_hh_l1`"
        ),
        "{err}"
    );
    // The encoder's features and the decoder's embeddings must agree.
    let (mut e, d) = enc;
    e.insert(
        "linear.weight",
        attrib_dfdx::weights::RawTensor::from_f32(vec![3, 4], &[0.0; 12]),
    );
    let err = ShowAndTell::<f32>::from_weights(e, d)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "weights: decoder: the encoder gives features of 3 (`linear.weight` [3, 4]) but the decoder embeds words in 4 (`embed.weight` [5, 4])"
    );
}

#[test]
fn vqa_question_vectors_need_known_tokens() {
    let vs = VqaSpec {
        vocab: 7,
        embed: 3,
        hidden: 4,
        layers: 2,
        common: 5,
        mlp: 6,
        answers: 4,
    };
    let v = Vqa::<f32>::synthetic(5, trunk(), vs).unwrap();
    assert_eq!(v.question_vector(&[1, 4, 2]).unwrap().len(), 5);
    assert_eq!(
        v.question_vector(&[1, 7]).unwrap_err().to_string(),
        "invalid question token: 7 is beyond the 7 words"
    );
    assert_eq!(
        v.question_vector(&[]).unwrap_err().to_string(),
        "invalid question: is empty"
    );
}

/// The encoder and decoder state dicts of a synthetic model, with PyTorch's names.
fn state_dict(spec: DecoderSpec) -> (WeightMap, WeightMap) {
    let synth = Synthetic::new(3, 0);
    let f = |key: &str, shape: &[usize], kind| {
        let v: Vec<f32> = synth
            .values(key, shape, kind)
            .into_iter()
            .map(|x| x as f32)
            .collect();
        attrib_dfdx::weights::RawTensor::from_f32(shape.to_vec(), &v)
    };
    use attrib_dfdx::ParamKind::*;
    let mut enc = WeightMap::new();
    enc.insert("cnn.0.weight", f("cnn.0.weight", &[4, 3, 3, 3], Weight));
    enc.insert("cnn.0.bias", f("cnn.0.bias", &[4], Bias));
    enc.insert(
        "linear.weight",
        f("linear.weight", &[spec.embed, 4], Weight),
    );
    enc.insert("linear.bias", f("linear.bias", &[spec.embed], Bias));
    for (k, kind) in [
        ("weight", BnWeight),
        ("bias", BnBias),
        ("running_mean", BnMean),
        ("running_var", BnVar),
    ] {
        let key = format!("bn.{k}");
        enc.insert(key.clone(), f(&key, &[spec.embed], kind));
    }
    let mut dec = WeightMap::new();
    dec.insert(
        "embed.weight",
        f("embed.weight", &[spec.vocab, spec.embed], Weight),
    );
    for l in 0..spec.layers {
        let d = if l == 0 { spec.embed } else { spec.hidden };
        for (name, shape, kind) in [
            (
                format!("lstm.weight_ih_l{l}"),
                vec![4 * spec.hidden, d],
                Weight,
            ),
            (
                format!("lstm.weight_hh_l{l}"),
                vec![4 * spec.hidden, spec.hidden],
                Weight,
            ),
            (format!("lstm.bias_ih_l{l}"), vec![4 * spec.hidden], Bias),
            (format!("lstm.bias_hh_l{l}"), vec![4 * spec.hidden], Bias),
        ] {
            dec.insert(name.clone(), f(&name, &shape, kind));
        }
    }
    dec.insert(
        "linear.weight",
        f("linear.weight", &[spec.vocab, spec.hidden], Weight),
    );
    dec.insert("linear.bias", f("linear.bias", &[spec.vocab], Bias));
    (enc, dec)
}
