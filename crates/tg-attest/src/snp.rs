//! AMD SEV-SNP: report → VCEK/VLEK → ASK/ASVK → ARK.
//!
//! Design decision: the `sev` crate parses the report and checks the RSA-PSS
//! certificate signatures of AMD's chain; the report's own ECDSA P-384
//! signature is checked here over the *raw* signed bytes `[0, 0x2A0)` rather
//! than over a re-serialisation of the parsed report, so a flipped bit in a
//! field the parser ignores is still caught. Validity windows are checked
//! against the caller's clock, and the endorsement key certificate must be
//! for the chip (`hwID`) and TCB (`blSPL`, `teeSPL`, `snpSPL`, `ucodeSPL`)
//! the report names — a genuine VCEK of another chip or firmware level is
//! refused even before its signature would fail.

use std::time::{SystemTime, UNIX_EPOCH};

use p384::ecdsa::signature::DigestVerifier;
use sev::certs::snp::{Certificate, Verifiable};
use sev::firmware::guest::AttestationReport;
use sev::parser::ByteParser;
use sha2_10::Digest;
use x509_cert::der::Decode;
use x509_cert::der::asn1::ObjectIdentifier;

use crate::{Claims, HardwareType, Reason, ReasonCode, TcbComponent};

/// Length of a SEV-SNP attestation report.
pub const REPORT_LEN: usize = 1184;
/// The report bytes covered by its signature.
const SIGNED_LEN: usize = 0x2A0;

const OID_BL_SPL: &str = "1.3.6.1.4.1.3704.1.3.1";
const OID_TEE_SPL: &str = "1.3.6.1.4.1.3704.1.3.2";
const OID_SNP_SPL: &str = "1.3.6.1.4.1.3704.1.3.3";
const OID_UCODE_SPL: &str = "1.3.6.1.4.1.3704.1.3.8";
const OID_HW_ID: &str = "1.3.6.1.4.1.3704.1.4";

/// AMD roots (ARKs) and the intermediates (ASKs, ASVKs) the verifier may
/// use to reach them. Only ARKs are trust anchors: an intermediate from the
/// evidence is used only if an ARK here signed it.
#[derive(Clone, Debug)]
pub struct SnpAnchors {
    /// Self-signed AMD root keys (DER).
    pub arks: Vec<Vec<u8>>,
    /// Known intermediates (DER).
    pub intermediates: Vec<Vec<u8>>,
}

impl Default for SnpAnchors {
    /// AMD's Milan, Genoa and Turin ARK and ASK, as built into `sev`.
    fn default() -> Self {
        use sev::certs::snp::builtin::{genoa, milan, turin};
        let der = |pem: &[u8]| Certificate::from_pem(pem).and_then(|c| c.to_der()).ok();
        Self {
            arks: [milan::ARK, genoa::ARK, turin::ARK]
                .iter()
                .filter_map(|p| der(p))
                .collect(),
            intermediates: [milan::ASK, genoa::ASK, turin::ASK]
                .iter()
                .filter_map(|p| der(p))
                .collect(),
        }
    }
}

impl SnpAnchors {
    /// Only the given roots (PEM or DER), and no built-in intermediates.
    pub fn from_roots(roots: &[Vec<u8>]) -> Result<Self, Reason> {
        let mut arks = Vec::new();
        for r in roots {
            arks.extend(parse_cert_bundle(r)?);
        }
        Ok(Self {
            arks,
            intermediates: Vec::new(),
        })
    }
}

/// Splits a PEM bundle (one or more certificates) or a single DER
/// certificate into DER blobs.
pub fn parse_cert_bundle(bytes: &[u8]) -> Result<Vec<Vec<u8>>, Reason> {
    let malformed = |e: String| Reason::new(ReasonCode::Malformed, format!("certificate: {e}"));
    if bytes.starts_with(b"-----BEGIN") || bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        let text = std::str::from_utf8(bytes).map_err(|e| malformed(e.to_string()))?;
        let mut out = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
            let end_marker = "-----END CERTIFICATE-----";
            let Some(end) = rest[start..].find(end_marker) else {
                return Err(malformed("unterminated PEM block".into()));
            };
            let block = &rest[start..start + end + end_marker.len()];
            let cert =
                Certificate::from_pem(block.as_bytes()).map_err(|e| malformed(e.to_string()))?;
            out.push(cert.to_der().map_err(|e| malformed(e.to_string()))?);
            rest = &rest[start + end + end_marker.len()..];
        }
        if out.is_empty() {
            return Err(malformed("no PEM certificate found".into()));
        }
        Ok(out)
    } else {
        Certificate::from_der(bytes).map_err(|e| malformed(e.to_string()))?;
        Ok(vec![bytes.to_vec()])
    }
}

struct Cert {
    sev: Certificate,
    x509: x509_cert::Certificate,
}

