//! Finding the local TEE and asking it for evidence.
//!
//! Design decision: every path is joined onto a caller-given root (`/` in
//! production), so tests can build a fake `/sys` and `/dev` in a temporary
//! directory and exercise detection without hardware. The kernel's unified
//! configfs-tsm interface is preferred for both SEV-SNP and TDX; the legacy
//! `/dev/sev-guest` ioctl is used only when configfs-tsm is missing, and
//! Gramine's `/dev/attestation` pseudo-files give SGX quotes.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{Evidence, HardwareType};

/// configfs-tsm report directory (Linux ≥ 6.7).
pub const CONFIGFS_TSM: &str = "sys/kernel/config/tsm/report";
/// Intel TDX guest device.
pub const TDX_GUEST: &str = "dev/tdx_guest";
/// AMD SEV-SNP guest device.
pub const SEV_GUEST: &str = "dev/sev-guest";
/// Gramine's attestation pseudo-filesystem (SGX).
pub const GRAMINE: &str = "dev/attestation";

/// A TEE interface found on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The hardware behind it.
    pub hardware: HardwareType,
    /// The interface used to get evidence.
    pub interface: &'static str,
    /// Where it was found.
    pub path: PathBuf,
}

/// Errors collecting evidence.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CollectError {
    /// No TEE interface found.
    #[error(
        "no TEE found: none of {root}/{{{CONFIGFS_TSM}, {TDX_GUEST}, {SEV_GUEST}, {GRAMINE}}} exists"
    )]
    NoTee {
        /// Root searched.
        root: String,
    },
    /// The TEE interface failed.
    #[error("{path}: {detail}")]
    Interface {
        /// Path involved.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
}

/// Every TEE interface present under `root`, preferred first.
pub fn detect(root: &Path) -> Vec<Found> {
    let mut found = Vec::new();
    let tdx = root.join(TDX_GUEST).exists();
    let snp = root.join(SEV_GUEST).exists();
    let tsm = root.join(CONFIGFS_TSM);
    if tsm.is_dir() {
        // The provider is only visible inside a report entry; the guest
        // device beside it says which one it will be.
        if tdx {
            found.push(Found {
                hardware: HardwareType::Tdx,
                interface: "configfs-tsm",
                path: tsm.clone(),
            });
        }
        if snp {
            found.push(Found {
                hardware: HardwareType::SevSnp,
                interface: "configfs-tsm",
                path: tsm.clone(),
            });
        }
    }
    if tdx && !found.iter().any(|f| f.hardware == HardwareType::Tdx) {
        found.push(Found {
            hardware: HardwareType::Tdx,
            interface: "tdx-guest",
            path: root.join(TDX_GUEST),
        });
    }
    if snp {
        found.push(Found {
            hardware: HardwareType::SevSnp,
            interface: "sev-guest",
            path: root.join(SEV_GUEST),
        });
    }
    let gramine = root.join(GRAMINE);
    if gramine.join("quote").exists() || gramine.join("user_report_data").exists() {
        found.push(Found {
            hardware: HardwareType::Sgx,
            interface: "gramine",
            path: gramine,
        });
    }
    found
}

/// Asks the first usable TEE under `root` for evidence binding `report_data`.
pub fn collect(root: &Path, report_data: &[u8; 64]) -> Result<Evidence, CollectError> {
    let found = detect(root);
    let mut last = None;
    for f in &found {
        let attempt = match f.interface {
            "configfs-tsm" => via_configfs_tsm(&f.path, report_data),
            "gramine" => via_gramine(&f.path, report_data),
            "sev-guest" if root == Path::new("/") => via_sev_guest(report_data),
            _ => Err(CollectError::Interface {
                path: f.path.clone(),
                detail: format!(
                    "{} evidence needs configfs-tsm (Linux 6.7 or later, {CONFIGFS_TSM})",
                    f.hardware
                ),
            }),
        };
        match attempt {
            Ok(ev) => return Ok(ev),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| CollectError::NoTee {
        root: root.display().to_string(),
    }))
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> CollectError + '_ {
    move |e| CollectError::Interface {
        path: path.to_owned(),
        detail: e.to_string(),
    }
}

