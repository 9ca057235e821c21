//! What a job requires of the evidence — separate from whether it is genuine.
//!
//! Design decision: a policy is parsed once, at the boundary (`try_from` a
//! raw form), so an unknown TCB component, a measurement that is not hex or
//! an empty Intel status list is an error when the job file is read, not a
//! silent "allow" when the first agent shows up. Evaluation never stops at
//! the first failure: an operator sees every reason at once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Claims, HardwareType, Reason, ReasonCode};

/// TCB component names a policy may set a minimum for.
pub const TCB_COMPONENTS: &[&str] = &[
    "bootloader",
    "tee",
    "snp",
    "microcode",
    "fmc",
    "isv_svn",
    "isv_prod_id",
    "tdx_module_minor",
    "tdx_module_major",
];

/// Reported values (besides the launch measurement) a policy may pin, by
/// the name the verifiers report them under: TDX `rtmr0`–`rtmr3`,
/// `mr_config_id`, `mr_owner`; SEV-SNP `host_data`; SGX `mr_signer`.
pub const PINNABLE: &[&str] = &[
    "rtmr0",
    "rtmr1",
    "rtmr2",
    "rtmr3",
    "mr_config_id",
    "mr_owner",
    "host_data",
    "mr_signer",
];

/// Intel TCB statuses accepted when a policy does not list its own.
pub const DEFAULT_INTEL_STATUS: &[&str] = &["UpToDate"];

/// A parsed attestation policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawPolicy", into = "RawPolicy")]
pub struct Policy {
    hardware: Vec<HardwareType>,
    measurements: Vec<Vec<u8>>,
    any_measurement: bool,
    pinned: BTreeMap<String, Vec<Vec<u8>>>,
    max_vmpl: Option<u32>,
    allow_debug: bool,
    min_tcb: BTreeMap<String, u64>,
    intel_tcb_status: Vec<String>,
}

/// The policy as written in TOML or JSON.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// Allowed hardware (`snp`, `tdx`, `sgx`); empty allows all three.
    #[serde(default)]
    pub hardware: Vec<HardwareType>,
    /// Allowed launch measurements (hex), or `"any"` to admit any code
    /// explicitly (labelled in every output). A job that requires
    /// attestation must say one or the other.
    #[serde(default)]
    pub measurements: Measurements,
    /// Further reported values that must match one of the listed hex
    /// values (see [`PINNABLE`]), e.g. `rtmr1 = ["…"]`, `host_data = ["…"]`.
    #[serde(default)]
    pub pinned: BTreeMap<String, Vec<String>>,
    /// SEV-SNP: the highest VMPL the report may come from (0 is the most
    /// privileged level, where the guest's own firmware runs).
    #[serde(default)]
    pub max_vmpl: Option<u32>,
    /// Admit debuggable environments (default false).
    #[serde(default)]
    pub allow_debug: bool,
    /// Minimum security version per TCB component.
    #[serde(default)]
    pub min_tcb: BTreeMap<String, u64>,
    /// Intel TCB statuses accepted (default `["UpToDate"]`).
    #[serde(default)]
    pub intel_tcb_status: Option<Vec<String>>,
}

/// `measurements = ["hex", …]` or `measurements = "any"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Measurements {
    /// An allow-list (empty: nothing pinned).
    List(Vec<String>),
    /// A keyword; only `"any"` is accepted.
    Keyword(String),
}

impl Default for Measurements {
    fn default() -> Self {
        Self::List(Vec::new())
    }
}

impl TryFrom<RawPolicy> for Policy {
    type Error = String;

