//! The submitter's view of the providers: a sample of them, probed for
//! their capability records, and scored for assignment.

use super::*;

/// Providers a submitter samples, probes and scores at most.
pub(super) const MAX_CANDIDATES: usize = 64;
/// A provider's capability record is asked for again after this long.
const PROBE_EVERY: Duration = Duration::from_secs(30);
/// A provider that has not answered its probe within this is tried anyway.
const PROBE_GRACE: Duration = Duration::from_secs(2);

/// A probed provider: when it was asked, whether the answer is awaited,
/// whether the probe could not be delivered, and what it said (and when).
#[derive(Debug, Clone)]
pub(super) struct PeerCap {
    probed: Instant,
    awaiting: bool,
    unreachable: bool,
    said: Option<(Capability, Instant)>,
}

/// A record that says its peer can take no work, for `why`.
fn cannot(protocol: u32, why: &str) -> Capability {
    Capability {
        protocol,
        kinds: Vec::new(),
        models: Vec::new(),
        cpu_cap_pct: 0,
        cpu_used_pct: 0,
        queue: 0,
        over_caps: true,
        reason: Some(why.into()),
    }
}

impl Node {
    /// At most [`MAX_CANDIDATES`] providers: up to half of them are proven
    /// workers (a verified result, a clean standing), best standing first,
    /// whether or not they were in the last sample or are briefly over their
    /// caps; the rest of the room is drawn at random from the others at
    /// every refresh, even while every sampled worker is busy, so every
    /// provider gets its turn and no set of identities can hold every slot.
    /// A worker left out keeps the tasks it holds (its results still count).
    /// Excluded peers, peers without an Ed25519 key and unproven peers whose
    /// fresh record says they cannot run tasks never take a slot.
    pub(super) fn sample_providers(&self, found: Vec<PeerId>) -> Vec<PeerId> {
        use rand::seq::SliceRandom;
        let standing = |p: &PeerId| key_of(p).map(|k| self.standings.get(&k));
        let proven = |p: &PeerId| standing(p).is_some_and(|st| st.valid >= 1 && st.score() >= 0.8);
        let mut found: Vec<PeerId> = found
            .into_iter()
            .filter(|p| standing(p).is_some_and(|st| !st.excluded))
            // A failed probe keeps a peer out (made-up ids never answer),
            // and a proven worker's record counts as much as anyone's.
            .filter(|p| !self.unable(p, None))
            .collect();
        found.shuffle(&mut rand::rng());
        let (mut keep, mut rest): (Vec<PeerId>, Vec<PeerId>) = found.into_iter().partition(proven);
        // Ranked by a lower bound on their record, so one verified result
        // does not outrank a long one with a timeout in it.
        let rank = |p: &PeerId| {
            standing(p).map_or(f64::MIN, |st| {
                f64::from(st.valid) - 4.0 * f64::from(st.invalid) - 0.25 * f64::from(st.timeouts)
            })
        };
        keep.sort_by(|a, b| rank(b).total_cmp(&rank(a)));
        // Proven workers beyond the kept half are drawn with the others.
        if keep.len() > MAX_CANDIDATES / 2 {
            rest.extend(keep.split_off(MAX_CANDIDATES / 2));
            rest.shuffle(&mut rand::rng());
        }
        let room = MAX_CANDIDATES.saturating_sub(keep.len());
        keep.extend(rest.into_iter().take(room));
        keep
    }

    /// Asks each sampled provider never asked, or asked over
    /// [`PROBE_EVERY`] ago, for its capability record.
    pub(super) fn probe_providers(&mut self) {
        let now = Instant::now();
        let providers = &self.providers;
        self.caps
            .retain(|p, c| providers.contains(p) || now.duration_since(c.probed) < PROBE_EVERY * 4);
        let due: Vec<PeerId> = self
            .providers
            .iter()
            .filter(|p| {
                self.caps
                    .get(p)
                    .is_none_or(|c| now.duration_since(c.probed) >= PROBE_EVERY)
            })
            .copied()
            .collect();
        for p in due {
            let (said, unreachable) = self
                .caps
                .get(&p)
                .map_or((None, false), |c| (c.said.clone(), c.unreachable));
            // An unreachable peer stays so until it answers.
            self.caps.insert(
                p,
                PeerCap {
                    probed: now,
                    awaiting: true,
                    unreachable,
                    said,
                },
            );
            self.send(p, Msg::Probe, None);
        }
    }

