//! The worker side of a node: capability records, assignments taken into
//! the capped queue, signed results, receipts kept, model artifacts served
//! and fetched.

use super::*;

/// How long a served part may take to reach its fetcher before its slot is freed.
const PART_SEND_TIMEOUT: Duration = Duration::from_secs(5);

impl Node {
    /// Provides this node's kinds and models in the DHT when it can serve them.
    pub(super) async fn advertise(&mut self) {
        if !self.cfg.serve {
            return;
        }
        if !self.verified_model && self.models.has_minilm() {
            // Hash every file once before serving or advertising it.
            let root = self.cfg.models_dir.clone();
            match tokio::task::spawn_blocking(move || MINILM.verify(&root)).await {
                Ok(Ok(())) => self.verified_model = true,
                Ok(Err(e)) => {
                    tracing::warn!(
                        "error[E120]: the model here does not match its pins — {e} — it is neither served nor advertised"
                    );
                    return;
                }
                Err(_) => return,
            }
        }
        let over = self.over_caps().is_some();
        if self.advertised
            && !over
            && let Some((at, n)) = self.announced
            && ANNOUNCE_AGAIN
                .get(n - 1)
                .is_some_and(|d| at.elapsed() >= *d)
        {
            self.advertised = false; // announced again below
        }
        if self.verified_model && !over && !self.advertised {
            let mut ok = true;
            for k in kinds() {
                ok &= self
                    .client
                    .start_providing(&kind_key(k.name()))
                    .await
                    .is_ok();
            }
            ok &= self
                .client
                .start_providing(&model_key(&MINILM.id()))
                .await
                .is_ok();
            self.advertised = ok;
            if ok {
                let n = self.announced.map_or(0, |(_, n)| n);
                self.announced = Some((Instant::now(), n + 1));
            }
        } else if over && self.advertised {
            for k in kinds() {
                let _ = self.client.stop_providing(&kind_key(k.name())).await;
            }
            self.advertised = false;
        }
    }

    pub(super) fn over_caps(&self) -> Option<String> {
        let rss = rss_bytes();
        if rss > self.cfg.worker.mem_cap_bytes {
            return Some(format!(
                "resident set {} MiB is over the {} MiB cap",
                rss >> 20,
                self.cfg.worker.mem_cap_bytes >> 20
            ));
        }
        let q = self.wstats.queue.load(Ordering::Relaxed);
        if q >= self.cfg.worker.max_queue {
            return Some(format!(
                "{q} tasks queued, the bound is {}",
                self.cfg.worker.max_queue
            ));
        }
        None
    }

    pub(super) fn capability(&self) -> Capability {
        let reason = if self.cfg.serve {
            self.over_caps()
        } else {
            Some("not serving tasks".into())
        };
        // Only a model whose every file matched its pin counts as held.
        let held = self.verified_model;
        Capability {
            protocol: crate::COMPUTE_PROTOCOL,
            kinds: if self.cfg.serve && held {
                kinds().iter().map(|k| k.name().to_string()).collect()
            } else {
                Vec::new()
            },
            models: if held {
                vec![MINILM.id().to_hex()]
            } else {
                Vec::new()
            },
            cpu_cap_pct: self.cfg.worker.cpu_cap_pct,
            cpu_used_pct: self.wstats.cpu_used_centi_pct.load(Ordering::Relaxed) / 100,
            queue: self.wstats.queue.load(Ordering::Relaxed),
            over_caps: reason.is_some(),
            reason,
        }
    }

