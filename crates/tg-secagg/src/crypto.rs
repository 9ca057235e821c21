//! The cryptographic building blocks: key agreement, key derivation, the
//! mask PRG and share encryption.
//!
//! Design decision: every derived key is bound to its purpose and to the
//! round it belongs to (`Context`), so a seed or key can never be replayed
//! into another job, round, pair or role. Masks are expanded with
//! AES-128-CTR (AES-NI where present, detected at run time), the PRG
//! Google's fcp uses; shares are sealed with ChaCha20-Poly1305.

use aes::Aes128;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use ctr::Ctr128BE;
use ctr::cipher::{KeyIvInit, StreamCipher};
use hkdf::Hkdf;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

use crate::SecAggError;

/// Domain separation for every key this crate derives.
const SALT: &[u8] = b"tensorguard-secagg-v1";

/// Keystream bytes produced per PRG block (fits L1/L2 alongside the vector).
const PRG_BLOCK: usize = 16 * 1024;

/// What a derived key is for, and for which round: part of every KDF input
/// and every signature.
///
/// `config` is the digest of the round's whole configuration
/// ([`crate::RoundConfig::digest`]): two clients given different
/// configurations (participants, graph, threshold, bits, noise, encoding)
/// derive different keys and sign different bytes, so an equivocating
/// server is caught at the first signature check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context {
    /// Job id.
    pub job: [u8; 16],
    /// Round number.
    pub round: u32,
    /// Digest of the round's configuration (zero until a `RoundConfig` binds it).
    pub config: [u8; 32],
}

impl Context {
    /// The context of `round` of `job`, before a configuration is bound to it.
    pub fn new(job: [u8; 16], round: u32) -> Self {
        Self {
            job,
            round,
            config: [0; 32],
        }
    }

    fn info(&self, purpose: &[u8], a: u32, b: u32) -> Vec<u8> {
        let mut v = Vec::with_capacity(purpose.len() + 60);
        v.extend_from_slice(purpose);
        v.extend_from_slice(&self.job);
        v.extend_from_slice(&self.round.to_le_bytes());
        v.extend_from_slice(&self.config);
        v.extend_from_slice(&a.to_le_bytes());
        v.extend_from_slice(&b.to_le_bytes());
        v
    }

    /// Bytes that bind a sealed message to this round and to its direction.
    fn aad(&self, sender: u32, recipient: u32) -> Vec<u8> {
        self.info(b"share-seal-aad", sender, recipient)
    }
}

/// A 32-byte secret that is wiped when dropped.
pub type Secret32 = Zeroizing<[u8; 32]>;

/// An X25519 key pair for one purpose in one round.
pub struct KeyPair {
    secret: StaticSecret,
    /// The public half.
    pub public: [u8; 32],
}

impl KeyPair {
    /// From 32 random bytes (the caller's CSPRNG).
    pub fn from_random(mut bytes: [u8; 32]) -> Self {
        let secret = StaticSecret::from(bytes);
        bytes.zeroize();
        let public = PublicKey::from(&secret).to_bytes();
        Self { secret, public }
    }

    /// The secret scalar's bytes (to be Shamir-shared).
    pub fn secret_bytes(&self) -> Secret32 {
        Zeroizing::new(self.secret.to_bytes())
    }
}

/// HKDF-SHA256(salt, X25519(secret, their_public), info(purpose, lo, hi)).
/// The pair (lo, hi) is ordered so both ends derive the same key: for the
/// pairwise mask, which both ends must expand identically.
pub fn agree(
    secret: &[u8; 32],
    their_public: &[u8; 32],
    ctx: &Context,
    purpose: &[u8],
    a: u32,
    b: u32,
) -> Result<Secret32, SecAggError> {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    agree_info(secret, their_public, &ctx.info(purpose, lo, hi))
}

/// The key `sender` seals to `recipient` with: the ordered pair is in the
/// HKDF info, so the i→j and j→i keys are independent (knowing one
/// direction's plaintext says nothing about the other's).
pub fn seal_key(
    secret: &[u8; 32],
    their_public: &[u8; 32],
    ctx: &Context,
    sender: u32,
    recipient: u32,
) -> Result<Secret32, SecAggError> {
    agree_info(
        secret,
        their_public,
        &ctx.info(b"share-seal-directed", sender, recipient),
    )
}

