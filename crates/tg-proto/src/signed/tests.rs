//! Signed frames against forgery, relabelling and replay.
use super::*;
use crate::{JoinRequest, RoundRef};
use proptest::prelude::*;

fn key(b: u8) -> SigningKey {
    SigningKey::from_bytes(&[b; 32])
}

fn join(job: u8) -> ToCoordinator {
    ToCoordinator::Join(JoinRequest {
        job: JobId::from_bytes([job; 16]),
        name: "robot-7".into(),
        token: Some("tok".into()),
        evidence: None,
        certificate: None,
    })
}

#[test]
fn known_answer_header_bytes() {
    // The signed bytes are the domain tag, the postcard header and the
    // payload: pin the header's encoding so a serde change cannot
    // silently change what signatures cover.
    let h = Header {
        binding: Binding {
            job: JobId::from_bytes([1; 16]),
            round: 3,
            stage: 18,
        },
        nonce: 300,
        sender: [2; 32],
        packed: true,
    };
    let bytes = signed_bytes(&h, b"xy").unwrap();
    let mut expected = DOMAIN.to_vec();
    expected.extend([1u8; 16]);
    expected.extend([3, 18, 0xac, 0x02]);
    expected.extend([2u8; 32]);
    expected.push(1); // packed
    use sha2::Digest;
    expected.extend(sha2::Sha512::digest(b"xy"));
    assert_eq!(bytes, expected);
}

#[test]
fn round_trip_and_replay() {
    let k = key(1);
    let pk = k.verifying_key().to_bytes();
    let nonces = NonceCounter::from_clock();
    let frame = seal(&k, nonces.next(), &join(5)).unwrap();
    let (header, msg): (Header, ToCoordinator) = open(&frame, &pk).unwrap();
    assert_eq!(msg, join(5));
    assert_eq!(header.binding.job, JobId::from_bytes([5; 16]));
    let mut guard = ReplayGuard::default();
    guard.check(&header).unwrap();
    assert!(matches!(
        guard.check(&header),
        Err(ProtoError::Replay { .. })
    ));
    let (newer, _): (Header, ToCoordinator) =
        open(&seal(&k, nonces.next(), &join(5)).unwrap(), &pk).unwrap();
    guard.check(&newer).unwrap();
}

#[test]
fn refuses_forgery_other_senders_and_relabelling() {
    let k = key(1);
    let pk = k.verifying_key().to_bytes();
    let mut frame = seal(&k, 9, &join(5)).unwrap();
    // Another identity's frame is refused even though it verifies.
    let other = seal(&key(2), 9, &join(5)).unwrap();
    assert!(matches!(
        open::<ToCoordinator>(&other, &pk),
        Err(ProtoError::WrongSender)
    ));
    // A flipped payload byte breaks the signature.
    let n = frame.len();
    frame[n - 70] ^= 1;
    assert!(open::<ToCoordinator>(&frame, &pk).is_err());
    // A correctly signed header that lies about its message.
    let payload = crate::encode(&join(5)).unwrap();
    let lie = Binding {
        job: JobId::from_bytes([6; 16]),
        round: 0,
        stage: 10,
    };
    let relabelled = seal_payload(&k, 10, lie, payload).unwrap();
    assert!(matches!(
        open::<ToCoordinator>(&relabelled, &pk),
        Err(ProtoError::BindingMismatch)
    ));
}

#[test]
fn rounds_and_stages_are_bound() {
    let declined = ToCoordinator::Declined {
        at: RoundRef {
            job: JobId::from_bytes([5; 16]),
            round: 4,
        },
        agent: tg_types::AgentId::new("a").unwrap(),
        reason: crate::DeclineReason::TrainingFailed,
    };
    let b = declined.binding();
    assert_eq!((b.round, b.stage), (4, 8));
    assert_ne!(join(5).binding(), b);
}

fn trained(round: u32) -> ToCoordinator {
    ToCoordinator::Trained(crate::TrainReply {
        at: RoundRef {
            job: JobId::from_bytes([5; 16]),
            round,
        },
        agent: tg_types::AgentId::new("a").unwrap(),
        update: tg_types::Parameters::new(vec![tg_types::NamedTensor {
            name: "w".into(),
            shape: vec![3],
            data: vec![1.0, 2.0, 3.0],
        }])
        .unwrap(),
        num_examples: 4,
        train_loss: None,
        steps: 1,
        control_delta: None,
        epsilon: None,
        compressed: None,
    })
}

