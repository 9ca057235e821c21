//! What a training request must satisfy before anything is charged: the
//! model's size and layout, the settings training itself would refuse, and
//! for a secure round this agent's seat, key and floors.

use tg_proto::TrainRequest;
use tg_types::Parameters;

use crate::Agent;

impl Agent {
    /// What can be checked before anything is charged: the model's shape,
    /// and for a secure round this agent's seat, key and floors.
    pub(crate) fn precheck(&self, req: &TrainRequest) -> Result<(), String> {
        let expected = self.params;
        if req.global.num_values() != expected {
            return Err(format!(
                "the global model has {} values, this agent's model {expected}",
                req.global.num_values()
            ));
        }
        // Everything training itself would refuse, refused here, before the
        // round is charged to the ledger.
        let same_layout = |p: &Parameters| {
            p.tensors().len() == self.layout.len()
                && p.tensors()
                    .iter()
                    .zip(&self.layout)
                    .all(|(t, (name, shape))| &t.name == name && &t.shape == shape)
        };
        // Each tensor's values must fill its shape exactly (a wire model is
        // not built through `Parameters::new`, which checks this).
        let whole = |p: &Parameters| {
            p.tensors().iter().all(|t| {
                t.shape
                    .iter()
                    .try_fold(1usize, |a, &d| a.checked_mul(d))
                    .is_some_and(|n| n == t.data.len())
            })
        };
        if !whole(&req.global) {
            return Err("a tensor of the global model does not hold its shape's values".into());
        }
        if let tg_types::spec::LocalObjective::Scaffold { server_control } = &req.objective
            && !whole(server_control)
        {
            return Err(
                "a tensor of the SCAFFOLD server control does not hold its shape's values".into(),
            );
        }
        if !same_layout(&req.global) {
            return Err("the global model's tensors differ from this agent's model".into());
        }
        if let tg_types::spec::LocalObjective::Scaffold { server_control } = &req.objective
            && !same_layout(server_control)
        {
            return Err(
                "the SCAFFOLD server control's tensors differ from this agent's model".into(),
            );
        }
        let c = &req.config;
        if c.local_epochs == 0 || c.batch_size == 0 {
            return Err("local epochs and batch size must be at least 1".into());
        }
        if !(c.learning_rate > 0.0 && c.learning_rate.is_finite()) {
            return Err(format!(
                "the learning rate {} is not a positive number",
                c.learning_rate
            ));
        }
        if let Some(secure) = &req.secure {
            let me = secure
                .index_of(&self.id)
                .ok_or("this agent is not in the round's participant list")?;
            let key = self
                .identity
                .as_ref()
                .ok_or("this agent has no identity key to sign protocol messages")?;
            if secure.participants[me as usize].1 != key.verifying_key().to_bytes() {
                return Err("the round lists another identity key for this agent".into());
            }
            let (cfg, _) = secure
                .build(req.at, secure.dim_for(expected))
                .map_err(|e| e.to_string())?;
            cfg.check_floors(&self.policy.secure_aggregation)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}