    fn try_from(raw: RawPolicy) -> Result<Self, String> {
        let (list, any_measurement) = match &raw.measurements {
            Measurements::List(l) => (l.clone(), false),
            Measurements::Keyword(k) if k == "any" => (Vec::new(), true),
            Measurements::Keyword(k) => {
                return Err(format!(
                    "measurements = \"{k}\": give a list of hex measurements, or \"any\""
                ));
            }
        };
        let mut pinned = BTreeMap::new();
        for (name, values) in &raw.pinned {
            if !PINNABLE.contains(&name.as_str()) {
                return Err(format!(
                    "cannot pin '{name}'; pinnable: {}",
                    PINNABLE.join(", ")
                ));
            }
            if values.is_empty() {
                return Err(format!("pinned.{name} is empty: nothing could ever pass"));
            }
            let mut parsed = Vec::new();
            for v in values {
                parsed.push(
                    hex::decode(v.trim())
                        .map_err(|e| format!("pinned.{name} value '{v}' is not hex: {e}"))?,
                );
            }
            pinned.insert(name.clone(), parsed);
        }
        let mut measurements = Vec::new();
        for m in &list {
            let bytes =
                hex::decode(m.trim()).map_err(|e| format!("measurement '{m}' is not hex: {e}"))?;
            if !matches!(bytes.len(), 32 | 48) {
                return Err(format!(
                    "measurement '{m}' is {} bytes; SGX MRENCLAVE and the simulated measurement are 32, SNP MEASUREMENT and TDX MRTD 48",
                    bytes.len()
                ));
            }
            measurements.push(bytes);
        }
        for name in raw.min_tcb.keys() {
            if !TCB_COMPONENTS.contains(&name.as_str()) {
                return Err(format!(
                    "unknown TCB component '{name}' in min_tcb; known: {}",
                    TCB_COMPONENTS.join(", ")
                ));
            }
        }
        let intel_tcb_status = match raw.intel_tcb_status {
            Some(list) if list.is_empty() => {
                return Err("intel_tcb_status is empty: no Intel platform could ever pass; leave it out for the default [\"UpToDate\"]".into());
            }
            Some(list) => list,
            None => DEFAULT_INTEL_STATUS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        };
        if raw.hardware.contains(&HardwareType::Simulated) {
            return Err("'simulated' cannot be allowed by a policy; simulated evidence is never trusted (the coordinator's --allow-simulated admits it, labelled)".into());
        }
        Ok(Self {
            hardware: raw.hardware,
            measurements,
            any_measurement,
            pinned,
            max_vmpl: raw.max_vmpl,
            allow_debug: raw.allow_debug,
            min_tcb: raw.min_tcb,
            intel_tcb_status,
        })
    }
}

impl From<Policy> for RawPolicy {
    fn from(p: Policy) -> Self {
        RawPolicy {
            hardware: p.hardware,
            measurements: if p.any_measurement {
                Measurements::Keyword("any".into())
            } else {
                Measurements::List(p.measurements.iter().map(hex::encode).collect())
            },
            pinned: p
                .pinned
                .iter()
                .map(|(k, v)| (k.clone(), v.iter().map(hex::encode).collect()))
                .collect(),
            max_vmpl: p.max_vmpl,
            allow_debug: p.allow_debug,
            min_tcb: p.min_tcb,
            intel_tcb_status: Some(p.intel_tcb_status),
        }
    }
}

impl Default for Policy {
    /// Any genuine TEE, no debug, Intel status `UpToDate`.
    fn default() -> Self {
        // The default raw policy always parses.
        Self {
            hardware: Vec::new(),
            measurements: Vec::new(),
            any_measurement: false,
            pinned: BTreeMap::new(),
            max_vmpl: None,
            allow_debug: false,
            min_tcb: BTreeMap::new(),
            intel_tcb_status: DEFAULT_INTEL_STATUS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        }
    }
}

