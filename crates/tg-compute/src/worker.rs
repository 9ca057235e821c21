//! The worker side: a queue of tasks run one after another on a niced,
//! CPU-capped thread pool, each under a timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tg_tasks::{Models, TaskInput, TaskOutput, kind_by_name};
use tokio::sync::mpsc;

use crate::cap::{Governor, nice_this_thread};
use crate::{ComputeError, TaskId};

/// Settings of a worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// CPU cap, percent of one core, over `cap_window`.
    pub cpu_cap_pct: u32,
    /// Window the cap is measured over.
    pub cap_window: Duration,
    /// Resident-set bound; above it the worker refuses tasks.
    pub mem_cap_bytes: u64,
    /// Tasks queued or running at most.
    pub max_queue: u32,
    /// Longest one task may run.
    pub task_timeout: Duration,
    /// Threads for inference (each niced to 19).
    pub threads: usize,
    /// SIMULATION: perturb every embedding (a lying worker, for red-team tests).
    pub simulate_lying: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            cpu_cap_pct: 50,
            cap_window: Duration::from_secs(10),
            mem_cap_bytes: 1 << 30,
            max_queue: 64,
            task_timeout: Duration::from_secs(60),
            threads: 1,
            simulate_lying: false,
        }
    }
}

/// A job for the worker thread.
pub(crate) struct Job {
    pub task: TaskId,
    pub input: TaskInput,
    pub from: tg_net::PeerId,
    pub queued: Instant,
}

/// What the worker thread hands back.
pub(crate) struct Done {
    pub task: TaskId,
    pub input: TaskInput,
    pub from: tg_net::PeerId,
    pub output: Result<TaskOutput, ComputeError>,
    pub queued_ms: u32,
    pub compute_ms: u32,
}

/// Shared counters of the worker.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Tasks queued or running.
    pub queue: AtomicU32,
    /// CPU used over the last window, percent of one core (×100 for 2 decimals).
    pub cpu_used_centi_pct: AtomicU32,
}

/// Starts the worker thread; jobs go in through the returned sender.
pub(crate) fn spawn(
    cfg: WorkerConfig,
    models: Arc<Models>,
    stats: Arc<WorkerStats>,
    done: mpsc::Sender<Done>,
) -> Result<std::sync::mpsc::SyncSender<Job>, ComputeError> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(cfg.max_queue as usize + 1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.threads.max(1))
        .thread_name(|i| format!("tg-compute-{i}"))
        .start_handler(|_| {
            if let Err(e) = nice_this_thread(19) {
                tracing::warn!("cannot lower the worker thread's priority: {e}");
            }
        })
        .build()
        .map_err(|e| ComputeError::Io(format!("worker pool: {e}")))?;
    std::thread::Builder::new()
        .name("tg-compute-queue".into())
        .spawn(move || {
            if let Err(e) = nice_this_thread(19) {
                tracing::warn!("cannot lower the queue thread's priority: {e}");
            }
            let mut gov = Governor::new(cfg.cpu_cap_pct, cfg.cap_window);
            while let Ok(job) = rx.recv() {
                let pause = gov.pause();
                if !pause.is_zero() {
                    std::thread::sleep(pause);
                }
                let started = Instant::now();
                let queued_ms = started
                    .duration_since(job.queued)
                    .as_millis()
                    .min(u128::from(u32::MAX)) as u32;
                let output = if queued_ms as u128 > cfg.task_timeout.as_millis() {
                    Err(ComputeError::Timeout(format!(
                        "waited {queued_ms} ms in the queue"
                    )))
                } else {
                    run_sliced(
                        &pool,
                        &models,
                        &job.input,
                        cfg.simulate_lying,
                        &mut gov,
                        cfg.task_timeout,
                    )
                };
                let compute_ms = started.elapsed().as_millis().min(u128::from(u32::MAX)) as u32;
                let output = match output {
                    Ok(_) if u128::from(compute_ms) > cfg.task_timeout.as_millis() => {
                        Err(ComputeError::Timeout(format!(
                            "ran {compute_ms} ms, the limit is {} ms",
                            cfg.task_timeout.as_millis()
                        )))
                    }
                    o => o,
                };
                stats
                    .cpu_used_centi_pct
                    .store((gov.used() * 10_000.0) as u32, Ordering::Relaxed);
                stats.queue.fetch_sub(1, Ordering::Relaxed);
                if done
                    .blocking_send(Done {
                        task: job.task,
                        input: job.input,
                        from: job.from,
                        output,
                        queued_ms,
                        compute_ms,
                    })
                    .is_err()
                {
                    return;
                }
            }
        })
        .map_err(|e| ComputeError::Io(format!("worker thread: {e}")))?;
    Ok(tx)
}

