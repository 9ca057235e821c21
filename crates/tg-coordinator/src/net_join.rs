//! Handling a verified join: identity admission (allow-list, earlier
//! admission, one-time token), then the attestation gate; every decision is
//! recorded in the audit sink.

use std::time::Duration;

use tg_net::PeerId;
use tg_proto::ToAgent;
use tg_types::AgentId;

use super::{Member, NetTransport};
use crate::admission::AttestationOutcome;

impl NetTransport {
    /// Tells a peer it is not admitted, then closes the connection.
    fn refuse_join(&mut self, peer: PeerId, reason: String) {
        let job = self.offer.job;
        self.send_signed(peer, &ToAgent::Refused { job, reason });
        // Let the refusal reach the peer before the connection closes.
        let client = self.client.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let _ = client.disconnect(peer).await;
        });
    }

    /// Handles a verified join request.
    pub(super) async fn on_join(
        &mut self,
        peer: PeerId,
        key: [u8; 32],
        join: tg_proto::JoinRequest,
    ) {
        let id = peer.to_string();
        let name: String = join
            .name
            .chars()
            .filter(|c| !c.is_control())
            .take(64)
            .collect();
        if let Some(root) = &self.admission.fleet_root {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let verdict = match join.certificate.as_deref() {
                None => Err("no fleet certificate".to_owned()),
                Some(c) => c.verify(root, &key, now).map_err(|e| e.to_string()),
            };
            if let Err(why) = verdict {
                self.refuse(&peer, "uncertified", &format!("join refused: {why}"));
                self.metrics.admission("refused", "uncertified");
                self.record(
                    "admission.refused",
                    serde_json::json!({"peer": peer.to_string(), "name": name, "reason": "uncertified", "detail": why}),
                );
                self.refuse_join(
                    peer,
                    format!(
                        "error[E070]: not admitted — this job's fleet root does not certify this agent's identity ({why}) — ask the fleet's operator for a certificate (`tensorguard keys certify`) and pass it with --certificate"
                    ),
                );
                return;
            }
        }
        let admitted = if self.admission.allowed.contains(&peer) {
            true
        } else {
            match self.store.admitted(&id) {
                Ok(Some(_)) => true,
                Ok(None) => match (&join.token, self.admission.tokens) {
                    (Some(token), true) => self
                        .store
                        .redeem_enrollment_token(token, &id, &name)
                        .unwrap_or(false),
                    _ => false,
                },
                Err(e) => {
                    tracing::error!("admission lookup failed: {e}");
                    false
                }
            }
        };
        let id_for_log = id.clone();
        let Ok(agent) = AgentId::new(id) else {
            return;
        };
        if !admitted {
            self.refuse(&peer, "unenrolled", "join refused: peer not admitted");
            self.metrics.admission("refused", "unenrolled");
            self.record(
                "admission.refused",
                serde_json::json!({"peer": id_for_log, "name": name, "reason": "unenrolled", "attestation": AttestationOutcome::not_required().to_json()}),
            );
            let reason = if join.token.is_some() && !self.admission.tokens {
                "error[E070]: not admitted — this job does not accept enrollment tokens, only the \
                 peers on its allow-list — ask the operator to add this agent's peer id to \
                 [admission] allowed_peers"
            } else if join.token.is_some() {
                "error[E070]: not admitted — the enrollment token is unknown, used or expired — \
                 ask the coordinator's operator for a new one (`tensorguard enroll create`)"
            } else {
                "error[E070]: not admitted — this peer id is not on the job's allow-list and no \
                 enrollment token was presented — start the agent with --enroll TOKEN"
            };
            self.refuse_join(peer, reason.into());
            return;
        }
        let attestation = match &self.gate {
            None => AttestationOutcome::not_required(),
            Some(gate) => {
                // A join without an offer on this connection has no nonce to
                // bind: a fresh random one makes its evidence fail the binding.
                let nonce = self.issued.get(&peer).copied().unwrap_or_else(|| {
                    let mut n = [0u8; 32];
                    let _ = getrandom::fill(&mut n);
                    n
                });
                gate.check(
                    &nonce,
                    &peer,
                    &key,
                    join.evidence.as_deref(),
                    std::time::SystemTime::now(),
                )
            }
        };
        if !attestation.admitted {
            self.refuse(&peer, "attestation", &attestation.label);
            self.metrics.admission("refused", "attestation");
            self.record(
                "admission.refused",
                serde_json::json!({"peer": id_for_log, "name": name, "reason": "attestation", "attestation": attestation.to_json()}),
            );
            self.refuse_join(
                peer,
                format!(
                    "error[E093]: not admitted — attestation failed: {} — run the agent in a TEE that meets the job's policy (or, for testing only, --insecure with a coordinator started with --allow-simulated)",
                    attestation.label
                ),
            );
            return;
        }
        let via = if self.admission.allowed.contains(&peer) {
            "allow-list"
        } else if join.token.is_some() {
            "enrollment token"
        } else {
            "earlier admission"
        };
        self.metrics.admission("accepted", via);
        self.record(
            "admission.accepted",
            serde_json::json!({"peer": id_for_log, "name": name, "via": via, "attestation": attestation.to_json()}),
        );
        if let Ok(mut a) = self.attested.lock() {
            a.insert(id_for_log.clone(), attestation.to_json());
        }
        tracing::info!(%peer, %name, attestation = %attestation.label, "agent joined");
        let required = self.gate.is_some().then(|| attestation.to_json());
        self.fleet
            .joined(&id_for_log, &name, &self.offer.job.to_string(), required);
        let outbox = match self.members.remove(&peer) {
            Some(m) if !m.outbox.is_closed() => m.outbox,
            _ => self.outbox_for(peer),
        };
        self.members.insert(
            peer,
            Member {
                agent,
                key,
                name,
                outbox,
                // Passed on to every peer in every round: only a certificate
                // for this member's own key, with a short name.
                certificate: join
                    .certificate
                    .as_deref()
                    .filter(|c| c.identity == key && c.name.chars().count() <= 64)
                    .cloned(),
            },
        );
        self.metrics.set_members(self.member_count());
        // Admitted: from now on it may send frames larger than one chunk.
        if let Err(e) = self.client.allow_transfers(peer, true).await {
            tracing::warn!(%peer, "cannot allow chunked transfers: {e}");
        }
        let job = self.offer.job;
        self.send_signed(peer, &ToAgent::Welcome { job });
    }
}