fn agree_info(
    secret: &[u8; 32],
    their_public: &[u8; 32],
    info: &[u8],
) -> Result<Secret32, SecAggError> {
    let shared = StaticSecret::from(*secret).diffie_hellman(&PublicKey::from(*their_public));
    if !shared.was_contributory() {
        return Err(SecAggError::Crypto(
            "a peer's public key is a low-order point".into(),
        ));
    }
    let mut out = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(SALT), shared.as_bytes())
        .expand(info, out.as_mut())
        .map_err(|e| SecAggError::Crypto(format!("HKDF: {e}")))?;
    Ok(out)
}

/// SHA-256 of `data` under a domain tag (for binding parameters into a round).
pub fn digest(domain: &[u8], data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = Sha256::new();
    h.update((domain.len() as u64).to_le_bytes());
    h.update(domain);
    h.update(data);
    h.finalize().into()
}

/// Whether `public` is a usable X25519 key (not of low order, which would
/// make every agreement with it a known value).
pub fn is_contributory(public: &[u8; 32]) -> bool {
    StaticSecret::from([0x42; 32])
        .diffie_hellman(&PublicKey::from(*public))
        .was_contributory()
}

/// Derives a key from a seed for one purpose (e.g. the self mask from b_i).
pub fn derive(
    seed: &[u8; 32],
    ctx: &Context,
    purpose: &[u8],
    a: u32,
) -> Result<Secret32, SecAggError> {
    let mut out = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(SALT), seed)
        .expand(&ctx.info(purpose, a, a), out.as_mut())
        .map_err(|e| SecAggError::Crypto(format!("HKDF: {e}")))?;
    Ok(out)
}

/// How a mask is applied to a vector of u32 lanes (mod 2³²; reduce to 2^B last).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Apply {
    /// `v += mask`.
    Add,
    /// `v -= mask`.
    Subtract,
}

/// The mask generator of a round: every party must use the same one, so it
/// is a round parameter chosen by the coordinator, not a local detection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Prg {
    /// AES-128-CTR (key = seed[..16], IV = seed[16..]); ~4 GB/s with AES-NI.
    #[default]
    Aes128Ctr,
    /// ChaCha20 keyed by the seed (64-bit counter, stream 0); for fleets
    /// without AES hardware, where it beats constant-time software AES.
    ChaCha20,
}

impl Prg {
    /// AES-128-CTR where this CPU has AES instructions, ChaCha20 otherwise.
    pub fn for_this_cpu() -> Self {
        #[cfg(target_arch = "x86_64")]
        let aes = std::arch::is_x86_feature_detected!("aes");
        #[cfg(target_arch = "aarch64")]
        let aes = std::arch::is_aarch64_feature_detected!("aes");
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let aes = false;
        if aes { Self::Aes128Ctr } else { Self::ChaCha20 }
    }
}

enum Stream {
    Aes(Box<Ctr128BE<Aes128>>),
    ChaCha(Box<rand_chacha::ChaCha20Rng>),
}

impl Stream {
    fn fill(&mut self, bytes: &mut [u8]) {
        match self {
            Self::Aes(c) => {
                bytes.fill(0);
                c.apply_keystream(bytes);
            }
            Self::ChaCha(c) => rand_core::RngCore::fill_bytes(c.as_mut(), bytes),
        }
    }
}

/// Expands `seed` with the round's PRG into one u32 per lane
/// (little-endian) and adds or subtracts it, block by block.
pub fn apply_mask(
    seed: &[u8; 32],
    values: &mut [u32],
    how: Apply,
    prg: Prg,
) -> Result<(), SecAggError> {
    let mut stream = match prg {
        Prg::Aes128Ctr => Stream::Aes(Box::new(
            Ctr128BE::<Aes128>::new_from_slices(&seed[..16], &seed[16..])
                .map_err(|e| SecAggError::Crypto(format!("AES-CTR: {e}")))?,
        )),
        Prg::ChaCha20 => Stream::ChaCha(Box::new(
            <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed(*seed),
        )),
    };
    let mut block = vec![0u8; PRG_BLOCK];
    for chunk in values.chunks_mut(PRG_BLOCK / 4) {
        let bytes = &mut block[..chunk.len() * 4];
        stream.fill(bytes);
        let lanes = bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        match how {
            Apply::Add => chunk
                .iter_mut()
                .zip(lanes)
                .for_each(|(v, m)| *v = v.wrapping_add(m)),
            Apply::Subtract => chunk
                .iter_mut()
                .zip(lanes)
                .for_each(|(v, m)| *v = v.wrapping_sub(m)),
        }
    }
    block.zeroize();
    Ok(())
}

