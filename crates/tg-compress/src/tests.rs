use proptest::prelude::*;
use tg_types::view::Lanes;
use tg_types::{NamedTensor, Parameters};

use crate::view::BodyView;
use crate::{Compressed, CompressedView, Compression, Compressor, Shaped};

fn params(a: Vec<f32>, b: Vec<f32>) -> Parameters {
    Parameters::new(vec![
        NamedTensor {
            name: "a".into(),
            shape: vec![a.len()],
            data: a,
        },
        NamedTensor {
            name: "b".into(),
            shape: vec![b.len()],
            data: b,
        },
    ])
    .unwrap()
}

fn layout(p: &Parameters) -> Vec<(String, Vec<usize>)> {
    p.tensors()
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect()
}

/// What the coordinator folds: the wire bytes read back in place.
fn folded(c: &Compressed, p: &Parameters) -> Vec<f32> {
    let bytes = postcard::to_stdvec(c).unwrap();
    let view: CompressedView = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(postcard::to_stdvec(&view).unwrap(), bytes, "one wire form");
    view.check().unwrap();
    let l = layout(p);
    let shaped = Shaped::new(&view, &l);
    assert_eq!(shaped.num_lanes(), p.num_values());
    shaped.lanes().collect()
}

proptest! {
    #[test]
    fn top_k_sends_the_largest_and_carries_the_rest_exactly(
        a in proptest::collection::vec(-10f32..10.0, 1..200),
        b in proptest::collection::vec(-10f32..10.0, 1..50),
        f in 0.001f64..=1.0,
        rounds in 1usize..4,
    ) {
        let p = params(a, b);
        let d = p.num_values();
        let mut comp = Compressor::default();
        for _ in 0..rounds {
            let before: Vec<f32> = if comp.residual().is_empty() { vec![0.0; d] } else { comp.residual().to_vec() };
            let c = comp.encode(&p, Compression::TopK(f)).unwrap();
            let sent = folded(&c, &p);
            let k = sent.iter().filter(|v| **v != 0.0).count();
            prop_assert!(k <= ((f * d as f64).ceil() as usize).max(1));
            // Nothing is lost: sent + carried = update + previously carried.
            for (j, v) in p.values().enumerate() {
                let want = before[j] + v;
                prop_assert_eq!(sent[j] + comp.residual()[j], want);
                // What was sent is at least as large as anything carried.
                if sent[j] != 0.0 {
                    prop_assert_eq!(comp.residual()[j], 0.0);
                }
            }
            let smallest_sent = sent.iter().filter(|v| **v != 0.0).map(|v| v.abs()).fold(f32::INFINITY, f32::min);
            let largest_kept = comp.residual().iter().map(|v| v.abs()).fold(0f32, f32::max);
            prop_assert!(k == 0 || smallest_sent >= largest_kept);
        }
    }

    #[test]
    fn q8_is_within_half_a_step_of_every_value(
        a in proptest::collection::vec(-1e3f32..1e3, 1..700),
        b in proptest::collection::vec(-1e-3f32..1e-3, 1..50),
    ) {
        let p = params(a, b);
        let c = Compressor::default().encode(&p, Compression::Q8).unwrap();
        let got = folded(&c, &p);
        let values: Vec<f32> = p.values().collect();
        for (blk, (g, v)) in got.chunks(256).zip(values.chunks(256)).enumerate() {
            let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
            for (x, y) in g.iter().zip(v) {
                prop_assert!((x - y).abs() <= max / 127.0 * 0.5001 + f32::EPSILON * max, "block {}", blk);
            }
        }
    }

    #[test]
    fn arbitrary_bytes_are_refused_or_read_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(view) = postcard::from_bytes::<CompressedView>(&bytes)
            && view.check().is_ok()
            && view.len < 10_000
        {
            let l = vec![("w".to_string(), vec![view.len as usize])];
            let n = Shaped::new(&view, &l).lanes().count();
            prop_assert_eq!(n as u64, view.len);
        }
    }
}

