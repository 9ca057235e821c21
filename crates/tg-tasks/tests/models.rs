//! Known answers against the reference implementation, and refusals of bad
//! artifacts and inputs. Needs MiniLM in target/models
//! (`scripts/compute/fetch_models.sh`); skips with a message when it is absent.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic on failed setup

use tg_tasks::{
    EmbedKind, MINILM, Models, TaskError, TaskInput, TaskKind, TaskOutput, kind_by_name,
};

use tg_tasks::testing::models_dir;

fn input(kind: &str, texts: &[&str]) -> TaskInput {
    TaskInput {
        kind: kind.into(),
        texts: texts.iter().map(|s| s.to_string()).collect(),
    }
}

/// First 6 coordinates of sentence-transformers 6.2.0's unit-norm embedding
/// of "The robot picked up the cube." (all-MiniLM-L6-v2, CPU, PyTorch 2.9).
const ROBOT_REF: [f32; 6] = [
    -0.008_678_817,
    0.023_114_169,
    -0.053_873_733,
    0.066_288_91,
    0.023_881_957,
    -0.031_874_306,
];

#[test]
fn embeddings_match_sentence_transformers() {
    let Some(root) = models_dir() else { return };
    let models = Models::new(root);
    let out = EmbedKind
        .run(
            &models,
            &input(
                "embed",
                &["This is a test.", "The robot picked up the cube."],
            ),
        )
        .unwrap();
    let TaskOutput::Embeddings(v) = out else {
        panic!("not embeddings")
    };
    assert_eq!(v.len(), 2);
    assert_eq!(v[1].len(), 384);
    for (got, want) in v[1].iter().zip(ROBOT_REF) {
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
    let norm: f32 = v[0].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5);
}

#[test]
fn batching_and_padding_do_not_change_a_text_s_embedding() {
    let Some(root) = models_dir() else { return };
    let models = Models::new(root);
    let m = models.minilm().unwrap();
    let alone = m.embed(&["short".to_string()]).unwrap();
    let padded = m
        .embed(&[
            "short".to_string(),
            "a much longer sentence that forces padding of the first one".to_string(),
        ])
        .unwrap();
    let k = kind_by_name("embed").unwrap();
    assert!(k.agree(
        &TaskOutput::Embeddings(alone),
        &TaskOutput::Embeddings(vec![padded[0].clone()])
    ));
}

#[test]
fn a_perturbed_embedding_does_not_agree() {
    let Some(root) = models_dir() else { return };
    let models = Models::new(root);
    let m = models.minilm().unwrap();
    let v = m
        .embed(&["federated learning on robots".to_string()])
        .unwrap();
    let mut w = v.clone();
    for (i, x) in w[0].iter_mut().enumerate() {
        *x += if i % 2 == 0 { 0.01 } else { -0.01 };
    }
    let k = kind_by_name("embed").unwrap();
    assert!(!k.agree(
        &TaskOutput::Embeddings(v.clone()),
        &TaskOutput::Embeddings(w)
    ));
    assert!(k.agree(
        &TaskOutput::Embeddings(v.clone()),
        &TaskOutput::Embeddings(v)
    ));
}

#[test]
fn sentiment_is_read_from_real_reviews() {
    let Some(root) = models_dir() else { return };
    let models = Models::new(root);
    let k = kind_by_name("classify").unwrap();
    let out = k
        .run(
            &models,
            &input(
                "classify",
                &[
                    "This medication changed my life, no side effects and my pain is gone.",
                    "Terrible. I had constant nausea and headaches and it did nothing for my condition.",
                ],
            ),
        )
        .unwrap();
    let TaskOutput::Labels(l) = out else {
        panic!("not labels")
    };
    assert_eq!(tg_tasks::LABELS[l[0].label as usize], "positive");
    assert_eq!(tg_tasks::LABELS[l[1].label as usize], "negative");
}

#[test]
fn chunk_fans_out_and_comes_back_in_order() {
    let Some(root) = models_dir() else { return };
    let models = Models::new(root);
    let text = (0..400)
        .map(|i| format!("Sentence number {i} is here."))
        .collect::<Vec<_>>()
        .join(" ");
    let inp = input("chunk", &[&text]);
    let k = kind_by_name("chunk").unwrap();
    let tg_tasks::Plan::FanOut(parts) = k.plan(&inp).unwrap() else {
        panic!("chunk must fan out")
    };
    assert!(parts.len() > 1);
    // Run the subtasks out of order, put them back in plan order.
    let m = models.minilm().unwrap();
    let mut outs: Vec<(usize, TaskOutput)> = parts
        .iter()
        .enumerate()
        .rev()
        .map(|(i, p)| (i, TaskOutput::Embeddings(m.embed(&p.texts).unwrap())))
        .collect();
    outs.sort_by_key(|(i, _)| *i);
    let combined = k
        .combine(&inp, outs.into_iter().map(|(_, o)| o).collect())
        .unwrap();
    let direct = k.run(&models, &inp).unwrap();
    assert!(k.agree(&combined, &direct));
    let TaskOutput::ChunkEmbeddings { spans, vectors } = combined else {
        panic!()
    };
    assert_eq!(spans.len(), vectors.len());
    assert!(spans.windows(2).all(|w| w[0].0 < w[1].0));
}

#[test]
fn a_tampered_artifact_is_refused_by_hash() {
    let Some(root) = models_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join(MINILM.dir);
    std::fs::create_dir_all(&m).unwrap();
    for f in MINILM.files {
        std::fs::copy(root.join(MINILM.dir).join(f.name), m.join(f.name)).unwrap();
    }
    let mut cfg = std::fs::read(m.join("config.json")).unwrap();
    cfg[10] ^= 1;
    std::fs::write(m.join("config.json"), cfg).unwrap();
    let err = Models::new(dir.path()).minilm().unwrap_err();
    assert!(matches!(err, TaskError::ArtifactHash { .. }), "{err}");
}

#[test]
fn bad_inputs_are_refused_before_any_work() {
    let models = Models::new("/nonexistent");
    let e = kind_by_name("translate").err().unwrap();
    assert!(matches!(e, TaskError::UnknownKind(_)));
    let k = kind_by_name("embed").unwrap();
    assert!(matches!(
        k.validate(&input("embed", &[])),
        Err(TaskError::Malformed(_))
    ));
    let big = "x".repeat(tg_tasks::MAX_TEXT_BYTES + 1);
    assert!(matches!(
        k.validate(&input("embed", &[&big])),
        Err(TaskError::Oversize { .. })
    ));
    assert!(matches!(
        k.validate(&input("embed", &["a\0b"])),
        Err(TaskError::Malformed(_))
    ));
    let many: Vec<&str> = vec!["t"; tg_tasks::MAX_TEXTS + 1];
    assert!(matches!(
        k.validate(&input("embed", &many)),
        Err(TaskError::Oversize { .. })
    ));
    assert!(matches!(
        kind_by_name("chunk")
            .unwrap()
            .validate(&input("chunk", &["a", "b"])),
        Err(TaskError::Malformed(_))
    ));
    // A missing model is an error, not a panic.
    assert!(matches!(
        k.run(&models, &input("embed", &["hello"])),
        Err(TaskError::ArtifactMissing { .. })
    ));
}