fn via_configfs_tsm(tsm: &Path, report_data: &[u8; 64]) -> Result<Evidence, CollectError> {
    let entry = tsm.join(format!(
        "tensorguard-{}-{}",
        std::process::id(),
        nonce_suffix()
    ));
    fs::create_dir(&entry).map_err(io_err(&entry))?;
    let result = (|| {
        fs::write(entry.join("inblob"), report_data).map_err(io_err(&entry))?;
        let provider = fs::read_to_string(entry.join("provider")).map_err(io_err(&entry))?;
        let outblob = fs::read(entry.join("outblob")).map_err(io_err(&entry))?;
        match provider.trim() {
            "sev_guest" => {
                let aux = fs::read(entry.join("auxblob")).unwrap_or_default();
                Ok(Evidence::SevSnp {
                    report: outblob,
                    certs: snp_cert_table(&aux),
                })
            }
            "tdx_guest" => Ok(Evidence::Tdx {
                quote: outblob,
                collateral: None,
            }),
            other => Err(CollectError::Interface {
                path: entry.clone(),
                detail: format!("unknown configfs-tsm provider '{other}'"),
            }),
        }
    })();
    // Best effort: the kernel frees the entry with the directory.
    let _ = fs::remove_dir(&entry);
    result
}

fn via_gramine(dir: &Path, report_data: &[u8; 64]) -> Result<Evidence, CollectError> {
    let kind = fs::read_to_string(dir.join("attestation_type")).unwrap_or_default();
    if kind.trim() != "dcap" {
        return Err(CollectError::Interface {
            path: dir.to_owned(),
            detail: format!("Gramine attestation type is '{}', need 'dcap'", kind.trim()),
        });
    }
    fs::write(dir.join("user_report_data"), report_data).map_err(io_err(dir))?;
    let quote = fs::read(dir.join("quote")).map_err(io_err(dir))?;
    Ok(Evidence::Sgx {
        quote,
        collateral: None,
    })
}

fn via_sev_guest(report_data: &[u8; 64]) -> Result<Evidence, CollectError> {
    let path = PathBuf::from("/").join(SEV_GUEST);
    let err = |d: String| CollectError::Interface {
        path: path.clone(),
        detail: d,
    };
    let mut fw = sev::firmware::guest::Firmware::open().map_err(|e| err(e.to_string()))?;
    let (report, table) = fw
        .get_ext_report(None, Some(*report_data), Some(0))
        .map_err(|e| err(e.to_string()))?;
    let mut certs = Vec::new();
    for entry in table.unwrap_or_default() {
        let guid = entry.guid_string();
        if guid == VCEK_GUID || guid == VLEK_GUID {
            certs.insert(0, entry.data().to_vec());
        } else if guid == ASK_GUID {
            certs.push(entry.data().to_vec());
        }
    }
    Ok(Evidence::SevSnp { report, certs })
}

const VCEK_GUID: &str = "63da758d-e664-4564-adc5-f4b93be8accd";
const VLEK_GUID: &str = "a8074bc2-a25a-483e-aae6-39c045a0b8a1";
const ASK_GUID: &str = "4ab7b379-bbac-4fe4-a02f-05aef327c782";

