//! Robust aggregation rules: which one a job uses and the number of
//! attackers it is sized for.
//!
//! Design decision: a rule names the fewest updates it needs for `f`
//! attackers ([`RobustSpec::min_updates`]) here, in the shared vocabulary,
//! so the job's parser refuses a plan that could never meet it and the
//! strategy refuses a round that does not, in the same words.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::spec::SpecError;

/// How the coordinator combines individual updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum AggregatorKind {
    /// Example-weighted mean (no robustness; the baseline).
    FedAvg,
    /// Each update scaled to an L2 norm bound (the job's, or the round's
    /// median norm), then the example-weighted mean.
    NormBound,
    /// Coordinate-wise median (Yin et al. 2018).
    Median,
    /// Coordinate-wise mean after dropping the `f` largest and `f` smallest
    /// values (Yin et al. 2018).
    TrimmedMean,
    /// The one update closest to its n − f − 2 nearest others (Blanchard et
    /// al. 2017).
    Krum,
    /// The example-weighted mean of the n − f updates with the best Krum
    /// scores.
    MultiKrum,
    /// n − 2f updates chosen by repeated Krum, then per coordinate the mean
    /// of the n − 4f values closest to their median (El Mhamdi et al. 2018).
    Bulyan,
    /// Updates whose norm, or cosine distance to the last round's step
    /// (the round's coordinate median in a first round), lies more than 3
    /// robust standard deviations above the median are dropped (σ̂ = 1.4826
    /// · MAD, at least a tenth of the median norm and 0.1 of cosine
    /// distance); the rest are averaged by examples.
    Outlier3Sigma,
}

const AGGREGATOR_FORMS: &str = "`fedavg`, `norm-bound`, `median`, `trimmed-mean`, `krum`, \
                                `multi-krum`, `bulyan` or `outlier-3sigma`";

impl AggregatorKind {
    /// Every rule, in the order the docs list them.
    pub const ALL: [Self; 8] = [
        Self::FedAvg,
        Self::NormBound,
        Self::Median,
        Self::TrimmedMean,
        Self::Krum,
        Self::MultiKrum,
        Self::Bulyan,
        Self::Outlier3Sigma,
    ];

    /// Whether the rule needs every individual update (not just their sum).
    pub fn needs_individual_updates(self) -> bool {
        !matches!(self, Self::FedAvg)
    }
}

impl FromStr for AggregatorKind {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.to_string() == s)
            .ok_or_else(|| SpecError {
                what: "aggregator",
                input: s.to_owned(),
                expected: AGGREGATOR_FORMS,
            })
    }
}

impl fmt::Display for AggregatorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::FedAvg => "fedavg",
            Self::NormBound => "norm-bound",
            Self::Median => "median",
            Self::TrimmedMean => "trimmed-mean",
            Self::Krum => "krum",
            Self::MultiKrum => "multi-krum",
            Self::Bulyan => "bulyan",
            Self::Outlier3Sigma => "outlier-3sigma",
        })
    }
}

/// A robust aggregation rule as a job sets it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RobustSpec {
    /// The rule.
    pub kind: AggregatorKind,
    /// Attackers per round the rule is sized for.
    pub f: u32,
    /// `norm-bound`: the L2 bound; `None` bounds by the round's median norm.
    pub norm_bound: Option<f64>,
}

impl RobustSpec {
    /// The fewest updates a round needs for this rule to tolerate `f`
    /// attackers (the bound each rule's paper proves it under).
    pub fn min_updates(&self) -> usize {
        let f = self.f as usize;
        match self.kind {
            AggregatorKind::FedAvg | AggregatorKind::NormBound => 1,
            // A majority of honest values around every median.
            AggregatorKind::Median | AggregatorKind::TrimmedMean => 2 * f + 1,
            // Median and MAD are honest with an honest majority; a spread
            // needs at least three.
            AggregatorKind::Outlier3Sigma => (2 * f + 1).max(3),
            AggregatorKind::Krum | AggregatorKind::MultiKrum => 2 * f + 3,
            AggregatorKind::Bulyan => 4 * f + 3,
        }
    }

    /// Why this rule cannot run a round of `n` updates, if it cannot.
    pub fn refuses(&self, n: usize) -> Option<String> {
        let need = self.min_updates();
        (n < need).then(|| {
            format!(
                "{} sized for f = {} attackers needs at least {need} updates in a round, and this \
                 one has {n}; lower f (byzantine), select more agents per round, or use {}",
                self.kind,
                self.f,
                self.weaker_choice()
            )
        })
    }

    /// What to use instead when a round is too small for this rule.
    fn weaker_choice(&self) -> &'static str {
        match self.kind {
            AggregatorKind::Bulyan => "multi-krum or median",
            AggregatorKind::Krum | AggregatorKind::MultiKrum => "median or trimmed-mean",
            _ => "norm-bound",
        }
    }

    /// Checks the rule's own settings.
    pub fn check(&self) -> Result<(), String> {
        if let Some(b) = self.norm_bound
            && !(b > 0.0 && b.is_finite())
        {
            return Err(format!("the norm bound must be a positive number, got {b}"));
        }
        if self.norm_bound.is_some() && self.kind != AggregatorKind::NormBound {
            return Err(format!(
                "norm_bound applies to the norm-bound aggregator, not {}",
                self.kind
            ));
        }
        if self.f > 0
            && matches!(
                self.kind,
                AggregatorKind::FedAvg | AggregatorKind::NormBound
            )
        {
            return Err(format!(
                "{} does not take a number of attackers (byzantine = {}): it bounds no one's \
                 count; use median, trimmed-mean, krum, multi-krum, bulyan or outlier-3sigma",
                self.kind, self.f
            ));
        }
        if self.f == 0
            && matches!(
                self.kind,
                AggregatorKind::TrimmedMean | AggregatorKind::Bulyan
            )
        {
            return Err(format!(
                "{} with byzantine = 0 trims nothing: set byzantine to the attackers per round it \
                 must withstand",
                self.kind
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_forms() {
        for k in AggregatorKind::ALL {
            assert_eq!(k.to_string().parse::<AggregatorKind>().unwrap(), k);
        }
        let e = "krumm".parse::<AggregatorKind>().unwrap_err();
        assert!(e.to_string().contains("multi-krum"), "{e}");
    }

    #[test]
    fn each_rule_names_its_minimum() {
        let spec = |kind, f| RobustSpec {
            kind,
            f,
            norm_bound: None,
        };
        assert_eq!(spec(AggregatorKind::Krum, 2).min_updates(), 7);
        assert_eq!(spec(AggregatorKind::Bulyan, 2).min_updates(), 11);
        assert_eq!(spec(AggregatorKind::Median, 2).min_updates(), 5);
        let why = spec(AggregatorKind::Bulyan, 2).refuses(10).unwrap();
        assert!(
            why.contains("at least 11") && why.contains("multi-krum"),
            "{why}"
        );
        assert!(spec(AggregatorKind::Bulyan, 2).refuses(11).is_none());
        assert!(spec(AggregatorKind::FedAvg, 1).check().is_err());
        assert!(spec(AggregatorKind::TrimmedMean, 0).check().is_err());
    }
}
