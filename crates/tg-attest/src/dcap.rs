//! Intel SGX and TDX quotes, verified offline with `dcap-qvl`.
//!
//! Design decision: dcap-qvl checks the PCK chain to Intel's root, the CRLs,
//! the TCB info and QE identity signatures and their validity windows at the
//! caller's clock, and matches the platform's TCB level. We ask it *not* to
//! reject debug enclaves — that is a policy question, answered in
//! [`crate::policy`] — and turn its verified report into [`Claims`]. Its
//! errors are text; they are mapped to stable [`ReasonCode`]s by the words
//! dcap-qvl uses, with the full text kept as the detail.

use dcap_qvl::QuoteCollateralV3;
use dcap_qvl::quote::Report;
use dcap_qvl::verify::QuoteVerifier;

use crate::{Claims, HardwareType, Reason, ReasonCode, TcbComponent};

/// Verifies a quote of the given kind with its collateral at `now_secs`.
pub fn verify(
    kind: HardwareType,
    quote: &[u8],
    collateral: Option<&[u8]>,
    root_der: Option<&[u8]>,
    now_secs: u64,
) -> Result<Claims, Reason> {
    let Some(collateral) = collateral else {
        return Err(Reason::new(
            ReasonCode::MissingCollateral,
            "a DCAP quote needs its collateral (PCK CRL, TCB info, QE identity) as JSON, from a PCCS or Intel PCS",
        ));
    };
    let collateral: QuoteCollateralV3 = serde_json::from_slice(collateral)
        .map_err(|e| Reason::new(ReasonCode::Malformed, format!("collateral JSON: {e}")))?;
    let verifier = match root_der {
        Some(der) => QuoteVerifier::new(der.to_vec()),
        None => QuoteVerifier::new_prod(),
    }
    .allow_debug(true);
    let verified = verifier
        .verify(quote, &collateral, now_secs)
        .map_err(|e| classify(&format!("{e:#}")))?;
    let claims = match (&verified.report, kind) {
        (Report::SgxEnclave(r), HardwareType::Sgx) => Claims {
            hardware: HardwareType::Sgx,
            measurement: r.mr_enclave.to_vec(),
            tcb: vec![
                TcbComponent {
                    name: "isv_svn".into(),
                    svn: r.isv_svn.into(),
                },
                TcbComponent {
                    name: "isv_prod_id".into(),
                    svn: r.isv_prod_id.into(),
                },
            ],
            tcb_status: Some(verified.status.clone()),
            advisories: verified.advisory_ids.clone(),
            // SGX ATTRIBUTES.DEBUG is bit 1 of the flags.
            debug: r.attributes[0] & 0x02 != 0,
            report_data: r.report_data.to_vec(),
            signer: "Intel SGX PCK".into(),
            extra: vec![("mr_signer".into(), hex::encode(r.mr_signer))],
        },
        (Report::TD10(_) | Report::TD15(_) | Report::TD15Ex(_), HardwareType::Tdx) => {
            let Some(td) = td10(&verified.report) else {
                return Err(Reason::new(
                    ReasonCode::Malformed,
                    "TDX report body missing",
                ));
            };
            Claims {
                hardware: HardwareType::Tdx,
                measurement: td.mr_td.to_vec(),
                tcb: vec![
                    // TEE_TCB_SVN: byte 0 is the TDX module's minor SVN, byte 1 its major SVN.
                    TcbComponent {
                        name: "tdx_module_minor".into(),
                        svn: td.tee_tcb_svn[0].into(),
                    },
                    TcbComponent {
                        name: "tdx_module_major".into(),
                        svn: td.tee_tcb_svn[1].into(),
                    },
                ],
                tcb_status: Some(verified.status.clone()),
                advisories: verified.advisory_ids.clone(),
                // TDATTRIBUTES.DEBUG is bit 0.
                debug: td.td_attributes[0] & 0x01 != 0,
                report_data: td.report_data.to_vec(),
                signer: "Intel TDX PCK".into(),
                extra: vec![
                    ("mr_config_id".into(), hex::encode(td.mr_config_id)),
                    ("mr_owner".into(), hex::encode(td.mr_owner)),
                    ("rtmr0".into(), hex::encode(td.rt_mr0)),
                    ("rtmr1".into(), hex::encode(td.rt_mr1)),
                    ("rtmr2".into(), hex::encode(td.rt_mr2)),
                    ("rtmr3".into(), hex::encode(td.rt_mr3)),
                ],
            }
        }
        (Report::SgxEnclave(_), _) => {
            return Err(Reason::new(
                ReasonCode::Malformed,
                "this is an SGX quote, not a TDX quote (use --kind sgx)",
            ));
        }
        _ => {
            return Err(Reason::new(
                ReasonCode::Malformed,
                "this is a TDX quote, not an SGX quote (use --kind tdx)",
            ));
        }
    };
    Ok(claims)
}

fn td10(r: &Report) -> Option<&dcap_qvl::quote::TDReport10> {
    match r {
        Report::TD10(t) => Some(t),
        Report::TD15(t) => Some(&t.base),
        Report::TD15Ex(t) => Some(&t.base.base),
        Report::SgxEnclave(_) => None,
    }
}

/// Maps dcap-qvl's error text to a stable code, keeping the text.
fn classify(text: &str) -> Reason {
    let lower = text.to_ascii_lowercase();
    let code = if lower.contains("expired")
        || lower.contains("not yet valid")
        || lower.contains("outdated collateral")
        || lower.contains("nextupdate")
        || lower.contains("next_update")
        || lower.contains("issue date")
    {
        ReasonCode::CollateralExpired
    } else if lower.contains("no matching tcb") || lower.contains("tcb level") {
        ReasonCode::NoMatchingTcb
    } else if lower.contains("signature") {
        ReasonCode::BadSignature
    } else if lower.contains("decode") || lower.contains("parse") || lower.contains("invalid quote")
    {
        ReasonCode::Malformed
    } else {
        ReasonCode::QuoteInvalid
    };
    Reason::new(code, text.to_owned())
}