    /// Serves one part of a verified artifact: at most one part in flight per
    /// peer and [`MAX_PARTS_IN_FLIGHT`] in all, read off the event loop; more
    /// asks are answered "not here" so the asker tries another provider.
    pub(super) fn on_fetch(&mut self, peer: PeerId, id: [u8; 32], offset: u64) {
        if !self.verified_model {
            self.send(peer, Msg::NoArtifact { id }, None);
            return;
        }
        let busy = {
            let mut serving = self
                .serving
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            serving.len() >= MAX_PARTS_IN_FLIGHT || !serving.insert(peer)
        };
        if busy {
            // Held, but not now: the fetcher asks again from the same offset.
            self.send(peer, Msg::ArtifactBusy { id }, None);
            return;
        }
        let (root, client, serving, stats) = (
            self.cfg.models_dir.clone(),
            self.client.clone(),
            self.serving.clone(),
            self.stats.clone(),
        );
        stats.sending.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let reply = tokio::task::spawn_blocking(move || artifacts::serve(&root, &id, offset))
                .await
                .unwrap_or(Msg::NoArtifact { id });
            // A fetcher that does not take its part within 5 s loses the slot.
            let _ =
                tokio::time::timeout(PART_SEND_TIMEOUT, client.send(peer, reply.encode())).await;
            serving
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&peer);
            stats.sending.fetch_sub(1, Ordering::Relaxed);
        });
    }

    pub(super) fn decline(&self, peer: PeerId, task: TaskId, code: &str, reason: String) {
        self.stats.declined.fetch_add(1, Ordering::Relaxed);
        self.send(
            peer,
            Msg::Decline {
                task,
                code: code.into(),
                reason,
            },
            None,
        );
    }

    pub(super) fn on_assign(&mut self, peer: PeerId, task: TaskId, input: TaskInput) {
        let Some(jobs) = &self.jobs else {
            return self.decline(peer, task, "E125", "this node does not serve tasks".into());
        };
        let kind = match kind_by_name(&input.kind) {
            Ok(k) => k,
            Err(e) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                return self.decline(peer, task, "E123", e.to_string());
            }
        };
        if let Err(e) = kind.validate(&input) {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            let code = if matches!(e, tg_tasks::TaskError::Oversize { .. }) {
                "E122"
            } else {
                "E121"
            };
            return self.decline(peer, task, code, e.to_string());
        }
        if !matches!(kind.plan(&input), Ok(Plan::Run)) {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return self.decline(
                peer,
                task,
                "E121",
                format!(
                    "{} fans out at the submitter; a worker runs its subtasks only",
                    input.kind
                ),
            );
        }
        if !self.verified_model {
            return self.decline(
                peer,
                task,
                "E120",
                "the model is not here (or not verified) yet".into(),
            );
        }
        if let Some(why) = self.over_caps() {
            return self.decline(peer, task, "E125", why);
        }
        // No one submitter may fill the queue and so lock others out.
        let share = (self.cfg.worker.max_queue / 4).max(1);
        let mine = self.queued_by.get(&peer).copied().unwrap_or(0);
        if mine >= share {
            return self.decline(
                peer,
                task,
                "E125",
                format!("{mine} of your tasks are queued here, a submitter's share of the queue is {share}"),
            );
        }
        tracing::debug!(%peer, task = %task_hex(&task), "assignment queued");
        *self.queued_by.entry(peer).or_insert(0) += 1;
        self.wstats.queue.fetch_add(1, Ordering::Relaxed);
        if jobs
            .send(Job {
                task,
                input,
                from: peer,
                queued: Instant::now(),
            })
            .is_err()
        {
            self.wstats.queue.fetch_sub(1, Ordering::Relaxed);
            self.unqueue(peer);
            return self.decline(peer, task, "E125", "the worker stopped".into());
        }
        self.send(peer, Msg::Accepted { task }, None);
    }

    fn unqueue(&mut self, peer: PeerId) {
        if let Some(n) = self.queued_by.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.queued_by.remove(&peer);
            }
        }
    }

    pub(super) fn on_done(&mut self, d: Done) {
        self.unqueue(d.from);
        match d.output {
            Ok(out) => {
                self.stats.served.fetch_add(1, Ordering::Relaxed);
                // A use, for the model cache's LRU order (at most once a minute).
                if self
                    .touched_at
                    .is_none_or(|t| t.elapsed() > Duration::from_secs(60))
                {
                    self.touched_at = Some(Instant::now());
                    let dir = self.cfg.models_dir.join(MINILM.dir);
                    tokio::task::spawn_blocking(move || crate::cache::touch(&dir));
                }
                let r =
                    SignedResult::sign(&self.key, d.task, &d.input, out, d.queued_ms, d.compute_ms);
                self.remember_result(d.task, d.from, r.output_digest, d.input.texts.len() as u32);
                tracing::debug!(peer = %d.from, task = %task_hex(&d.task), queued_ms = d.queued_ms, compute_ms = d.compute_ms, "result sent");
                self.send(d.from, Msg::Result(r), None);
            }
            Err(e) => self.decline(d.from, d.task, e.code(), e.to_string()),
        }
    }

    pub(super) fn remember_result(
        &mut self,
        task: TaskId,
        to: PeerId,
        digest: [u8; 32],
        points: u32,
    ) {
        if self.sent.insert((task, to), (digest, points)).is_none() {
            self.sent_order.push_back((task, to));
        }
        while self.sent_order.len() > MAX_REMEMBERED_RESULTS {
            if let Some(old) = self.sent_order.pop_front() {
                self.sent.remove(&old);
            }
        }
    }

    pub(super) fn on_receipt(&mut self, peer: PeerId, r: Receipt) {
        if key_of(&peer) != Some(r.submitter) {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, "error[E124]: refused a receipt — it is signed for another submitter than the sending peer — nothing to do");
            return;
        }
        // Only a receipt for a result this node sent to that peer, for that
        // output, and for no more points than the task's texts, is stored.
        match self.sent.get(&(r.task, peer)) {
            Some((digest, points)) if *digest == r.output_digest && r.points <= *points => {}
            _ => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, "error[E124]: refused a receipt — it pays for no result this node sent that peer (or for more than it was worth) — nothing to do");
                return;
            }
        }
        match self.wallet.append(&r) {
            Ok(true) => {
                self.sent.remove(&(r.task, peer));
                self.stats.receipts.fetch_add(1, Ordering::Relaxed);
            }
            Ok(false) => {
                self.sent.remove(&(r.task, peer));
            }
            Err(e) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, "error[E124]: refused a receipt — {e}");
            }
        }
    }

    pub(super) async fn fetch_model(&mut self) {
        let done = match self.fetching.as_mut() {
            None => {
                match crate::cache::make_room(
                    &self.cfg.models_dir,
                    &MINILM,
                    self.cfg.cache_max_bytes,
                ) {
                    Ok(evicted) => {
                        for name in evicted {
                            tracing::info!(
                                "evicted the least recently used model {name} to make room for {}",
                                MINILM.dir
                            );
                        }
                    }
                    // The bound cannot hold the model: no fetch, said once.
                    Err(e @ ComputeError::Artifact(_)) => {
                        self.cache_refused = true;
                        tracing::warn!(
                            "error[E120]: the model is not fetched — {e} — raise --cache-max-mb, or give --models a directory that holds it"
                        );
                        return;
                    }
                    // Eviction failed (a directory could not be read or
                    // removed): fetch anyway; the bound is exceeded until the
                    // next fetch, which tries again.
                    Err(e) => {
                        tracing::warn!(
                            "could not evict from the model cache ({e}); fetching anyway"
                        );
                    }
                }
                self.fetching = Some(artifacts::Fetch::new(self.cfg.models_dir.clone(), &MINILM));
                false
            }
            Some(f) => f.finished(),
        };
        if done {
            self.fetching = None;
            self.advertised = false;
            self.advertise().await;
            return;
        }
        let Some(f) = self.fetching.as_mut() else {
            return;
        };
        if let Some(msg) = f.poll(&self.client) {
            let (peer, m) = msg;
            self.send(peer, m, None);
        }
    }
}