impl Cert {
    fn parse(der: &[u8]) -> Result<Self, Reason> {
        let malformed = |e: String| Reason::new(ReasonCode::Malformed, format!("certificate: {e}"));
        Ok(Self {
            sev: Certificate::from_der(der).map_err(|e| malformed(e.to_string()))?,
            x509: x509_cert::Certificate::from_der(der).map_err(|e| malformed(e.to_string()))?,
        })
    }

    fn common_name(&self, issuer: bool) -> String {
        let name = if issuer {
            &self.x509.tbs_certificate.issuer
        } else {
            &self.x509.tbs_certificate.subject
        };
        let text = name.to_string();
        text.split(',')
            .find_map(|p| p.trim().strip_prefix("CN="))
            .unwrap_or(&text)
            .to_owned()
    }

    fn check_valid_at(&self, at: SystemTime) -> Result<(), Reason> {
        let v = &self.x509.tbs_certificate.validity;
        let now = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        let (from, to) = (
            v.not_before.to_unix_duration(),
            v.not_after.to_unix_duration(),
        );
        if now < from || now > to {
            return Err(Reason::new(
                ReasonCode::CertificateExpired,
                format!(
                    "certificate '{}' is valid from {} to {}, not at the verification time",
                    self.common_name(false),
                    v.not_before,
                    v.not_after
                ),
            ));
        }
        Ok(())
    }

    fn extension(&self, oid: &str) -> Option<&[u8]> {
        let oid = ObjectIdentifier::new(oid).ok()?;
        self.x509
            .tbs_certificate
            .extensions
            .as_ref()?
            .iter()
            .find(|e| e.extn_id == oid)
            .map(|e| e.extn_value.as_bytes())
    }
}

/// Verifies a SEV-SNP report with its endorsement key certificate.
pub fn verify(
    report: &[u8],
    certs: &[Vec<u8>],
    anchors: &SnpAnchors,
    at: SystemTime,
) -> Result<Claims, Reason> {
    if report.len() != REPORT_LEN {
        return Err(Reason::new(
            ReasonCode::Malformed,
            format!(
                "an SEV-SNP report is {REPORT_LEN} bytes, this one is {}",
                report.len()
            ),
        ));
    }
    let Some((vek_der, supplied)) = certs.split_first() else {
        return Err(Reason::new(
            ReasonCode::MissingCertificate,
            "SEV-SNP evidence needs the VCEK or VLEK certificate that signed the report (from AMD's KDS or the host's certificate table)",
        ));
    };
    let vek = Cert::parse(vek_der)?;
    let chain = find_chain(&vek, supplied, anchors)?;
    for c in chain.iter().chain([&vek]) {
        c.check_valid_at(at)?;
    }
    // Authenticate before parsing: the signature is read from its fixed
    // place in the raw bytes and checked over the raw signed region.
    let sig_algo = u32::from_le_bytes([report[0x34], report[0x35], report[0x36], report[0x37]]);
    if sig_algo != 1 {
        return Err(Reason::new(
            ReasonCode::BadSignature,
            format!("signature algorithm {sig_algo} is not ECDSA P-384 with SHA-384"),
        ));
    }
    let sig = raw_signature(report)?;
    let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(vek.sev.public_key_sec1())
        .map_err(|e| Reason::new(ReasonCode::Malformed, format!("VCEK/VLEK public key: {e}")))?;
    key.verify_digest(sha2_10::Sha384::new_with_prefix(&report[..SIGNED_LEN]), &sig)
        .map_err(|_| {
            Reason::new(
                ReasonCode::BadSignature,
                format!(
                    "the report is not signed by '{}' (altered report, or the certificate of another chip)",
                    vek.common_name(false)
                ),
            )
        })?;
    let parsed = AttestationReport::from_bytes(report)
        .map_err(|e| Reason::new(ReasonCode::Malformed, format!("SEV-SNP report: {e}")))?;
    check_endorsement_matches(&vek, &parsed)?;
    Ok(claims(&parsed, &vek, chain.last()))
}

/// The report signature: R and S, each 72 little-endian bytes of which the
/// low 48 carry a P-384 scalar.
fn raw_signature(report: &[u8]) -> Result<p384::ecdsa::Signature, Reason> {
    let scalar = |off: usize| {
        let le = &report[off..off + 72];
        if le[48..].iter().any(|b| *b != 0) {
            return None;
        }
        let mut be = [0u8; 48];
        for (d, s) in be.iter_mut().zip(le[..48].iter().rev()) {
            *d = *s;
        }
        Some(be)
    };
    let bad = || {
        Reason::new(
            ReasonCode::BadSignature,
            "the report signature is not a valid P-384 signature",
        )
    };
    let (r, s) = (
        scalar(SIGNED_LEN).ok_or_else(bad)?,
        scalar(SIGNED_LEN + 72).ok_or_else(bad)?,
    );
    p384::ecdsa::Signature::from_scalars(r, s).map_err(|_| bad())
}

