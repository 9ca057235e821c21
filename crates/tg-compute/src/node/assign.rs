//! The assignment pass: tasks short of results, oldest first, get workers
//! drawn at random by score from the sampled providers that can take them.
//!
//! The pass runs on every tick and after every submit, with up to thousands
//! of tasks active, so its cost follows the free worker slots, not the
//! tasks: what depends only on the peers (who can run a kind, who has room,
//! each peer's base score) is worked out once per pass, and a task costs
//! only the peers it has already tried once no slot is free.

use super::*;

/// What one pass knows about the sampled providers for one task kind.
struct KindView {
    /// Providers whose fresh record does not say they cannot run the kind.
    able: HashSet<PeerId>,
    /// Of those, the ones usable now with room for another of our tasks.
    open: Vec<PeerId>,
}

impl Node {
    pub(super) fn assign_pending(&mut self) {
        self.reprobe_if_due();
        if self.active.is_empty() {
            return;
        }
        let candidates: Vec<PeerId> = self
            .providers
            .iter()
            .filter(|p| key_of(p).is_some_and(|k| !self.standings.get(&k).excluded))
            .copied()
            .collect();
        let fresh = self
            .providers_at
            .is_some_and(|t| t.elapsed() < Duration::from_secs(15));
        let per = self.cfg.per_worker;
        // Standing and round trip, once per pass; the load is read live.
        let base: HashMap<PeerId, f64> = candidates
            .iter()
            .map(|p| (*p, self.base_score(p)))
            .collect();
        // A worker with no verified result yet holds one of our tasks at a
        // time (it may sit on an accepted task for the accepted timeout);
        // a proven one up to `per_worker`.
        let limit: HashMap<PeerId, usize> = candidates
            .iter()
            .map(|p| {
                let proven = key_of(p).is_some_and(|k| {
                    let st = self.standings.get(&k);
                    st.valid >= 1 && st.score() >= 0.8
                });
                (*p, if proven { per } else { 1 })
            })
            .collect();
        let room = |inflight: &HashMap<PeerId, usize>, p: &PeerId| {
            inflight.get(p).copied().unwrap_or(0) < limit.get(p).copied().unwrap_or(1)
        };
        let mut views: HashMap<String, KindView> = HashMap::new();
        // Oldest first, so no task waits behind later ones.
        let mut ids: Vec<(Instant, TaskId)> = self
            .active
            .iter()
            .filter(|(_, a)| a.want > a.results.len() + a.assigned.len())
            .map(|(t, a)| (a.created, *t))
            .collect();
        ids.sort_unstable();
        let mut rng = rand::rng();
        for (_, t) in ids {
            let Some(a) = self.active.get(&t) else {
                continue;
            };
            if candidates.is_empty() {
                if !a.searching_told {
                    let parent = a.parent;
                    self.tell(&t, parent, Stage::Searching);
                    if let Some(a) = self.active.get_mut(&t) {
                        a.searching_told = true;
                    }
                }
                continue;
            }
            if !views.contains_key(&a.input.kind) {
                let kind = a.input.kind.as_str();
                let able: HashSet<PeerId> = candidates
                    .iter()
                    .filter(|p| !self.unable(p, Some(kind)))
                    .copied()
                    .collect();
                let open = candidates
                    .iter()
                    .filter(|p| {
                        able.contains(p) && room(&self.inflight, p) && self.usable(p, Some(kind))
                    })
                    .copied()
                    .collect();
                views.insert(a.input.kind.clone(), KindView { able, open });
            }
            let Some(view) = views.get_mut(&a.input.kind) else {
                continue;
            };
            // A peer once given this task (and that answered, timed out,
            // declined or could not be reached) has had its chance; a peer
            // whose fresh record says it cannot take it counts as having
            // answered. Every peer with a result was given the task.
            let answered = a.tried.iter().filter(|p| view.able.contains(p)).count();
            if answered >= view.able.len() {
                // Every capable peer has answered and the quorum still needs
                // more: wait `starve_grace` for new workers, then fail.
                if a.assigned.is_empty() && fresh {
                    self.starve(t);
                }
                continue;
            }
            // Replicas are drawn at random, weighted by score (standing,
            // load, round trip), so no one can arrange to be paired with itself.
            let mut keyed: Vec<(f64, PeerId)> = view
                .open
                .iter()
                // Room is checked again: lists of other kinds share the peers.
                .filter(|p| !a.tried.contains(p) && room(&self.inflight, p))
                .map(|p| {
                    let load = self.inflight.get(p).copied().unwrap_or(0) as f64;
                    let w = (base.get(p).copied().unwrap_or(0.0) / (1.0 + load)).max(1e-9);
                    (-rng.random::<f64>().ln() / w, *p)
                })
                .collect();
            if keyed.is_empty() {
                continue;
            }
            keyed.sort_by(|x, y| x.0.total_cmp(&y.0));
            // Adaptive replication: the first worker's standing sets the replicas.
            let mut want = a.want;
            if a.redundancy == Redundancy::Adaptive
                && a.results.is_empty()
                && a.assigned.is_empty()
                && a.want == 1
                && let Some(k) = key_of(&keyed[0].1)
            {
                want = self.standings.replicas(
                    Redundancy::Adaptive,
                    &k,
                    &self.cfg.policy,
                    rng.random::<f64>(),
                );
            }
            let missing = want.saturating_sub(a.results.len() + a.assigned.len());
            let chosen: Vec<PeerId> = keyed.into_iter().take(missing).map(|(_, p)| p).collect();
            let input = a.input.clone();
            let parent = a.parent;
            if let Some(a) = self.active.get_mut(&t) {
                a.starved_since = None;
                a.want = want;
                if want >= 2 && a.quorum < 2 {
                    a.quorum = 2;
                }
                for p in &chosen {
                    a.assigned.insert(
                        *p,
                        Assignment {
                            since: Instant::now(),
                            accepted: false,
                        },
                    );
                    a.tried.insert(*p);
                }
            }
            for p in &chosen {
                *self.inflight.entry(*p).or_default() += 1;
            }
            let inflight = &self.inflight;
            view.open.retain(|p| room(inflight, p));
            for p in &chosen {
                self.send(
                    *p,
                    Msg::Assign {
                        task: t,
                        input: input.clone(),
                    },
                    Some(t),
                );
            }
            self.tell(
                &t,
                parent,
                Stage::Assigned {
                    to: chosen.iter().map(ToString::to_string).collect(),
                },
            );
        }
    }

    /// A task every capable peer has answered: decide with the results
    /// there are (a 2–1 majority verifies), else start or end its grace.
    fn starve(&mut self, t: TaskId) {
        let Some(a) = self.active.get(&t) else {
            return;
        };
        let (have, want, since) = (a.results.len(), a.want, a.starved_since);
        self.decide_with(t, true);
        if !self.active.contains_key(&t) {
            return;
        }
        if since.is_some_and(|s| s.elapsed() > self.cfg.starve_grace) {
            let reason = format!(
                "not enough independent workers: {have} results, {} more needed, and no capable peer that has not answered joined within {} s",
                want.saturating_sub(have),
                self.cfg.starve_grace.as_secs()
            );
            self.finish_failed(t, reason);
        } else if since.is_none()
            && let Some(a) = self.active.get_mut(&t)
        {
            a.starved_since = Some(Instant::now());
        }
    }
}