/// Texts per slice: the cap is enforced between slices, so a long task is
/// duty-cycled too (a slice of MiniLM on 4 texts is well under a second).
const SLICE: usize = 4;

/// Runs a task in slices of texts, pausing between them as the governor says.
/// Embeddings and labels do not depend on the batch a text is in.
fn run_sliced(
    pool: &rayon::ThreadPool,
    models: &Models,
    input: &TaskInput,
    lying: bool,
    gov: &mut Governor,
    timeout: Duration,
) -> Result<TaskOutput, ComputeError> {
    if !matches!(input.kind.as_str(), "embed" | "classify") || input.texts.len() <= SLICE {
        return run_one(pool, models, input, lying);
    }
    kind_by_name(&input.kind)
        .and_then(|k| k.validate(input))
        .map_err(ComputeError::Task)?;
    let mut vectors = Vec::new();
    let mut labels = Vec::new();
    let started = Instant::now();
    for (i, texts) in input.texts.chunks(SLICE).enumerate() {
        if started.elapsed() > timeout {
            return Err(ComputeError::Timeout(format!(
                "ran past its {} ms limit",
                timeout.as_millis()
            )));
        }
        if i > 0 {
            let pause = gov.pause();
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        }
        let part = TaskInput {
            kind: input.kind.clone(),
            texts: texts.to_vec(),
        };
        match run_one(pool, models, &part, lying)? {
            TaskOutput::Embeddings(v) => vectors.extend(v),
            TaskOutput::Labels(l) => labels.extend(l),
            _ => {
                return Err(ComputeError::Malformed(
                    "unexpected output of a slice".into(),
                ));
            }
        }
    }
    Ok(if input.kind == "embed" {
        TaskOutput::Embeddings(vectors)
    } else {
        TaskOutput::Labels(labels)
    })
}

fn run_one(
    pool: &rayon::ThreadPool,
    models: &Models,
    input: &TaskInput,
    lying: bool,
) -> Result<TaskOutput, ComputeError> {
    let kind = kind_by_name(&input.kind).map_err(ComputeError::Task)?;
    let out = pool
        .install(|| kind.run(models, input))
        .map_err(ComputeError::Task)?;
    Ok(if lying { perturb(out) } else { out })
}

/// SIMULATION of a lying worker: rotates every embedding away from the truth
/// (cosine ≈ 0.8), keeping it unit norm so it looks plausible.
fn perturb(out: TaskOutput) -> TaskOutput {
    let bend = |v: Vec<f32>| {
        let n = v.len();
        let w: Vec<f32> = v
            .iter()
            .enumerate()
            .map(|(i, x)| x + (if i % 2 == 0 { 0.75 } else { -0.75 }) / (n as f32).sqrt())
            .collect();
        let norm = w.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        w.into_iter().map(|x| x / norm).collect()
    };
    match out {
        TaskOutput::Embeddings(vs) => TaskOutput::Embeddings(vs.into_iter().map(bend).collect()),
        TaskOutput::ChunkEmbeddings { spans, vectors } => TaskOutput::ChunkEmbeddings {
            spans,
            vectors: vectors.into_iter().map(bend).collect(),
        },
        other => other,
    }
}
