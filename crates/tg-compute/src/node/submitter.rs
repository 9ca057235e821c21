//! The submitter side of a node: tasks stored and resumed, assigned to
//! capable peers, judged by quorum, paid with receipts, failed with a reason.

use super::*;

impl Node {
    /// Loads pending tasks from the store (after a restart).
    pub(super) fn resume(&mut self) -> Result<(), ComputeError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        self.standings.by_worker = store.standings()?;
        let leaves = store.pending_leaves()?;
        let parents = store.pending_parents()?;
        for (id, rec) in leaves {
            let parent = rec.parent.as_deref().and_then(crate::store::id_from_hex);
            self.activate(id, rec.input, rec.redundancy, parent);
        }
        // A crash between a last subtask and its parent's combine.
        for p in parents {
            self.maybe_combine(p);
        }
        Ok(())
    }

    pub(super) fn activate(
        &mut self,
        id: TaskId,
        input: TaskInput,
        redundancy: Redundancy,
        parent: Option<TaskId>,
    ) {
        let (want, quorum) = match redundancy {
            Redundancy::Fixed(k) => (usize::from(k), usize::from(k)),
            Redundancy::Adaptive => (1, 1),
        };
        let budget = want.max(2) + self.cfg.policy.tie_breakers;
        self.active.insert(
            id,
            Active {
                input,
                parent,
                redundancy,
                want,
                quorum,
                budget,
                assigned: HashMap::new(),
                results: Vec::new(),
                tried: HashSet::new(),
                created: Instant::now(),
                searching_told: false,
                starved_since: None,
            },
        );
    }

    pub(super) fn unassign(&mut self, peer: PeerId, task: TaskId, count_timeout: bool) {
        let mut struck = None;
        if let Some(a) = self.active.get_mut(&task)
            && a.assigned.remove(&peer).is_some()
        {
            if let Some(n) = self.inflight.get_mut(&peer) {
                *n = n.saturating_sub(1);
            }
            self.stats.reassigned.fetch_add(1, Ordering::Relaxed);
            if count_timeout && let Some(k) = key_of(&peer) {
                self.standings.timeout(k);
                struck = Some(k);
            }
        }
        if let Some(k) = struck {
            self.save_standing(&k);
        }
    }

    pub(super) fn lost(&mut self, peer: PeerId, _why: &str) {
        let tasks: Vec<TaskId> = self
            .active
            .iter()
            .filter(|(_, a)| a.assigned.contains_key(&peer))
            .map(|(t, _)| *t)
            .collect();
        // Reassigned at once, but no strike: a connection can close for
        // reasons not the worker's (a relay's circuit limits, a restart).
        for t in tasks {
            self.unassign(peer, t, false);
        }
        self.providers.retain(|p| *p != peer);
    }

    pub(super) fn on_result(&mut self, peer: PeerId, r: SignedResult) {
        let task = r.task;
        let hold = self.hold_for_receipt();
        let Some(a) = self.active.get_mut(&task) else {
            // Late (already decided) or never assigned: a replay is dropped here.
            return;
        };
        if !a.assigned.contains_key(&peer) {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Its receipt goes back over this connection (see hold_for_receipt).
        let client = self.client.clone();
        tokio::spawn(async move {
            let _ = client.hold(peer, hold).await;
        });
        let Some(worker) = key_of(&peer) else { return };
        let shaped = kind_by_name(&a.input.kind).is_ok_and(|k| k.well_formed(&a.input, &r.output));
        if let Err(e) = r.verify(&a.input, &worker).and_then(|()| {
            if shaped {
                Ok(())
            } else {
                Err(ComputeError::Malformed(
                    "output has the wrong shape for its input".into(),
                ))
            }
        }) {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, "error[E124]: refused a result — {e} — the worker's result is treated as invalid");
            self.unassign(peer, task, false);
            let _ = self.standings.invalid(worker, &self.cfg.policy);
            self.save_standing(&worker);
            return;
        }
        if let Some(x) = a.assigned.remove(&peer) {
            let net = x.since.elapsed().as_micros() as u64;
            let work = (u64::from(r.queued_ms) + u64::from(r.compute_ms)) * 1000;
            self.stats.overhead_count.fetch_add(1, Ordering::Relaxed);
            let over = net.saturating_sub(work);
            tracing::debug!(%peer, task = %task_hex(&task), net_us = net, work_us = work, "result received");
            self.stats
                .overhead_us_sum
                .fetch_add(over, Ordering::Relaxed);
            if let Ok(mut s) = self.stats.overhead_us_samples.lock()
                && s.len() < OVERHEAD_SAMPLES
            {
                s.push(over.min(u64::from(u32::MAX)) as u32);
            }
        }
        if let Some(n) = self.inflight.get_mut(&peer) {
            *n = n.saturating_sub(1);
        }
        a.results.push((peer, r));
        self.decide(task);
    }

    pub(super) fn decide(&mut self, task: TaskId) {
        self.decide_with(task, false);
    }

    /// Judges a task's results. `force` (every capable peer has answered):
    /// decide with what there is, asking no one more.
    pub(super) fn decide_with(&mut self, task: TaskId, force: bool) {
        let Some(a) = self.active.get(&task) else {
            return;
        };
        if a.results.len() < a.want && !force {
            return;
        }
        let Ok(kind) = kind_by_name(&a.input.kind) else {
            return;
        };
        let outs: Vec<&TaskOutput> = a.results.iter().map(|(_, r)| &r.output).collect();
        match judge(kind, &outs, a.quorum, a.budget) {
            Verdict::NeedMore(n) => {
                let budget = a.budget;
                if let Some(a) = self.active.get_mut(&task) {
                    a.want = (a.results.len() + n).min(budget);
                    if a.quorum < 2 {
                        a.quorum = 2; // a disagreement needs a real majority
                    }
                }
            }
            Verdict::Failed(reason) => self.finish_failed(task, reason),
            Verdict::Verified {
                answer,
                agreeing,
                disagreeing,
            } => {
                // A disagreement is settled by a margin of two: while the
                // majority leads by one and the budget allows, ask one more
                // worker. Only a margin of two may strike the minority.
                let margin = agreeing.len().saturating_sub(disagreeing.len());
                if !force
                    && !disagreeing.is_empty()
                    && margin < 2
                    && a.results.len() + a.assigned.len() < a.budget
                {
                    if let Some(a) = self.active.get_mut(&task) {
                        a.want = a.want.max(a.results.len() + 1);
                    }
                    return;
                }
                let Some(a) = self.active.remove(&task) else {
                    return;
                };
                for (p, _) in a.assigned.keys().map(|p| (*p, ())) {
                    if let Some(n) = self.inflight.get_mut(&p) {
                        *n = n.saturating_sub(1);
                    }
                }
                let output = a.results[answer].1.output.clone();
                let points = a.input.texts.len() as u32;
                // A minority is struck only when the majority has an established
                // worker in it: fresh identities (Sybils) agreeing with each
                // other cannot frame an honest worker.
                let established = agreeing.iter().any(|&i| {
                    self.standings.get(&a.results[i].1.worker).valid >= ESTABLISHED_AFTER
                });
                let mut by = Vec::new();
                for &i in &agreeing {
                    let (p, r) = &a.results[i];
                    // Only agreement with another worker counts toward a
                    // streak: a result accepted alone proves nothing.
                    if agreeing.len() >= 2 {
                        self.standings.valid(r.worker);
                        self.save_standing(&r.worker);
                    }
                    by.push(p.to_string());
                    let receipt = Receipt::issue(
                        &self.key,
                        task,
                        r.worker,
                        r.output_digest,
                        points,
                        unix_now(),
                    );
                    self.send(*p, Msg::Receipt(receipt), None);
                }
                let mut rejected = Vec::new();
                for &i in &disagreeing {
                    let (p, r) = &a.results[i];
                    self.stats.disagreements.fetch_add(1, Ordering::Relaxed);
                    // Any minority result ends a streak, struck or not.
                    self.standings.doubt(r.worker);
                    if established
                        && margin >= 2
                        && self.standings.invalid(r.worker, &self.cfg.policy)
                    {
                        tracing::warn!(peer = %p, "worker excluded: its results disagreed with the majority");
                    }
                    self.save_standing(&r.worker);
                    rejected.push(p.to_string());
                }
                let hexes = |v: &[usize]| {
                    v.iter()
                        .map(|&i| hex::encode(a.results[i].1.worker))
                        .collect::<Vec<_>>()
                };
                if let Some(s) = self.store.as_mut()
                    && let Err(e) =
                        s.finish(&task, &output, &hexes(&agreeing), &hexes(&disagreeing))
                {
                    tracing::error!("{e}");
                }
                self.tell(&task, a.parent, Stage::Verified { by, rejected });
                self.completed(task, a.parent, a.created);
            }
        }
    }

    pub(super) fn completed(&mut self, task: TaskId, parent: Option<TaskId>, created: Instant) {
        let ms = created.elapsed().as_millis() as u64;
        match parent {
            None => {
                self.count_done(ms);
                self.tell(&task, None, Stage::Done);
            }
            Some(p) => {
                self.tell(&task, Some(p), Stage::Done);
                self.maybe_combine(p);
            }
        }
    }

    pub(super) fn save_standing(&mut self, worker: &[u8; 32]) {
        let st = self.standings.get(worker);
        if let Some(s) = self.store.as_mut()
            && let Err(e) = s.save_standing(worker, &st)
        {
            tracing::error!("{e}");
        }
    }

    pub(super) fn count_done(&self, ms: u64) {
        self.stats.done.fetch_add(1, Ordering::Relaxed);
        self.stats.latency_ms_sum.fetch_add(ms, Ordering::Relaxed);
        let b = LATENCY_BOUNDS_MS
            .iter()
            .position(|&u| ms <= u)
            .unwrap_or(LATENCY_BOUNDS_MS.len());
        self.stats.latency_buckets[b].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn maybe_combine(&mut self, parent: TaskId) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        let (Ok(Some(rec)), Ok(children)) = (store.get(&parent), store.children(&parent)) else {
            return;
        };
        if rec.state != TaskState::Pending || children.iter().any(|c| c.state != TaskState::Done) {
            return;
        }
        let parts: Vec<TaskOutput> = children.into_iter().filter_map(|c| c.output).collect();
        let result = kind_by_name(&rec.input.kind).and_then(|k| k.combine(&rec.input, parts));
        match result {
            Ok(out) => {
                let _ = store.finish(&parent, &out, &[], &[]);
                let ms = ((unix_now() as f64 - rec.created).max(0.0) * 1000.0) as u64;
                self.count_done(ms);
                self.tell(&parent, None, Stage::Done);
            }
            Err(e) => self.finish_failed(parent, e.to_string()),
        }
    }

    pub(super) fn finish_failed(&mut self, task: TaskId, reason: String) {
        let parent = self.active.remove(&task).and_then(|a| {
            for p in a.assigned.keys() {
                if let Some(n) = self.inflight.get_mut(p) {
                    *n = n.saturating_sub(1);
                }
            }
            a.parent
        });
        if let Some(s) = self.store.as_mut() {
            let _ = s.fail(&task, &reason);
            if let Some(p) = parent {
                let _ = s.fail(&p, &format!("subtask {} failed: {reason}", task_hex(&task)));
            }
        }
        if let Some(p) = parent {
            // Its siblings are no longer worth running.
            let siblings: Vec<TaskId> = self
                .active
                .iter()
                .filter(|(_, a)| a.parent == Some(p))
                .map(|(t, _)| *t)
                .collect();
            for t in siblings {
                if let Some(a) = self.active.remove(&t) {
                    for q in a.assigned.keys() {
                        if let Some(n) = self.inflight.get_mut(q) {
                            *n = n.saturating_sub(1);
                        }
                    }
                }
            }
        }
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
        if let Some(p) = parent {
            self.tell(
                &p,
                None,
                Stage::Failed {
                    reason: format!("subtask {} failed: {reason}", task_hex(&task)),
                },
            );
        }
        self.tell(&task, parent, Stage::Failed { reason });
    }

    pub(super) fn submit(
        &mut self,
        input: TaskInput,
        redundancy: Redundancy,
    ) -> Result<TaskId, ComputeError> {
        let kind = kind_by_name(&input.kind).map_err(ComputeError::Task)?;
        let plan = kind.plan(&input).map_err(ComputeError::Task)?;
        let store = self
            .store
            .as_mut()
            .ok_or_else(|| ComputeError::Io("this node keeps no task store".into()))?;
        let mut rng = rand::rng();
        let id: TaskId = rng.random();
        let subtasks: Vec<(TaskId, TaskInput)> = match plan {
            Plan::Run => Vec::new(),
            Plan::FanOut(parts) => parts.into_iter().map(|p| (rng.random(), p)).collect(),
        };
        store.insert(&id, &input, redundancy, &subtasks)?;
        if subtasks.is_empty() {
            self.activate(id, input, redundancy, None);
        } else {
            for (sid, sin) in subtasks {
                self.activate(sid, sin, redundancy, Some(id));
            }
        }
        Ok(id)
    }

    pub(super) async fn refresh_providers(&mut self) {
        if let Some(rx) = self.provider_query.as_mut() {
            match rx.try_recv() {
                Ok(found) => {
                    let me = self.client.local_peer_id();
                    let found: Vec<PeerId> = found.into_iter().filter(|p| *p != me).collect();
                    let n = found.len();
                    self.providers = self.sample_providers(found);
                    tracing::debug!(
                        found = n,
                        sampled = self.providers.len(),
                        "providers refreshed"
                    );
                    self.providers_at = Some(Instant::now());
                    self.provider_query = None;
                    self.probe_providers();
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
                Err(oneshot::error::TryRecvError::Closed) => self.provider_query = None,
            }
        }
        if self
            .rtts_at
            .is_none_or(|t| t.elapsed() > Duration::from_secs(5))
        {
            self.rtts_at = Some(Instant::now());
            if let Ok(peers) = self.client.peers().await {
                self.rtts = peers
                    .into_iter()
                    .filter_map(|p| p.rtt.map(|r| (p.peer, r.as_secs_f64() * 1000.0)))
                    .collect();
            }
        }
        let stale = self.providers_at.is_none_or(|t| {
            t.elapsed() > Duration::from_secs(if self.providers.is_empty() { 1 } else { 10 })
        });
        if stale && self.provider_query.is_none() {
            let (tx, rx) = oneshot::channel();
            let client = self.client.clone();
            tokio::spawn(async move {
                let found = client
                    .get_providers(&kind_key("embed"))
                    .await
                    .unwrap_or_default();
                let _ = tx.send(found);
            });
            self.provider_query = Some(rx);
        }
    }
}
