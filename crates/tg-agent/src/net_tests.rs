//! The agent's network runner: which packed frames it unpacks.

use super::*;

#[test]
fn only_the_welcoming_coordinator_s_packed_models_are_unpacked() {
    let ours = PeerId::random();
    let stranger = PeerId::random();
    let job = JobId::from_bytes([1; 16]);
    let header = |job: JobId| signed::Header {
        binding: signed::Binding {
            job,
            round: 1,
            stage: signed::stage::TRAIN,
        },
        nonce: 1,
        sender: [0; 32],
        packed: true,
    };
    let session = |welcomed| Session {
        coordinator: ours,
        job,
        agent: None,
        welcomed,
    };
    let full = tg_proto::MAX_FRAME_BYTES;
    assert_eq!(
        unpack_limit(Some(&session(true)), &ours, &header(job)),
        full
    );
    // Before the welcome, from a stranger, for another job, or with no
    // session at all: a packed frame is refused before it is unpacked.
    assert_eq!(unpack_limit(Some(&session(false)), &ours, &header(job)), 0);
    assert_eq!(
        unpack_limit(Some(&session(true)), &stranger, &header(job)),
        0
    );
    let other = JobId::from_bytes([2; 16]);
    assert_eq!(unpack_limit(Some(&session(true)), &ours, &header(other)), 0);
    assert_eq!(unpack_limit(None, &ours, &header(job)), 0);
}
