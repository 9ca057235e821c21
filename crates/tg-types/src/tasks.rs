//! Rollout success per task: what agents may report beside an
//! evaluation's totals, checked and summed by name.
//!
//! Design decision: per-task figures are counts (successes, episodes) that
//! must add up to the evaluation's own total, so they can be summed over
//! agents and checked for consistency without trusting names or ratios; a
//! reply whose figures fail the check keeps its totals and loses only them.

use serde::{Deserialize, Serialize};

/// Success counts of one model on one task, summed over the agents that
/// evaluated it (what the dashboard plots per task over versions).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSuccesses {
    /// The task's name, as the agents' evaluation handlers name it.
    pub task: String,
    /// Episodes that succeeded.
    pub successes: u64,
    /// Episodes run.
    pub episodes: u64,
}

/// The most tasks one evaluation may report.
pub const MAX_EVALUATED_TASKS: usize = 64;
/// The longest task name an evaluation may report, in bytes.
pub const MAX_TASK_NAME: usize = 64;

/// Why one agent's per-task figures are unusable, if they are: more than
/// [`MAX_EVALUATED_TASKS`] tasks, a name that is empty, longer than
/// [`MAX_TASK_NAME`], repeated or not of `[A-Za-z0-9._-]`, more successes
/// than episodes, a task with no episode, episodes that do not add up to
/// the evaluation's `num_examples` (or overflow), or successes that do not
/// add up to its `accuracy` × `num_examples` (within one, for rounding).
pub fn task_successes_problem(
    tasks: &[TaskSuccesses],
    num_examples: u64,
    accuracy: f64,
) -> Option<String> {
    if tasks.len() > MAX_EVALUATED_TASKS {
        return Some(format!(
            "{} tasks (at most {MAX_EVALUATED_TASKS})",
            tasks.len()
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    let (mut total, mut won) = (0u64, 0u64);
    for t in tasks {
        let name_ok = !t.task.is_empty()
            && t.task.len() <= MAX_TASK_NAME
            && t.task
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !name_ok {
            return Some(format!(
                "a task name that is not 1–{MAX_TASK_NAME} characters of [A-Za-z0-9._-]"
            ));
        }
        if !seen.insert(t.task.as_str()) {
            return Some(format!("task {} twice", t.task));
        }
        if t.episodes == 0 || t.successes > t.episodes {
            return Some(format!(
                "task {}: {} successes in {} episodes",
                t.task, t.successes, t.episodes
            ));
        }
        let (Some(t_total), Some(t_won)) =
            (total.checked_add(t.episodes), won.checked_add(t.successes))
        else {
            return Some("per-task counts overflow".into());
        };
        (total, won) = (t_total, t_won);
    }
    if tasks.is_empty() {
        return None;
    }
    if total != num_examples {
        return Some(format!(
            "per-task episodes add up to {total}, not the {num_examples} evaluated"
        ));
    }
    let expected = accuracy * num_examples as f64;
    let slack = 1.0f64.max(num_examples as f64 * 1e-12);
    (!(expected.is_finite() && (won as f64 - expected).abs() <= slack)).then(|| {
        format!("per-task successes add up to {won}, not accuracy {accuracy} × {num_examples}")
    })
}

/// One judge's per-task counts scaled down to the `cap` episodes its
/// totals count for in the rollout gate (`num_examples` above `cap`), so
/// that no judge outweighs the others per task either; tasks left with no
/// episode are dropped.
pub fn capped_task_successes(
    tasks: &[TaskSuccesses],
    num_examples: u64,
    cap: u64,
) -> Vec<TaskSuccesses> {
    if num_examples <= cap {
        return tasks.to_vec();
    }
    let scale = |v: u64| (u128::from(v) * u128::from(cap) / u128::from(num_examples)) as u64;
    tasks
        .iter()
        .map(|t| TaskSuccesses {
            task: t.task.clone(),
            successes: scale(t.successes),
            episodes: scale(t.episodes),
        })
        .filter(|t| t.episodes > 0)
        .collect()
}

/// Per-task counts summed over several agents' answers, by task name.
pub fn sum_task_successes<'a>(
    answers: impl IntoIterator<Item = &'a [TaskSuccesses]>,
) -> Vec<TaskSuccesses> {
    let mut by: std::collections::BTreeMap<&str, (u64, u64)> = std::collections::BTreeMap::new();
    for answer in answers {
        for t in answer {
            let e = by.entry(t.task.as_str()).or_default();
            e.0 = e.0.saturating_add(t.successes);
            e.1 = e.1.saturating_add(t.episodes);
        }
    }
    by.into_iter()
        .map(|(task, (successes, episodes))| TaskSuccesses {
            task: task.to_owned(),
            successes,
            episodes,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(task: &str, successes: u64, episodes: u64) -> TaskSuccesses {
        TaskSuccesses {
            task: task.into(),
            successes,
            episodes,
        }
    }

    #[test]
    fn figures_that_do_not_add_up_or_lie_are_refused() {
        assert_eq!(task_successes_problem(&[], 7, 0.5), None);
        assert_eq!(
            task_successes_problem(&[t("reach", 3, 4), t("push-wall", 0, 3)], 7, 3.0 / 7.0),
            None
        );
        for (bad, n, acc, says) in [
            (vec![t("reach", 5, 4)], 4, 1.0, "5 successes in 4"),
            (vec![t("reach", 0, 0)], 0, 0.0, "0 successes in 0"),
            (vec![t("reach", 1, 4), t("reach", 1, 4)], 8, 0.25, "twice"),
            (vec![t("reach", 1, 4)], 9, 0.25, "add up to 4"),
            (vec![t("", 1, 4)], 4, 0.25, "task name"),
            (vec![t("rm -rf /", 1, 4)], 4, 0.25, "task name"),
            (vec![t(&"a".repeat(65), 1, 4)], 4, 0.25, "task name"),
            (
                vec![t("a", 0, u64::MAX), t("b", 1, 1)],
                u64::MAX,
                0.0,
                "overflow",
            ),
            // A judge claiming many episodes at accuracy 0 (which the
            // gate caps) and every one of them a success on one task.
            (
                vec![t("reach", 1 << 60, 1 << 60)],
                1 << 60,
                0.0,
                "not accuracy",
            ),
            (vec![t("reach", 3, 4)], 4, f64::NAN, "not accuracy"),
        ] {
            let why = task_successes_problem(&bad, n, acc).unwrap();
            assert!(why.contains(says), "{why}");
        }
        let many: Vec<_> = (0..65).map(|i| t(&format!("t{i}"), 0, 1)).collect();
        assert!(
            task_successes_problem(&many, 65, 0.0)
                .unwrap()
                .contains("at most")
        );
        // A judge over the gate's cap counts for the cap per task too.
        assert_eq!(
            capped_task_successes(&[t("reach", 30, 40), t("push", 1, 2)], 42, 21),
            vec![t("reach", 15, 20), t("push", 0, 1)]
        );
        assert_eq!(
            capped_task_successes(&[t("reach", u64::MAX, u64::MAX)], u64::MAX, 20),
            vec![t("reach", 20, 20)]
        );
    }

    #[test]
    fn answers_sum_by_task_name() {
        let a = [t("reach", 3, 4), t("push", 1, 2)];
        let b = [t("push", 2, 2)];
        assert_eq!(
            sum_task_successes([&a[..], &b[..]]),
            vec![t("push", 3, 4), t("reach", 3, 4)]
        );
    }
}
