//! The frame protocol's codec: one length-prefixed, size-limited message per
//! stream, in each direction.
//!
//! Design decision: the length is read and checked against a hard limit
//! *before* any buffer is allocated, so a peer cannot make us allocate more
//! than [`MAX_WIRE_BYTES`] per request, whatever it claims. Frames larger than
//! one chunk travel as several [`Wire::Chunk`] requests (see `transfer.rs`),
//! so the limit bounds memory per request without capping model size.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};

/// The frame protocol's name and version.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/tensorguard/frame/2");

/// Bytes of payload in one chunk of a large frame (1 MiB).
pub const CHUNK_BYTES: usize = 1 << 20;

/// Largest request on the wire: one chunk plus its header.
pub const MAX_WIRE_BYTES: usize = CHUNK_BYTES + 256;

/// Largest response on the wire.
const MAX_REPLY_BYTES: usize = 4096;

/// A request on the frame protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Wire {
    /// A whole application frame (at most [`CHUNK_BYTES`]).
    Frame(#[serde(with = "tg_types::view::bytes_owned")] Vec<u8>),
    /// One piece of a larger frame.
    Chunk {
        /// Sender-chosen id of the transfer, unique per sender and connection lifetime.
        transfer: u64,
        /// Total length of the frame being transferred.
        total: u64,
        /// Index of this chunk; its bytes start at `index * CHUNK_BYTES`.
        index: u32,
        /// The chunk's bytes.
        #[serde(with = "tg_types::view::bytes_owned")]
        data: Vec<u8>,
    },
}

/// The answer to a [`Wire`] request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Taken: queued for the application (or stored as a chunk).
    Accepted,
    /// The receiver's queue is full; try again shortly.
    Busy,
    /// Refused, with the reason (e.g. a transfer over the size limit).
    Rejected(String),
}

/// Decodes one request as the frame protocol reads it from a stream: the
/// length check, the bounded read and the exact decode (for fuzzing and
/// tests; the network path is the codec itself).
pub fn decode_request(bytes: &[u8]) -> io::Result<Wire> {
    futures::executor::block_on(async {
        let mut cursor = futures::io::Cursor::new(bytes);
        decode(&read_limited(&mut cursor, MAX_WIRE_BYTES).await?)
    })
}

/// The frame protocol's codec. It counts the requests it refuses itself:
/// libp2p's request-response drops a failed read without telling the
/// behaviour's user, so the codec is the one place that sees them.
#[derive(Clone, Debug, Default)]
pub struct FrameCodec {
    pub(crate) stats: std::sync::Arc<crate::NetStats>,
}

async fn read_limited<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    limit: usize,
) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("oversized frame: {len} bytes announced, limit {limit}"),
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await.map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("truncated frame: stream ended before {len} announced bytes"),
            )
        } else {
            e
        }
    })?;
    Ok(buf)
}

async fn write_prefixed<T: AsyncWrite + Unpin + Send>(io: &mut T, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(body).await?;
    io.close().await
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> io::Result<T> {
    let (value, rest) = postcard::take_from_bytes(bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("malformed frame: {e}")))?;
    if !rest.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "malformed frame: trailing bytes",
        ));
    }
    Ok(value)
}

fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

impl libp2p::request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Wire;
    type Response = Reply;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Wire> {
        let read = async { decode(&read_limited(io, MAX_WIRE_BYTES).await?) }.await;
        if let Err(e) = &read {
            self.stats.count_fault(crate::WireFault::classify(e));
            tracing::warn!("refused an inbound frame: {e}");
        }
        read
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Reply> {
        decode(&read_limited(io, MAX_REPLY_BYTES).await?)
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Wire,
    ) -> io::Result<()> {
        match req {
            #[cfg(feature = "fault-injection")]
            Wire::Frame(raw) if raw.starts_with(crate::RAW_MARKER) => {
                // Fault injection: write the bytes after the marker verbatim,
                // length prefix and all, as a broken or hostile peer would.
                io.write_all(&raw[crate::RAW_MARKER.len()..]).await?;
                io.close().await
            }
            req => write_prefixed(io, &encode(&req)?).await,
        }
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Reply,
    ) -> io::Result<()> {
        write_prefixed(io, &encode(&res)?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::request_response::Codec;

    fn block<F: std::future::Future>(f: F) -> F::Output {
        futures::executor::block_on(f)
    }

    #[test]
    fn round_trips_requests_and_replies() {
        let mut c = FrameCodec::default();
        for req in [
            Wire::Frame(vec![1, 2, 3]),
            Wire::Chunk {
                transfer: 7,
                total: 3 << 20,
                index: 2,
                data: vec![9; 100],
            },
        ] {
            let mut buf = futures::io::Cursor::new(Vec::new());
            block(c.write_request(&PROTOCOL, &mut buf, req.clone())).unwrap();
            let mut rd = futures::io::Cursor::new(buf.into_inner());
            assert_eq!(block(c.read_request(&PROTOCOL, &mut rd)).unwrap(), req);
        }
        let mut buf = futures::io::Cursor::new(Vec::new());
        block(c.write_response(&PROTOCOL, &mut buf, Reply::Rejected("no".into()))).unwrap();
        let mut rd = futures::io::Cursor::new(buf.into_inner());
        assert_eq!(
            block(c.read_response(&PROTOCOL, &mut rd)).unwrap(),
            Reply::Rejected("no".into())
        );
    }

    #[test]
    fn refuses_oversized_announcements_before_allocating() {
        let mut bytes = u32::MAX.to_be_bytes().to_vec();
        bytes.extend([0u8; 16]);
        let mut rd = futures::io::Cursor::new(bytes);
        let e = block(FrameCodec::default().read_request(&PROTOCOL, &mut rd)).unwrap_err();
        assert!(e.to_string().contains("oversized"), "{e}");
    }

    #[test]
    fn refuses_truncated_and_malformed_frames() {
        let mut bytes = 100u32.to_be_bytes().to_vec();
        bytes.extend([0u8; 10]);
        let mut rd = futures::io::Cursor::new(bytes);
        let e = block(FrameCodec::default().read_request(&PROTOCOL, &mut rd)).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");

        let mut bytes = 3u32.to_be_bytes().to_vec();
        bytes.extend([9u8, 9, 9]);
        let mut rd = futures::io::Cursor::new(bytes);
        let e = block(FrameCodec::default().read_request(&PROTOCOL, &mut rd)).unwrap_err();
        assert!(e.to_string().contains("malformed"), "{e}");
    }
}
