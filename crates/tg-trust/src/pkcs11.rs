//! Ed25519 keys that live on a PKCS#11 token (SoftHSM2, YubiHSM, cloud HSMs).
//!
//! Design decision: the key pair is generated *on* the token as sensitive
//! and non-extractable, so its secret never exists in our memory; we keep
//! only its label and public key. Signing is pure EdDSA (`CKM_EDDSA`, RFC
//! 8032), byte-for-byte the signatures `ed25519-dalek` verifies, so an HSM
//! key and a file key are interchangeable behind [`NodeSigner`]. The
//! library is loaded with `dlopen` by `cryptoki`; that is the only unsafe
//! code involved and it lives in that crate, not here.

use std::path::Path;
use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;

use crate::{NodeSigner, Result, TrustError};

/// DER of the Ed25519 curve OID 1.3.101.112, the `CKA_EC_PARAMS` value.
const ED25519_PARAMS: [u8; 5] = [0x06, 0x03, 0x2B, 0x65, 0x70];

/// An Ed25519 key pair on a PKCS#11 token, with a logged-in session.
pub struct Pkcs11Signer {
    session: Mutex<Session>,
    key: ObjectHandle,
    public: [u8; 32],
    // Keeps the module loaded for as long as the session lives.
    _ctx: Pkcs11,
}

impl std::fmt::Debug for Pkcs11Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pkcs11Signer(public {})", hex::encode(self.public))
    }
}

fn err(what: &str) -> impl Fn(cryptoki::error::Error) -> TrustError + '_ {
    move |e| TrustError::Pkcs11(format!("{what}: {e}"))
}

fn login(module: &Path, token: &str, pin: &str) -> Result<(Pkcs11, Session)> {
    let ctx = Pkcs11::new(module)
        .map_err(|e| TrustError::Pkcs11(format!("cannot load module {}: {e}", module.display())))?;
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(err("initialize"))?;
    let slots = ctx.get_slots_with_token().map_err(err("list slots"))?;
    let mut found = None;
    for s in slots {
        let info = ctx.get_token_info(s).map_err(err("token info"))?;
        if info.label().trim_end() == token {
            found = Some(s);
            break;
        }
    }
    let slot = found.ok_or_else(|| {
        TrustError::Pkcs11(format!(
            "no token labelled '{token}' in {}",
            module.display()
        ))
    })?;
    let session = ctx.open_rw_session(slot).map_err(err("open session"))?;
    session
        .login(UserType::User, Some(&AuthPin::new(pin.into())))
        .map_err(err("log in (wrong PIN?)"))?;
    Ok((ctx, session))
}

/// Loads `module` and finds the token labelled `token`, without logging in
/// (a connection test): returns the token's manufacturer and model.
pub fn probe_token(module: &Path, token: &str) -> Result<String> {
    let ctx = Pkcs11::new(module)
        .map_err(|e| TrustError::Pkcs11(format!("cannot load module {}: {e}", module.display())))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) => {}
        // Already initialised by a signer in this process: fine for a probe.
        Err(e) if e.to_string().contains("ALREADY_INITIALIZED") => {}
        Err(e) => return Err(err("initialize")(e)),
    }
    let slots = ctx.get_slots_with_token().map_err(err("list slots"))?;
    let mut labels = Vec::new();
    for s in slots {
        let info = ctx.get_token_info(s).map_err(err("token info"))?;
        let label = info.label().trim_end().to_owned();
        if label == token {
            return Ok(format!(
                "{} {} (serial {})",
                info.manufacturer_id().trim_end(),
                info.model().trim_end(),
                info.serial_number().trim_end()
            ));
        }
        labels.push(label);
    }
    Err(TrustError::Pkcs11(format!(
        "no token labelled '{token}' in {} (tokens: {})",
        module.display(),
        if labels.is_empty() {
            "none".into()
        } else {
            labels.join(", ")
        }
    )))
}