/// Bytes of the per-message nonce that prefixes every sealed message.
pub const NONCE_LEN: usize = 12;

/// Seals `plaintext` from `sender` to `recipient` under `key` (from
/// [`seal_key`]): a fresh random nonce prefixes the ciphertext, and the
/// round's context with the direction is the associated data, so a
/// ciphertext cannot be reflected back to its sender or moved to another
/// pair, round or configuration.
pub fn seal(
    key: &[u8; 32],
    ctx: &Context,
    sender: u32,
    recipient: u32,
    plaintext: &[u8],
    rng: &mut impl rand_core::CryptoRng,
) -> Result<Vec<u8>, SecAggError> {
    let cipher = ChaCha20Poly1305::new_from_slice(key)
        .map_err(|e| SecAggError::Crypto(format!("AEAD key: {e}")))?;
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let aad = ctx.aad(sender, recipient);
    let body = cipher
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .map_err(|_| SecAggError::Crypto("AEAD encryption failed".into()))?;
    let mut out = Vec::with_capacity(NONCE_LEN + body.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Opens a message `sender` sealed to `recipient`; any tampering, another
/// direction, pair, round or configuration fails authentication.
pub fn open(
    key: &[u8; 32],
    ctx: &Context,
    sender: u32,
    recipient: u32,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SecAggError> {
    let cipher = ChaCha20Poly1305::new_from_slice(key)
        .map_err(|e| SecAggError::Crypto(format!("AEAD key: {e}")))?;
    if sealed.len() < NONCE_LEN {
        return Err(SecAggError::Crypto(
            "a sealed share is shorter than its nonce".into(),
        ));
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let mut n = [0u8; NONCE_LEN];
    n.copy_from_slice(nonce);
    let aad = ctx.aad(sender, recipient);
    cipher
        .decrypt(
            &Nonce::from(n),
            Payload {
                msg: body,
                aad: &aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| SecAggError::Crypto("a sealed share failed authentication".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;

    fn ctx() -> Context {
        Context::new([1; 16], 3)
    }

    #[test]
    fn aes_ctr_keystream_known_answer() {
        // NIST SP 800-38A F.5.1 (CTR-AES128.Encrypt): key 2b7e1516…, counter
        // f0f1f2…feff, first plaintext block 6bc1bee2…; ciphertext 874d6191….
        let key = hex_bytes("2b7e151628aed2a6abf7158809cf4f3c");
        let iv = hex_bytes("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");
        let mut seed = [0u8; 32];
        seed[..16].copy_from_slice(&key);
        seed[16..].copy_from_slice(&iv);
        let pt = hex_bytes("6bc1bee22e409f96e93d7e117393172a");
        let ct = hex_bytes("874d6191b620e3261bef6864990db6ce");
        // keystream = ct ⊕ pt; as lanes it is what apply_mask adds to zeros.
        let ks: Vec<u8> = pt.iter().zip(&ct).map(|(p, c)| p ^ c).collect();
        let mut lanes = vec![0u32; 4];
        apply_mask(&seed, &mut lanes, Apply::Add, Prg::Aes128Ctr).unwrap();
        let want: Vec<u32> = ks
            .chunks(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(lanes, want);
        apply_mask(&seed, &mut lanes, Apply::Subtract, Prg::Aes128Ctr).unwrap();
        assert_eq!(lanes, vec![0; 4]);
    }

    #[test]
    fn chacha20_keystream_known_answer() {
        // ChaCha20 with an all-zero key and nonce, block 0: 76b8e0ad a0f13d90 …
        let mut lanes = vec![0u32; 4];
        apply_mask(&[0; 32], &mut lanes, Apply::Add, Prg::ChaCha20).unwrap();
        let want: Vec<u32> = hex_bytes("76b8e0ada0f13d90405d6ae55386bd28")
            .chunks(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(lanes, want);
    }

    #[test]
    fn hkdf_sha256_known_answer() {
        // RFC 5869 test case 1.
        let ikm = [0x0bu8; 22];
        let salt = hex_bytes("000102030405060708090a0b0c");
        let info = hex_bytes("f0f1f2f3f4f5f6f7f8f9");
        let mut okm = [0u8; 42];
        Hkdf::<Sha256>::new(Some(&salt), &ikm)
            .expand(&info, &mut okm)
            .unwrap();
        assert_eq!(
            okm.to_vec(),
            hex_bytes(
                "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
            )
        );
    }

    #[test]
    fn both_ends_agree_and_contexts_separate() {
        let a = KeyPair::from_random([3; 32]);
        let b = KeyPair::from_random([4; 32]);
        let k_ab = agree(&a.secret_bytes(), &b.public, &ctx(), b"mask", 1, 2).unwrap();
        let k_ba = agree(&b.secret_bytes(), &a.public, &ctx(), b"mask", 2, 1).unwrap();
        assert_eq!(*k_ab, *k_ba);
        let other_round = Context { round: 4, ..ctx() };
        let k_r = agree(&a.secret_bytes(), &b.public, &other_round, b"mask", 1, 2).unwrap();
        let k_p = agree(&a.secret_bytes(), &b.public, &ctx(), b"share", 1, 2).unwrap();
        assert_ne!(*k_ab, *k_r);
        assert_ne!(*k_ab, *k_p);
        assert!(agree(&a.secret_bytes(), &[0; 32], &ctx(), b"mask", 1, 2).is_err());
    }

    #[test]
    fn sealed_shares_detect_tampering() {
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([5; 32]);
        let key = [9u8; 32];
        let c = ctx();
        let mut ct = seal(&key, &c, 1, 2, b"share", &mut rng).unwrap();
        assert_eq!(open(&key, &c, 1, 2, &ct).unwrap().as_slice(), b"share");
        // Another direction, pair, round or configuration: refused.
        assert!(open(&key, &c, 2, 1, &ct).is_err());
        assert!(open(&key, &c, 1, 3, &ct).is_err());
        assert!(open(&key, &Context::new([1; 16], 4), 1, 2, &ct).is_err());
        let mut other = c;
        other.config[0] = 1;
        assert!(open(&key, &other, 1, 2, &ct).is_err());
        ct[NONCE_LEN] ^= 1;
        assert!(open(&key, &c, 1, 2, &ct).is_err());
        assert!(open(&key, &c, 1, 2, &ct[..5]).is_err());
        let other_key = seal(&key, &c, 1, 2, b"x", &mut rng).unwrap();
        assert!(open(&[8u8; 32], &c, 1, 2, &other_key).is_err());
    }

    #[test]
    fn the_two_directions_of_a_pair_never_share_key_or_nonce() {
        // The reflection the review found: i→j and j→i under one key and
        // nonce 0 share a keystream. Now each direction has its own key and
        // each message its own nonce.
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([6; 32]);
        let a = KeyPair::from_random([3; 32]);
        let b = KeyPair::from_random([4; 32]);
        let c = ctx();
        let k_ab = seal_key(&a.secret_bytes(), &b.public, &c, 1, 2).unwrap();
        let k_ab_at_b = seal_key(&b.secret_bytes(), &a.public, &c, 1, 2).unwrap();
        let k_ba = seal_key(&b.secret_bytes(), &a.public, &c, 2, 1).unwrap();
        assert_eq!(*k_ab, *k_ab_at_b, "the recipient derives the sender's key");
        assert_ne!(*k_ab, *k_ba, "the two directions use different keys");
        let m1 = seal(&k_ab, &c, 1, 2, &[0u8; 64], &mut rng).unwrap();
        let m2 = seal(&k_ab, &c, 1, 2, &[0u8; 64], &mut rng).unwrap();
        assert_ne!(m1[..NONCE_LEN], m2[..NONCE_LEN], "fresh nonce per message");
        // XOR of the two directions' ciphertexts of equal plaintexts is not zero.
        let r = seal(&k_ba, &c, 2, 1, &[0u8; 64], &mut rng).unwrap();
        let same: usize = m1[NONCE_LEN..]
            .iter()
            .zip(&r[NONCE_LEN..])
            .filter(|(x, y)| x == y)
            .count();
        assert!(same < 16, "no shared keystream ({same} equal bytes of 80)");
    }

    fn hex_bytes(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