#[test]
fn one_percent_top_k_is_over_fifty_times_smaller_than_dense() {
    let a: Vec<f32> = (0..100_000)
        .map(|i| ((i * 7919) % 1000) as f32 - 500.0)
        .collect();
    let p = params(a, vec![1.0]);
    let dense = postcard::to_stdvec(&p).unwrap().len();
    let c = Compressor::default()
        .encode(&p, Compression::TopK(0.01))
        .unwrap();
    let sparse = postcard::to_stdvec(&c).unwrap().len();
    assert!(dense / sparse >= 50, "{dense} / {sparse}");
    let q8 = postcard::to_stdvec(&Compressor::default().encode(&p, Compression::Q8).unwrap())
        .unwrap()
        .len();
    assert!(
        (3.8..4.0).contains(&(dense as f64 / q8 as f64)),
        "{dense} / {q8}"
    );
}

#[test]
fn malformed_views_are_refused() {
    let view = |len, body| CompressedView { len, body };
    let f = 1f32.to_le_bytes();
    let two = [f, f].concat();
    for (v, why) in [
        (
            view(
                3,
                BodyView::TopK {
                    gaps: &[1, 0],
                    values: &two,
                },
            ),
            "repeats",
        ),
        (
            view(
                3,
                BodyView::TopK {
                    gaps: &[3],
                    values: &f,
                },
            ),
            "past",
        ),
        (
            view(
                3,
                BodyView::TopK {
                    gaps: &[0x80, 0x00],
                    values: &f,
                },
            ),
            "canonical",
        ),
        (
            view(
                3,
                BodyView::TopK {
                    gaps: &[0, 1],
                    values: &f,
                },
            ),
            "more indices",
        ),
        (
            view(
                2,
                BodyView::Q8 {
                    block: 0,
                    scales: &f,
                    codes: &[1, 2],
                },
            ),
            "block size",
        ),
        (
            view(
                3,
                BodyView::Q8 {
                    block: 2,
                    scales: &f,
                    codes: &[1, 2, 3],
                },
            ),
            "scales",
        ),
        (
            view(
                2,
                BodyView::Q8 {
                    block: 2,
                    scales: &(-1f32).to_le_bytes(),
                    codes: &[1, 2],
                },
            ),
            "negative",
        ),
    ] {
        let e = v.check().unwrap_err();
        assert!(e.contains(why), "{e} ({why})");
    }
}

#[test]
fn a_compressed_update_of_another_size_is_refused_by_the_fold() {
    use tg_strategy::{Fold, FoldRule};
    let p = params(vec![1.0, 2.0], vec![3.0]);
    let other = params(vec![1.0, 2.0, 5.0], vec![3.0]);
    let c = Compressor::default()
        .encode(&other, Compression::Q8)
        .unwrap();
    let bytes = postcard::to_stdvec(&c).unwrap();
    let view: CompressedView = postcard::from_bytes(&bytes).unwrap();
    view.check().unwrap();
    let mut fold = Fold::new(FoldRule::examples(), &p, 2);
    let l = layout(&p);
    let agent = tg_types::AgentId::numbered(0);
    let none: Option<&Parameters> = None;
    assert!(
        fold.add_parts(&agent, 1, &Shaped::new(&view, &l), none)
            .is_err()
    );
    // The right size folds to what the dense update would, within q8's step.
    let c = Compressor::default().encode(&p, Compression::Q8).unwrap();
    let bytes = postcard::to_stdvec(&c).unwrap();
    let view: CompressedView = postcard::from_bytes(&bytes).unwrap();
    fold.add_parts(&agent, 1, &Shaped::new(&view, &l), none)
        .unwrap();
    let mean = fold.mean().unwrap();
    for (m, v) in mean.values().zip(p.values()) {
        assert!((m - v).abs() <= 3.0 / 127.0, "{m} {v}");
    }
}