/// Parses the GHCB certificate table the host hands an SNP guest (the
/// configfs-tsm `auxblob`): 24-byte entries (GUID, offset, length) ending in
/// an all-zero entry, offsets relative to the table. Returns the VCEK/VLEK
/// first, then the ASK; malformed or out-of-range entries are skipped.
pub fn snp_cert_table(table: &[u8]) -> Vec<Vec<u8>> {
    let mut vek = Vec::new();
    let mut rest = Vec::new();
    for raw in table.chunks_exact(24).take(64) {
        if raw.iter().all(|b| *b == 0) {
            break;
        }
        let guid = guid_string(&raw[..16]);
        let off = u32::from_le_bytes([raw[16], raw[17], raw[18], raw[19]]) as usize;
        let len = u32::from_le_bytes([raw[20], raw[21], raw[22], raw[23]]) as usize;
        let Some(data) = off.checked_add(len).and_then(|end| table.get(off..end)) else {
            continue;
        };
        if guid == VCEK_GUID || guid == VLEK_GUID {
            vek.push(data.to_vec());
        } else if guid == ASK_GUID {
            rest.push(data.to_vec());
        }
    }
    vek.extend(rest);
    vek
}

/// A GUID in its mixed-endian text form.
fn guid_string(b: &[u8]) -> String {
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{}",
        b[3],
        b[2],
        b[1],
        b[0],
        b[5],
        b[4],
        b[7],
        b[6],
        b[8],
        b[9],
        hex::encode(&b[10..16])
    )
}

fn nonce_suffix() -> String {
    let mut b = [0u8; 4];
    // A clash only makes create_dir fail, which is reported.
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

/// SHA-256 of this process's executable: the measurement a simulated agent
/// reports, so an operator can at least see which build ran.
pub fn executable_measurement() -> std::io::Result<[u8; 32]> {
    let exe = std::env::current_exe()?;
    let mut h = Sha256::new();
    let mut f = fs::File::open(exe)?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_fake_interfaces_under_a_root() {
        let root = tempfile::tempdir().unwrap();
        assert!(detect(root.path()).is_empty());
        assert!(matches!(
            collect(root.path(), &[0; 64]),
            Err(CollectError::NoTee { .. })
        ));

        fs::create_dir_all(root.path().join(CONFIGFS_TSM)).unwrap();
        fs::create_dir_all(root.path().join("dev")).unwrap();
        fs::write(root.path().join(TDX_GUEST), b"").unwrap();
        let f = detect(root.path());
        assert_eq!(f[0].hardware, HardwareType::Tdx);
        assert_eq!(f[0].interface, "configfs-tsm");

        fs::create_dir_all(root.path().join(GRAMINE)).unwrap();
        fs::write(root.path().join(GRAMINE).join("quote"), b"QUOTE").unwrap();
        fs::write(
            root.path().join(GRAMINE).join("attestation_type"),
            b"dcap\n",
        )
        .unwrap();
        assert!(
            detect(root.path())
                .iter()
                .any(|f| f.hardware == HardwareType::Sgx)
        );
        // The fake configfs has no provider file, so collection falls through
        // to the Gramine files.
        let ev = collect(root.path(), &[7; 64]).unwrap();
        assert_eq!(
            ev,
            Evidence::Sgx {
                quote: b"QUOTE".to_vec(),
                collateral: None
            }
        );
        assert_eq!(
            fs::read(root.path().join(GRAMINE).join("user_report_data")).unwrap(),
            [7; 64]
        );
    }

    #[test]
    fn cert_table_parsing_is_bounded() {
        assert!(snp_cert_table(&[]).is_empty());
        let mut t = vec![0u8; 24 * 2];
        // VCEK GUID 63da758d-e664-4564-adc5-f4b93be8accd, mixed-endian.
        t[..16].copy_from_slice(&[
            0x8d, 0x75, 0xda, 0x63, 0x64, 0xe6, 0x64, 0x45, 0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8,
            0xac, 0xcd,
        ]);
        t[16..20].copy_from_slice(&48u32.to_le_bytes());
        t[20..24].copy_from_slice(&3u32.to_le_bytes());
        t.extend([1, 2, 3]);
        assert_eq!(snp_cert_table(&t), vec![vec![1, 2, 3]]);
        t[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(snp_cert_table(&t).is_empty());
    }
}