#[test]
fn a_training_reply_stays_in_its_frame_and_cannot_be_relabelled() {
    let k = key(1);
    let pk = k.verifying_key().to_bytes();
    let frame = seal(&k, 7, &trained(4)).unwrap();
    let (header, opened) = open_from_agent(&frame, &pk).unwrap();
    assert_eq!(header.binding.round, 4);
    let FromAgent::Trained(range) = opened else {
        panic!("a training reply is left in place");
    };
    // The payload is the exact message, read in place.
    let view = crate::decode_trained(&frame[range]).unwrap().unwrap();
    assert_eq!(view.num_examples, 4);
    // Signed for round 3, carrying round 4's reply: refused.
    let payload = crate::encode(&trained(4)).unwrap();
    let lie = Binding::trained(RoundRef {
        job: JobId::from_bytes([5; 16]),
        round: 3,
    });
    let relabelled = seal_payload(&k, 8, lie, payload.clone()).unwrap();
    assert!(matches!(
        open_from_agent(&relabelled, &pk),
        Err(ProtoError::BindingMismatch)
    ));
    // Signed as a decline (another stage) for the same round: refused.
    let as_decline = Binding {
        stage: 8,
        ..Binding::trained(RoundRef {
            job: JobId::from_bytes([5; 16]),
            round: 4,
        })
    };
    let relabelled = seal_payload(&k, 9, as_decline, payload).unwrap();
    assert!(open_from_agent(&relabelled, &pk).is_err());
    // Other messages are decoded and matched as before.
    let (_, opened) = open_from_agent(&seal(&k, 10, &join(5)).unwrap(), &pk).unwrap();
    assert!(matches!(opened, FromAgent::Message(ToCoordinator::Join(_))));
}

#[test]
fn only_a_join_is_read_from_a_stranger() {
    assert!(is_join(&crate::encode(&join(5)).unwrap()));
    assert!(!is_join(&crate::encode(&trained(1)).unwrap()));
    let decline = ToCoordinator::Declined {
        at: RoundRef {
            job: JobId::from_bytes([5; 16]),
            round: 1,
        },
        agent: tg_types::AgentId::new("a").unwrap(),
        reason: crate::DeclineReason::TrainingFailed,
    };
    assert!(!is_join(&crate::encode(&decline).unwrap()));
    assert!(!is_join(&[]));
    assert!(!is_join(&[0xff]));
}

proptest! {
    #[test]
    fn open_from_agent_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = open_from_agent(&bytes, &[0; 32]);
        let _ = crate::trained_at(&bytes);
    }

    #[test]
    fn open_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = open::<ToCoordinator>(&bytes, &[0; 32]);
        let _ = open::<ToAgent>(&bytes, &[0; 32]);
    }
}

#[test]
fn packed_frames_reach_agents_and_nothing_else() {
    use tg_types::{NamedTensor, Parameters};
    let k = key(3);
    let pk = k.verifying_key().to_bytes();
    // A model download that packs: 200k trained-looking weights.
    let values: Vec<f32> = (0..200_000)
        .map(|i| ((i * 7919) % 1000) as f32 * 1e-4)
        .collect();
    let model = Parameters::new(vec![NamedTensor {
        name: "w".into(),
        shape: vec![values.len()],
        data: values,
    }])
    .unwrap();
    let message = ToAgent::Evaluate(crate::EvaluateRequest {
        at: crate::RoundRef {
            job: JobId::from_bytes([4; 16]),
            round: 2,
        },
        model,
        baseline: None,
    });
    let plain = crate::encode(&message).unwrap();
    let packed = tg_compress::download::pack(&plain).unwrap();
    let frame = seal_packed(&k, 1, message.binding(), packed.clone()).unwrap();
    assert!(frame.len() < plain.len());
    // Opened as an agent does: verify, check the header, then decode with
    // a model's worth of room.
    let (header, payload) = verify_frame(&frame, &pk).unwrap();
    assert!(header.packed);
    let back: ToAgent = decode_verified(&header, payload, plain.len()).unwrap();
    assert_eq!(back, message);
    // No room (a stranger, before the welcome), or the generic open and the
    // coordinator's reader: never unpacked.
    assert!(decode_verified::<ToAgent>(&header, payload, 0).is_err());
    assert!(open::<ToAgent>(&frame, &pk).is_err());
    assert!(matches!(
        open_payload(&frame, &pk),
        Err(ProtoError::Malformed(_))
    ));
    // Only model-carrying stages are ever packed: a packed offer is refused.
    let offer_header = Header {
        binding: Binding {
            stage: 1,
            ..header.binding
        },
        ..header
    };
    assert!(decode_verified::<ToAgent>(&offer_header, payload, 1 << 30).is_err());
    // The flag is signed: the same bytes sealed unpacked do not decode, and
    // a flipped flag breaks the signature.
    let unflagged = seal_payload(&k, 2, message.binding(), packed).unwrap();
    assert!(open::<ToAgent>(&unflagged, &pk).is_err());
    let mut tampered = frame.clone();
    // The flag follows the sender's key in the header.
    let pos = tampered
        .windows(33)
        .position(|w| w[..32] == pk && w[32] == 1)
        .unwrap();
    tampered[pos + 32] = 0;
    assert!(matches!(
        verify_frame(&tampered, &pk),
        Err(ProtoError::BadSignature | ProtoError::Malformed(_))
    ));
    // A bomb: a tiny packed frame that declares more than the room given.
    let bomb = zstd_bomb(&vec![0u8; 8 << 20]);
    let frame = seal_packed(&k, 3, message.binding(), bomb).unwrap();
    assert!(frame.len() < 64 * 1024);
    let (header, payload) = verify_frame(&frame, &pk).unwrap();
    assert!(matches!(
        decode_verified::<ToAgent>(&header, payload, 1 << 20),
        Err(ProtoError::Malformed(m)) if m.contains("more than")
    ));
}

/// Packs anything, however big (pack() itself refuses nothing big).
fn zstd_bomb(bytes: &[u8]) -> Vec<u8> {
    tg_compress::download::pack(bytes).unwrap()
}