impl Policy {
    /// Every way `claims` falls short of this policy; empty when it meets it.
    pub fn evaluate(&self, claims: &Claims) -> Vec<Reason> {
        let mut out = Vec::new();
        if claims.hardware == HardwareType::Simulated
            || (!self.hardware.is_empty() && !self.hardware.contains(&claims.hardware))
        {
            out.push(Reason::new(
                ReasonCode::HardwareNotAllowed,
                format!("{} is not an allowed TEE for this job", claims.hardware),
            ));
        }
        if !self.measurements.is_empty() && !self.measurements.contains(&claims.measurement) {
            out.push(Reason::new(
                ReasonCode::MeasurementNotAllowed,
                format!(
                    "measurement {} is not on the allow-list ({} entries)",
                    hex::encode(&claims.measurement),
                    self.measurements.len()
                ),
            ));
        }
        for (name, allowed) in &self.pinned {
            let reported = claims
                .extra
                .iter()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| hex::decode(v).ok());
            match reported {
                Some(v) if allowed.contains(&v) => {}
                Some(v) => out.push(Reason::new(
                    ReasonCode::MeasurementNotAllowed,
                    format!(
                        "{name} {} is not one of the {} pinned",
                        hex::encode(v),
                        allowed.len()
                    ),
                )),
                None => out.push(Reason::new(
                    ReasonCode::MeasurementNotAllowed,
                    format!(
                        "{name} is pinned, and {} evidence does not report it",
                        claims.hardware
                    ),
                )),
            }
        }
        if let Some(max) = self.max_vmpl
            && claims.hardware == HardwareType::SevSnp
        {
            let vmpl = claims
                .extra
                .iter()
                .find(|(k, _)| k == "vmpl")
                .and_then(|(_, v)| v.parse::<u32>().ok());
            if vmpl.is_none_or(|v| v > max) {
                out.push(Reason::new(
                    ReasonCode::MeasurementNotAllowed,
                    format!(
                        "the report comes from VMPL {}, above the allowed {max}",
                        vmpl.map_or("?".into(), |v| v.to_string())
                    ),
                ));
            }
        }
        if claims.debug && !self.allow_debug {
            out.push(Reason::new(
                ReasonCode::DebugEnabled,
                "the environment is debuggable: the host can read its memory",
            ));
        }
        for (name, min) in &self.min_tcb {
            if let Some(c) = claims.tcb.iter().find(|c| &c.name == name)
                && c.svn < *min
            {
                out.push(Reason::new(
                    ReasonCode::TcbBelowMinimum,
                    format!("{name} SVN {} is below the minimum {min}", c.svn),
                ));
            }
        }
        if let Some(status) = &claims.tcb_status
            && !self.intel_tcb_status.iter().any(|s| s == status)
        {
            out.push(Reason::new(
                ReasonCode::TcbStatusNotAllowed,
                format!(
                    "Intel TCB status {status} (advisories: {}) is not one of: {}",
                    if claims.advisories.is_empty() {
                        "none".to_owned()
                    } else {
                        claims.advisories.join(", ")
                    },
                    self.intel_tcb_status.join(", ")
                ),
            ));
        }
        out
    }

    /// Allowed measurements.
    pub fn measurements(&self) -> &[Vec<u8>] {
        &self.measurements
    }

    /// Whether the policy pins the code that runs: a launch measurement
    /// (SNP MEASUREMENT, TDX MRTD, SGX MRENCLAVE) or an SGX signer. Values
    /// the host chooses at launch (`host_data`, `mr_config_id`, `mr_owner`)
    /// and RTMRs alone (replayable by a malicious TDVF without MRTD) do not.
    /// A job requiring attestation must pin the code or say `measurements = "any"`.
    pub fn pins_code(&self) -> bool {
        !self.measurements.is_empty() || self.pinned.contains_key("mr_signer")
    }

    /// Whether the policy admits any code on purpose (`measurements = "any"`).
    pub fn admits_any_code(&self) -> bool {
        self.any_measurement && !self.pins_code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TcbComponent;

    fn claims() -> Claims {
        Claims {
            hardware: HardwareType::SevSnp,
            measurement: vec![0xAB; 48],
            tcb: vec![TcbComponent {
                name: "snp".into(),
                svn: 8,
            }],
            tcb_status: None,
            advisories: vec![],
            debug: false,
            report_data: vec![0; 64],
            signer: "test".into(),
            extra: vec![],
        }
    }

    fn parse(json: &str) -> Result<Policy, String> {
        serde_json::from_str::<Policy>(json).map_err(|e| e.to_string())
    }

    #[test]
    fn boundary_rejects_bad_policies() {
        assert!(
            parse(r#"{"min_tcb":{"snpp":1}}"#)
                .unwrap_err()
                .contains("unknown TCB component")
        );
        assert!(
            parse(r#"{"measurements":["zz"]}"#)
                .unwrap_err()
                .contains("not hex")
        );
        assert!(
            parse(r#"{"measurements":["abcd"]}"#)
                .unwrap_err()
                .contains("bytes")
        );
        assert!(
            parse(r#"{"intel_tcb_status":[]}"#)
                .unwrap_err()
                .contains("empty")
        );
        assert!(
            parse(r#"{"hardware":["simulated"]}"#)
                .unwrap_err()
                .contains("never trusted")
        );
        assert!(parse(r#"{"bogus":1}"#).is_err());
    }

    #[test]
    fn pins_runtime_values_and_vmpl() {
        let mut c = claims();
        c.extra = vec![
            ("vmpl".into(), "2".into()),
            ("host_data".into(), hex::encode([7u8; 32])),
        ];
        let p = parse(&format!(
            r#"{{"measurements":"any","pinned":{{"host_data":["{}"]}},"max_vmpl":0}}"#,
            hex::encode([7u8; 32])
        ))
        .unwrap();
        // host_data is the host's choice: it does not pin the code, so the
        // policy still admits any code and says so.
        assert!(!p.pins_code() && p.admits_any_code());
        // VMPL 2 is above 0.
        assert_eq!(p.evaluate(&c).len(), 1);
        c.extra[0].1 = "0".into();
        assert!(p.evaluate(&c).is_empty());
        // Another host_data, and an RTMR an SNP report does not carry.
        c.extra[1].1 = hex::encode([8u8; 32]);
        assert_eq!(p.evaluate(&c).len(), 1);
        let tdx = parse(&format!(
            r#"{{"pinned":{{"rtmr1":["{}"]}}}}"#,
            hex::encode([1u8; 48])
        ))
        .unwrap();
        assert!(tdx.evaluate(&c)[0].detail.contains("does not report"));
        assert!(
            parse(r#"{"pinned":{"rtmr9":["00"]}}"#)
                .unwrap_err()
                .contains("cannot pin")
        );
        assert!(
            parse(r#"{"pinned":{"rtmr0":[]}}"#)
                .unwrap_err()
                .contains("empty")
        );
        assert!(
            parse(r#"{"measurements":"all"}"#)
                .unwrap_err()
                .contains("\"any\"")
        );
        let any = parse(r#"{"measurements":"any"}"#).unwrap();
        assert!(any.admits_any_code() && !any.pins_code());
        assert!(!Policy::default().pins_code() && !Policy::default().admits_any_code());
        // Round trip keeps the keyword.
        let back = serde_json::to_string(&any).unwrap();
        assert!(back.contains("\"any\""), "{back}");
    }

    #[test]
    fn evaluates_every_rule() {
        let ok = parse(&format!(
            r#"{{"measurements":["{}"],"min_tcb":{{"snp":8}}}}"#,
            hex::encode([0xAB; 48])
        ))
        .unwrap();
        assert!(ok.evaluate(&claims()).is_empty());
        let strict = parse(&format!(
            r#"{{"hardware":["tdx"],"measurements":["{}"],"min_tcb":{{"snp":9}}}}"#,
            hex::encode([0xCD; 48])
        ))
        .unwrap();
        let mut c = claims();
        c.debug = true;
        let codes: Vec<_> = strict.evaluate(&c).iter().map(|r| r.code).collect();
        assert_eq!(
            codes,
            [
                ReasonCode::HardwareNotAllowed,
                ReasonCode::MeasurementNotAllowed,
                ReasonCode::DebugEnabled,
                ReasonCode::TcbBelowMinimum
            ]
        );
        c.tcb_status = Some("OutOfDate".into());
        assert!(
            Policy::default()
                .evaluate(&c)
                .iter()
                .any(|r| r.code == ReasonCode::TcbStatusNotAllowed)
        );
    }
}