    /// A capability record: kept only as the answer to a probe of ours, and
    /// only when it is of sane size (a record that is not is taken as "cannot").
    pub(super) fn on_capability(&mut self, peer: PeerId, c: Capability) {
        let Some(pc) = self.caps.get_mut(&peer) else {
            return;
        };
        if !pc.awaiting {
            return;
        }
        pc.awaiting = false;
        pc.unreachable = false;
        let sane = c.kinds.len() <= 16
            && c.kinds.iter().all(|k| k.len() <= 32)
            && c.models.len() <= 8
            && c.models.iter().all(|m| m.len() <= 64)
            && c.reason.as_ref().is_none_or(|r| r.len() <= 512);
        let c = if sane {
            c
        } else {
            cannot(c.protocol, "its capability record was oversize")
        };
        pc.said = Some((c, Instant::now()));
    }

    /// A probe could not be sent: the peer is unreachable until it answers one.
    pub(super) fn probe_failed(&mut self, peer: PeerId) {
        if let Some(pc) = self.caps.get_mut(&peer) {
            pc.unreachable = true;
        }
    }

    /// A worker declined with E125: treat it as over its caps until it answers a probe again.
    pub(super) fn over_caps_said(&mut self, peer: PeerId) {
        let Some(pc) = self.caps.get_mut(&peer) else {
            return;
        };
        let why = "it declined a task with E125";
        let mut c = pc
            .said
            .as_ref()
            .map_or_else(|| cannot(COMPUTE_PROTOCOL, why), |(c, _)| c.clone());
        c.over_caps = true;
        c.reason = Some(why.into());
        pc.said = Some((c, Instant::now()));
    }

    /// The fresh record of `p`, if it answered a probe recently.
    fn fresh(&self, p: &PeerId) -> Option<&Capability> {
        match self.caps.get(p) {
            Some(PeerCap {
                said: Some((c, at)),
                ..
            }) if at.elapsed() < PROBE_EVERY * 2 => Some(c),
            _ => None,
        }
    }

    /// Whether the fresh record of `p` says it cannot run `kind` (any kind
    /// with `None`) now: another protocol version, the kind not run, over
    /// its caps; or the peer could not be reached. Such a peer counts as
    /// having answered when a task looks for workers it has not asked.
    pub(super) fn unable(&self, p: &PeerId, kind: Option<&str>) -> bool {
        self.caps.get(p).is_some_and(|c| c.unreachable) || self.says_unable(p, kind)
    }

    /// Whether the fresh record of `p` says it cannot run `kind` (any with `None`).
    fn says_unable(&self, p: &PeerId, kind: Option<&str>) -> bool {
        self.fresh(p).is_some_and(|c| {
            c.protocol != COMPUTE_PROTOCOL
                || c.over_caps
                || kind.is_some_and(|k| !c.kinds.iter().any(|x| x == k))
                || c.kinds.is_empty()
        })
    }

    /// Whether a sampled provider may get work now: its fresh record says it
    /// speaks our protocol, runs `kind` and is under its caps; a peer that
    /// has not answered its probe within [`PROBE_GRACE`] is tried anyway
    /// (the assignment's own timeout guards it), unless it was unreachable.
    pub(super) fn usable(&self, p: &PeerId, kind: Option<&str>) -> bool {
        if self.unable(p, kind) {
            return false;
        }
        if self.fresh(p).is_some() {
            return true;
        }
        self.caps
            .get(p)
            .is_some_and(|pc| pc.probed.elapsed() >= PROBE_GRACE)
    }

    /// A provider's weight for assignment before its load, from what this
    /// submitter measured itself: standing and round trip (the pass divides
    /// by 1 + tasks in flight to it). Capability records decide only who
    /// may get work (they are self-reported, and a few seconds old).
    pub(super) fn base_score(&self, p: &PeerId) -> f64 {
        let st = key_of(p)
            .map(|k| self.standings.get(&k))
            .unwrap_or_default();
        let rtt = self.rtts.get(p).copied().unwrap_or(50.0);
        st.score() / (1.0 + rtt / 100.0)
    }

    /// Probes the sample again when a record has aged or a provider is new
    /// (called only while tasks are active).
    pub(super) fn reprobe_if_due(&mut self) {
        if self
            .caps
            .values()
            .any(|c| c.probed.elapsed() >= PROBE_EVERY)
            || self.providers.iter().any(|p| !self.caps.contains_key(p))
        {
            self.probe_providers();
        }
    }
}
