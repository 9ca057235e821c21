//! Validated privacy parameters: a value of one of these types is in range,
//! so accountants never re-check (parse, don't validate).

use serde::{Deserialize, Serialize};

use crate::PrivacyError;

macro_rules! checked_f64 {
    ($(#[$doc:meta])* $name:ident, $what:literal, $range:literal, |$v:ident| $ok:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Serialize, Deserialize)]
        #[serde(try_from = "f64", into = "f64")]
        pub struct $name(f64);

        impl $name {
            /// Checks and wraps a value.
            pub fn new($v: f64) -> Result<Self, PrivacyError> {
                if $ok {
                    Ok(Self($v))
                } else {
                    Err(PrivacyError::OutOfRange { what: $what, value: $v, range: $range })
                }
            }

            /// The value.
            pub const fn get(self) -> f64 {
                self.0
            }
        }

        impl TryFrom<f64> for $name {
            type Error = PrivacyError;
            fn try_from(v: f64) -> Result<Self, PrivacyError> {
                Self::new(v)
            }
        }

        impl From<$name> for f64 {
            fn from(v: $name) -> f64 {
                v.0
            }
        }
    };
}

checked_f64!(
    /// Poisson sampling probability q ∈ (0, 1].
    SamplingRate, "sampling rate q", "(0, 1]", |v| v > 0.0 && v <= 1.0
);
checked_f64!(
    /// Gaussian noise multiplier σ (noise std / L2 sensitivity), finite and > 0.
    NoiseMultiplier, "noise multiplier σ", "(0, ∞)", |v| v > 0.0 && v.is_finite()
);
checked_f64!(
    /// δ ∈ (0, 1).
    Delta, "δ", "(0, 1)", |v| v > 0.0 && v < 1.0
);
checked_f64!(
    /// Target ε, finite and > 0.
    Epsilon, "target ε", "(0, ∞)", |v| v > 0.0 && v.is_finite()
);
checked_f64!(
    /// An L2 clipping bound C, finite and > 0.
    ClipNorm, "clipping norm C", "(0, ∞)", |v| v > 0.0 && v.is_finite()
);
checked_f64!(
    /// A quantile in (0, 1), e.g. adaptive clipping's target.
    Quantile, "quantile", "(0, 1)", |v| v > 0.0 && v < 1.0
);
