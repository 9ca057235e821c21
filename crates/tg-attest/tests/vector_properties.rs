//! Properties over the public vectors: no single-bit flip in a signed SNP
//! report is accepted; decoding arbitrary bytes as evidence never panics.
#![allow(clippy::unwrap_used)]

use crate::common::*;
use tg_attest::{Evidence, TrustAnchors, verify};

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// Any single-bit flip anywhere in a signed SNP report is refused.
    #[test]
    fn any_bit_flip_in_a_signed_snp_report_is_refused(byte in 0usize..0x2A0 + 96, bit in 0u8..8) {
        let Some(v) = vectors() else { return Ok(()) };
        let mut ev = snp(&v, "snp/virtee-report-milan.bin", &["snp/virtee-vcek-milan.der"]);
        snp_report_mut(&mut ev)[byte] ^= 1 << bit;
        let r = verify(&ev, &TrustAnchors::default(), at(SNP_AT));
        proptest::prop_assert!(r.is_err());
    }

    /// Decoding arbitrary bytes as evidence never panics.
    #[test]
    fn evidence_decoder_is_total(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let _ = Evidence::from_bytes(&bytes, 1 << 20);
    }
}
