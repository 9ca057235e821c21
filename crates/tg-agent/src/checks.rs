//! What a training request must satisfy before anything is charged: the
//! model's size and layout, the settings training itself would refuse, and
//! for a secure round this agent's seat, key and floors.

use tg_model::LocalOutcome;
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
        model_fits(&req.global, &self.layout)?;
        if let tg_types::spec::LocalObjective::Scaffold { server_control } = &req.objective {
            model_fits(server_control, &self.layout)
                .map_err(|e| format!("the SCAFFOLD server control: {e}"))?;
        }
        if let Some(why) = self
            .learner
            .capabilities()
            .refuses(&req.config, &req.objective)
        {
            return Err(why);
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

/// `p` has exactly `layout` (names, shapes, in order), and each tensor's
/// values fill its shape (a wire model is not built through
/// `Parameters::new`, which checks this).
pub(crate) fn model_fits(p: &Parameters, layout: &[(String, Vec<usize>)]) -> Result<(), String> {
    let whole = p.tensors().iter().all(|t| {
        t.shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .is_some_and(|n| n == t.data.len())
    });
    if !whole {
        return Err("a tensor of the model does not hold its shape's values".into());
    }
    let same = p.tensors().len() == layout.len()
        && p.tensors()
            .iter()
            .zip(layout)
            .all(|(t, (name, shape))| &t.name == name && &t.shape == shape);
    if !same {
        return Err("the model's tensors differ from this agent's model".into());
    }
    Ok(())
}

/// What a learner returned is checked like anything from outside: the
/// update has the agent's layout and only finite values (a NaN would
/// otherwise poison the sum, or a secure round's encoding).
pub(crate) fn update_fits(
    out: &LocalOutcome,
    layout: &[(String, Vec<usize>)],
) -> Result<(), String> {
    model_fits(&out.update, layout).map_err(|e| format!("the learner's update: {e}"))?;
    if !out.update.all_finite() {
        return Err("the learner's update has non-finite values (NaN or infinity)".into());
    }
    if let Some(c) = &out.control_delta {
        model_fits(c, layout).map_err(|e| format!("the learner's control change: {e}"))?;
        if !c.all_finite() {
            return Err("the learner's control change has non-finite values".into());
        }
    }
    Ok(())
}