fn public_of(session: &Session, handle: ObjectHandle) -> Result<[u8; 32]> {
    let attrs = session
        .get_attributes(handle, &[AttributeType::EcPoint])
        .map_err(err("read public key"))?;
    for a in attrs {
        if let Attribute::EcPoint(p) = a {
            // DER OCTET STRING (04 20 ‖ key) or, on some tokens, the raw key.
            let raw = match p.as_slice() {
                [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest,
                r if r.len() == 32 => r,
                _ => {
                    return Err(TrustError::Pkcs11(
                        "the token's EC point is not an Ed25519 public key".into(),
                    ));
                }
            };
            let mut out = [0u8; 32];
            out.copy_from_slice(raw);
            return Ok(out);
        }
    }
    Err(TrustError::Pkcs11(
        "the token did not return the public key".into(),
    ))
}

fn find(session: &Session, class: ObjectClass, label: &str) -> Result<Option<ObjectHandle>> {
    let hits = session
        .find_objects(&[
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(err("find key"))?;
    Ok(hits.into_iter().next())
}

impl Pkcs11Signer {
    /// Generates a new, non-extractable Ed25519 key pair labelled `label`
    /// on the token labelled `token`.
    pub fn generate(module: &Path, token: &str, pin: &str, label: &str) -> Result<Self> {
        let (ctx, session) = login(module, token, pin)?;
        if find(&session, ObjectClass::PRIVATE_KEY, label)?.is_some() {
            return Err(TrustError::Pkcs11(format!(
                "a key labelled '{label}' already exists on '{token}'"
            )));
        }
        let label_attr = Attribute::Label(label.as_bytes().to_vec());
        let public_t = [
            Attribute::Token(true),
            Attribute::Verify(true),
            Attribute::EcParams(ED25519_PARAMS.to_vec()),
            label_attr.clone(),
        ];
        let private_t = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::KeyType(KeyType::EC_EDWARDS),
            label_attr,
        ];
        let (pub_h, priv_h) = session
            .generate_key_pair(&Mechanism::EccEdwardsKeyPairGen, &public_t, &private_t)
            .map_err(err(
                "generate Ed25519 key pair (does the token support CKM_EC_EDWARDS_KEY_PAIR_GEN?)",
            ))?;
        let public = public_of(&session, pub_h)?;
        Ok(Self {
            session: Mutex::new(session),
            key: priv_h,
            public,
            _ctx: ctx,
        })
    }

    /// Opens the existing key pair labelled `label`.
    pub fn open(module: &Path, token: &str, pin: &str, label: &str) -> Result<Self> {
        let (ctx, session) = login(module, token, pin)?;
        let key = find(&session, ObjectClass::PRIVATE_KEY, label)?.ok_or_else(|| {
            TrustError::Pkcs11(format!("no private key labelled '{label}' on '{token}'"))
        })?;
        let pub_h = find(&session, ObjectClass::PUBLIC_KEY, label)?.ok_or_else(|| {
            TrustError::Pkcs11(format!("no public key labelled '{label}' on '{token}'"))
        })?;
        let public = public_of(&session, pub_h)?;
        Ok(Self {
            session: Mutex::new(session),
            key,
            public,
            _ctx: ctx,
        })
    }
}

impl NodeSigner for Pkcs11Signer {
    fn public_key(&self) -> [u8; 32] {
        self.public
    }

    fn sign_bytes(&self, msg: &[u8]) -> Result<[u8; 64]> {
        let session = self
            .session
            .lock()
            .map_err(|_| TrustError::Pkcs11("session lock poisoned".into()))?;
        let sig = session
            .sign(
                &Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                self.key,
                msg,
            )
            .map_err(err("sign"))?;
        sig.as_slice().try_into().map_err(|_| {
            TrustError::Pkcs11(format!("the token returned a {}-byte signature", sig.len()))
        })
    }
}