/// Finds ARK → intermediate that signs `vek`. Returns [ark, intermediate].
fn find_chain(vek: &Cert, supplied: &[Vec<u8>], anchors: &SnpAnchors) -> Result<Vec<Cert>, Reason> {
    let mut candidates = Vec::new();
    for der in anchors.intermediates.iter().chain(supplied) {
        // Supplied roots and unparsable extras are simply not candidates.
        if let Ok(c) = Cert::parse(der) {
            candidates.push(c);
        }
    }
    for ark_der in &anchors.arks {
        let Ok(ark) = Cert::parse(ark_der) else {
            continue;
        };
        if (&ark.sev, &ark.sev).verify().is_err() {
            continue;
        }
        for inter in &candidates {
            if (&ark.sev, &inter.sev).verify().is_ok() && (&inter.sev, &vek.sev).verify().is_ok() {
                let inter = Cert::parse(&inter.sev.to_der().map_err(|e| {
                    Reason::new(ReasonCode::Malformed, format!("certificate: {e}"))
                })?)?;
                return Ok(vec![ark, inter]);
            }
        }
    }
    Err(Reason::new(
        ReasonCode::UntrustedChain,
        format!(
            "'{}' (issued by '{}') does not chain to a trusted AMD root; for a VLEK pass the ASVK too",
            vek.common_name(false),
            vek.common_name(true)
        ),
    ))
}

fn check_endorsement_matches(vek: &Cert, r: &AttestationReport) -> Result<(), Reason> {
    let tcb = &r.reported_tcb;
    for (oid, name, reported) in [
        (OID_BL_SPL, "bootloader", tcb.bootloader),
        (OID_TEE_SPL, "tee", tcb.tee),
        (OID_SNP_SPL, "snp", tcb.snp),
        (OID_UCODE_SPL, "microcode", tcb.microcode),
    ] {
        if let Some(raw) = vek.extension(oid) {
            let certified = u64::from_der(raw).map_err(|e| {
                Reason::new(
                    ReasonCode::Malformed,
                    format!("VCEK {name} SPL extension: {e}"),
                )
            })?;
            if certified != u64::from(reported) {
                return Err(Reason::new(
                    ReasonCode::TcbMismatch,
                    format!(
                        "the certificate is for {name} SVN {certified}, the report says {reported}"
                    ),
                ));
            }
        }
    }
    if let Some(raw) = vek.extension(OID_HW_ID) {
        // AMD's KDS puts the raw 64-byte (Turin: 8-byte) id in the extension
        // value; accept a DER OCTET STRING wrapping too.
        let hw_id = if raw.len() == 64 || raw.len() == 8 {
            raw.to_vec()
        } else {
            x509_cert::der::asn1::OctetString::from_der(raw)
                .map(|o| o.as_bytes().to_vec())
                .unwrap_or_default()
        };
        if hw_id.is_empty() || hw_id.len() > 64 || r.chip_id[..hw_id.len()] != hw_id[..] {
            return Err(Reason::new(
                ReasonCode::ChipMismatch,
                "the VCEK is for a different chip than the report's CHIP_ID",
            ));
        }
    }
    Ok(())
}

fn claims(r: &AttestationReport, vek: &Cert, inter: Option<&Cert>) -> Claims {
    let t = &r.reported_tcb;
    let mut tcb = vec![
        TcbComponent {
            name: "bootloader".into(),
            svn: t.bootloader.into(),
        },
        TcbComponent {
            name: "tee".into(),
            svn: t.tee.into(),
        },
        TcbComponent {
            name: "snp".into(),
            svn: t.snp.into(),
        },
        TcbComponent {
            name: "microcode".into(),
            svn: t.microcode.into(),
        },
    ];
    if let Some(fmc) = t.fmc {
        tcb.push(TcbComponent {
            name: "fmc".into(),
            svn: fmc.into(),
        });
    }
    let signer = match inter {
        Some(i) => format!("{} ← {}", vek.common_name(false), i.common_name(false)),
        None => vek.common_name(false),
    };
    Claims {
        hardware: HardwareType::SevSnp,
        measurement: r.measurement.to_vec(),
        tcb,
        tcb_status: None,
        advisories: Vec::new(),
        debug: r.policy.debug_allowed(),
        report_data: r.report_data.to_vec(),
        signer,
        extra: vec![
            ("report_version".into(), r.version.to_string()),
            ("vmpl".into(), r.vmpl.to_string()),
            ("guest_svn".into(), r.guest_svn.to_string()),
            ("host_data".into(), hex::encode(r.host_data)),
            ("chip_id".into(), hex::encode(r.chip_id)),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_anchors_load() {
        let a = SnpAnchors::default();
        assert_eq!(a.arks.len(), 3);
        assert_eq!(a.intermediates.len(), 3);
    }

    #[test]
    fn short_and_garbage_reports_are_malformed() {
        let a = SnpAnchors::default();
        let e = verify(&[0u8; 10], &[], &a, SystemTime::now()).unwrap_err();
        assert_eq!(e.code, ReasonCode::Malformed);
        let e = verify(&[0u8; REPORT_LEN], &[], &a, SystemTime::now()).unwrap_err();
        assert!(matches!(
            e.code,
            ReasonCode::Malformed | ReasonCode::MissingCertificate
        ));
    }
}
